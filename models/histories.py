"""Users' engagement histories built from log tables, and the leave-one-out splits.

History events (the one definition every model uses):

- **video event**: an impression the user engaged with, i.e. `liked` or
  `watch_time_s >= min(duration_s, min_watch_s)` (default 10 s: a short video watched to the end, or
  a long one watched for 10 s). Repeat views are kept. Order: request `ts`, then request_id, then
  slot position.
- **comment-history record**: one (request, video) whose comments the user engaged with: a comment
  liked or replied to, or read for `dwell_s >= min_dwell_s` (default 3 s). The record keeps up to
  `max_comments` (M=3) of those comments, most-engaged first (replied, then liked, then dwell,
  then comment index); all of them are kept as the positives of the comment-recommendation task.
  Data without comment tables gives empty comment histories.
- **event time** = the request's `ts` in seconds since the epoch (float64). Events of one request
  share a time, so none of them is visible to a query at that request (strict `<`).

The `EventLog` holds these as ragged per-user arrays (CSR offsets) over catalogue indices, sorted by
external user_id; `EventLog.histories(rows)` packs users into a `UserHistories` batch.

Split (leave-one-out by time, as in SASRec and the LSVCR paper): for a user with at least 3 video
events the last is the test target and the second-to-last the validation target. Independently, for a
user with at least 2 comment records, the last record is the test query of comment recommendation and
the one before it the validation query. Training keeps each user's events (both kinds) strictly before
the user's earliest held-out query of either task, so no held-out query has a training event of its
user at or after its time. (Until 2026-12, each task held out its own last two events only: a comment
test query had training video events after it, and a video test target could sit in the training
comment records at its own time; docs/models.md "Evaluation protocols" gives the figures.) Users below
these counts only contribute training events. Evaluation queries are scored with the full log cut to
the events strictly before the query time (`EventLog.histories(rows, before=...)`), and comment like
counts as of that time (`models.likes.CommentLikes`, carried by `Splits.likes`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from models.batch import UserHistories
from models.catalogue import Catalogue
from models.errors import ModelInputError

if TYPE_CHECKING:
    from models.likes import CommentLikes


@dataclass(frozen=True)
class HistoryConfig:
    min_watch_s: float = 10.0  # engaged view: watch_time_s >= min(duration_s, min_watch_s), or liked
    min_dwell_s: float = 3.0  # engaged comment: dwell_s >= min_dwell_s, or liked, or replied
    max_comments: int = 3  # M: comments kept per comment-history record

    def __post_init__(self) -> None:
        if self.min_watch_s < 0 or self.min_dwell_s < 0:
            raise ValueError("HistoryConfig thresholds must be >= 0")
        if self.max_comments < 1:
            raise ValueError("HistoryConfig.max_comments must be >= 1")


def _df(table: pa.Table | pd.DataFrame | None, name: str, columns: list[str]) -> pd.DataFrame | None:
    if table is None:
        return None
    df = table.to_pandas() if isinstance(table, pa.Table) else table
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"table {name!r} lacks column(s) {missing}; see harness/logs/schema.py")
    return df[columns]


def _seconds(ts: pd.Series) -> np.ndarray:
    """Timestamps (datetime64 or numbers of seconds) as float64 seconds since the epoch."""
    if pd.api.types.is_datetime64_any_dtype(ts):
        if getattr(ts.dt, "tz", None) is not None:
            ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
        return ts.to_numpy("datetime64[us]").astype(np.int64) / 1e6
    return ts.to_numpy(np.float64)


def _offsets(user_rows: np.ndarray, n_users: int) -> np.ndarray:
    counts = np.bincount(user_rows, minlength=n_users)
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


@dataclass
class EventLog:
    """Per-user ragged event arrays (CSR), catalogue indices, sorted oldest first within a user."""

    user_ids: np.ndarray  # (U,) external user ids, ascending
    video_offsets: np.ndarray  # (U+1,)
    video: np.ndarray  # (N,) video index
    video_time: np.ndarray  # (N,) seconds
    comment_offsets: np.ndarray  # (U+1,)
    comment_video: np.ndarray  # (Nc,) video index of each comment-history record
    comment_time: np.ndarray  # (Nc,)
    comment_top: np.ndarray  # (Nc, M) up to M engaged comments, most-engaged first, 0 = pad
    positive_offsets: np.ndarray  # (Nc+1,) all engaged comments of each record (CSR)
    positives: np.ndarray  # (P,)

    @property
    def n_users(self) -> int:
        return int(self.user_ids.shape[0])

    def n_video_events(self) -> np.ndarray:
        return np.diff(self.video_offsets)

    def n_comment_records(self) -> np.ndarray:
        return np.diff(self.comment_offsets)

    def user_rows(self, user_ids) -> np.ndarray:
        """Row of each external user id; -1 where unknown."""
        ids = np.asarray(user_ids, np.int64)
        pos = np.clip(np.searchsorted(self.user_ids, ids), 0, max(self.n_users - 1, 0))
        ok = (self.n_users > 0) & (self.user_ids[pos] == ids) if self.n_users else np.zeros(ids.shape, bool)
        return np.where(ok, pos, -1)

    def fingerprint(self) -> str:
        """sha256 of every event array: identifies the data a model was trained/evaluated on."""
        h = hashlib.sha256()
        for arr in (self.user_ids, self.video_offsets, self.video, self.video_time, self.comment_offsets,
                    self.comment_video, self.comment_time, self.comment_top, self.positive_offsets,
                    self.positives):
            h.update(np.ascontiguousarray(arr).tobytes())
            h.update(str(arr.shape).encode())
        return h.hexdigest()

    def user_videos(self, row: int) -> np.ndarray:
        return self.video[self.video_offsets[row]:self.video_offsets[row + 1]]

    def user_video_times(self, row: int) -> np.ndarray:
        return self.video_time[self.video_offsets[row]:self.video_offsets[row + 1]]

    def record_positives(self, record: int) -> np.ndarray:
        return self.positives[self.positive_offsets[record]:self.positive_offsets[record + 1]]

    def head(self, n_video: np.ndarray, n_comment: np.ndarray) -> EventLog:
        """Keep the first n_video[u] video events and n_comment[u] comment records of each user."""
        n_video = np.minimum(np.asarray(n_video, np.int64), self.n_video_events())
        n_comment = np.minimum(np.asarray(n_comment, np.int64), self.n_comment_records())
        vkeep = np.zeros(self.video.shape[0], bool)
        ckeep = np.zeros(self.comment_video.shape[0], bool)
        for u in range(self.n_users):
            vkeep[self.video_offsets[u]:self.video_offsets[u] + n_video[u]] = True
            ckeep[self.comment_offsets[u]:self.comment_offsets[u] + n_comment[u]] = True
        pcount = np.diff(self.positive_offsets)[ckeep]
        pkeep = np.repeat(ckeep, np.diff(self.positive_offsets))
        return EventLog(
            self.user_ids.copy(),
            np.concatenate([[0], np.cumsum(n_video)]).astype(np.int64),
            self.video[vkeep], self.video_time[vkeep],
            np.concatenate([[0], np.cumsum(n_comment)]).astype(np.int64),
            self.comment_video[ckeep], self.comment_time[ckeep], self.comment_top[ckeep],
            np.concatenate([[0], np.cumsum(pcount)]).astype(np.int64), self.positives[pkeep],
        )

    def histories(self, rows, device: torch.device | str = "cpu", before=None) -> UserHistories:
        """Pack the users at `rows` into a `UserHistories` (padding at the end, L and Lc >= 1). `before`
        (one time per row) keeps only each row's events strictly before its time: what a query at that
        time may read, so a model is never handed a later event (evaluation passes its query times)."""
        rows = np.asarray(rows, np.int64)
        B = rows.shape[0]
        nv = self.n_video_events()[rows]
        nc = self.n_comment_records()[rows]
        if before is not None:
            before = np.broadcast_to(np.asarray(before, np.float64), rows.shape)
            nv = np.array([np.searchsorted(self.video_time[self.video_offsets[u]:self.video_offsets[u + 1]], t, "left")
                           for u, t in zip(rows, before, strict=True)], np.int64).reshape(rows.shape)
            nc = np.array([np.searchsorted(self.comment_time[self.comment_offsets[u]:self.comment_offsets[u + 1]], t,
                                           "left") for u, t in zip(rows, before, strict=True)], np.int64
                          ).reshape(rows.shape)
        L, Lc, M = max(1, int(nv.max(initial=0))), max(1, int(nc.max(initial=0))), self.comment_top.shape[1]
        vid = np.zeros((B, L), np.int64)
        vt = np.full((B, L), np.inf)
        cv = np.zeros((B, Lc), np.int64)
        ct = np.full((B, Lc), np.inf)
        cc = np.zeros((B, Lc, M), np.int64)
        for b, u in enumerate(rows):
            s, n = self.video_offsets[u], nv[b]
            vid[b, :n] = self.video[s:s + n]
            vt[b, :n] = self.video_time[s:s + n]
            s, n = self.comment_offsets[u], nc[b]
            cv[b, :n] = self.comment_video[s:s + n]
            ct[b, :n] = self.comment_time[s:s + n]
            cc[b, :n] = self.comment_top[s:s + n]
        t = torch.from_numpy
        return UserHistories(t(vid), t(vt), t(cv), t(cc), t(ct)).to(device)


def build_event_log(
    catalogue: Catalogue,
    requests: pa.Table | pd.DataFrame,
    impressions: pa.Table | pd.DataFrame,
    videos: pa.Table | pd.DataFrame | None = None,
    comment_impressions: pa.Table | pd.DataFrame | None = None,
    config: HistoryConfig | None = None,
) -> EventLog:
    """Derive every user's video and comment history from the log tables (see module docstring).

    `videos` supplies `duration_s` for the watch rule (without it only `liked` and
    `watch_time_s >= min_watch_s` count). Videos or comments unknown to `catalogue` are dropped.
    """
    cfg = config or HistoryConfig()
    req = _df(requests, "requests", ["request_id", "user_id", "ts"]).copy()
    req["time"] = _seconds(req["ts"])
    req = req[["request_id", "user_id", "time"]]
    imp = _df(impressions, "impressions", ["request_id", "video_id", "position", "watch_time_s", "liked"])
    imp = imp.merge(req, on="request_id", how="inner")
    threshold = np.full(len(imp), cfg.min_watch_s)
    vdf = _df(videos, "videos", ["video_id", "duration_s"])
    if vdf is not None:
        dur = imp[["video_id"]].merge(vdf, on="video_id", how="left")["duration_s"].to_numpy(np.float64)
        threshold = np.where(np.isnan(dur), threshold, np.minimum(dur, cfg.min_watch_s))
    engaged = imp["liked"].to_numpy(bool) | (imp["watch_time_s"].to_numpy(np.float64) >= threshold)
    ev = imp.loc[engaged, ["user_id", "time", "request_id", "position", "video_id"]].copy()
    ev["v"] = catalogue.video_index(ev["video_id"].to_numpy())
    ev = ev[ev["v"] > 0]

    cev = None
    if comment_impressions is not None and len(comment_impressions) and catalogue.n_comments:
        ci = _df(comment_impressions, "comment_impressions",
                 ["request_id", "video_id", "comment_id", "dwell_s", "liked", "replied"])
        ci = ci.merge(req, on="request_id", how="inner")
        liked, replied = ci["liked"].to_numpy(bool), ci["replied"].to_numpy(bool)
        keep = liked | replied | (ci["dwell_s"].to_numpy(np.float64) >= cfg.min_dwell_s)
        cev = ci.loc[keep, ["user_id", "time", "request_id", "video_id", "comment_id", "dwell_s"]].copy()
        cev["score"] = 2 * replied[keep].astype(int) + liked[keep].astype(int)
        cev["v"] = catalogue.video_index(cev["video_id"].to_numpy())
        cev["c"] = catalogue.comment_index(cev["comment_id"].to_numpy())
        cev = cev[(cev["v"] > 0) & (cev["c"] > 0)]

    users = np.unique(np.concatenate([
        ev["user_id"].to_numpy(np.int64),
        cev["user_id"].to_numpy(np.int64) if cev is not None else np.zeros(0, np.int64),
    ]))
    U = users.shape[0]
    ev = ev.sort_values(["user_id", "time", "request_id", "position"], kind="stable")
    vrows = np.searchsorted(users, ev["user_id"].to_numpy(np.int64))
    M = cfg.max_comments
    if cev is None or len(cev) == 0:
        return EventLog(users, _offsets(vrows, U), ev["v"].to_numpy(np.int64), ev["time"].to_numpy(np.float64),
                        np.zeros(U + 1, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros((0, M), np.int64),
                        np.zeros(1, np.int64), np.zeros(0, np.int64))
    cev = cev.sort_values(["user_id", "time", "request_id", "v", "score", "dwell_s", "c"],
                          ascending=[True, True, True, True, False, False, True], kind="stable")
    cev = cev.drop_duplicates(["user_id", "request_id", "v", "c"])
    key = cev[["user_id", "request_id", "v"]].to_numpy(np.int64)
    new = np.ones(len(cev), bool)
    new[1:] = (key[1:] != key[:-1]).any(1)
    rec_id = np.cumsum(new) - 1
    n_rec = int(new.sum())
    first = np.flatnonzero(new)
    rank = np.arange(len(cev)) - first[rec_id]
    top = np.zeros((n_rec, M), np.int64)
    sel = rank < M
    top[rec_id[sel], rank[sel]] = cev["c"].to_numpy(np.int64)[sel]
    crows = np.searchsorted(users, key[first, 0])
    return EventLog(
        users, _offsets(vrows, U), ev["v"].to_numpy(np.int64), ev["time"].to_numpy(np.float64),
        _offsets(crows, U), key[first, 2].copy(), cev["time"].to_numpy(np.float64)[first], top,
        np.concatenate([[0], np.cumsum(np.bincount(rec_id, minlength=n_rec))]).astype(np.int64),
        cev["c"].to_numpy(np.int64),
    )


def event_log_from_tables(catalogue: Catalogue, tables: dict, config: HistoryConfig | None = None) -> EventLog:
    """`build_event_log` over a dict of log tables keyed by schema name (missing optional ones ok)."""
    for name in ("requests", "impressions"):
        if tables.get(name) is None:
            raise ValueError(f"the logs lack the {name!r} table, needed to build histories")
    return build_event_log(catalogue, tables["requests"], tables["impressions"], tables.get("videos"),
                           tables.get("comment_impressions"), config)


@dataclass
class EvalTargets:
    """One split's evaluation queries (video and comment tasks), over rows of the full EventLog."""

    video: pd.DataFrame  # user_row, user_id, time, target
    comment: pd.DataFrame  # user_row, user_id, time, video, record (index into the full log's records)


@dataclass
class Splits:
    full: EventLog  # every event: evaluation histories (cut at each query's time)
    train: EventLog  # each user's events before the user's first held-out query
    valid: EvalTargets
    test: EvalTargets
    likes: CommentLikes | None = None  # comment like counts as of any time; None = the catalogue's snapshot
    # (V+1,) the videos published by the data's last request (`available_videos`), index 0 False; None = every
    # video. Trained on data cut before later uploads, a model must not meet those uploads as training or
    # validation negatives: that would teach it the future catalogue (and to rank new uploads last)
    available: np.ndarray | None = None

    def later_uploads(self, device: torch.device | str = "cpu") -> torch.Tensor | None:
        """(V+1,) True at the videos `available` leaves out: the columns a training softmax masks; None = none."""
        return None if self.available is None else torch.from_numpy(~self.available).to(device)


def first_query_times(n_users: int, *targets: pd.DataFrame) -> np.ndarray:
    """(U,) each user's earliest query time over the target tables (user_row, time); +inf for none."""
    first = np.full(n_users, np.inf)
    for t in targets:
        np.minimum.at(first, t["user_row"].to_numpy(np.int64), t["time"].to_numpy(np.float64))
    return first


def events_before(log: EventLog, cut: np.ndarray) -> EventLog:
    """Each user's video events and comment records strictly before the user's `cut` (U,) time."""
    vrow = np.repeat(np.arange(log.n_users), log.n_video_events())
    crow = np.repeat(np.arange(log.n_users), log.n_comment_records())
    n_video = np.bincount(vrow, weights=log.video_time < cut[vrow], minlength=log.n_users).astype(np.int64)
    n_comment = np.bincount(crow, weights=log.comment_time < cut[crow], minlength=log.n_users).astype(np.int64)
    return log.head(n_video, n_comment)  # events are time-sorted within a user: those before are a prefix


def leave_one_out(log: EventLog, min_video_events: int = 3, min_comment_records: int = 2) -> Splits:
    """Leave-one-out by time per user (see the module docstring); training stops at each user's first
    held-out query of either task."""
    nv, nc = log.n_video_events(), log.n_comment_records()
    v_ok = np.flatnonzero(nv >= min_video_events)
    c_ok = np.flatnonzero(nc >= min_comment_records)

    def video_targets(back: int) -> pd.DataFrame:
        idx = log.video_offsets[v_ok + 1] - back
        return pd.DataFrame({"user_row": v_ok, "user_id": log.user_ids[v_ok], "time": log.video_time[idx],
                             "target": log.video[idx]})

    def comment_targets(back: int) -> pd.DataFrame:
        idx = log.comment_offsets[c_ok + 1] - back
        return pd.DataFrame({"user_row": c_ok, "user_id": log.user_ids[c_ok], "time": log.comment_time[idx],
                             "video": log.comment_video[idx], "record": idx})

    valid = EvalTargets(video_targets(2), comment_targets(2))
    test = EvalTargets(video_targets(1), comment_targets(1))
    first = first_query_times(log.n_users, valid.video, valid.comment, test.video, test.comment)
    return Splits(log, events_before(log, first), valid, test)


@dataclass
class PreparedData:
    """Everything the models need from one set of logs: catalogue, event log and splits."""

    catalogue: Catalogue
    splits: Splits

    @property
    def fingerprint(self) -> str:
        """Identifies the model-relevant content: the event log's and the catalogue's digests."""
        return hashlib.sha256((self.splits.full.fingerprint() + self.catalogue.digest()).encode()).hexdigest()


def prepare_data(tables: dict, config: HistoryConfig | None = None) -> PreparedData:
    """Catalogue + histories + leave-one-out splits from a dict of log tables (schema names)."""
    if tables.get("videos") is None:
        raise ValueError("the logs lack the 'videos' table, needed to build the catalogue")
    from models.likes import CommentLikes

    catalogue = Catalogue.from_tables(tables["videos"], tables.get("comments"))
    log = event_log_from_tables(catalogue, tables, config)
    if log.n_users == 0:
        raise ModelInputError("the logs hold no engaged video event (liked or watched); nothing to train or evaluate")
    splits = leave_one_out(log)
    splits.likes = CommentLikes.from_tables(catalogue, tables["requests"], tables.get("comment_impressions"))
    splits.available = available_videos(catalogue, tables)
    return PreparedData(catalogue, splits)


def available_videos(catalogue: Catalogue, tables: dict) -> np.ndarray | None:
    """`Splits.available`: the videos whose `videos.published_at` is not after the last request of `tables`
    (None when that is all of them). Only a known upload time counts: without `published_at` every video is
    available, as before (a video the logs never showed may still have existed)."""
    videos, requests = tables["videos"], tables["requests"]
    vdf = videos.to_pandas() if isinstance(videos, pa.Table) else videos
    ts = requests.column("ts").to_pandas() if isinstance(requests, pa.Table) else requests["ts"]
    if "published_at" not in vdf.columns or len(ts) == 0:
        return None
    later = vdf[vdf["published_at"].notna()]
    later = later[_seconds(later["published_at"]) > float(_seconds(ts).max())]
    if later.empty:
        return None
    available = np.ones(catalogue.n_videos + 1, bool)
    available[0] = False
    available[catalogue.video_index(later["video_id"].to_numpy(np.int64))] = False
    return available
