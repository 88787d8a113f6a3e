"""The replayed window as aligned arrays: requests, their logged slates, candidates and comment lists.

Layout (R requests of the window, sorted by (user_id, ts, request_id) so each user's requests are
contiguous and in time order; every array's first axis is aligned with it):

* slates: (R, k) logged videos by slot with their rewards, the logged item-at-slot marginal `pscore`
  (`impressions.propensity`), the sequential `slot_pscore` (`impressions.slot_propensity`, an extra
  column the synthetic world writes: P(item at slot j | the items at slots < j)) and `is_random`;
* candidates: (R, n) candidate video ids (sorted by id) and, when the logs carry it, the logging
  policy's log-weight per candidate (`candidates.logging_score`, an extra column of the world);
* comments: one row per logged comment impression, with the request row and slot of its video.

Every request must show k slots 0..k-1 and have n candidates (the synthetic world's feeds do); logs
with ragged slates get a clear error rather than a silently padded estimate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.logs.store import LogStore
from harness.logs.window import event_range


class ReplayDataError(ValueError):
    """Logs that cannot be replayed as asked (the message says what is missing and what to do)."""


@dataclass
class ReplayData:
    request_id: np.ndarray  # (R,)
    user_id: np.ndarray  # (R,)
    ts_us: np.ndarray  # (R,) microseconds since the Unix epoch
    video: np.ndarray  # (R, k) logged video ids
    pscore: np.ndarray  # (R, k) item-at-slot marginal propensity of the logging policy
    slot_pscore: np.ndarray | None  # (R, k) sequential propensity; None when the logs lack it
    is_random: np.ndarray  # (R, k)
    rewards: dict[str, np.ndarray]  # metric -> (R, k) per-slot reward
    examined: np.ndarray  # (R, k) the slot was played (watch time > 0): the cascade's observed reach
    candidates: np.ndarray  # (R, n) candidate video ids
    logging_score: np.ndarray | None  # (R, n) logging log-weights, None when the logs lack them
    # comment impressions (flat, one row per shown comment)
    c_row: np.ndarray  # request row
    c_slot: np.ndarray  # slot of the section's video in the request's slate
    c_comment: np.ndarray
    c_position: np.ndarray
    c_pscore: np.ndarray
    c_rewards: dict[str, np.ndarray]  # comment_watch_time_s (dwell), comment_interactions (liked + replied)
    window_start: np.datetime64
    window_end: np.datetime64 | None

    @property
    def n_requests(self) -> int:
        return int(self.request_id.shape[0])

    @property
    def k(self) -> int:
        return int(self.video.shape[1])

    def user_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Distinct users (ascending) and offsets (U+1,) of their contiguous request rows."""
        users, starts = np.unique(self.user_id, return_index=True)
        return users, np.append(starts, self.n_requests)

    def seconds(self) -> np.ndarray:
        return self.ts_us / 1e6


VIDEO_REWARDS = {"watch_time_s": "watch_time_s", "video_interactions": "liked"}


def load_window(store: LogStore, start: np.datetime64, end: np.datetime64 | None = None) -> ReplayData:
    """Read requests with start <= ts < end (end None: to the end of the logs) into `ReplayData`."""
    rng = event_range(store, start=start, before=end)
    if rng.requests == 0:
        raise ReplayDataError(f"no request of {store.path} lies in the replay window [{start}, "
                              f"{end or 'end of logs'}); pick a window start within the logs (they run "
                              f"from {event_range(store).first} to {event_range(store).last})")
    have_imp = set(store.query("SELECT * FROM impressions LIMIT 0").column_names)
    have_cand = set(store.query("SELECT * FROM candidates LIMIT 0").column_names)
    slot_col = "i.slot_propensity" if "slot_propensity" in have_imp else "NULL::DOUBLE AS slot_propensity"
    params = [start.astype("datetime64[us]").item()]
    end_sql = ""
    if end is not None:
        end_sql = " AND r.ts < ?"
        params.append(end.astype("datetime64[us]").item())
    win = f"r.ts >= ?{end_sql}"
    req = store.query(f"SELECT r.request_id, r.user_id, epoch_us(r.ts) AS ts_us FROM requests r WHERE {win} "
                      "ORDER BY r.user_id, r.ts, r.request_id", params).to_pandas()
    imp = store.query(
        f"SELECT i.request_id, i.position, i.video_id, i.propensity, {slot_col}, i.is_random, i.watch_time_s, "
        "i.liked, i.opened_comments, i.comment_watch_time_s FROM impressions i JOIN requests r USING (request_id) "
        f"WHERE {win} ORDER BY i.request_id, i.position", params).to_pandas()
    R = len(req)
    order = pd.Series(np.arange(R), index=req["request_id"].to_numpy())
    counts = imp.groupby("request_id").size()
    k = int(counts.max()) if len(counts) else 0
    if k == 0 or len(counts) != R or (counts != k).any():
        bad = counts.index[counts != k][:1].tolist() or sorted(set(order.index) - set(counts.index))[:1]
        raise ReplayDataError(f"every replayed request must show the same number of slots with positions 0..k-1; "
                              f"request {bad[0] if bad else '?'} differs (slates of {sorted(set(counts))} slots). "
                              "Replay needs complete logged slates.")
    rows = order[imp["request_id"].to_numpy()].to_numpy()
    pos = imp["position"].to_numpy(np.int64)
    if pos.min() < 0 or pos.max() >= k:
        raise ReplayDataError(f"impression positions must lie in 0..{k - 1}; found {pos.min()}..{pos.max()}")

    def grid(col: str, dtype=np.float64) -> np.ndarray:
        out = np.zeros((R, k), dtype=dtype)
        out[rows, pos] = imp[col].to_numpy(dtype)
        return out

    prop = imp["propensity"]
    if prop.isna().any():
        first = imp.loc[prop.isna(), ["request_id", "position"]].iloc[0]
        raise ReplayDataError(f"impressions.propensity is null (first: request {first['request_id']}, position "
                              f"{first['position']}): off-policy estimates need the logging policy's propensity "
                              "of every shown video. Replay logs that record it (the synthetic world does).")
    has_slot = imp["slot_propensity"].notna().all()
    cands = store.query(
        "SELECT c.request_id, c.video_id" + (", c.logging_score" if "logging_score" in have_cand else "") +
        f" FROM candidates c JOIN requests r USING (request_id) WHERE {win} ORDER BY c.request_id, c.video_id",
        params).to_pandas()
    ccount = cands.groupby("request_id").size()
    n = int(ccount.max()) if len(ccount) else 0
    if n == 0 or len(ccount) != R or (ccount != n).any():
        raise ReplayDataError("every replayed request needs its candidate set, all of one size (the `candidates` "
                              f"table; found {len(ccount)} of {R} requests with candidates, sizes "
                              f"{sorted(set(ccount))[:5]}): a target policy ranks the candidates the logging "
                              "policy ranked. Replay logs that record them (the synthetic world does).")
    crow = order[cands["request_id"].to_numpy()].to_numpy()
    by_row = np.argsort(crow, kind="stable")  # rows in replay order, videos ascending within each
    cand = cands["video_id"].to_numpy(np.int64)[by_row].reshape(R, n)
    score = None
    if "logging_score" in cands.columns:
        score = cands["logging_score"].to_numpy(np.float64)[by_row].reshape(R, n)

    ci = store.query(
        "SELECT c.request_id, c.video_id, c.comment_id, c.position, c.propensity, c.dwell_s, c.liked, c.replied "
        f"FROM comment_impressions c JOIN requests r USING (request_id) WHERE {win} "
        "ORDER BY c.request_id, c.video_id, c.position", params).to_pandas()
    if ci["propensity"].isna().any():
        raise ReplayDataError("comment_impressions.propensity is null: the comment metrics' estimates need the "
                              "logging comment ranking's propensities")
    c_row = order[ci["request_id"].to_numpy()].to_numpy() if len(ci) else np.zeros(0, np.int64)
    video = grid("video_id", np.int64)
    match = video[c_row] == ci["video_id"].to_numpy(np.int64)[:, None]
    if len(ci) and not match.any(axis=1).all():
        raise ReplayDataError("a comment impression's video is not in its request's slate")
    c_slot = match.argmax(axis=1) if len(ci) else np.zeros(0, np.int64)
    c_rew = {"comment_watch_time_s": ci["dwell_s"].to_numpy(np.float64),
             "comment_interactions": (ci["liked"].to_numpy(bool).astype(np.float64)
                                      + ci["replied"].to_numpy(bool).astype(np.float64))}
    rewards = {"watch_time_s": grid("watch_time_s"), "video_interactions": grid("liked"),
               "comment_watch_time_s": grid("comment_watch_time_s")}
    ci_slot = np.zeros((R, k))
    np.add.at(ci_slot, (c_row, c_slot), c_rew["comment_interactions"])
    rewards["comment_interactions"] = ci_slot
    return ReplayData(
        request_id=req["request_id"].to_numpy(np.int64), user_id=req["user_id"].to_numpy(np.int64),
        ts_us=req["ts_us"].to_numpy(np.int64), video=video, pscore=grid("propensity"),
        slot_pscore=grid("slot_propensity") if has_slot else None, is_random=grid("is_random", bool),
        rewards=rewards, examined=grid("watch_time_s") > 0, candidates=cand, logging_score=score,
        c_row=c_row, c_slot=c_slot, c_comment=ci["comment_id"].to_numpy(np.int64),
        c_position=ci["position"].to_numpy(np.int64), c_pscore=ci["propensity"].to_numpy(np.float64),
        c_rewards=c_rew, window_start=start, window_end=end,
    )


def open_logs(path: Path) -> LogStore:
    if not path.exists():
        raise ReplayDataError(f"--data {path} does not exist; create logs with `harness simulate --out {path}`")
    return LogStore.open(path)
