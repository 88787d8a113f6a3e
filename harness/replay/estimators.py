"""Off-policy estimators for logged feeds: bandit (replay, IPS, SNIPS, DM, DR, SNDR), slate (IIPS, PBM-IPS,
RIPS, Cascade-DR) and the nested comment reward. Plain numpy.

Conventions
-----------
* Inputs are 1-D ``(n,)`` (one row per request) or 2-D ``(R, k)`` (row ``[r, j]`` is slot ``j`` of request
  ``r``; slot 0 is the top of the feed). The slate estimators need 2-D inputs.
* A weight is ``w = target probability / logging probability`` of what was logged at that row.
* Every estimator returns an :class:`Estimate`. ``contributions`` has the shape of ``reward`` and
  ``value == contributions.reshape(n, -1).sum(1).mean()``: a request's total ``T_r`` is the sum of its
  slots' contributions, the estimate is the mean of ``T_r`` over requests. Sum the contributions per user for
  per-user totals (self-normalising constants are folded into the contributions so the identity holds).
* ``se``: ``std(T_r, ddof=1) / sqrt(R)``; with ``cluster`` ids ``g`` (one per request, e.g. the user) the
  clustered (sandwich, CR1) standard error ``sqrt(G/(G-1) * sum_g (S_g - n_g * value)^2) / R`` with
  ``S_g = sum_{r in g} T_r`` and ``n_g`` the number of requests in ``g`` (what statsmodels' OLS on a constant
  gives with ``cov_type="cluster"``, ``use_correction=True``). Requests of one user are not independent; cluster
  by user whenever a user has several requests.
* Weight diagnostics, over all rows (all slots) of the (clipped) weights actually used:
  ``ess = (sum w)^2 / sum w^2`` (Kish's effective sample size, in rows; 0 when every weight is 0);
  ``max_weight_share = max w / sum w`` (the largest single weight's share of the total weight mass: ``1/rows``
  when all weights are equal, near 1 when one row decides the estimate; nan when every weight is 0);
  ``clipped_share = sum(w_raw - min(w_raw, clip)) / sum w_raw``. ``ess`` and ``max_weight_share`` are nan for
  ``dm`` (no weights).
* Clipping: ``clip`` caps each weight at ``clip`` (the prefix weight for the cascade estimators). Clipping
  trades bias (downwards when rewards are non-negative) for variance; the removed mass is ``clipped_share``.

References: Open Bandit Pipeline (Saito et al., 2021, ``obp.ope``); the paper of each estimator is named in
its docstring.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "Estimate", "Examination", "NestedReward", "replay", "ips", "snips", "dm", "dr", "sndr",
    "prefix_products", "iips", "pbm_ips", "examination_from_random", "rips", "cascade_dr", "nested_reward",
]

# Probabilities computed as sums of products may exceed 1 by rounding; anything further is an error.
_PROB_SLACK = 1e-9


@dataclass(frozen=True, eq=False)
class Estimate:
    """An off-policy estimate with its per-row contributions and weight diagnostics (see the module doc)."""

    value: float  # mean over requests of the per-request sums of `contributions`
    contributions: np.ndarray  # shape of `reward`; value == contributions.reshape(n, -1).sum(1).mean()
    se: float  # standard error of `value` (clustered when `cluster` was given); nan with one request/cluster
    n: int  # number of requests
    ess: float  # (sum w)^2 / sum w^2 over all rows; nan for dm
    max_weight_share: float  # max w / sum w over all rows (clipped weights); nan for dm or when sum w == 0
    clipped_share: float  # share of the raw weight mass removed by clipping; 0 when clip is None
    # the sums behind the diagnostics, so estimates over disjoint batches of requests merge exactly
    w_sum: float = math.nan  # sum of the (clipped) weights
    w_sq: float = math.nan  # sum of their squares
    w_max: float = math.nan  # the largest
    w_raw_sum: float = math.nan  # sum of the raw weights (w_sum + the mass clipping removed)


class Examination(NamedTuple):
    """Examination curve per slot (``examination[0] == 1``) and the number of random rows behind each slot."""

    examination: np.ndarray
    counts: np.ndarray


class NestedReward(NamedTuple):
    """Importance-weighted comment reward per slot row (length ``n_rows``) and the comment weights' clipped share."""

    reward: np.ndarray
    clipped_share: float


# --------------------------------------------------------------------------------------------- validation


def _where(index: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(i) for i in index) + "]"


def _row(index: tuple[int, ...]) -> str:
    names = ("request", "slot", "slot l") if len(index) > 1 else ("row",)
    return ", ".join(f"{n} {i}" for n, i in zip(names, index, strict=False))


def _first(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def _as_float(name: str, x: ArrayLike) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric (an array of numbers); got {type(x).__name__}") from exc
    return a


def _check_finite(name: str, a: np.ndarray) -> None:
    bad = ~np.isfinite(a)
    if bad.any():
        i = _first(bad)
        raise ValueError(f"{name}{_where(i)} is {a[i]} ({_row(i)}): every value must be finite; "
                         "drop or impute the row")


def _check_pscore(name: str, a: np.ndarray) -> None:
    """Logging propensities must lie in (0, 1]."""
    bad = a <= 0
    if bad.any():
        i = _first(bad)
        raise ValueError(f"{name}{_where(i)} = {a[i]:g} ({_row(i)}): a logged row with propensity {a[i]:g} cannot "
                         "be reweighted: the logging policy must give every shown item positive probability; "
                         "drop or fix the row")
    _check_at_most_one(name, a, "a propensity is a probability; check it is not a weight, a count or a logit")


def _check_prob(name: str, a: np.ndarray) -> None:
    """Target probabilities must lie in [0, 1]."""
    bad = a < 0
    if bad.any():
        i = _first(bad)
        raise ValueError(f"{name}{_where(i)} = {a[i]:g} ({_row(i)}) is negative: a target probability lies in "
                         "[0, 1]; fix how it is computed")
    _check_at_most_one(name, a, "a target probability lies in [0, 1]; check it is not a score or a weight")


def _check_at_most_one(name: str, a: np.ndarray, hint: str) -> None:
    bad = a > 1 + _PROB_SLACK
    if bad.any():
        i = _first(bad)
        raise ValueError(f"{name}{_where(i)} = {a[i]:g} ({_row(i)}) exceeds 1: {hint}")


def _check_binary(name: str, a: np.ndarray) -> None:
    bad = (a != 0) & (a != 1)
    if bad.any():
        i = _first(bad)
        raise ValueError(f"{name}{_where(i)} = {a[i]:g} ({_row(i)}): {name} must be 0/1 (or bool)")


def _check_clip(clip: float | None) -> float | None:
    if clip is None:
        return None
    c = float(clip)
    if not (math.isfinite(c) and c > 0):
        raise ValueError(f"clip must be a positive finite number (the cap on each importance weight), got {clip!r}; "
                         "pass clip=None for no clipping")
    return c


def _check_cluster(cluster: ArrayLike | None, n: int) -> np.ndarray | None:
    """Cluster ids (one per request) -> integer codes 0..G-1."""
    if cluster is None:
        return None
    c = np.asarray(cluster)
    if c.ndim != 1 or c.shape[0] != n:
        raise ValueError(f"cluster has shape {c.shape} but there are {n} requests (rows of reward): pass one "
                         "cluster id (e.g. the user id) per request")
    if c.dtype.kind in "fc":
        _check_finite("cluster", c)
    try:
        _, codes = np.unique(c, return_inverse=True)
    except TypeError as exc:
        raise ValueError("cluster ids must be comparable with each other (all numbers or all strings)") from exc
    return codes.reshape(-1)


def _validate(
    arrays: dict[str, ArrayLike],
    *,
    pscores: Sequence[str] = (),
    probs: Sequence[str] = (),
    binary: Sequence[str] = (),
    ndim: tuple[int, ...] = (1, 2),
    allow_empty: bool = False,
    clip: float | None = None,
    cluster: ArrayLike | None = None,
) -> tuple[list[np.ndarray], float | None, np.ndarray | None]:
    """The one validation path: same shapes (the first array is the reference), finite values, logging
    propensities in (0, 1], target probabilities in [0, 1], 0/1 indicators, clip > 0, one cluster id per request.
    Returns the float arrays (in order), the clip and the cluster codes."""
    out: list[np.ndarray] = []
    ref_name, ref_shape = "", ()
    for name, x in arrays.items():
        a = _as_float(name, x)
        if not out:
            ref_name, ref_shape = name, a.shape
            if a.ndim not in ndim:
                want = " or ".join(f"{d}-D" for d in ndim)
                layout = "(n,) one row per request or (R, k) per slot" if ndim == (1, 2) else "(R, k) per slot"
                raise ValueError(f"{name} must be {want} ({layout}), got shape {a.shape}")
            if a.size == 0 and not allow_empty:
                raise ValueError(f"{name} is empty (shape {a.shape}): there is nothing to estimate")
        elif a.shape != ref_shape:
            raise ValueError(f"{name} has shape {a.shape} but {ref_name} has shape {ref_shape}: pass one value per "
                             f"logged row (the same shape as {ref_name})")
        _check_finite(name, a)
        if name in pscores:
            _check_pscore(name, a)
        if name in probs:
            _check_prob(name, a)
        if name in binary:
            _check_binary(name, a)
        out.append(a)
    n = int(ref_shape[0]) if ref_shape else 0
    return out, _check_clip(clip), _check_cluster(cluster, n)


# ------------------------------------------------------------------------------------------ shared maths


def _clip(w: np.ndarray, clip: float | None) -> tuple[np.ndarray, float]:
    """Cap weights at `clip`; the share of the raw weight mass removed."""
    if clip is None:
        return w, 0.0
    capped = np.minimum(w, clip)
    total = float(w.sum())
    return capped, (float((w - capped).sum()) / total if total > 0 else 0.0)


def _se(totals: np.ndarray, value: float, codes: np.ndarray | None) -> float:
    n = totals.shape[0]
    if codes is None:
        return float(totals.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    g = int(codes.max()) + 1
    if g < 2:
        return math.nan
    s = np.bincount(codes, weights=totals, minlength=g)
    n_g = np.bincount(codes, minlength=g)
    return float(math.sqrt(g / (g - 1) * float(((s - n_g * value) ** 2).sum())) / n)


def _estimate(contributions: np.ndarray, weights: np.ndarray | None, clipped_share: float,
              codes: np.ndarray | None) -> Estimate:
    n = contributions.shape[0]
    totals = contributions.reshape(n, -1).sum(axis=1)
    value = float(totals.mean())
    s = s2 = w_max = raw = math.nan
    if weights is None:
        ess = share = math.nan
    else:
        s, s2, w_max = float(weights.sum()), float((weights**2).sum()), float(weights.max())
        ess = s * s / s2 if s2 > 0 else 0.0
        share = w_max / s if s > 0 else math.nan
        raw = s / (1.0 - clipped_share) if clipped_share < 1.0 else math.inf
    contributions = np.array(contributions, dtype=float)
    contributions.flags.writeable = False
    return Estimate(value=value, contributions=contributions, se=_se(totals, value, codes), n=n, ess=ess,
                    max_weight_share=share, clipped_share=clipped_share, w_sum=s, w_sq=s2, w_max=w_max,
                    w_raw_sum=raw)


def _slot_means(w: np.ndarray, what: str) -> np.ndarray | float:
    """Mean weight: over all rows for 1-D, per slot (column) for 2-D. Each has expectation 1 under full support."""
    m = w.mean(axis=0)
    zero = np.flatnonzero(np.atleast_1d(m) <= 0)
    if zero.size:
        where = "any row" if w.ndim == 1 else f"any row at slot(s) {zero.tolist()}"
        raise ValueError(f"{what}: the target gives zero probability to what was logged at {where}, so the mean "
                         "weight is 0 and cannot normalise; use ips/dr, or check target_prob")
    return m if w.ndim == 2 else float(m)


# ------------------------------------------------------------------------------------ bandit estimators


def replay(reward: ArrayLike, match: ArrayLike, *, cluster: ArrayLike | None = None) -> Estimate:
    """Rejection replay (Li, Chu, Langford, Wang, WSDM 2011): the mean reward over the rows where the logged
    item is the one the target would show.

    ``V = sum_i m_i r_i / sum_i m_i``; contributions ``r * m / mean(m)`` (2-D: ``mean`` per slot, so the value
    is the sum over slots of each slot's matched mean). Assumes uniformly random logging over the same choice
    set (every candidate equally likely, independently of the context); otherwise biased towards whatever the
    logging policy over-shows. Rows that do not match contribute 0; the weights reported are ``m``, so ``ess``
    is the number of matches. Conditioning on the number of matches makes it a ratio estimator: slightly biased
    in small samples, and ``se`` ignores the estimated match rate.
    """
    (r, m), _, codes = _validate({"reward": reward, "match": match}, binary=("match",), cluster=cluster)
    rate = m.mean(axis=0)
    empty = np.flatnonzero(np.atleast_1d(rate) == 0)
    if empty.size:
        where = "" if m.ndim == 1 else f" at slot(s) {empty.tolist()}"
        raise ValueError(f"replay: no logged row matches what the target would show{where}, so there is no "
                         "reward to average; log more uniformly random traffic or use an estimator with weights")
    return _estimate(r * m / rate, m, 0.0, codes)


def ips(reward: ArrayLike, pscore: ArrayLike, target_prob: ArrayLike, *, clip: float | None = None,
        cluster: ArrayLike | None = None) -> Estimate:
    """Inverse propensity scoring (Horvitz-Thompson; OBP ``InverseProbabilityWeighting``).

    ``V = (1/n) sum_i w_i r_i``, ``w_i = target_prob_i / pscore_i`` (capped at ``clip``). Unbiased when the
    propensities are the logging policy's true probabilities and the logging policy gives positive probability to
    everything the target can show (full support); biased under clipping, wrong propensities or missing support.
    """
    (r, p, t), c, codes = _validate({"reward": reward, "pscore": pscore, "target_prob": target_prob},
                                    pscores=("pscore",), probs=("target_prob",), clip=clip, cluster=cluster)
    w, share = _clip(t / p, c)
    return _estimate(w * r, w, share, codes)


def snips(reward: ArrayLike, pscore: ArrayLike, target_prob: ArrayLike, *, clip: float | None = None,
          cluster: ArrayLike | None = None) -> Estimate:
    """Self-normalised IPS (Swaminathan & Joachims, NeurIPS 2015; OBP ``SelfNormalizedInverseProbabilityWeighting``).

    ``V = sum_i w_i r_i / sum_i w_i`` i.e. contributions ``w r / mean(w)``. For 2-D inputs each slot (column)
    is normalised by its own mean weight, since each slot's weights have expectation 1 under full support:
    ``V = sum_j (sum_r w_rj r_rj / sum_r w_rj)``. Consistent, biased in small samples (O(1/n)), usually much less
    variable than IPS; invariant to rescaling the weights. ``se`` treats the normaliser as known (it ignores
    its estimation error).
    """
    (r, p, t), c, codes = _validate({"reward": reward, "pscore": pscore, "target_prob": target_prob},
                                    pscores=("pscore",), probs=("target_prob",), clip=clip, cluster=cluster)
    w, share = _clip(t / p, c)
    return _estimate(w * r / _slot_means(w, "snips"), w, share, codes)


def dm(q_target: ArrayLike, *, cluster: ArrayLike | None = None) -> Estimate:
    """Direct method (OBP ``DirectMethod``): ``V = (1/n) sum_i q_target_i`` where ``q_target_i`` is the reward
    model's expected reward under the target at row ``i`` (``sum_a pi_e(a|x_i) q_hat(x_i, a)``).

    No weights (``ess`` and ``max_weight_share`` are nan). Low variance; biased whenever the reward model is.
    ``se`` reflects only the spread of ``q_target`` over the logged contexts, not the model's error.
    """
    (q,), _, codes = _validate({"q_target": q_target}, cluster=cluster)
    return _estimate(q, None, 0.0, codes)


def dr(reward: ArrayLike, pscore: ArrayLike, target_prob: ArrayLike, q_logged: ArrayLike, q_target: ArrayLike, *,
       clip: float | None = None, cluster: ArrayLike | None = None) -> Estimate:
    """Doubly robust (Dudik, Langford, Li, ICML 2011; OBP ``DoublyRobust``).

    ``V = (1/n) sum_i [q_target_i + w_i (r_i - q_logged_i)]`` with ``q_logged_i = q_hat(x_i, a_i)`` for the logged
    item and ``q_target_i = sum_a pi_e(a|x_i) q_hat(x_i, a)``. Unbiased when the propensities are right (for any
    reward model, given full support), or when the reward model is right; biased when both are wrong or under
    clipping. Lower variance than IPS when ``q_hat`` tracks the reward.
    """
    (r, p, t, ql, qt), c, codes = _validate(
        {"reward": reward, "pscore": pscore, "target_prob": target_prob, "q_logged": q_logged, "q_target": q_target},
        pscores=("pscore",), probs=("target_prob",), clip=clip, cluster=cluster)
    w, share = _clip(t / p, c)
    return _estimate(qt + w * (r - ql), w, share, codes)


def sndr(reward: ArrayLike, pscore: ArrayLike, target_prob: ArrayLike, q_logged: ArrayLike, q_target: ArrayLike, *,
         clip: float | None = None, cluster: ArrayLike | None = None) -> Estimate:
    """Self-normalised doubly robust (OBP ``SelfNormalizedDoublyRobust``).

    ``V = (1/n) sum_i q_target_i + sum_i w_i (r_i - q_logged_i) / sum_i w_i``; contributions
    ``q_target + w (r - q_logged) / mean(w)``, the mean per slot for 2-D inputs (as in :func:`snips`). Consistent,
    O(1/n) bias in small samples; ``se`` ignores the estimated normaliser.
    """
    (r, p, t, ql, qt), c, codes = _validate(
        {"reward": reward, "pscore": pscore, "target_prob": target_prob, "q_logged": q_logged, "q_target": q_target},
        pscores=("pscore",), probs=("target_prob",), clip=clip, cluster=cluster)
    w, share = _clip(t / p, c)
    return _estimate(qt + w * (r - ql) / _slot_means(w, "sndr"), w, share, codes)


# ------------------------------------------------------------------------------------- slate estimators


def prefix_products(p: ArrayLike) -> np.ndarray:
    """Cumulative product along the slots: ``out[r, j] = prod_{l <= j} p[r, l]`` (``p`` is ``(R, k)``)."""
    (a,), _, _ = _validate({"p": p}, ndim=(2,))
    return np.cumprod(a, axis=1)


def iips(reward: ArrayLike, pscore: ArrayLike, target_prob: ArrayLike, *, clip: float | None = None,
         cluster: ArrayLike | None = None) -> Estimate:
    """Independent / item-position IPS (Li et al., KDD 2018; OBP ``SlateIndependentIPS``): :func:`ips` on
    ``(R, k)`` item-at-slot marginals, ``w_rj = pi_e(a_rj at j) / pi_b(a_rj at j)``.

    ``V = (1/R) sum_r sum_j w_rj r_rj``. Unbiased when a slot's reward depends only on its own item and
    position (no interaction between slots); biased under a cascade, where the reward at slot ``j`` depends on
    the items above it (which the marginal weight ignores).
    """
    (r, p, t), c, codes = _validate({"reward": reward, "pscore": pscore, "target_prob": target_prob},
                                    pscores=("pscore",), probs=("target_prob",), ndim=(2,), clip=clip,
                                    cluster=cluster)
    w, share = _clip(t / p, c)
    return _estimate(w * r, w, share, codes)


def pbm_ips(reward: ArrayLike, pscore_by_slot: ArrayLike, target_by_slot: ArrayLike, examination: ArrayLike, *,
            clip: float | None = None, cluster: ArrayLike | None = None) -> Estimate:
    """Position-based-model IPS (Li, Abbasi-Yadkori, Kveton, Muthukrishnan, Vinay, Wen, "Offline evaluation of
    ranking policies with click models", KDD 2018: the PBM estimator).

    ``pscore_by_slot[r, j, l]`` = P(logging puts the item logged at slot ``j`` of request ``r`` at slot ``l``),
    ``target_by_slot`` the same for the target, ``examination[l]`` = P(slot ``l`` is examined) (any positive
    scale: the weight is invariant to it). Weight
    ``w_rj = sum_l target_by_slot[r, j, l] e_l / sum_l pscore_by_slot[r, j, l] e_l``, ``V = (1/R) sum_rj w_rj r_rj``.

    Unbiased when ``E[reward] = e(slot) * attractiveness(item)`` with the two independent (position-based
    model), given that the logging policy can place every item the target shows. Biased under a cascade
    (examination depends on the items above) or with a wrong examination curve. Pools an item's slots, so
    its variance is below item-position IPS.
    """
    (r,), c, codes = _validate({"reward": reward}, ndim=(2,), clip=clip, cluster=cluster)
    big_r, k = r.shape
    ps, ts = _as_float("pscore_by_slot", pscore_by_slot), _as_float("target_by_slot", target_by_slot)
    e = _as_float("examination", examination)
    for name, a in (("pscore_by_slot", ps), ("target_by_slot", ts)):
        if a.shape != (big_r, k, k):
            raise ValueError(f"{name} has shape {a.shape} but reward has shape {r.shape}: pass {name}[r, j, l] = "
                             f"P(the item logged at slot j of request r is put at slot l), shape ({big_r}, {k}, {k})")
        _check_finite(name, a)
        _check_prob(name, a)
    diag = np.einsum("rjj->rj", ps)  # P(logging puts the logged item where it was logged)
    if (diag <= 0).any():
        i = _first(diag <= 0)
        raise ValueError(f"pscore_by_slot{_where(i + i[1:])} = {diag[i]:g} ({_row(i)}): the logged placement has "
                         "probability 0, so it cannot be reweighted: the logging policy must give every shown item "
                         "positive probability at its slot; drop or fix the row")
    if e.shape != (k,):
        raise ValueError(f"examination has shape {e.shape}: pass one examination probability per slot, shape ({k},)")
    _check_finite("examination", e)
    if (e <= 0).any():
        i = _first(e <= 0)
        raise ValueError(f"examination{_where(i)} = {e[i]:g}: examination probabilities must be positive "
                         "(estimate them with examination_from_random)")
    w, share = _clip((ts @ e) / (ps @ e), c)
    return _estimate(w * r, w, share, codes)


def examination_from_random(examined: ArrayLike, position: ArrayLike, is_random: ArrayLike, k: int) -> Examination:
    """Examination per slot from random-exposure rows (Joachims, Swaminathan, Schnabel, WSDM 2017;
    Wang, Bendersky, Metzler, Najork, SIGIR 2016: result randomisation).

    ``e_j = mean(examined | random, slot j) / mean(examined | random, slot 0)``, so ``e_0 = 1``. Under random
    exposure the item does not depend on the slot, so ``E[click | slot j] = e_j * E[attractiveness]`` with the
    same mean attractiveness at every slot: the ratio isolates the position effect. ``examined`` may be any
    signal proportional to examination under the position-based model (a click, a watch). Returns the
    ``(k,)`` curve and the number of random rows per slot (use them to judge its precision).
    """
    (x, pos, rnd), _, _ = _validate({"examined": examined, "position": position, "is_random": is_random},
                                    binary=("is_random",), ndim=(1,))
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer (the number of slots), got {k!r}")
    k = int(k)
    bad = (pos != np.round(pos)) | (pos < 0) | (pos >= k)
    if bad.any():
        i = _first(bad)
        raise ValueError(f"position{_where(i)} = {pos[i]:g} ({_row(i)}): positions are slot indices 0..{k - 1}")
    keep = rnd == 1
    slots = pos[keep].astype(np.int64)
    counts = np.bincount(slots, minlength=k)
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        raise ValueError(f"examination_from_random: slot(s) {empty.tolist()} have no random row, so their "
                         "examination cannot be estimated; log random exposure at every slot or pass a smaller k")
    means = np.bincount(slots, weights=x[keep], minlength=k) / counts
    if means[0] <= 0:
        raise ValueError("examination_from_random: the mean of examined at slot 0 over random rows is 0, so the "
                         "curve cannot be normalised to e_0 = 1; use a more frequent examination signal")
    return Examination(examination=means / means[0], counts=counts)


def rips(reward: ArrayLike, slot_pscore: ArrayLike, slot_target: ArrayLike, *, clip: float | None = None,
         cluster: ArrayLike | None = None) -> Estimate:
    """Reward-interaction IPS (McInerney et al., KDD 2020; Kiyohara et al., WSDM 2022; OBP
    ``SlateRewardInteractionIPS``).

    ``slot_pscore[r, j] = pi_b(a_j | x, a_{<j})`` and ``slot_target`` the same for the target. Prefix weight
    ``w_{1:j} = prod_{l <= j} slot_target[r, l] / slot_pscore[r, l]`` (capped at ``clip``),
    ``V = (1/R) sum_r sum_j w_{1:j} r_j``. Unbiased under the cascade (the reward at ``j`` depends on the items at
    slots ``<= j`` only) given full support; the variance grows with depth and is large for deterministic
    targets (the weight is 0 or ``1/pi_b(prefix)``).
    """
    (r, p, t), c, codes = _validate({"reward": reward, "slot_pscore": slot_pscore, "slot_target": slot_target},
                                    pscores=("slot_pscore",), probs=("slot_target",), ndim=(2,), clip=clip,
                                    cluster=cluster)
    w, share = _clip(np.cumprod(t / p, axis=1), c)
    return _estimate(w * r, w, share, codes)


def cascade_dr(reward: ArrayLike, slot_pscore: ArrayLike, slot_target: ArrayLike, q_hat: ArrayLike,
               q_hat_target: ArrayLike, *, clip: float | None = None, cluster: ArrayLike | None = None) -> Estimate:
    """Cascade doubly robust (Kiyohara, Saito, Matsuhiro, Narita, Shimizu, Yamamoto, "Doubly Robust Off-Policy
    Evaluation for Ranking Policies under the Cascade Behavior Model", WSDM 2022; OBP
    ``SlateCascadeDoublyRobust``).

    With the prefix weights ``w_{1:j}`` of :func:`rips` (``w_{1:0} = 1``), slot ``j`` contributes
    ``w_{1:j} (r_j - q_hat[:, j]) + w_{1:j-1} q_hat_target[:, j]``, where

    * ``q_hat[r, j]`` estimates ``Q_j(x, a_{1:j}) = E[sum_{l >= j} r_l | x, the logged prefix a_{1:j}, the target
      afterwards]`` (the reward from slot ``j`` down; fit bottom-up: ``Q_j = r_j + E_{a~pi_e}[Q_{j+1}]``);
    * ``q_hat_target[r, j] = sum_a pi_e(a | x, a_{1:j-1}) Q_hat_j(x, a_{1:j-1}, a)`` for the same model.

    Unbiased under the cascade assumption for ANY ``q_hat`` (given full support, correct propensities and a
    ``q_hat_target`` consistent with ``q_hat``), and also when ``q_hat`` is exact (then the propensities may be
    wrong); with ``q_hat = q_hat_target = 0`` it is :func:`rips`. The closer ``q_hat`` is to ``Q``, the lower
    the variance. ``clip`` caps the prefix weights (both ``w_{1:j}`` and ``w_{1:j-1}``); ``ess`` and
    ``max_weight_share`` are those of the prefix weights ``w_{1:j}``.
    """
    (r, p, t, q, qt), c, codes = _validate(
        {"reward": reward, "slot_pscore": slot_pscore, "slot_target": slot_target, "q_hat": q_hat,
         "q_hat_target": q_hat_target},
        pscores=("slot_pscore",), probs=("slot_target",), ndim=(2,), clip=clip, cluster=cluster)
    w, share = _clip(np.cumprod(t / p, axis=1), c)
    w_prev = np.concatenate([np.ones((w.shape[0], 1)), w[:, :-1]], axis=1)
    return _estimate(w * (r - q) + w_prev * qt, w, share, codes)


# ------------------------------------------------------------------------------------------------ nested


def nested_reward(comment_reward: ArrayLike, comment_pscore: ArrayLike, comment_target: ArrayLike,
                  section_row: ArrayLike, n_rows: int, *, clip: float | None = None) -> NestedReward:
    """Importance-weighted comment reward per video slot, to use as that slot's reward in a slate estimator.

    Each comment impression ``i`` (a shown comment, one row) belongs to the opened comment section of slot row
    ``section_row[i]`` (an index into the flattened ``(R*k,)`` slot rows; reshape the result to ``(R, k)``).
    ``comment_pscore[i]`` / ``comment_target[i]`` are the logging / target probabilities of that comment at its
    rank. Returns ``out[s] = sum_{i: section_row[i] = s} comment_reward_i * c_i``,
    ``c_i = comment_target_i / comment_pscore_i`` (capped at ``clip``), 0 for slots without an opened section.
    Passed as the reward of a slate estimator, the comment value gets weight (video-slot weight) x (comment-at-rank
    weight).

    Unbiased for the target's comment value (given the opened section) when comment rewards follow a
    position-based model within the comment list: each comment's reward depends on its own content and rank
    only (examination by rank, independent of the other comments), which is how the list is examined; biased if
    comments interact (e.g. a cascade within the list) or under clipping.
    """
    (r, p, t, s), c, _ = _validate(
        {"comment_reward": comment_reward, "comment_pscore": comment_pscore, "comment_target": comment_target,
         "section_row": section_row},
        pscores=("comment_pscore",), probs=("comment_target",), ndim=(1,), allow_empty=True, clip=clip)
    if int(n_rows) != n_rows or n_rows < 1:
        raise ValueError(f"n_rows must be a positive integer (the number of slot rows, R*k), got {n_rows!r}")
    n_rows = int(n_rows)
    bad = (s != np.round(s)) | (s < 0) | (s >= n_rows)
    if bad.any():
        i = _first(bad)
        raise ValueError(f"section_row{_where(i)} = {s[i]:g} ({_row(i)}): section_row indexes the flattened slot "
                         f"rows 0..{n_rows - 1}; fix the comment's section or n_rows")
    w, share = _clip(t / p, c)
    return NestedReward(reward=np.bincount(s.astype(np.int64), weights=r * w, minlength=n_rows), clipped_share=share)
