"""Target policies built from a model's scores over each request's logged candidates.

* deterministic top-k (`temperature` None, the production case): the k best-scored candidates in
  score order (ties by candidate column, i.e. by video id);
* Plackett-Luce with temperature T: weights exp(score / T), slates drawn without replacement.

What the estimators need, for the LOGGED slate v_0..v_{k-1} of each request (an item outside the
candidates, e.g. a random-exposure slot, has target probability 0):
* `target_prob` (R, k): P_target(v_j at slot j), the item-at-slot marginal (exact: for PL by
  `harness.simulate.plackett_luce.marginals`, never by sampling permutations);
* `slot_target` (R, k): P_target(v_j at slot j | v_0..v_{j-1} at the slots above), so that prefix
  products are the target's probability of the logged prefix. For top-k this is 1{v_j = the target's
  j-th item}: its product is 1 exactly when the logged prefix is the target's own;
* `by_slot` (R, k, k): P_target(v_j at slot l) for every l (the position-based estimator).

The comment list of an opened section is ranked deterministically by the model's comment scores (the
production rule); `temperature` applies to the video slate only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.simulate import plackett_luce as pl


@dataclass(frozen=True)
class SlatePolicy:
    """One target policy's view of the logged requests (see the module docstring)."""

    slate: np.ndarray  # (R, k) the top-k slate as candidate columns (the deterministic policy's slate)
    log_weights: np.ndarray | None  # (R, n) PL log-weights (None: deterministic)
    target_prob: np.ndarray  # (R, k)
    slot_target: np.ndarray  # (R, k)
    by_slot: np.ndarray  # (R, k, k)

    @property
    def deterministic(self) -> bool:
        return self.log_weights is None


def logged_columns(candidates: np.ndarray, logged: np.ndarray) -> np.ndarray:
    """Candidate column of each logged video, (R, k); -1 where the video is not a candidate."""
    eq = logged[:, :, None] == candidates[:, None, :]
    return np.where(eq.any(axis=2), eq.argmax(axis=2), -1)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """(R, k) candidate columns of the k highest scores, best first; ties go to the lower column."""
    order = np.argsort(-scores, axis=1, kind="stable")
    return order[:, :k]


LOG_WEIGHT_FLOOR = 500.0
PL_MAX_PANELS = 400  # ln t_hi <= ~600 with the floor: every row gets the panels its spread needs


def slate_policy(scores: np.ndarray, candidates: np.ndarray, logged: np.ndarray,
                 temperature: float | None = None, *, workers: int = 1) -> SlatePolicy:
    """The target policy of `scores` (R, n) over `candidates` (R, n), evaluated at the logged slates."""
    if temperature is not None and not temperature > 0:
        raise ValueError(f"temperature must be > 0 (or None for deterministic top-k), got {temperature!r}")
    R, n = scores.shape
    k = logged.shape[1]
    if k > n:
        raise ValueError(f"slates of {k} slots need at least {k} candidates, got {n}")
    finite = np.isfinite(scores)
    if not finite.all():
        r = int(np.flatnonzero(~finite.all(axis=1))[0])
        raise ValueError(f"scores must be finite for every candidate (request row {r} has a non-finite score)")
    cols = logged_columns(candidates, logged)
    is_cand = cols >= 0
    safe = np.maximum(cols, 0)
    slate = top_k(scores, k)
    if temperature is None:
        by_slot = (cols[:, :, None] == slate[:, None, :]) & is_cand[:, :, None]
        target_prob = np.take_along_axis(by_slot, np.arange(k)[None, :, None], axis=2)[:, :, 0]
        return SlatePolicy(slate, None, target_prob.astype(np.float64), target_prob.astype(np.float64),
                           by_slot.astype(np.float64))
    logw = scores / temperature
    # floor at -LOG_WEIGHT_FLOOR below the row's best: the exact marginals need every weight representable
    # (exp(-745) underflows to 0, which marks padding); the floor moves only candidates the target shows with
    # probability below e^-500, and the policy evaluated is this floored one everywhere (weights, truth)
    logw = np.maximum(logw - logw.max(axis=1, keepdims=True), -LOG_WEIGHT_FLOOR)
    w = np.exp(logw)
    marg = pl.marginals(w, k, workers=workers, max_panels=PL_MAX_PANELS)  # (R, n, k)
    # quadrature error: a marginal of a very peaked row can land a hair above 1 (or below 0); beyond 1e-6 it
    # would be a real fault, so it is refused rather than clipped
    over = max(float(marg.max()) - 1.0, -float(marg.min()))
    if over > 1e-6:
        raise ValueError(f"Plackett-Luce marginals off [0, 1] by {over:.3g}: a numerical fault, please report it")
    marg = np.clip(marg, 0.0, 1.0)
    by_slot = np.where(is_cand[:, :, None], np.take_along_axis(marg, safe[:, :, None], axis=1), 0.0)
    target_prob = np.take_along_axis(by_slot, np.arange(k)[None, :, None], axis=2)[:, :, 0]
    w_logged = np.where(is_cand, np.take_along_axis(w, safe, axis=1), 0.0)
    # the mass left for slot j, summed over the candidates not in the logged prefix (not the total minus the
    # prefix: that cancels catastrophically when the prefix holds nearly all the mass)
    slot_target = np.zeros((R, k))
    remaining = w.copy()
    rows = np.arange(R)
    for j in range(k):
        left = remaining.sum(axis=1)
        slot_target[:, j] = np.where(left > 0, w_logged[:, j] / np.where(left > 0, left, 1.0), 0.0)
        remaining[rows[is_cand[:, j]], cols[is_cand[:, j], j]] = 0.0
    return SlatePolicy(slate, logw, target_prob, slot_target, by_slot)


def logging_by_slot(pscore: np.ndarray, logging_score: np.ndarray, candidates: np.ndarray, logged: np.ndarray,
                    *, workers: int = 1) -> np.ndarray:
    """P_logging(v_j at slot l) for every logged item and slot, (R, k, k), for the position-based estimator.

    A candidate's marginals follow the logging Plackett-Luce over `logging_score`, scaled so the logged
    slot's entry equals the logged propensity (the scale, 1 - the random-exposure share, is the same for
    every slot, so it cancels out of the ratio); an item outside the candidates (a random-exposure slot:
    uniform over a pool, whatever the slot) has the logged propensity at every slot.
    """
    R, k = logged.shape
    cols = logged_columns(candidates, logged)
    is_cand = cols >= 0
    # a slot outside the candidates borrows a column no logged item uses (item_marginals wants distinct ones)
    used = np.zeros(candidates.shape, dtype=bool)
    used[np.nonzero(is_cand)[0], cols[is_cand]] = True
    free = np.argsort(used, axis=1, kind="stable")  # unused columns first
    nth = np.maximum(np.cumsum(~is_cand, axis=1) - 1, 0)
    items = np.where(is_cand, cols, np.take_along_axis(free, nth, axis=1))
    lw = logging_score - logging_score.max(axis=1, keepdims=True)
    m = pl.item_marginals(np.exp(lw), items, k, workers=workers)  # (R, k, k): the logged items' rows only
    at_logged = np.take_along_axis(m, np.arange(k)[None, :, None], axis=2)  # (R, k, 1)
    scaled = m * (pscore[:, :, None] / np.maximum(at_logged, np.finfo(float).tiny))
    return np.where(is_cand[:, :, None], scaled, pscore[:, :, None])


def comment_ranking(scores: np.ndarray, comments: np.ndarray, size: int) -> np.ndarray:
    """(S, size) comment ids ranked by score (best first) from (S, m) scores over (S, m) comment ids
    (-inf or id -1 at padding); -1 where a section has fewer comments than `size`."""
    s = np.where(comments >= 0, scores, -np.inf)
    order = np.argsort(-s, axis=1, kind="stable")[:, :size]
    ranked = np.take_along_axis(comments, order, axis=1)
    out = np.full((comments.shape[0], size), -1, dtype=np.int64)
    out[:, :order.shape[1]] = np.where(np.take_along_axis(np.isfinite(s), order, axis=1), ranked, -1)
    return out
