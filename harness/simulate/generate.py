"""Logged sessions: requests in sessions, candidates, slates, outcomes, comment sections; chunked by users.

Calendar: day 0 starts at EPOCH (2023-10-01); days [0, pre_days) are the pre-period, [pre_days, days)
the experiment. A user is active from max(signup_day, 0). On each active day the number of sessions
is Poisson(lambda_u); session i of n starts at 06:00 + (i + U/2) * 18h / n; it holds
min(Geometric(requests_per_session_p), max_requests_per_session) requests, spaced 30 s + Exp(mean 90 s)
apart. Requests are sorted by (user, ts) before ids are assigned, so ids order each user's history.

Each request: retrieval, the logging policy and random exposure as in policy.py; then outcomes as in
outcomes.py: the user scrolls the slate top-down (cascade: goes on after each video with a probability
that rises with satisfaction, else leaves the request; `examination="position"` is world v1's
independent exam_decay^j); a user who leaves a request early ends the session with probability
leave_session_p, and the session's later requests are dropped (request ids are assigned after that, so
they stay dense and ordered). An opened comment section shows the top comment_list_size comments of a
Plackett-Luce draw of the logging comment ranking, each examined with probability comment_exam_decay^rank.

Memory: users are processed in chunks of `chunk_users` with one random generator per chunk
(SeedSequence([seed, chunk])), so peak memory grows with the output, not with per-row Python objects.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from harness.logs.schema import TABLES
from harness.simulate import outcomes as oc
from harness.simulate import plackett_luce as pl
from harness.simulate.config import WorldConfig
from harness.simulate.policy import (
    SOURCES,
    Retrieval,
    draw_slates,
    logging_log_weights,
    random_pool_draw,
    request_keys,
)
from harness.simulate.world import World

DAY_S = 86400.0
US = 10**6
COMMENT_BLOCK = 2_000_000  # padded cells per block of opened comment sections (memory bound)


@dataclass
class Summary:
    """Row counts and the resulting rates (compare with the Kuaishou targets in the docs)."""

    rows: dict[str, int]
    rates: dict[str, float]
    targets: dict[str, float] = field(default_factory=lambda: {
        "comment_open_rate": 0.13, "comment_interactions_per_open": 0.06, "random_share": 0.0037})

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "rates": self.rates, "targets": self.targets}


def _sessions(world: World, users: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Requests of a chunk of users, sorted by (user, ts): user, ts_us, local session index."""
    cfg, b = world.config, world.config.behaviour
    D = cfg.days
    n_sess = rng.poisson(world.activity[users][:, None], size=(len(users), D))
    n_sess[np.arange(D)[None, :] < world.signup_day[users][:, None]] = 0
    uu, dd = np.nonzero(n_sess)
    cnt = n_sess[uu, dd]
    s_user = np.repeat(users[uu], cnt)
    s_day = np.repeat(dd, cnt)
    s_n = np.repeat(cnt, cnt)
    s_i = np.arange(len(s_user)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    start = s_day * DAY_S + 6 * 3600 + (s_i + 0.5 * rng.random(len(s_user))) * (18 * 3600 / s_n)
    n_req = np.minimum(rng.geometric(b.requests_per_session_p, size=len(s_user)), b.max_requests_per_session)
    r_sess = np.repeat(np.arange(len(s_user)), n_req)
    gaps = 30.0 + rng.exponential(90.0, size=len(r_sess))
    csum = np.cumsum(gaps)
    first = np.repeat(np.cumsum(n_req) - n_req, n_req)
    offset = csum - csum[first]  # 0 for a session's first request
    ts = np.round((start[r_sess] + offset) * US).astype(np.int64)
    user = s_user[r_sess]
    order = np.lexsort((ts, user))
    return {"user": user[order], "ts": ts[order], "session": r_sess[order]}


def _comment_sections(world: World, users: np.ndarray, videos: np.ndarray, rng: np.random.Generator
                      ) -> dict[str, np.ndarray]:
    """Ranked, shown and engaged comments for opened sections (one row per opened impression)."""
    b = world.config.behaviour
    off = world.comment_offsets
    m = off[videos + 1] - off[videos]
    n_open = len(videos)
    if n_open == 0:
        return {k: np.zeros(0, dtype=t) for k, t in (("row", np.int64), ("comment", np.int64),
                ("position", np.int64), ("propensity", float), ("dwell", float), ("liked", bool),
                ("replied", bool))}
    variant = world.comment_variant(users, videos)  # the user's personalised ranking of this section
    lw_by_variant = (world.comment_log_weights(0), world.comment_log_weights(1))
    # Sections are drawn in blocks of similar size (sorted by comment count), so a block's padded
    # (rows x largest section) matrix stays small even with 1,000-comment sections in the mix.
    order = np.argsort(m, kind="stable")
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    start = 0
    while start < n_open:
        stop = start + 1
        while stop < n_open and (stop + 1 - start) * int(m[order[stop]]) <= COMMENT_BLOCK:
            stop += 1
        rows_b = order[start:stop]
        mb = m[rows_b]
        Mx = int(mb.max())
        idx = off[videos[rows_b]][:, None] + np.arange(Mx)[None, :]
        valid = np.arange(Mx)[None, :] < mb[:, None]
        safe = np.minimum(idx, world.n_comments - 1)
        lw = np.where(valid, np.where(variant[rows_b][:, None] == 1, lw_by_variant[1][safe], lw_by_variant[0][safe]),
                      -np.inf)
        Lk = min(Mx, b.comment_list_size)
        pick = pl.sample_slates(lw, Lk, rng)  # (block, Lk)
        r, pos_b = np.nonzero(np.arange(Lk)[None, :] < np.minimum(mb, Lk)[:, None])
        parts.append((rows_b[r], pos_b, idx[r, pick[r, pos_b]]))
        start = stop
    row = np.concatenate([q[0] for q in parts])
    pos = np.concatenate([q[1] for q in parts])
    cid = np.concatenate([q[2] for q in parts])
    sort = np.lexsort((pos, row))  # by opened section, then rank
    row, pos, cid = row[sort], pos[sort], cid[sort]
    prop = np.where(variant[row] == 1, world.comment_marginals(1)[cid, pos], world.comment_marginals(0)[cid, pos])
    exam = rng.random(len(row)) < b.comment_exam_decay ** pos
    a = oc.comment_affinity(world, users[row], cid)
    laws = oc.comment_laws(world, a, cid)
    dwell = np.where(exam, np.exp(laws["dwell_mu"] + b.dwell_sigma * rng.normal(size=len(row))), 0.0)
    liked = exam & (rng.random(len(row)) < laws["p_like"])
    replied = exam & (rng.random(len(row)) < laws["p_reply"])
    return {"row": row, "comment": cid, "position": pos, "propensity": np.clip(prop, 1e-300, 1.0),
            "dwell": dwell, "liked": liked, "replied": replied}


def _examine(world: World, s: np.ndarray, dur: np.ndarray, rng: np.random.Generator
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(examined, watch seconds, left early) for slates with affinities s (R, k); outcomes.py has the laws."""
    b = world.config.behaviour
    R, k = s.shape
    watch, completed = oc.watch_time(world, s, dur, rng.normal(size=(R, k)))
    if b.examination == "position":
        examined = rng.random((R, k)) < oc.exam_probs(b.exam_decay, k)[None, :]
        return examined, np.where(examined, watch, 0.0), np.zeros(R, dtype=bool)
    examined = np.zeros((R, k), dtype=bool)
    alive = np.ones(R, dtype=bool)
    go_on = rng.random((R, k)) < oc.continue_given(world, s, completed.astype(float))
    for j in range(k):  # top-down: slot j is seen only if the user went on after every earlier slot
        examined[:, j] = alive
        alive = alive & go_on[:, j]
    left_early = ~examined[:, -1] if k else np.zeros(R, dtype=bool)
    return examined, np.where(examined, watch, 0.0), left_early


def _rank_within(groups: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within runs of equal values (rows sorted so that each group is contiguous)."""
    if not len(groups):
        return np.zeros(0, dtype=np.int64)
    first = np.r_[True, groups[1:] != groups[:-1]]
    start = np.maximum.accumulate(np.where(first, np.arange(len(groups)), 0))
    return np.arange(len(groups)) - start


def _draw_feed(world: World, retrieval: Retrieval, ses: dict[str, np.ndarray], rng: np.random.Generator,
               workers: int) -> dict[str, np.ndarray]:
    """Candidates, slates, random slots and propensities of every request, session by session in order:
    a request does not retrieve what its session already showed (`exclude`), as production feeds do."""
    cfg = world.config
    u, R, k, n = ses["user"], len(ses["user"]), cfg.slate_size, cfg.candidates
    ts_abs = world.epoch.astype(np.int64) + ses["ts"]
    tfrac = ses["ts"] / (US * DAY_S * cfg.days)
    day = ses["ts"] // int(US * DAY_S)
    published = world.published_by(day)  # videos 0..published-1 exist at the request
    slate_random = (rng.random(R) < cfg.random_share) if cfg.random_mode == "slate" else np.zeros(R, dtype=bool)
    cands = np.empty((R, n), dtype=np.int64)
    source = np.empty((R, n), dtype=np.int8)
    log_w = np.empty((R, n))
    vids = np.empty((R, k), dtype=np.int64)
    prop = np.empty((R, k))
    slot = np.empty((R, k))
    within = _rank_within(ses["session"])  # the request's index in its session
    local = np.unique(ses["session"], return_inverse=True)[1]
    shown = np.full((int(local.max(initial=-1)) + 1, (int(within.max(initial=0)) + 1) * k), -1, dtype=np.int64)
    for r in range(int(within.max(initial=-1)) + 1):
        rows = np.flatnonzero(within == r)
        excl = shown[local[rows], : r * k]
        cands[rows], source[rows] = retrieval.candidates(u[rows], tfrac[rows], day[rows], rng, exclude=excl)
        log_w[rows] = logging_log_weights(world, u[rows], tfrac[rows], request_keys(u[rows], ts_abs[rows]), cands[rows])
        cols, prop[rows], slot[rows] = draw_slates(log_w[rows], slate_random[rows], k, rng, workers)
        vids[rows] = np.take_along_axis(cands[rows], cols, axis=1)
        shown[local[rows], r * k:(r + 1) * k] = vids[rows]
    if cfg.random_mode == "slot":  # single slots from the catalogue outside the candidates
        rho = cfg.random_share
        is_random = rng.random((R, k)) < rho
        rr = np.flatnonzero(is_random.any(axis=1))
        if len(rr):
            draws = rng.integers(0, (published[rr] - n)[:, None], size=(len(rr), k))
            pool = random_pool_draw(cands[rr], published[rr], draws)
            vids[rr] = np.where(is_random[rr], pool, vids[rr])
        p_pool = (rho / (published - n))[:, None]
        prop = np.where(is_random, p_pool, (1 - rho) * prop)
        slot = np.where(is_random, p_pool, (1 - rho) * slot)
    else:
        is_random = np.ascontiguousarray(np.broadcast_to(slate_random[:, None], (R, k)))
    return {"ts_abs": ts_abs, "tfrac": tfrac, "cands": cands, "source": source, "log_w": log_w, "vids": vids,
            "prop": prop, "slot": slot, "is_random": is_random}


def _previous_same_pair(users: np.ndarray, vids: np.ndarray) -> np.ndarray:
    """For each impression (rows in time order per user), the flat index of the user's previous
    impression of the same video, -1 if none."""
    R, k = vids.shape
    flat_pair = users[:, None].astype(np.int64) * (int(vids.max(initial=0)) + 1) + vids
    idx = np.arange(R * k).reshape(R, k)
    order = np.lexsort((idx.ravel(), flat_pair.ravel()))
    fp = flat_pair.ravel()[order]
    prev = np.full(R * k, -1, dtype=np.int64)
    same = np.r_[False, fp[1:] == fp[:-1]]
    prev[order[same]] = order[np.flatnonzero(same) - 1]
    return prev


def _outcomes(world: World, ses: dict[str, np.ndarray], feed: dict[str, np.ndarray], rng: np.random.Generator
              ) -> dict[str, np.ndarray]:
    """What users did, request by request in each user's time order: satiation reads the user's own
    earlier watches of the same video, and a user who leaves a request early ends the session with
    probability leave_session_p (the session's later requests never happen: `kept`)."""
    b = world.config.behaviour
    u, vids = ses["user"], feed["vids"]
    R, k = vids.shape
    s_all, d_all = oc.video_affinities(world, u, feed["tfrac"], vids)
    dur = world.duration_s[vids]
    prev = _previous_same_pair(u, vids).reshape(R, k)
    last_watch = np.full(R * k, np.nan)  # per impression: time of the most recent watch of its pair so far
    ts_day = feed["ts_abs"] / (US * DAY_S)
    examined = np.zeros((R, k), dtype=bool)
    watch = np.zeros((R, k))
    liked = np.zeros((R, k), dtype=bool)
    opened = np.zeros((R, k), dtype=bool)
    kept = np.zeros(R, dtype=bool)
    local = np.unique(ses["session"], return_inverse=True)[1] if R else np.zeros(0, dtype=np.int64)
    ended = np.zeros(int(local.max(initial=-1)) + 1, dtype=bool)
    turn = _rank_within(u)  # the request's index among its user's requests
    by_turn = np.argsort(turn, kind="stable")  # rows grouped by turn, in row order within each
    bounds = np.searchsorted(turn[by_turn], np.arange(int(turn.max(initial=-1)) + 2))
    for i in range(len(bounds) - 1):
        rows = by_turn[bounds[i]:bounds[i + 1]]
        gone = rows[ended[local[rows]]]  # requests of a session already ended: they never happen
        if len(gone):  # ... but the pair's watch history passes through them unchanged
            p = prev[gone]
            last_watch[(gone[:, None] * k + np.arange(k)[None, :])] = np.where(p >= 0, last_watch[np.maximum(p, 0)],
                                                                              np.nan)
        rows = rows[~ended[local[rows]]]
        if not len(rows):
            continue
        kept[rows] = True
        p = prev[rows]
        before = np.where(p >= 0, last_watch[np.maximum(p, 0)], np.nan)
        s = s_all[rows] - oc.satiation(world, ts_day[rows][:, None] - before)
        ex, w, left = _examine(world, s, dur[rows], rng)
        examined[rows], watch[rows] = ex, w
        liked[rows] = ex & (rng.random(ex.shape) < oc.p_like(world, s))
        opened[rows] = ex & (rng.random(ex.shape) < oc.p_open(world, u[rows], vids[rows], d_all[rows]))
        flat = (rows[:, None] * k + np.arange(k)[None, :])
        last_watch[flat] = np.where(ex, ts_day[rows][:, None], before)
        ends = left & (rng.random(len(rows)) < b.leave_session_p)
        ended[local[rows[ends]]] = True
    return {"examined": examined, "watch": watch, "liked": liked, "opened": opened, "kept": kept}


def _chunk(world: World, retrieval: Retrieval, users: np.ndarray, rng: np.random.Generator,
           first_request: int, first_session: int, workers: int = 1) -> dict[str, dict[str, np.ndarray]]:
    cfg = world.config
    ses = _sessions(world, users, rng)
    R, k, n = len(ses["user"]), cfg.slate_size, cfg.candidates
    u = ses["user"]
    feed = _draw_feed(world, retrieval, ses, rng, workers)
    vids = feed["vids"]
    out = _outcomes(world, ses, feed, rng)
    keep, opened = out["kept"], out["opened"]
    o_r, o_j = np.nonzero(opened)
    cs = _comment_sections(world, u[o_r], vids[o_r, o_j], rng)
    cwatch = np.zeros((R, k))
    cwatch[o_r, o_j] = np.bincount(cs["row"], weights=cs["dwell"], minlength=len(o_r))
    kept = np.flatnonzero(keep)
    new_id = np.full(R, -1, dtype=np.int64)
    new_id[kept] = first_request + np.arange(len(kept))
    req_ids = new_id[kept]
    c_req = o_r[cs["row"]]
    c_keep = keep[c_req]
    c_vid = vids[o_r, o_j][cs["row"]]

    def rows(a: np.ndarray) -> np.ndarray:
        return a[kept].ravel()

    return {
        "requests": {"request_id": req_ids, "user_id": u[kept], "ts": feed["ts_abs"][kept],
                     "session_id": first_session + ses["session"][kept]},
        "impressions": {
            "request_id": np.repeat(req_ids, k), "video_id": rows(vids),
            "position": np.tile(np.arange(k, dtype=np.int32), len(kept)), "propensity": rows(feed["prop"]),
            "is_random": rows(feed["is_random"]), "watch_time_s": rows(out["watch"]),
            "liked": rows(out["liked"]), "opened_comments": rows(opened), "comment_watch_time_s": rows(cwatch),
            "slot_propensity": rows(feed["slot"]),
        },
        "candidates": {"request_id": np.repeat(req_ids, n), "video_id": rows(feed["cands"]),
                       "source": rows(feed["source"]), "logging_score": rows(feed["log_w"])},
        "comment_impressions": {
            "request_id": new_id[c_req[c_keep]], "video_id": c_vid[c_keep],
            "comment_id": cs["comment"][c_keep], "position": cs["position"][c_keep].astype(np.int32),
            "propensity": cs["propensity"][c_keep], "dwell_s": cs["dwell"][c_keep], "liked": cs["liked"][c_keep],
            "replied": cs["replied"][c_keep],
        },
        "_n_sessions": {"n": np.asarray([int(ses["session"].max()) + 1 if R else 0])},
    }


def iter_chunks(world: World) -> Iterator[tuple[int, np.ndarray]]:
    n, step = world.n_users, world.config.chunk_users
    for i, s in enumerate(range(0, n, step)):
        yield i, np.arange(s, min(s + step, n))


def _to_table(name: str, cols: dict[str, Any]) -> pa.Table:
    schema = TABLES[name]
    arrays, fields = [], []
    for c in schema.columns:
        v = cols[c.name]
        if isinstance(v, pa.Array | pa.ChunkedArray):
            arr = v.cast(c.type)
        elif c.type == pa.timestamp("us"):
            arr = pa.array(v.astype("datetime64[us]"), type=c.type)
        else:
            arr = pa.array(v, type=c.type)
        arrays.append(arr)
        fields.append(pa.field(c.name, c.type, nullable=c.nullable))
    for extra, values in cols.items():
        if extra not in schema.column_names:
            arr = values if isinstance(values, pa.Array) else pa.array(values)
            arrays.append(arr)
            fields.append(pa.field(extra, arr.type, nullable=False))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def generate(config: WorldConfig, *, progress: bool = False, workers: int | None = None
             ) -> tuple[World, dict[str, pa.Table], Summary]:
    """Build the world and simulate its logged sessions in memory: (world, the seven tables, summary).

    `workers` threads (default: up to 2) share the exact Plackett-Luce marginals; the output does
    not depend on it.
    """
    from tqdm import tqdm

    workers = pl.default_workers() if workers is None else max(1, int(workers))
    world = World.build(config, workers=workers)
    retrieval = Retrieval(world)
    parts: dict[str, list[dict[str, np.ndarray]]] = {}
    next_req, next_sess = 0, 0
    n_chunks = -(-world.n_users // config.chunk_users)
    for i, users in tqdm(iter_chunks(world), total=n_chunks, desc="simulating", unit="chunk",
                         disable=not progress):
        rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0xC4A2, i]))
        out = _chunk(world, retrieval, users, rng, next_req, next_sess, workers)
        next_req += len(out["requests"]["request_id"])
        next_sess += int(out.pop("_n_sessions")["n"][0])
        for name, cols in out.items():
            parts.setdefault(name, []).append(cols)
    world.drop_caches()  # the comment marginal matrix (C x list size) is not needed any more
    # concatenate column by column, releasing each column's chunk parts as soon as it is joined, so
    # the peak holds the logs about once (not chunk parts + concatenation)
    logs: dict[str, dict[str, np.ndarray]] = {}
    for name, ps in parts.items():
        logs[name] = {c: np.concatenate([p.pop(c) for p in ps]) for c in list(ps[0])}
    del parts
    logs["candidates"]["source"] = pa.DictionaryArray.from_arrays(
        pa.array(logs["candidates"]["source"], type=pa.int8()), pa.array(SOURCES))
    tables = {name: _to_table(name, cols) for name, cols in logs.items()}
    tables.update(_static_tables(world, logs))
    return world, tables, _summary(world, tables, logs)


def observed_segments(world: World, logs: dict[str, dict[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(activity_level, comment_level) per user from what the pre-period logs show, never from hidden
    parameters: activity = tertiles of pre-period requests per day among users active then; comment use =
    the share of pre-period impressions whose comment section the user opened (rare < 2%, frequent >=
    15%, else occasional). Users without pre-period activity get None (a new or dormant user)."""
    pre = world.config.pre_days
    assert pre is not None
    req = logs["requests"]
    cutoff = world.experiment_start.astype(np.int64)
    in_pre = req["ts"] < cutoff
    n_req = np.bincount(req["user_id"][in_pre], minlength=world.n_users).astype(float)
    imp = logs["impressions"]
    req_user = np.full(int(req["request_id"].max(initial=-1)) + 1, -1, dtype=np.int64)
    req_user[req["request_id"]] = np.where(in_pre, req["user_id"], -1)
    iu = req_user[imp["request_id"]]
    pre_imp = iu >= 0
    shown = np.bincount(iu[pre_imp], minlength=world.n_users).astype(float)
    opened = np.bincount(iu[pre_imp], weights=imp["opened_comments"][pre_imp].astype(float),
                         minlength=world.n_users).astype(float)  # float even when nothing is in the pre-period
    active = n_req > 0
    per_day = n_req / max(pre, 1)
    activity = np.full(world.n_users, None, dtype=object)
    if active.any():
        q1, q2 = np.quantile(per_day[active], [1 / 3, 2 / 3])
        activity[active] = np.where(per_day[active] < q1, "low", np.where(per_day[active] < q2, "medium", "high"))
    rate = np.divide(opened, shown, out=np.zeros_like(opened), where=shown > 0)
    comment = np.full(world.n_users, None, dtype=object)
    comment[active] = np.where(rate[active] < 0.02, "rare", np.where(rate[active] < 0.15, "occasional", "frequent"))
    return activity, comment


def _static_tables(world: World, logs: dict[str, dict[str, np.ndarray]]) -> dict[str, pa.Table]:
    assert world.titles is not None and world.comment_texts is not None
    activity_level, comment_level = observed_segments(world, logs)
    pre = world.config.pre_days
    assert pre is not None
    return {
        "users": _to_table("users", {
            "user_id": np.arange(world.n_users), "activity_level": activity_level,
            "comment_level": comment_level, "signup_day": (world.signup_day - pre).astype(np.int32)}),
        "videos": _to_table("videos", {
            "video_id": np.arange(world.n_videos), "title": world.titles,
            "duration_s": world.duration_s, "author_id": world.author,
            # when the video was uploaded (world v2): what a platform knows about its catalogue
            "published_at": pa.array((world.epoch.astype(np.int64) + world.publish_day * int(DAY_S * US)
                                      ).astype("datetime64[us]"), type=pa.timestamp("us"))}),
        "comments": _to_table("comments", {
            "comment_id": np.arange(world.n_comments), "video_id": world.comment_video,
            "text": world.comment_texts, "like_count": world.comment_likes}),
    }


def _summary(world: World, tables: dict[str, pa.Table], logs: dict[str, dict[str, np.ndarray]]) -> Summary:
    imp, ci = logs["impressions"], logs["comment_impressions"]
    n_imp = len(imp["request_id"])
    opens = int(imp["opened_comments"].sum())
    inter = int(ci["liked"].sum() + ci["replied"].sum())
    rates = {
        "comment_open_rate": opens / max(n_imp, 1),
        "comment_interactions_per_open": inter / max(opens, 1),
        "random_share": float(imp["is_random"].mean()) if n_imp else 0.0,
        "like_rate": float(imp["liked"].mean()) if n_imp else 0.0,
        "mean_watch_time_s": float(imp["watch_time_s"].mean()) if n_imp else 0.0,
        "comment_watch_time_s_per_open": float(imp["comment_watch_time_s"].sum()) / max(opens, 1),
        "impressions_per_user_day": n_imp / max(world.n_users * world.config.days, 1),
    }
    return Summary(rows={n: t.num_rows for n, t in tables.items()}, rates=rates)


def simulate(config: WorldConfig, out: Path | str, *, fmt: Literal["parquet", "duckdb"] = "parquet",
             overwrite: bool = False, progress: bool = False, workers: int | None = None
             ) -> tuple[Path, Summary]:
    """Generate a world and write its logged sessions plus its parameters to `out` (atomically)."""
    from harness.logs.store import write_logs

    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True (--overwrite) to replace it")
    world, tables, summary = generate(config, progress=progress, workers=workers)
    path = write_logs(tables, out, fmt=fmt, extra_files=world.to_files(), overwrite=overwrite)
    return path, summary
