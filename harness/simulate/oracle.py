"""Ground truth of a synthetic world: the expected value of every metric, for any ranking policy.

All expectations are exact (closed forms, exact Plackett-Luce marginals), vectorised with numpy, and
computed from the same outcome laws the generator samples from (outcomes.py):

* per (user, time, video), given the slot is examined:
    E[watch] = D [exp(mu + sigma^2/2) Phi(-(mu + sigma^2)/sigma) + Phi(mu/sigma)],  p_like, p_open,
    E[comment watch] = p_open * sum_c E_c E[dwell_uc],  E[comment interactions] = p_open * sum_c E_c
    (p_like_uc + p_reply_uc), with E_c the comment's exposure under the logging comment ranking;
* per request and slate v_0..v_{k-1}: sum_j P(reach j) * (the above for v_j), P(reach j) top-down
  under the cascade (prod_{i<j} E[continue after v_i]; outcomes.reach_probs) or exam_decay^j under
  the position model; a slate or comment ranking that repeats an item is refused;
* under the logging policy: with world v1's mechanics (position examination, whole-slate random
  exposure) exactly, sum_v sum_j P(v at j) exam_decay^j f(v) with the PL marginal matrix
  (plackett_luce.marginals), conditional on the logged `is_random` flag (uniform requests: 1/n). Under
  the cascade the value of a slate is not linear in its items' marginals, and the exact expectation
  over Plackett-Luce slates sums over n!/(n-k)! orders, so it is a Monte-Carlo average of EXACT slate
  values over slates drawn from the logging mechanism (PL plus random slots), with its standard error.

Everything is conditional on the logged requests: which requests a user made (sessions a user left
early end sooner) is taken from the logs, as every per-request off-policy estimator does.

Metric names match the per-unit metrics: watch_time_s, video_interactions (likes), opened_comments,
comment_watch_time_s, comment_interactions (comment likes + replies).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.simulate import outcomes as oc
from harness.simulate import plackett_luce as pl
from harness.simulate.generate import DAY_S, US
from harness.simulate.policy import logging_log_weights, random_pool_draw, request_keys
from harness.simulate.world import World

METRICS = ("watch_time_s", "video_interactions", "opened_comments", "comment_watch_time_s",
           "comment_interactions")


def _as_us(ts: np.ndarray) -> np.ndarray:
    ts = np.asarray(ts)
    if np.issubdtype(ts.dtype, np.datetime64):
        return ts.astype("datetime64[us]").astype(np.int64)
    return ts.astype(np.int64)


@dataclass
class Oracle:
    """The world plus the logged requests (user, ts, is_random) and candidate sets."""

    world: World
    request_ids: np.ndarray  # sorted
    request_user: np.ndarray
    request_ts_us: np.ndarray  # microseconds since the Unix epoch
    request_random: np.ndarray
    candidates: np.ndarray | None = None  # (R, n) video ids, rows aligned with request_ids
    # the users' logged watches (satiation): pair key user * V + video and time in seconds since EPOCH,
    # sorted by (pair, time); None = no satiation history (every video fresh)
    watch_pair: np.ndarray | None = None
    watch_s: np.ndarray | None = None

    @classmethod
    def from_dataset(cls, path: Path | str, *, load_candidates: bool = True) -> Oracle:
        from harness.logs.store import LogStore

        world = World.load(path)
        with LogStore.open(Path(path), validate=False) as store:
            req = store.query("SELECT r.request_id, r.user_id, epoch_us(r.ts) AS ts_us, "
                              "coalesce(bool_or(i.is_random), false) AS is_random FROM requests r "
                              "LEFT JOIN impressions i USING (request_id) "
                              "GROUP BY ALL ORDER BY r.request_id").to_pydict()
            cands = None
            if load_candidates:
                c = store.query("SELECT request_id, video_id FROM candidates "
                                "ORDER BY request_id, video_id").to_pydict()
                n = world.config.candidates
                rid = np.asarray(c["request_id"], dtype=np.int64)
                if len(rid) != n * len(req["request_id"]) or (
                        len(rid) and not np.array_equal(rid[::n], np.asarray(req["request_id"]))):
                    raise ValueError(f"{path}: every request needs exactly {n} candidates for the oracle")
                cands = np.asarray(c["video_id"], dtype=np.int64).reshape(-1, n)
            h = store.query("SELECT r.user_id, i.video_id, epoch_us(r.ts) AS ts_us FROM impressions i "
                            "JOIN requests r USING (request_id) WHERE i.watch_time_s > 0").to_pydict()
        pair = np.asarray(h["user_id"], dtype=np.int64) * world.n_videos + np.asarray(h["video_id"], dtype=np.int64)
        secs = (np.asarray(h["ts_us"], dtype=np.int64) - world.epoch.astype(np.int64)) / 1e6
        order = np.lexsort((secs, pair))
        return cls(world=world, request_ids=np.asarray(req["request_id"], dtype=np.int64),
                   request_user=np.asarray(req["user_id"], dtype=np.int64),
                   request_ts_us=np.asarray(req["ts_us"], dtype=np.int64),
                   request_random=np.asarray(req["is_random"], dtype=bool), candidates=cands,
                   watch_pair=pair[order], watch_s=secs[order])

    @property
    def request_keys(self) -> np.ndarray:
        return request_keys(self.request_user, self.request_ts_us)

    # -- helpers --------------------------------------------------------------------------------
    def tfrac(self, ts: np.ndarray) -> np.ndarray:
        """Time as a fraction of the logged period (drift clock), from datetime64 or Unix us."""
        epoch = self.world.epoch.astype(np.int64)
        return (_as_us(ts) - epoch) / (US * DAY_S * self.world.config.days)

    def days_since_watch(self, user_ids: np.ndarray, ts: np.ndarray, video_ids: np.ndarray) -> np.ndarray:
        """Days since each user last watched each video strictly before `ts` in the logs (NaN: never)."""
        users = np.asarray(user_ids, dtype=np.int64)
        vids = np.asarray(video_ids, dtype=np.int64)
        secs = (_as_us(ts) - self.world.epoch.astype(np.int64)) / 1e6
        uu = users if vids.ndim == 1 else users[:, None]
        ss = secs if vids.ndim == 1 else secs[:, None]
        out = np.full(vids.shape, np.nan)
        if self.watch_pair is None or self.watch_s is None or not len(self.watch_pair):
            return out
        pair = np.broadcast_to(uu * self.world.n_videos + vids, vids.shape).ravel()
        q = np.broadcast_to(ss, vids.shape).ravel()
        lo = np.searchsorted(self.watch_pair, pair, side="left")
        hi = np.searchsorted(self.watch_pair, pair, side="right")
        # the last watch of the pair strictly before q: search q within the pair's block [lo, hi)
        pos = lo + _block_searchsorted(self.watch_s, lo, hi, q)  # first index with time >= q
        has = pos > lo
        flat = out.ravel()
        flat[has] = (q[has] - self.watch_s[pos[has] - 1]) / DAY_S
        return flat.reshape(vids.shape)

    def affinities(self, user_ids: np.ndarray, ts: np.ndarray, video_ids: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
        """(s_uv, d_uv) at request time, s lowered by satiation from the user's logged watches."""
        s, d = oc.video_affinities(self.world, np.asarray(user_ids, dtype=np.int64), self.tfrac(ts),
                                   np.asarray(video_ids, dtype=np.int64))
        return s - oc.satiation(self.world, self.days_since_watch(user_ids, ts, video_ids)), d

    def _day(self, rows: np.ndarray) -> np.ndarray:
        """Logged day (0 = EPOCH's) of each request row: which videos were published."""
        epoch = self.world.epoch.astype(np.int64)
        return (self.request_ts_us[rows] - epoch) // int(US * DAY_S)

    def _rows(self, request_ids: np.ndarray) -> np.ndarray:
        request_ids = np.asarray(request_ids, dtype=np.int64)
        pos = np.searchsorted(self.request_ids, request_ids)
        pos = np.minimum(pos, len(self.request_ids) - 1)
        bad = self.request_ids[pos] != request_ids
        if np.any(bad):
            raise KeyError(f"unknown request_id {int(request_ids[bad][0])} ({int(bad.sum())} unknown)")
        return pos

    def _check_ids(self, what: str, ids: np.ndarray, n: int) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= n):
            raise KeyError(f"{what} must lie in [0, {n}); got values in [{ids.min()}, {ids.max()}]")
        return ids

    # -- expectations ---------------------------------------------------------------------------
    def video_expectations(self, user_ids: np.ndarray, ts: np.ndarray, video_ids: np.ndarray
                           ) -> dict[str, np.ndarray]:
        """Per (user, time, video), given the video is examined, under the logging comment ranking.

        user_ids and ts (R,); video_ids (R,) or (R, n). Returns arrays shaped like video_ids:
        watch_time_s, p_like (= video_interactions), p_open (= opened_comments),
        comment_watch_time_s and comment_interactions (both include the p_open factor).
        """
        w = self.world
        users = self._check_ids("user_ids", user_ids, w.n_users)
        vids = self._check_ids("video_ids", video_ids, w.n_videos)
        s, d = self.affinities(users, ts, vids)
        po = oc.p_open(w, users, vids, d)
        uu = np.broadcast_to(users[:, None], vids.shape) if vids.ndim == 2 else users
        cw, ci = oc.comment_section_under_logging(w, uu.ravel(), vids.ravel())
        return {
            "watch_time_s": oc.expected_watch(w, s, w.duration_s[vids]),
            "p_like": oc.p_like(w, s),
            "p_open": po,
            "comment_watch_time_s": po * cw.reshape(vids.shape),
            "comment_interactions": po * ci.reshape(vids.shape),
        }

    def comment_expectations(self, user_ids: np.ndarray, video_ids: np.ndarray,
                             comment_rankings: np.ndarray, mask: np.ndarray | None = None
                             ) -> dict[str, np.ndarray]:
        """Given the section of video_ids[r] is opened and shows comment_rankings[r] in that order.

        comment_rankings (R, m) comment ids (-1 or mask False = no comment); only the first
        comment_list_size ranks are shown. Returns per row: comment_watch_time_s,
        comment_interactions, comment_likes, comment_replies (expected, given the section is open).
        Comments must belong to the row's video.
        """
        w = self.world
        b = w.config.behaviour
        rk = np.asarray(comment_rankings, dtype=np.int64)
        users = self._check_ids("user_ids", user_ids, w.n_users)
        vids = self._check_ids("video_ids", video_ids, w.n_videos)
        valid = rk >= 0 if mask is None else (np.asarray(mask, dtype=bool) & (rk >= 0))
        valid = valid & (np.arange(rk.shape[1])[None, :] < b.comment_list_size)
        cid = np.where(valid, rk, 0)
        self._check_ids("comment_rankings", cid, w.n_comments)
        if np.any(valid & (w.comment_video[cid] != vids[:, None])):
            raise ValueError("comment_rankings hold a comment that is not under the row's video")
        _refuse_duplicates("comment_rankings", np.where(valid, rk, -1))
        a = oc.comment_affinity(w, users, cid)
        laws = oc.comment_laws(w, a, cid)
        ex = np.where(valid, oc.exam_probs(b.comment_exam_decay, rk.shape[1])[None, :], 0.0)
        likes = (ex * laws["p_like"]).sum(axis=1)
        replies = (ex * laws["p_reply"]).sum(axis=1)
        return {"comment_watch_time_s": (ex * laws["dwell"]).sum(axis=1),
                "comment_interactions": likes + replies, "comment_likes": likes, "comment_replies": replies}

    def _per_video(self, rows: np.ndarray, vids: np.ndarray, comment_rankings: np.ndarray | None
                   ) -> dict[str, np.ndarray]:
        users, ts = self.request_user[rows], self.request_ts_us[rows]
        e = self.video_expectations(users, ts, vids)
        out = {"watch_time_s": e["watch_time_s"], "video_interactions": e["p_like"],
               "opened_comments": e["p_open"], "comment_watch_time_s": e["comment_watch_time_s"],
               "comment_interactions": e["comment_interactions"]}
        if comment_rankings is not None:
            cr = np.asarray(comment_rankings, dtype=np.int64)
            if cr.ndim != 3 or cr.shape[:2] != vids.shape:
                raise ValueError(f"comment_rankings must have shape (R, k, m) = {vids.shape + ('m',)}, "
                                 f"got {cr.shape}")
            R, k, m = cr.shape
            c = self.comment_expectations(np.repeat(users, k), vids.ravel(), cr.reshape(R * k, m))
            out["comment_watch_time_s"] = e["p_open"] * c["comment_watch_time_s"].reshape(R, k)
            out["comment_interactions"] = e["p_open"] * c["comment_interactions"].reshape(R, k)
        return out

    def slate_value(self, request_ids: np.ndarray, slates: np.ndarray,
                    comment_rankings: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Expected metrics per request for ANY slate (R, k) of video ids shown in that order.

        Position examination included (slot j reached with probability exam_decay^j). Comment
        rankings (R, k, m) of comment ids (-1 padding) per shown video; None = the logging comment
        ranking.
        """
        rows = self._rows(request_ids)
        vids = self._check_ids("slates", slates, self.world.n_videos)
        if vids.ndim != 2 or vids.shape[0] != len(rows):
            raise ValueError(f"slates must have shape (len(request_ids), k), got {vids.shape}")
        _refuse_duplicates("slates", vids)
        per = self._per_video(rows, vids, comment_rankings)
        s, _ = self.affinities(self.request_user[rows], self.request_ts_us[rows], vids)
        reach = oc.reach_probs(self.world, s)
        return {m: (reach * per[m]).sum(axis=1) for m in METRICS}

    def reach(self, request_ids: np.ndarray, slates: np.ndarray) -> np.ndarray:
        """P(slot j of the slate is examined), (R, k): top-down under the cascade."""
        rows = self._rows(request_ids)
        vids = self._check_ids("slates", slates, self.world.n_videos)
        s, _ = self.affinities(self.request_user[rows], self.request_ts_us[rows], vids)
        return oc.reach_probs(self.world, s)

    def logging_policy_value(self, request_ids: np.ndarray, chunk: int = 4096, *, samples: int = 256,
                             seed: int = 0) -> dict[str, np.ndarray]:
        """Expected metrics per request under the logging policy's own randomness.

        Exact for world v1's mechanics (position examination and whole-slate random exposure):
        sum_v sum_j P(v at j) exam_decay^j f(v) with the PL marginal matrix for policy traffic and 1/n for
        random-exposure requests (the logged flag is kept). Otherwise (cascade, random slots) the mean of
        exact slate values over `samples` slates per request drawn from the logging mechanism, with
        `<metric>_se`, the Monte-Carlo standard error of each request's value.
        """
        if self.candidates is None:
            raise ValueError("this oracle was loaded without candidates (load_candidates=False)")
        cfg = self.world.config
        rows_all = self._rows(request_ids)
        exact = cfg.behaviour.examination == "position" and (cfg.random_mode == "slate" or cfg.random_share == 0)
        out = {m: np.empty(len(rows_all)) for m in METRICS}
        if not exact:
            out.update({f"{m}_se": np.empty(len(rows_all)) for m in METRICS})
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0x0AC1E, seed]))
        for s in range(0, len(rows_all), chunk):
            rows = rows_all[s:s + chunk]
            part = self._exact_logging_value(rows) if exact else self._sampled_logging_value(rows, samples, rng)
            for m, v in part.items():
                out[m][s:s + chunk] = v
        return out

    def _logging_weights(self, rows: np.ndarray) -> np.ndarray:
        assert self.candidates is not None
        users, ts = self.request_user[rows], self.request_ts_us[rows]
        return logging_log_weights(self.world, users, self.tfrac(ts), request_keys(users, ts), self.candidates[rows])

    def _exact_logging_value(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        assert self.candidates is not None
        cfg = self.world.config
        ex = oc.exam_probs(cfg.behaviour.exam_decay, cfg.slate_size)
        cands = self.candidates[rows]
        lw = self._logging_weights(rows)
        expo = np.full(cands.shape, ex.sum() / cfg.candidates)  # uniform: sum_j e_j / n
        pol = ~self.request_random[rows]
        if pol.any():
            wt = np.exp(lw[pol] - lw[pol].max(axis=1, keepdims=True))
            expo[pol] = pl.marginals(wt, cfg.slate_size) @ ex
        per = self._per_video(rows, cands, None)
        return {m: (expo * per[m]).sum(axis=1) for m in METRICS}

    def _sampled_logging_value(self, rows: np.ndarray, samples: int, rng: np.random.Generator
                               ) -> dict[str, np.ndarray]:
        """Mean and standard error of exact slate values over slates drawn as the generator draws them."""
        assert self.candidates is not None
        w, cfg = self.world, self.world.config
        k, n = cfg.slate_size, cfg.candidates
        cands = self.candidates[rows]
        users = self.request_user[rows]
        lw = self._logging_weights(rows)
        if cfg.random_mode == "slate":
            lw = np.where(self.request_random[rows][:, None], 0.0, lw)
        per = self._per_video(rows, cands, None)  # f for every candidate, (R, n)
        ts = self.request_ts_us[rows]
        s_c, _ = self.affinities(users, ts, cands)
        total = {m: np.zeros(len(rows)) for m in METRICS}
        square = {m: np.zeros(len(rows)) for m in METRICS}
        for _ in range(samples):
            cols = pl.sample_slates(lw, k, rng)
            s_sl = np.take_along_axis(s_c, cols, axis=1)
            f = {m: np.take_along_axis(per[m], cols, axis=1) for m in METRICS}
            if cfg.random_mode == "slot" and cfg.random_share > 0:
                rnd = rng.random((len(rows), k)) < cfg.random_share
                rr = np.flatnonzero(rnd.any(axis=1))
                if len(rr):
                    pub = w.published_by(self._day(rows[rr]))
                    pool = random_pool_draw(cands[rr], pub, rng.integers(0, (pub - n)[:, None], size=(len(rr), k)))
                    pv = self._per_video(rows[rr], pool, None)
                    sp, _ = self.affinities(users[rr], ts[rr], pool)
                    s_sl[rr] = np.where(rnd[rr], sp, s_sl[rr])
                    for m in METRICS:
                        f[m][rr] = np.where(rnd[rr], pv[m], f[m][rr])
            reach = oc.reach_probs(w, s_sl)
            for m in METRICS:
                v = (reach * f[m]).sum(axis=1)
                total[m] += v
                square[m] += v * v
        out: dict[str, np.ndarray] = {}
        for m in METRICS:
            mean = total[m] / samples
            var = np.maximum(square[m] / samples - mean**2, 0.0) * samples / max(samples - 1, 1)
            out[m], out[f"{m}_se"] = mean, np.sqrt(var / samples)
        return out


def _block_searchsorted(values: np.ndarray, lo: np.ndarray, hi: np.ndarray, q: np.ndarray) -> np.ndarray:
    """For each query, the offset within values[lo:hi] (sorted) of the first element >= q: a vectorised
    binary search over per-query blocks."""
    left = np.zeros_like(lo)
    right = hi - lo
    while True:
        active = left < right
        if not active.any():
            return left
        mid = (left + right) // 2
        go_right = active & (values[np.minimum(lo + mid, len(values) - 1)] < q)
        left = np.where(go_right, mid + 1, left)
        right = np.where(active & ~go_right, mid, right)


def _refuse_duplicates(what: str, items: np.ndarray) -> None:
    """A slate (or comment list) shows each item once; a repeat would be credited twice."""
    a = np.sort(np.asarray(items), axis=-1)
    dup = (a[..., 1:] == a[..., :-1]) & (a[..., 1:] >= 0)
    if dup.any():
        row = int(np.argwhere(dup)[0][0])
        raise ValueError(f"{what} row {row} shows an item more than once ({a[row][1:][dup[row]][0]}); a slate "
                         "shows each item once: de-duplicate it (production feeds do)")
