"""Defect 5 of issue 14: what the leave-one-out protocol lets a model see of each held-out query's future.

For every validation / test query (video or comment task) the model's inputs must hold only events
strictly before the query's time: the training events (what the weights learn from), the histories the
query is scored with, and the like counts of the candidate comments. Measured here on hand-built logs
whose leaks are counted by hand, and on the cyclic fixture world, straight from the split's arrays and
from what a recording recommender is handed (independent of the code under test).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from models.evaluation import evaluate, sample_candidates
from models.histories import prepare_data
from models.pop import PopRecommender
from tests.models.fixtures import T0, cyclic_world

EVAL = (("valid", "video"), ("valid", "comment"), ("test", "video"), ("test", "comment"))


def hand_logs(events: list[tuple], likes: dict[int, int] | None = None) -> dict[str, pd.DataFrame]:
    """Log tables from (user, second, video, watch_s, comment reads [(comment, dwell, liked)]) per request.
    Videos 1..5; video v has comments 10v+1 and 10v+2 with like counts `likes` (default 0)."""
    videos = pd.DataFrame({"video_id": np.arange(1, 6), "title": [f"v{i}" for i in range(1, 6)],
                           "duration_s": 15.0})
    cids = [10 * v + k for v in range(1, 6) for k in (1, 2)]
    comments = pd.DataFrame({"comment_id": cids, "video_id": [c // 10 for c in cids],
                             "text": [f"c{c}" for c in cids], "like_count": [(likes or {}).get(c, 0) for c in cids]})
    req, imp, cimp = [], [], []
    for rid, (user, sec, video, watch, reads) in enumerate(events, start=1):
        req.append((rid, user, T0 + pd.Timedelta(seconds=sec), user))
        imp.append((rid, video, 0, 0.5, False, watch, False, bool(reads), 0.0))
        cimp += [(rid, video, c, pos, 0.5, dwell, liked, False) for pos, (c, dwell, liked) in enumerate(reads)]
    return {
        "videos": videos, "comments": comments,
        "requests": pd.DataFrame(req, columns=["request_id", "user_id", "ts", "session_id"]),
        "impressions": pd.DataFrame(imp, columns=["request_id", "video_id", "position", "propensity", "is_random",
                                                  "watch_time_s", "liked", "opened_comments", "comment_watch_time_s"]),
        "comment_impressions": pd.DataFrame(cimp, columns=["request_id", "video_id", "comment_id", "position",
                                                           "propensity", "dwell_s", "liked", "replied"]),
    }


def two_users() -> dict[str, pd.DataFrame]:
    """User 1 ends on comment reads without an engaged video; user 2 reads comments early only.

    user 1: videos 1,2,3,4,5 engaged at t = 0..40; comment records at 20 (video 3), 40 (video 5, the video
    test target's request), 50 and 60 (videos 1 and 2 watched 1 s: comments only). Held out: video test
    5@40, valid 4@30; comment test @60, valid @50. user 2: comment records at 0 and 10 (held out: test
    @10, valid @0), videos 1..5 engaged at t = 0..40 (test 5@40, valid 4@30)."""
    ev = []  # (user, second, video, watch seconds, comments read: the video's first one, 5 s)
    for v, sec in zip(range(1, 6), range(0, 50, 10), strict=True):
        ev.append((1, sec, v, 15.0, [(10 * v + 1, 5.0, False)] if sec in (20, 40) else []))
    ev += [(1, 50, 1, 1.0, [(11, 5.0, False)]), (1, 60, 2, 1.0, [(21, 5.0, False)])]
    for v, sec in zip(range(1, 6), range(0, 50, 10), strict=True):
        ev.append((2, sec, v, 15.0, [(10 * v + 1, 5.0, False)] if sec in (0, 10) else []))
    return hand_logs(ev)


def training_leaks(splits) -> dict[str, float]:
    """The issue's two figures plus the share of all held-out queries with a training event of the user at
    or after the query time, read straight from the split's arrays."""
    tr = splits.train

    def events(kind: str, row: int) -> tuple[np.ndarray, np.ndarray]:
        off, times, items = ((tr.video_offsets, tr.video_time, tr.video) if kind == "video"
                             else (tr.comment_offsets, tr.comment_time, tr.comment_video))
        return times[off[row]:off[row + 1]], items[off[row]:off[row + 1]]

    t = splits.test
    in_comments = [bool(((ct == q.time) & (cv == q.target)).any())
                   for q in t.video.itertuples() for ct, cv in [events("comment", q.user_row)]]
    later_video = [bool((events("video", q.user_row)[0] >= q.time).any()) for q in t.comment.itertuples()]
    later_any = [bool((events("video", q.user_row)[0] >= q.time).any() or (events("comment", q.user_row)[0] >= q.time).any())
                 for split, task in EVAL for q in getattr(getattr(splits, split), task).itertuples()]
    return {"video_targets_in_train_comments": float(np.mean(in_comments)),
            "comment_queries_with_later_train_video": float(np.mean(later_video)),
            "queries_with_later_training": float(np.mean(later_any))}


def test_hand_built_leaks_are_counted_and_gone() -> None:
    splits = prepare_data(two_users()).splits
    # the held-out queries are as the docstring says (the fix changes training, not the queries)
    t0 = T0.value / 1e9
    assert (splits.test.video["time"] - t0).tolist() == [40, 40]
    assert (splits.test.comment["time"] - t0).tolist() == [60, 10]
    assert (splits.valid.comment["time"] - t0).tolist() == [50, 0]
    # before the fix: user 1's test target (video 5 @ 40) sat in its training comment records (1 of 2 users);
    # user 2's training videos (at 20) came after its comment test query (@ 10) (1 of 2)
    assert training_leaks(splits) == {"video_targets_in_train_comments": 0.0,
                                      "comment_queries_with_later_train_video": 0.0,
                                      "queries_with_later_training": 0.0}
    # what training keeps: each user's events strictly before the first held-out query (user 1: 30, user 2: 0)
    assert splits.train.n_video_events().tolist() == [3, 0]
    assert splits.train.n_comment_records().tolist() == [1, 0]


def test_cyclic_world_training_holds_nothing_at_or_after_a_query() -> None:
    # comment records every 3rd request: the validation comment query (request 9 of 12) comes before the
    # last two video events, which leave-one-out of the video task alone kept in training
    splits = prepare_data(cyclic_world(n_users=6, n_videos=40, n_requests=12)).splits
    assert training_leaks(splits)["queries_with_later_training"] == 0.0
    assert training_leaks(splits)["comment_queries_with_later_train_video"] == 0.0
    # requests 0..5 precede the validation comment query at request 6 (records at 0, 3, 6, 9)
    assert splits.train.n_video_events().tolist() == [6] * 6
    assert splits.train.n_comment_records().tolist() == [2] * 6


class Recorder:
    """A recommender that scores nothing (zeros) and records the latest history event each query was handed."""

    name = "recorder"

    def __init__(self) -> None:
        self.gaps: list[float] = []  # query time - latest history event time; must be > 0

    def _record(self, hist, query) -> None:
        for b in range(hist.batch_size):
            times = torch.cat([hist.video_time[b], hist.comment_time[b]])
            last = times[torch.isfinite(times)].max().item() if torch.isfinite(times).any() else -np.inf
            self.gaps += [float(query.time[b, q]) - last for q in range(query.time.shape[1])]

    def score_videos(self, hist, query):
        self._record(hist, query)
        return torch.zeros(query.candidates.shape).masked_fill(query.candidates == 0, float("-inf"))

    def score_comments(self, hist, query):
        self._record(hist, query)
        return torch.zeros(query.candidates.shape).masked_fill(query.candidates == 0, float("-inf"))


@pytest.mark.parametrize("split", ["valid", "test"])
def test_scored_histories_end_before_the_query(split) -> None:
    prep = prepare_data(cyclic_world(n_users=6, n_videos=40, n_requests=12))
    rec = Recorder()
    evaluate(rec, prep.splits, sample_candidates(prep.splits, prep.catalogue), prep.catalogue, split=split)
    assert len(rec.gaps) == 12 and min(rec.gaps) > 0


def test_comment_like_counts_as_of_the_query() -> None:
    """Comment 11 has 5 likes in the snapshot, comment 12 has 4; users 2 and 3 like comment 11 at t = 20 and
    30, after user 1's comment queries (t = 0 and 10, positive: comment 12). As of the queries, 11 had 3 likes,
    so the like-count rule ranks the positive first; the end-of-log snapshot ranked it second."""
    ev = [(1, 0, 1, 15.0, [(12, 5.0, False), (11, 0.5, False)]),
          (1, 10, 1, 15.0, [(12, 5.0, False), (11, 0.5, False)]),
          (1, 11, 2, 15.0, []), (1, 12, 3, 15.0, []),
          (2, 20, 1, 15.0, [(11, 5.0, True)]), (3, 30, 1, 15.0, [(11, 5.0, True)])]
    prep = prepare_data(hand_logs(ev, likes={11: 5, 12: 4}))
    cands = sample_candidates(prep.splits, prep.catalogue)
    pop = PopRecommender.fit(prep.splits.train, prep.catalogue)
    for split in ("valid", "test"):
        (comment,) = evaluate(pop, prep.splits, cands, prep.catalogue, split=split, tasks=("comment",))
        assert comment.n_queries == 1
        assert comment.metrics["recall@1"] == 1.0
