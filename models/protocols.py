"""The temporal evaluation protocol, beside leave-one-out (`models.histories.leave_one_out`).

Leave-one-out holds out each user's last events, so the model has trained on every other user's events
up to the end of the log, and every test target is a video that training saw. The temporal protocol is
the deployment's: one global cut time T.

- **Training** uses requests before T (`harness train --until T`; the checkpoint records it in
  `training_data`, and evaluation refuses a checkpoint trained past T or without that record).
- **Test queries** are events at or after T: per user and task, up to `queries_per_user` of them
  (10 by default; 0 = every one), drawn uniformly without replacement with the seed, so heavy users do
  not dominate. Metrics average over queries. There is no validation split.
- **Inputs**: a query at time t is scored with the user's events strictly before t, those before T and
  those after it alike (the model was not trained on the latter, but a deployed model reads them), and
  with comment like counts as of t (`models.likes.CommentLikes`).
- **Negatives** of a video query are drawn from the videos *published* by the query time (and never
  engaged by the user, as in leave-one-out): `videos.published_at`, or for logs without it the time the
  video was first shown (never shown: never a candidate).
- **Slices**: a query is *cold* when its target video (video task) or the watched video (comment task)
  was published at or after T, i.e. an item no training event can have held; the rest are *warm*.
  Results are reported on all queries and on each slice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from models.catalogue import Catalogue
from models.errors import ModelInputError
from models.histories import (
    EvalTargets,
    EventLog,
    PreparedData,
    Splits,
    _seconds,
    events_before,
    prepare_data,
)

LEAVE_ONE_OUT = "leave-one-out"
TEMPORAL = "temporal"
PROTOCOLS = (LEAVE_ONE_OUT, TEMPORAL)
SLICES = ("all", "warm", "cold")


@dataclass(frozen=True)
class Temporal:
    """The temporal protocol's settings: the cut (seconds since the epoch) and the queries per user and task."""

    cut: float
    queries_per_user: int = 10  # per task; 0 = every event at or after the cut
    seed: int = 0  # which events are drawn when a user has more

    def __post_init__(self) -> None:
        if not np.isfinite(self.cut):
            raise ValueError(f"Temporal.cut must be a finite time in seconds, got {self.cut}")
        if self.queries_per_user < 0:
            raise ValueError(f"Temporal.queries_per_user must be >= 0 (0 = all), got {self.queries_per_user}")

    def describe(self) -> str:
        """Identifies the protocol in the candidates' key and in run configs."""
        return f"{TEMPORAL}(cut={self.cut!r}, queries_per_user={self.queries_per_user}, seed={self.seed})"


def publish_times(catalogue: Catalogue, tables: dict) -> np.ndarray:
    """(V+1,) when each video became available, in seconds: `videos.published_at` where the logs have it,
    else the first request that showed the video; +inf for a video never shown (and for padding)."""
    out = np.full(catalogue.n_videos + 1, np.inf)
    videos = tables["videos"]
    vdf = videos.to_pandas() if isinstance(videos, pa.Table) else videos
    if "published_at" in vdf.columns and vdf["published_at"].notna().any():
        known = vdf[vdf["published_at"].notna()]
        out[catalogue.video_index(known["video_id"].to_numpy(np.int64))] = _seconds(known["published_at"])
        out[0] = np.inf
        return out
    imp, req = tables["impressions"], tables["requests"]
    imp = imp.to_pandas() if isinstance(imp, pa.Table) else imp
    req = req.to_pandas() if isinstance(req, pa.Table) else req
    shown = imp[["request_id", "video_id"]].merge(req[["request_id", "ts"]], on="request_id")
    shown = shown.assign(t=_seconds(shown["ts"])).groupby("video_id")["t"].min()
    v = catalogue.video_index(shown.index.to_numpy(np.int64))
    out[v[v > 0]] = shown.to_numpy(np.float64)[v > 0]
    out[0] = np.inf
    return out


def _draw(offsets: np.ndarray, times: np.ndarray, cut: float, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of each user's events at or after `cut`, at most k per user (uniform, without replacement),
    in user then time order."""
    picked = []
    for u in range(offsets.shape[0] - 1):
        s, e = offsets[u], offsets[u + 1]
        idx = s + np.flatnonzero(times[s:e] >= cut)
        if k and idx.size > k:
            idx = np.sort(rng.choice(idx, size=k, replace=False))
        picked.append(idx)
    return np.concatenate(picked).astype(np.int64) if picked else np.zeros(0, np.int64)


def temporal_splits(log: EventLog, protocol: Temporal) -> Splits:
    """Training = every user's events before the cut; test = the drawn events at or after it; no validation."""
    users = np.arange(log.n_users)
    rng = np.random.default_rng([protocol.seed, 2, 0])
    vi = _draw(log.video_offsets, log.video_time, protocol.cut, protocol.queries_per_user, rng)
    vrow = np.repeat(users, log.n_video_events())[vi]
    video = pd.DataFrame({"user_row": vrow, "user_id": log.user_ids[vrow], "time": log.video_time[vi],
                          "target": log.video[vi]})
    rng = np.random.default_rng([protocol.seed, 2, 1])
    ci = _draw(log.comment_offsets, log.comment_time, protocol.cut, protocol.queries_per_user, rng)
    crow = np.repeat(users, log.n_comment_records())[ci]
    comment = pd.DataFrame({"user_row": crow, "user_id": log.user_ids[crow], "time": log.comment_time[ci],
                            "video": log.comment_video[ci], "record": ci})
    empty = EvalTargets(video.iloc[:0].copy(), comment.iloc[:0].copy())
    train = events_before(log, np.full(log.n_users, protocol.cut))
    return Splits(log, train, empty, EvalTargets(video, comment))


@dataclass
class TemporalSetup:
    """What the temporal protocol adds to the splits: its settings and the videos' publish times."""

    protocol: Temporal
    published: np.ndarray  # (V+1,) seconds; +inf = never available

    def digest(self) -> str:
        h = hashlib.sha256(self.protocol.describe().encode())
        h.update(np.ascontiguousarray(self.published, np.float64).tobytes())
        return h.hexdigest()

    def is_cold(self, videos: np.ndarray) -> np.ndarray:
        """Whether each video index was published at or after the cut."""
        return self.published[np.asarray(videos, np.int64)] >= self.protocol.cut


def prepare_temporal(tables: dict, protocol: Temporal, config=None) -> tuple[PreparedData, TemporalSetup]:
    """Catalogue, event log, like counts and the temporal splits from the full log tables (not cut: the
    test queries and their histories come after the cut)."""
    prep = prepare_data(tables, config)
    log = prep.splits.full
    splits = temporal_splits(log, protocol)
    if len(splits.test.video) == 0 and len(splits.test.comment) == 0:
        raise ModelInputError("no engaged video event or comment record lies at or after the temporal cut; "
                              "pick an earlier cut (e.g. --until experiment-start)")
    splits.likes = prep.splits.likes
    return PreparedData(prep.catalogue, splits), TemporalSetup(protocol, publish_times(prep.catalogue, tables))
