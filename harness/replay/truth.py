"""The truth beside every estimate: each policy's expected outcomes on the replayed requests, from the
synthetic world's oracle (`harness.simulate.oracle`), conditional on the logged requests as the
estimators are.

* a deterministic target: the exact value of its slate with its own comment rankings
  (`Oracle.slate_value`);
* a Plackett-Luce target: under the cascade a slate's value is not linear in the item marginals, so
  the mean of EXACT slate values over `samples` slates drawn from the target per request, with its
  Monte-Carlo standard error; comment rankings come from the model for every candidate;
* the logging policy: `Oracle.logging_policy_value` (Monte Carlo over its own slates and random slots).

Metric names follow the replay's four outcomes; the oracle's `video_interactions` is the like rate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from harness.simulate import outcomes as oc
from harness.simulate import plackett_luce as pl
from harness.simulate.oracle import Oracle

METRICS = ("watch_time_s", "video_interactions", "comment_watch_time_s", "comment_interactions")


@dataclass
class Truth:
    """Per-request expected value of each metric (R,) and its Monte-Carlo standard error (0 when exact)."""

    value: dict[str, np.ndarray]
    se: dict[str, np.ndarray]
    method: str  # exact | monte-carlo


def deterministic_truth(oracle: Oracle, request_ids: np.ndarray, slate_videos: np.ndarray,
                        comment_rankings: np.ndarray) -> Truth:
    v = oracle.slate_value(request_ids, slate_videos, comment_rankings)
    return Truth({m: v[m] for m in METRICS}, {m: np.zeros(len(request_ids)) for m in METRICS}, "exact")


def logging_truth(oracle: Oracle, request_ids: np.ndarray, *, samples: int = 64, seed: int = 0) -> Truth:
    v = oracle.logging_policy_value(request_ids, samples=samples, seed=seed)
    se = {m: v.get(f"{m}_se", np.zeros(len(request_ids))) for m in METRICS}
    return Truth({m: v[m] for m in METRICS}, se, "exact" if f"{METRICS[0]}_se" not in v else "monte-carlo")


def plackett_luce_truth(oracle: Oracle, request_ids: np.ndarray, candidates: np.ndarray, log_weights: np.ndarray,
                        k: int, rank_all: Callable[[], np.ndarray], *, samples: int = 64, seed: int = 0) -> Truth:
    """Mean of exact slate values over `samples` target slates per request (`rank_all()` gives the model's
    comment rankings (R, n, L) for every candidate)."""
    rows = oracle._rows(request_ids)
    per = oracle._per_video(rows, candidates, rank_all())
    s_c, _ = oracle.affinities(oracle.request_user[rows], oracle.request_ts_us[rows], candidates)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7207]))
    total = {m: np.zeros(len(rows)) for m in METRICS}
    square = {m: np.zeros(len(rows)) for m in METRICS}
    for _ in range(samples):
        cols = pl.sample_slates(log_weights, k, rng)
        reach = oc.reach_probs(oracle.world, np.take_along_axis(s_c, cols, 1))
        for m in METRICS:
            val = (reach * np.take_along_axis(per[m], cols, 1)).sum(axis=1)
            total[m] += val
            square[m] += val * val
    value, se = {}, {}
    for m in METRICS:
        mean = total[m] / samples
        var = np.maximum(square[m] / samples - mean**2, 0.0) * samples / max(samples - 1, 1)
        value[m], se[m] = mean, np.sqrt(var / samples)
    return Truth(value, se, "monte-carlo")
