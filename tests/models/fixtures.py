"""Small hand-built log worlds following harness/logs/schema.py, for the models' tests.

`cyclic_world`: user u watches videos in a fixed cycle, next = (current mod V) + 1, starting at a
user-specific video; every request shows two videos: the cycle's next one (watched to the end and so
engaged) and a distractor skipped after 1 s (not engaged). A correct sequential model must learn the
cycle (next-item accuracy near 1), popularity cannot (all videos are about equally popular).
Every third request the user opens the comment section of the watched video and likes one comment:
the one with the most likes when `like_popular` (so the like-count rule is right) else the least.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from harness.logs.schema import TABLES

T0 = pd.Timestamp("2024-01-01")


def _table(name: str, df: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(df[TABLES[name].column_names], schema=TABLES[name].arrow_schema(),
                                preserve_index=False)


def cyclic_world(n_users: int = 24, n_videos: int = 60, n_requests: int = 20, comments_per_video: int = 4,
                 like_popular: bool = True, seed: int = 0) -> dict[str, pa.Table]:
    rng = np.random.default_rng(seed)
    videos = pd.DataFrame({
        "video_id": np.arange(1, n_videos + 1) * 10,  # external ids differ from indices on purpose
        "title": [f"video {i}" for i in range(1, n_videos + 1)],
        "duration_s": np.full(n_videos, 15.0),
        "author_id": np.arange(n_videos) % 3,
    })
    ncom = n_videos * comments_per_video
    comments = pd.DataFrame({
        "comment_id": np.arange(1, ncom + 1) + 1000,
        "video_id": np.repeat(videos["video_id"].to_numpy(), comments_per_video),
        "text": [f"comment {j}" for j in range(ncom)],
        "like_count": np.tile(np.arange(comments_per_video) * 5, n_videos),
    })
    req, imp, cimp = [], [], []
    rid = 0
    for u in range(n_users):
        v = (u * 7) % n_videos  # 0-based current video
        for t in range(n_requests):
            rid += 1
            ts = T0 + pd.Timedelta(seconds=u * 100_000 + t * 60)
            req.append((rid, u + 1, ts, u * 1000 + t // 10))
            vid = int(videos["video_id"].iloc[v])
            other = int(videos["video_id"].iloc[(v + 1 + rng.integers(n_videos - 1)) % n_videos])
            order = [(vid, 15.0), (other, 1.0)] if rng.random() < 0.5 else [(other, 1.0), (vid, 15.0)]
            for pos, (x, watch) in enumerate(order):
                imp.append((rid, x, pos, 0.5, False, watch, False, x == vid and t % 3 == 0, 0.0))
            if t % 3 == 0:
                cs = comments[comments["video_id"] == vid]
                best = cs["like_count"].idxmax() if like_popular else cs["like_count"].idxmin()
                for pos, (ci, c) in enumerate(cs.iterrows()):
                    cimp.append((rid, vid, int(c["comment_id"]), pos, 0.25, 5.0 if ci == best else 0.5,
                                 bool(ci == best), False))
            v = (v + 1) % n_videos
    requests = pd.DataFrame(req, columns=["request_id", "user_id", "ts", "session_id"])
    impressions = pd.DataFrame(imp, columns=["request_id", "video_id", "position", "propensity", "is_random",
                                             "watch_time_s", "liked", "opened_comments", "comment_watch_time_s"])
    cimps = pd.DataFrame(cimp, columns=["request_id", "video_id", "comment_id", "position", "propensity",
                                        "dwell_s", "liked", "replied"])
    users = pd.DataFrame({"user_id": np.arange(1, n_users + 1), "activity_level": "medium",
                          "comment_level": "occasional", "signup_day": -10})
    candidates = impressions[["request_id", "video_id"]]
    return {
        "users": _table("users", users),
        "videos": _table("videos", videos),
        "comments": _table("comments", comments),
        "requests": _table("requests", requests),
        "impressions": _table("impressions", impressions),
        "candidates": _table("candidates", candidates),
        "comment_impressions": _table("comment_impressions", cimps),
    }


INTER_SAMPLE = """user_id:token\titem_id:token\trating:float\ttimestamp:float
196\t242\t3\t881250949
186\t302\t3\t891717742
196\t377\t1\t878887116
196\t51\t2\t881250949
186\t346\t1\t886397596
22\t377\t1\t878887116
"""
