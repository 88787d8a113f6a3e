"""User batches: the replay's unit of work, of storage and of resuming.

Users (never rows) are assigned to batches by a stable hash of their id, so a batch holds whole users
(the clustering unit of every standard error) and the same users whatever order the logs come in. Each
batch is scored, estimated and stored on its own (`ResultsStore.append_replay_batch`: its per-user rows
and the sufficient statistics below, in one transaction); the run's estimates are then merged from the
batches' statistics, exactly as if all requests had been estimated at once:

* per-user totals S_g over n_g requests: value per request v = sum S_g / N, per user sum S_g / G; the
  clustered (CR1) variance of v is G/(G-1) * (sum S_g^2 - 2 v sum n_g S_g + v^2 sum n_g^2) / N^2, the
  formula `estimators._se` applies to all requests at once;
* weights: ESS = (sum w)^2 / sum w^2, largest share = max w / sum w, clipped share = 1 - sum w / sum w_raw;
* the share of target mass on items the logging policy almost never shows (`RARE_PSCORE`): the item
  weights' mass on rows whose logging propensity is below it, over the slot rows (an unbiased estimate of
  that mass, since E_logging[w 1(p < eps)] = P_target(p < eps));
* the truth: sums of the oracle's per-request values and Monte-Carlo variances.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from harness.replay.engine import LOGGING, ArmEstimates

RARE_PSCORE = 0.01  # "almost never shows": the logging policy puts the item at that slot < 1% of the time
DEFAULT_BATCH_USERS = 1000


def user_arms(users: np.ndarray, arms: Sequence[str], traffic: Sequence[float], salt: str) -> np.ndarray:
    """Arm of each user by a salted sha256 of its id, as an online split would assign it."""
    shares = np.asarray(traffic, float)
    edges = np.cumsum(shares / shares.sum())
    u = np.array([int.from_bytes(hashlib.sha256(f"{salt}:{x}".encode()).digest()[:8], "big") / 2**64
                  for x in users])
    return np.asarray(arms, dtype=object)[np.minimum(np.searchsorted(edges, u, side="right"), len(arms) - 1)]


def batch_of(users: np.ndarray, n_batches: int) -> np.ndarray:
    """Batch of each user id: sha256 of the id, modulo the number of batches."""
    if n_batches <= 1:
        return np.zeros(len(users), np.int64)
    return np.array([int.from_bytes(hashlib.sha256(f"batch:{int(u)}".encode()).digest()[:8], "big") % n_batches
                     for u in users], np.int64)


def n_batches(n_users: int, batch_users: int) -> int:
    if batch_users < 1:
        raise ValueError(f"batch_users must be >= 1, got {batch_users}")
    return max(1, math.ceil(n_users / batch_users))


def batch_seed(seed: int, batch: int) -> int:
    """A per-batch seed, so a resumed batch draws what it drew in an uninterrupted run."""
    return int(np.random.SeedSequence([int(seed), int(batch), 0xBA7C]).generate_state(1)[0])


def stats_rows(arm_est: dict[str, ArmEstimates], user_index: np.ndarray, n_users: int, k: int,
               rare: dict[str, float], truth: dict[str, Any]) -> list[dict[str, Any]]:
    """`replay_batches` rows (without `batch`) of one batch: per arm, metric and estimator."""
    n_g = np.bincount(user_index, minlength=n_users).astype(np.float64)
    rows = []
    for arm, ae in arm_est.items():
        for (m, e), x in ae.estimates.items():
            S = ae.per_user[(m, e)]
            t = truth.get(arm)
            rows.append({
                "arm": arm, "metric": m, "estimator": e, "users": int(n_users), "requests": int(x.n),
                "slot_rows": int(x.n) * k, "sum_total": float(S.sum()),
                "sum_total_sq": float((S * S).sum()), "sum_n_total": float((n_g * S).sum()),
                "sum_n_sq": float((n_g * n_g).sum()),
                "w_sum": _num(x.w_sum), "w_sq": _num(x.w_sq), "w_max": _num(x.w_max),
                "w_raw_sum": _num(x.w_raw_sum),
                "w_removed": None if math.isnan(x.w_raw_sum) else float(x.w_raw_sum - x.w_sum),
                "rare_mass": rare.get(arm),
                "true_sum": None if t is None else float(t.value[m].sum()),
                "true_var": None if t is None else float((t.se[m] ** 2).sum()),
            })
    return rows


def _num(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def rare_mass(target_prob: np.ndarray, pscore: np.ndarray) -> float:
    """Sum of the item-at-slot weights on rows the logging policy almost never shows (see the module doc)."""
    rare = pscore < RARE_PSCORE
    return float((target_prob[rare] / pscore[rare]).sum())


def merge(batches: pd.DataFrame, default_estimator: str) -> pd.DataFrame:
    """`replay_estimates` rows (plus rare_share) from the batches' statistics."""
    keys = ["arm", "metric", "estimator"]
    sums = ["users", "requests", "slot_rows", "sum_total", "sum_total_sq", "sum_n_total", "sum_n_sq", "w_sum",
            "w_sq", "w_raw_sum", "w_removed", "rare_mass", "true_sum", "true_var"]
    g = batches.groupby(keys, sort=True, dropna=False)
    tot = g[sums].sum(min_count=1)
    tot["w_max"] = g["w_max"].max()
    out = []
    for (arm, m, e), r in tot.iterrows():
        G, N = float(r["users"]), float(r["requests"])
        v = r["sum_total"] / N
        q = r["sum_total_sq"] - 2 * v * r["sum_n_total"] + v * v * r["sum_n_sq"]
        se_req = math.sqrt(G / (G - 1) * max(q, 0.0)) / N if G > 1 else math.nan
        w, w2 = r["w_sum"], r["w_sq"]
        has_w = pd.notna(w)
        out.append({
            "arm": arm, "metric": m, "estimator": e, "is_default": e == default_estimator,
            "value": float(r["sum_total"] / G), "se": se_req * N / G, "n_units": int(G), "n_requests": int(N),
            "slot_rows": int(r["slot_rows"]),
            "ess": (float(w * w / w2) if w2 > 0 else 0.0) if has_w else None,
            "max_weight_share": float(r["w_max"] / w) if has_w and w > 0 else None,
            "clipped_share": float(r["w_removed"] / r["w_raw_sum"]) if has_w and r["w_raw_sum"] > 0 else 0.0,
            "rare_share": (float(r["rare_mass"] / r["slot_rows"]) if pd.notna(r["rare_mass"]) and arm != LOGGING
                           else None),
            "true_value": float(r["true_sum"] / G) if pd.notna(r["true_sum"]) else None,
            "true_se": float(math.sqrt(r["true_var"]) / G) if pd.notna(r["true_var"]) else None,
        })
    return pd.DataFrame(out)
