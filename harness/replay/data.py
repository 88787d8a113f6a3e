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
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from harness.logs.store import LogStore
from harness.logs.window import event_range

if TYPE_CHECKING:
    from harness.replay.parts import BatchSource


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


def window_users(store: LogStore, start: np.datetime64, end: np.datetime64 | None = None) -> np.ndarray:
    """Distinct users (ascending) with a request in [start, end); a clear error when there is none."""
    rng = event_range(store, start=start, before=end)
    if rng.requests == 0:
        raise ReplayDataError(f"no request of {store.path} lies in the replay window [{start}, "
                              f"{end or 'end of logs'}); pick a window start within the logs (they run "
                              f"from {event_range(store).first} to {event_range(store).last})")
    params = [start.astype("datetime64[us]").item()]
    end_sql = ""
    if end is not None:
        end_sql, params = " AND ts < ?", [*params, end.astype("datetime64[us]").item()]
    got = store.query(f"SELECT DISTINCT user_id FROM requests WHERE ts >= ?{end_sql} ORDER BY 1", params)
    return got.column("user_id").to_numpy().astype(np.int64)


@dataclass(frozen=True)
class WindowFacts:
    """What the logs of the window offer the estimators (checked before any work is stored)."""

    slot_pscore: bool  # impressions.slot_propensity present for every replayed impression
    logging_score: bool  # candidates.logging_score present


def validate_window(store: LogStore, start: np.datetime64, end: np.datetime64 | None = None) -> WindowFacts:
    """Check the whole window with aggregate queries before a run is registered, so bad logs end the command
    with a clear message and nothing stored (load_window repeats the checks per batch)."""
    params: list[Any] = [start.astype("datetime64[us]").item()]
    win = "r.ts >= ?"
    if end is not None:
        win += " AND r.ts < ?"
        params.append(end.astype("datetime64[us]").item())
    have_imp = set(store.query("SELECT * FROM impressions LIMIT 0").column_names)
    have_cand = set(store.query("SELECT * FROM candidates LIMIT 0").column_names)
    bad = store.query(
        "SELECT i.request_id, i.position, i.propensity FROM impressions i JOIN requests r USING (request_id) "
        f"WHERE {win} AND (i.propensity IS NULL OR i.propensity <= 0 OR i.propensity > 1) "
        "ORDER BY r.ts, i.request_id, i.position LIMIT 1", params).to_pylist()
    if bad:
        b = bad[0]
        what = "null" if b["propensity"] is None else f"{b['propensity']:g}"
        raise ReplayDataError(
            f"impressions.propensity is {what} at request {b['request_id']}, position {b['position']}: off-policy "
            "estimates reweight every shown video by 1 / its logging propensity, which must lie in (0, 1]. Fix the "
            "logging of that row or drop the request from the logs")
    no_cand = store.query(
        f"SELECT count(*) AS n, min(r.request_id) AS first FROM requests r WHERE {win} AND NOT EXISTS "
        "(SELECT 1 FROM candidates c WHERE c.request_id = r.request_id)", params).to_pylist()[0]
    if no_cand["n"]:
        raise ReplayDataError(
            f"{no_cand['n']} replayed request(s) have no candidate set (first: request {no_cand['first']}): every "
            "estimator needs the candidates the logging policy ranked, since the target policies rank the same "
            "candidates; no estimator applies to these requests. Replay logs that record `candidates`")
    cbad = store.query(
        "SELECT count(*) AS n FROM comment_impressions c JOIN requests r USING (request_id) "
        f"WHERE {win} AND (c.propensity IS NULL OR c.propensity <= 0 OR c.propensity > 1)", params).to_pylist()[0]
    if cbad["n"]:
        raise ReplayDataError(
            f"{cbad['n']} comment impression(s) of the window have a propensity that is null or outside (0, 1]: the "
            "comment metrics reweight each shown comment by it. Fix those rows or replay other logs")
    slot = "slot_propensity" in have_imp and store.query(
        f"SELECT count(*) AS n FROM impressions i JOIN requests r USING (request_id) WHERE {win} AND "
        "(i.slot_propensity IS NULL OR i.slot_propensity <= 0)", params).to_pylist()[0]["n"] == 0
    return WindowFacts(slot_pscore=bool(slot), logging_score="logging_score" in have_cand)


def load_window(store: LogStore | BatchSource, start: np.datetime64, end: np.datetime64 | None = None, *,
                users: np.ndarray | None = None) -> ReplayData:
    """Read requests with start <= ts < end (end None: to the end of the logs) into `ReplayData`; with
    `users`, only those users' requests (a batch of the window, from the logs or the batch's own rows)."""
    if users is None:
        assert isinstance(store, LogStore), "a batch's rows are read with its users"
        window_users(store, start, end)  # the empty-window error
    elif len(users) == 0:
        raise ReplayDataError("load_window: an empty batch of users")
    have_imp = set(store.query("SELECT * FROM impressions LIMIT 0").column_names)
    have_cand = set(store.query("SELECT * FROM candidates LIMIT 0").column_names)
    slot_col = "i.slot_propensity" if "slot_propensity" in have_imp else "NULL::DOUBLE AS slot_propensity"
    params = [start.astype("datetime64[us]").item()]
    end_sql = ""
    if end is not None:
        end_sql = " AND r.ts < ?"
        params.append(end.astype("datetime64[us]").item())
    win = f"r.ts >= ?{end_sql}"
    if users is not None:
        win += " AND r.user_id IN (SELECT unnest(?::BIGINT[]))"
        params.append([int(u) for u in users])
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


def user_totals(logs: LogStore, lo: np.datetime64 | None, hi: np.datetime64 | None) -> pd.DataFrame:
    """Per-user totals of the four logged outcomes with lo <= ts < hi (None: unbounded): the pre-period
    (CUPED covariates) and the window's on-policy outcomes (the test plan's variance)."""
    cond: list[str] = []
    p: list[Any] = []
    if lo is not None:
        cond.append("r.ts >= ?")
        p.append(lo.astype("datetime64[us]").item())
    if hi is not None:
        cond.append("r.ts < ?")
        p.append(hi.astype("datetime64[us]").item())
    where = (" WHERE " + " AND ".join(cond)) if cond else ""
    v = logs.query("SELECT r.user_id, sum(i.watch_time_s) AS watch_time_s, sum(i.liked::INT)::DOUBLE AS "
                   "video_interactions, sum(i.comment_watch_time_s) AS comment_watch_time_s FROM impressions i "
                   f"JOIN requests r USING (request_id){where} GROUP BY 1", p).to_pandas()
    c = logs.query("SELECT r.user_id, sum(c.liked::INT + c.replied::INT)::DOUBLE AS comment_interactions FROM "
                   f"comment_impressions c JOIN requests r USING (request_id){where} GROUP BY 1", p).to_pandas()
    return v.merge(c, on="user_id", how="outer").set_index("user_id").fillna(0.0)


def open_logs(path: Path) -> LogStore:
    if not path.exists():
        raise ReplayDataError(f"--data {path} does not exist; create logs with `harness simulate --out {path}`")
    return LogStore.open(path)
