"""Retrieval and the logging (production) policy, with exact propensities.

Retrieval: each request gets n = `candidates` distinct videos, drawn as a mix (in draw order, so the
mix survives de-duplication): a share `interest_share` interest-matched (topic ~ pi_u(t), then a video
of that primary topic with probability proportional to popularity), `popular_share` popular (video with
probability proportional to popularity over the catalogue), the rest uniform random. 1.6x oversampling;
duplicates are dropped keeping the first occurrence; rare short rows are topped up with uniform videos.
Videos already shown in the request's session are not retrieved, unless the published videos the session
has not shown are fewer than n (a small catalogue): then every unshown one is taken and the rest re-shown,
least recently shown first (docs/synthetic-world.md).

Logging policy (a noisy production scorer): score_rv = s_uv(t) + score_noise * eps_rv, with
eps_rv ~ N(0, 1) a deterministic hash of (seed, user, request time, video_id); the slate is a
Plackett-Luce top-k draw with weights exp(score / temperature); the candidates table logs every
candidate's log weight (`logging_score`), as a production system logs its scores, so marginal and
pseudoinverse estimators are possible; `propensity` = exact marginal P(video at its slot)
(plackett_luce.slate_marginals). Random exposure, `random_mode`:
* "slot" (default, as KuaiRand): each slot is, with probability random_share, replaced by a video drawn
  uniformly from the catalogue outside the request's candidates (support beyond the candidate set);
  propensity = random_share / (V - n) there and (1 - random_share) x the PL marginal elsewhere.
* "slate" (world v1): a share random_share of requests show a uniformly random top-k of the candidates:
  each candidate is at each slot with probability 1/n.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtri

from harness.simulate import plackett_luce as pl
from harness.simulate.outcomes import interest_z, video_affinities
from harness.simulate.world import World

SOURCES = ("interest", "popular", "random")
OVERSAMPLE = 1.6
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser (Steele et al. 2014), vectorised on uint64 with wrap-around arithmetic."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def request_keys(users: np.ndarray, ts_us: np.ndarray) -> np.ndarray:
    """A request's noise key from what the logs hold about it: (user, time in Unix microseconds).

    Not the request id: sessions a user leaves are cut after the slates are drawn, which renumbers the
    requests, while (user, ts) never changes."""
    with np.errstate(over="ignore"):
        return _splitmix64(np.asarray(users).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
                           ^ np.asarray(ts_us).astype(np.uint64))


def score_noise(seed: int, keys: np.ndarray, video_ids: np.ndarray) -> np.ndarray:
    """Standard-normal noise eps(seed, request key, video): a counter-based hash, reproducible anywhere."""
    key = _splitmix64(np.uint64(seed) ^ np.uint64(0xC0FFEE))
    h = _splitmix64(key ^ np.asarray(keys).astype(np.uint64))
    h = _splitmix64(h ^ np.asarray(video_ids).astype(np.uint64))
    u = ((h >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
    return ndtri(u)


def logging_log_weights(world: World, users: np.ndarray, tfrac: np.ndarray, keys: np.ndarray,
                        cands: np.ndarray) -> np.ndarray:
    """log PL weights of the logging policy for candidates (R, n): (s_uv + noise) / temperature.

    `keys` from `request_keys(user, ts)`. These are the `logging_score`s the candidates table logs.
    """
    b = world.config.behaviour
    s, _ = video_affinities(world, users, tfrac, cands)
    eps = score_noise(world.config.seed, np.broadcast_to(np.asarray(keys)[:, None], cands.shape), cands)
    return (s + b.score_noise * eps) / b.temperature


def random_pool_draw(cands: np.ndarray, n_videos: int | np.ndarray, u: np.ndarray) -> np.ndarray:
    """Uniform draws from the videos NOT among each row's candidates: row r gets the u[r]-th
    (u in [0, n_videos - n)) non-candidate video, by skipping the sorted candidates below it.
    `n_videos` (scalar or per row) is the pool's upper id bound: the videos published that day."""
    sc = np.sort(cands, axis=1)
    shifted = sc - np.arange(sc.shape[1])[None, :]  # non-decreasing: non-candidates below each candidate
    skip = (shifted[:, :, None] <= u[:, None, :]).sum(axis=1)  # (R, m)
    return u + skip


class Retrieval:
    """Candidate generation; precomputes the per-topic popularity tables once per world and day.

    Popularity as retrieval sees it changes by day (`World.retrieval_weight`: unpublished videos 0,
    a ramp-up after upload, a freshness boost), so there is one table per logged day; a request uses
    its day's. The uniform source draws among the videos published by that day (ids 0..count-1).
    """

    def __init__(self, world: World) -> None:
        self.world = world
        order = np.lexsort((np.arange(world.n_videos), world.primary_topic))
        self.by_topic = order  # videos sorted by primary topic
        topic_sorted = world.primary_topic[order]
        K = world.config.topics
        self.topic_start = np.searchsorted(topic_sorted, np.arange(K), side="left")
        self.topic_end = np.searchsorted(topic_sorted, np.arange(K), side="right")
        self.days = world.config.days
        self.published = world.published_by(np.arange(self.days))
        self._tables: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _day_tables(self, day: int) -> tuple[np.ndarray, np.ndarray]:
        """(cumulative weight over the topic-sorted list, cumulative weight over ids) on `day`."""
        if day not in self._tables:
            pop = self.world.retrieval_weight(day)
            self._tables[day] = (np.cumsum(pop[self.by_topic]), np.cumsum(pop))
        return self._tables[day]

    def _pick_in_topic(self, topics: np.ndarray, u: np.ndarray, cum_topic: np.ndarray, published: int
                       ) -> np.ndarray:
        """Inverse-CDF draw of a video of each topic, proportional to the day's retrieval weight.

        Keys are grouped by topic and each group is searched in its own slice of the cumulative
        weight (cache-sized; the global search gave the same index after clipping, slower).
        """
        out = (u * published).astype(np.int64)  # a topic without published videos: a uniform one
        order = np.argsort(topics, kind="stable")
        bounds = np.searchsorted(topics[order], np.arange(self.world.config.topics + 1), side="left")
        for t in range(self.world.config.topics):
            lo_idx, hi_idx = int(self.topic_start[t]), int(self.topic_end[t])
            sel = order[bounds[t]:bounds[t + 1]]
            if lo_idx == hi_idx or not len(sel):
                continue
            cum = cum_topic[lo_idx:hi_idx]
            lo = cum_topic[lo_idx - 1] if lo_idx > 0 else 0.0
            if cum[-1] <= lo:
                continue
            pos = np.searchsorted(cum, lo + u[sel] * (cum[-1] - lo), side="right")
            out[sel] = self.by_topic[lo_idx + np.minimum(pos, hi_idx - lo_idx - 1)]
        return out

    def candidates(self, users: np.ndarray, tfrac: np.ndarray, days: np.ndarray, rng: np.random.Generator,
                   exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Distinct candidate videos (R, n) and their retrieval source index into SOURCES (R, n), each
        request drawing from what is published on its day. `exclude` (R, E), -1 padded: videos a row
        must not retrieve (those already shown in its session: production feeds do not repeat them)."""
        cfg = self.world.config
        n, R = cfg.candidates, len(users)
        cands = np.empty((R, n), dtype=np.int64)
        source = np.empty((R, n), dtype=np.int8)
        for day in np.unique(days):
            rows = np.flatnonzero(days == day)
            cands[rows], source[rows] = self._candidates_on(int(day), users[rows], tfrac[rows], rng,
                                                            None if exclude is None else exclude[rows])
        return cands, source

    def _candidates_on(self, day: int, users: np.ndarray, tfrac: np.ndarray, rng: np.random.Generator,
                       exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.world.config
        b = cfg.behaviour
        V = int(self.published[min(max(day, 0), self.days - 1)])
        cum_topic, cum_pop = self._day_tables(min(max(day, 0), self.days - 1))
        n, R = cfg.candidates, len(users)
        if V < n:
            raise ValueError(f"day {day}: only {V} videos are published, fewer than the {n} candidates a "
                             "request needs; lower new_video_share or --candidates")
        extra = 0 if exclude is None else int((exclude >= 0).sum(axis=1).max(initial=0))
        M = min(int(np.ceil(n * OVERSAMPLE)) + extra, max(n, V))  # room for the session's exclusions
        # source of each draw column, interleaved so every prefix has the target mix
        g = np.mod(np.arange(M) * 0.6180339887498949, 1.0)  # golden-ratio sequence: well mixed
        src = np.where(g < b.interest_share, 0, np.where(g < b.interest_share + b.popular_share, 1, 2))
        src = np.ascontiguousarray(np.broadcast_to(src, (R, M)))
        u = rng.random((R, M))
        # interest: topic ~ pi_u(t) by inverse CDF, then popularity-weighted video of that topic
        pi = np.exp(interest_z(self.world, users, tfrac))
        cdf = np.cumsum(pi / pi.sum(axis=1, keepdims=True), axis=1)
        ut = rng.random((R, M))
        topics = np.zeros((R, M), dtype=np.int64)  # topic = #{k : cdf_k < ut}, one pass per topic
        for k in range(cfg.topics - 1):
            topics += cdf[:, k, None] < ut
        draws = (u * V).astype(np.int64)  # uniform random source: among the published videos
        i_int = src == 0
        draws[i_int] = self._pick_in_topic(topics[i_int], u[i_int], cum_topic, V)
        i_pop = src == 1
        draws[i_pop] = np.minimum(np.searchsorted(cum_pop, u[i_pop] * cum_pop[-1], side="right"), V - 1)
        # keep the first occurrence of each video in draw order
        order = np.argsort(draws, axis=1, kind="stable")
        sd = np.take_along_axis(draws, order, axis=1)
        dup_sorted = np.zeros_like(sd, dtype=bool)
        dup_sorted[:, 1:] = sd[:, 1:] == sd[:, :-1]
        dup = np.empty_like(dup_sorted)
        np.put_along_axis(dup, order, dup_sorted, axis=1)
        if exclude is not None and exclude.size:  # already shown in the session: dropped like a duplicate
            # membership by row-offset keys (memory O(R (M + E)), not the O(R M E) of a broadcast compare)
            width = np.int64(max(V, int(exclude.max(initial=0)) + 1) + 1)
            rows = np.arange(R, dtype=np.int64)[:, None] * width
            banned = (rows + exclude)[exclude >= 0]
            dup |= np.isin(rows + draws, banned)
        keep = np.argsort(dup, axis=1, kind="stable")[:, :n]
        cands = np.take_along_axis(draws, keep, axis=1)
        source = np.take_along_axis(src, keep, axis=1).astype(np.int8)
        short = np.flatnonzero(np.take_along_axis(dup, keep, axis=1).any(axis=1))
        for r in short:  # fewer than n distinct draws; top up with uniform videos not yet there
            have = list(dict.fromkeys(draws[r][~dup[r]].tolist()))
            shown = [] if exclude is None else exclude[r][exclude[r] >= 0].tolist()  # in show order
            pool = np.setdiff1d(np.arange(V), [*have, *shown])
            need = n - len(have)
            if len(pool) >= need:
                extra = rng.choice(pool, size=need, replace=False)
            else:
                # The session has shown so much of a small published catalogue that the unshown videos
                # cannot fill the request (published - shown < n): every unshown one is taken, the rest
                # re-shown from the session, least recently shown first (`exclude` is in show order).
                # Never in worlds with published - n >= the most a session shows before its last
                # request ((max_requests_per_session - 1) x slate_size): the default world (>= 2,100
                # published, <= 114 shown) never gets here, so its logs are unchanged.
                again = [v for v in dict.fromkeys(shown) if v < V][: need - len(pool)]
                extra = np.concatenate([rng.permutation(pool), np.asarray(again, dtype=np.int64)])
            cands[r] = np.concatenate([have, extra])
            source[r] = np.concatenate([source[r][: len(have)], np.full(n - len(have), 2)])
        return cands, source


def draw_slates(log_w: np.ndarray, is_random: np.ndarray, k: int, rng: np.random.Generator,
                workers: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slates (R, k) as column indices into the candidates, marginal and sequential propensities."""
    R, n = log_w.shape
    lw = np.where(is_random[:, None], 0.0, log_w)
    slates = pl.sample_slates(lw, k, rng)
    prop = np.full((R, k), 1.0 / n)
    slot = np.broadcast_to(1.0 / (n - np.arange(k)), (R, k)).copy()
    rows = np.flatnonzero(~is_random)
    if len(rows):
        w = np.exp(lw[rows] - lw[rows].max(axis=1, keepdims=True))
        prop[rows] = pl.slate_marginals(w, slates[rows], workers=workers)
        slot[rows] = pl.slot_propensities(w, slates[rows])
    # a shown item has positive probability; guard against underflow of extreme weights
    tiny = np.finfo(np.float64).tiny
    return slates, np.clip(prop, tiny, 1.0), np.clip(slot, tiny, 1.0)
