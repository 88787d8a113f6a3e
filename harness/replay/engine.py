"""Off-policy estimates of each policy's four outcomes per user, from the logs, the target policies and the
reward model: the arithmetic between the scored logs and the statistics layer.

Per policy and metric, each estimator gives per-request contributions (`harness.replay.estimators`),
summed per user. The slot reward of the comment metrics is nested: the comment impressions of an opened
section, weighted by the target's comment ranking over the logging one (`nested_reward`), so a comment
metric's weight is the video-slot weight times the comment-at-rank weight.

Estimators (the names stored with every estimate):
* `cascade_dr`: cascade doubly robust (Kiyohara et al., WSDM 2022) with the cross-fitted cascade reward
  model as its Q-function. Unbiased when users scan top-down (a slot's reward depends on the items at and
  above it) and the logging policy gives the target's prefixes positive probability, whatever the reward
  model; the model only lowers variance. The default (see docs/replay.md for why).
* `rips`: reward-interaction IPS, the same assumption, no reward model: higher variance.
* `iips`: item-position IPS: assumes a slot's reward depends only on its item and position (not a
  cascade); biased when users leave the feed depending on what they saw.
* `pbm`: position-based-model IPS with the examination curve estimated from the random-exposure slots;
  assumes examination depends on the slot only (not a cascade).
* `dm`: the reward model alone (cascade of f and c): biased by the model's errors; its comment metrics
  ignore the target's comment ranking.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from harness.replay import estimators as est
from harness.replay.data import ReplayData
from harness.replay.policies import SlatePolicy, logged_columns, logging_by_slot
from harness.replay.reward_model import CONTINUE, METRICS, CascadeModel, cascade_value

ESTIMATORS = ("cascade_dr", "rips", "iips", "pbm", "dm")
DEFAULT_ESTIMATOR = "cascade_dr"
COMMENT_METRICS = ("comment_watch_time_s", "comment_interactions")
LOGGING = "logging"


@dataclass
class PolicyInputs:
    """What one target policy contributes: its slate view and its comment weights."""

    name: str
    slate: SlatePolicy
    comment_target: np.ndarray  # (comment impressions,) P_target(comment at its logged rank)


@dataclass
class ArmEstimates:
    """Per-user totals per (metric, estimator), and the run-level estimates with weight diagnostics."""

    name: str
    per_user: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # (U,)
    estimates: dict[tuple[str, str], est.Estimate] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)  # estimator -> why not


def logging_inputs(data: ReplayData) -> PolicyInputs:
    """The logging policy as a target: its own propensities, so every weight is 1."""
    if data.slot_pscore is None:
        raise ValueError("the logs lack impressions.slot_propensity")
    lw = None if data.logging_score is None else data.logging_score - data.logging_score.max(axis=1, keepdims=True)
    R, k = data.video.shape
    by = np.zeros((R, k, k))
    if data.logging_score is not None:
        by = logging_by_slot(data.pscore, data.logging_score, data.candidates, data.video)
    sl = SlatePolicy(np.zeros((R, k), np.int64), lw, data.pscore.copy(), data.slot_pscore.copy(), by)
    return PolicyInputs(LOGGING, sl, data.c_pscore.copy())


def comment_target(data: ReplayData, rankings: np.ndarray, section_of: np.ndarray) -> np.ndarray:
    """P_target(comment at its logged rank) for every logged comment impression under a deterministic ranking
    (`rankings` (S, L) comment ids per logged section; `section_of` maps each impression to its section)."""
    L = rankings.shape[1]
    pos = data.c_position
    ok = pos < L
    shown = np.where(ok, rankings[section_of, np.minimum(pos, L - 1)], -2)
    return (shown == data.c_comment).astype(np.float64)


def continuation_values(pol: PolicyInputs, data: ReplayData, f: dict[str, np.ndarray], c: np.ndarray, *,
                        samples: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per metric, V[:, j] = the reward model's expected value of slots j..k-1 when slot j is reached after
    the LOGGED prefix v_0..v_{j-1} and the target fills the rest; (R, k+1), V[:, k] = 0. Deterministic
    targets fill with their own slate (only rows whose prefix is the target's carry weight); Plackett-Luce
    targets by Monte Carlo over `samples` completions drawn without the prefix items (the same draws for
    every metric)."""
    R, k = data.video.shape
    V = {m: np.zeros((R, k + 1)) for m in f}
    if pol.slate.log_weights is None:
        s = pol.slate.slate
        cs = np.take_along_axis(c, s, 1)
        for m, fm in f.items():
            fs = np.take_along_axis(fm, s, 1)
            for j in range(k):
                V[m][:, j] = cascade_value(fs[:, j:], cs[:, j:])
        return V
    cols = logged_columns(data.candidates, data.video)
    lw = pol.slate.log_weights.copy()
    for j in range(k):
        if j:
            prev = cols[:, j - 1]
            has = prev >= 0
            lw[np.flatnonzero(has), prev[has]] = -np.inf
        n_fill = k - j
        for _ in range(samples):
            keys = lw + rng.gumbel(size=lw.shape)
            part = np.argpartition(-keys, n_fill - 1, axis=1)[:, :n_fill]
            order = np.argsort(-np.take_along_axis(keys, part, 1), axis=1, kind="stable")
            sl = np.take_along_axis(part, order, 1)
            cs = np.take_along_axis(c, sl, 1)
            for m, fm in f.items():
                V[m][:, j] += cascade_value(np.take_along_axis(fm, sl, 1), cs) / samples
    return V


def unavailable(policy: str, *, slot_pscore: bool, logging_score: bool, examination: bool) -> dict[str, str]:
    """Estimators that cannot run for `policy` on logs with (or without) these columns, and why."""
    out = {}
    if not slot_pscore:
        out["rips"] = out["cascade_dr"] = "the logs lack impressions.slot_propensity (sequential propensities)"
    if not (examination and logging_score):
        out["pbm"] = ("needs random-exposure slots at every position and the logging scores of the candidates "
                      "(candidates.logging_score)")
    if policy == LOGGING and not logging_score:
        out["dm"] = out["cascade_dr"] = "the logs lack candidates.logging_score (the logging policy's scores)"
    return out


def estimate_arm(pol: PolicyInputs, data: ReplayData, model: CascadeModel, user_index: np.ndarray, n_users: int,
                 *, examination: est.Examination | None, logging_slots: np.ndarray | None, clip: float | None,
                 samples: int, seed: int) -> ArmEstimates:
    """Every estimator x metric for one policy."""
    R, k = data.video.shape
    out = ArmEstimates(pol.name)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x0DE]))
    section_row = data.c_row * k + data.c_slot
    c_cand, c_log = model.cand[CONTINUE], model.logged[CONTINUE]
    reach = np.cumprod(np.concatenate([np.ones((R, 1)), c_log[:, :-1]], axis=1), axis=1)
    out.unavailable.update(unavailable(pol.name, slot_pscore=data.slot_pscore is not None,
                                       logging_score=data.logging_score is not None,
                                       examination=examination is not None and logging_slots is not None))
    V_all: dict[str, np.ndarray] = {}
    if "dm" not in out.unavailable or "cascade_dr" not in out.unavailable:
        V_all = continuation_values(pol, data, {m: model.cand[m] for m in METRICS}, c_cand, samples=samples, rng=rng)
    for m in METRICS:
        reward = data.rewards[m]
        if m in COMMENT_METRICS:
            nested = est.nested_reward(data.c_rewards[m], data.c_pscore, pol.comment_target, section_row, R * k,
                                       clip=clip)
            reward = nested.reward.reshape(R, k)
        V = V_all.get(m)
        for name in ESTIMATORS:
            if name in out.unavailable:
                continue
            e = _one(name, reward, pol, data, model, m, V, reach, examination, logging_slots, clip, user_index)
            out.estimates[(m, name)] = e
            per_req = e.contributions.reshape(R, -1).sum(axis=1)
            out.per_user[(m, name)] = np.bincount(user_index, weights=per_req, minlength=n_users)
    return out


def _one(name: str, reward: np.ndarray, pol: PolicyInputs, data: ReplayData, model: CascadeModel, m: str,
         V: np.ndarray | None, reach: np.ndarray, examination: est.Examination | None,
         logging_slots: np.ndarray | None, clip: float | None, cluster: np.ndarray) -> est.Estimate:
    sl = pol.slate
    if name == "iips":
        return est.iips(reward, data.pscore, sl.target_prob, clip=clip, cluster=cluster)
    if name == "pbm":
        assert examination is not None and logging_slots is not None
        return est.pbm_ips(reward, logging_slots, sl.by_slot, examination.examination, clip=clip, cluster=cluster)
    if name == "rips":
        return est.rips(reward, data.slot_pscore, sl.slot_target, clip=clip, cluster=cluster)
    assert V is not None
    if name == "dm":
        return est.dm(V[:, 0], cluster=cluster)
    f_log = model.logged[m]
    c_log = model.logged[CONTINUE]
    q_hat = reach * (f_log + c_log * V[:, 1:])
    q_hat_target = reach * V[:, :-1]
    return est.cascade_dr(reward, data.slot_pscore, sl.slot_target, q_hat, q_hat_target, clip=clip, cluster=cluster)
