"""Coverage of the 95% Welch CI with and without CUPED at small arms: the evidence for the CUPED guard.

    .venv/bin/python bench/cuped_guard.py [--seed 0] [--reps 40000] [--sizes 5 8 10 ...] [--effect 0.05]

Prints one JSON line. For every metric design and n units per arm (both arms the same size) it simulates
`--reps` experiments, computes the arm moments in batch (`Moments` with a leading batch dimension), the
estimates with `analysis.cuped.independent_estimates` (no covariates = unadjusted; with covariates =
CUPED as `analyze` computes it) and the Welch CI of the absolute difference with `analysis.lifts.compare`,
and counts how often the CI holds the true difference. The treatment multiplies every post-period unit
value of the metric's numerator by 1 + `--effect` (default +5%); the pre-period is untouched.

Designs (per-user data skewed like watch time; "base" is a user's latent activity, Gamma(1) so that
per-user values have skewness ~3):
* mean_k1: watch time y = 600 base LN(0, 0.4), covariate y_pre = 600 base LN(0, 0.4) (corr ~0.74).
* ratio_k2: requests X = 1 + Poisson(a), a ~ Gamma(2, 2.5); comment watch time Y = sum of X views of
  Gamma(2, r/2) seconds, r ~ Gamma(2, 15) per user (ratio Y/X, true value E r = 30); covariates
  Y_pre and X_pre from the same a, r with X_pre = Poisson(a) (may be 0): the "single" CUPED of a ratio.
* mean_k3, mean_k5: y as in mean_k1, covariates (the `cuped="multi"` case: every *_pre column)
  y_pre, views_pre = Poisson(8 base), sessions_pre = Poisson(1 + 2 base), [k5 adds: an unrelated
  Gamma(2) pre metric, and 600 base LN(0, 1) (a noisy correlate)].

Figures per (design, n): coverage of the unadjusted CI ("unadj"), of the CUPED CI ("cuped"), of CUPED with
a small-sample correction ("cuped_dfk": variances times (N-2)/(N-2-k) and Welch df times (N-2-k)/(N-2),
N = n_t + n_c, the residual degrees of freedom of an ANCOVA with k slopes; not what analyze does, shown
to tell theta's estimation error from skewness), the Monte-Carlo standard error of a coverage
sqrt(p(1-p)/reps) and of the paired difference cuped - unadj (sd of the per-replicate difference /
sqrt(reps)), the median variance reduction, and how many CIs were undefined (counted as misses).

Guard: per design, the smallest n of the grid from which on (that n and every larger one) CUPED is
"ok" by each criterion. Monte-Carlo criteria: `nominal_mc` = coverage >= 0.95 - 2 se; `vs_unadj_mc` =
cuped >= unadj - 2 se_diff (at the default 40,000 replicates 2 se is 0.2 points, and CUPED's deficit,
about 0.1 k / n, stays above that up to n ~ 50 k, so these are reported but do not make a usable
guard). Tolerance criteria (--tol, default 0.01: one point, the tolerance of Kohavi's rule 7 too):
`nominal_tol` = cuped >= 0.95 - tol; `vs_unadj_tol` = cuped >= unadj - tol; `either_tol` = one of the
two. `guard_rule` evaluates n >= max(c0, c1 (k + 1)) for the constants given by --rule (default 20 10,
i.e. n >= 10 (k + 1) for k >= 1) and reports, per design, the threshold and the coverage at the first
grid size at or above it; `current_rule` does the same for today's guard n >= k + 3.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

# bench/analysis.py would shadow the `analysis` package (the script's folder comes first on sys.path)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.aggregates import Moments  # noqa: E402
from analysis.cuped import independent_estimates  # noqa: E402
from analysis.lifts import compare, critical_value  # noqa: E402
from analysis.metrics import MeanMetric, RatioMetric  # noqa: E402

DESIGNS = {  # name: (kind, value columns, covariates)
    "mean_k1": ("mean", ("y",), ("y_pre",)),
    "ratio_k2": ("ratio", ("num", "den"), ("num_pre", "den_pre")),
    "mean_k3": ("mean", ("y",), ("y_pre", "views_pre", "sessions_pre")),
    "mean_k5": ("mean", ("y",), ("y_pre", "views_pre", "sessions_pre", "other_pre", "noisy_pre")),
}
SIZES = (5, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 75, 100, 150, 200)
CRITERIA = ("nominal_mc", "vs_unadj_mc", "nominal_tol", "vs_unadj_tol", "either_tol")
NOMINAL = 0.95
CHUNK_VALUES = 4_000_000  # values per arm and chunk (bounds memory: ~200 MB at most with all temporaries)


def simulate(rng: np.random.Generator, design: str, e: int, n: int, effect: float
             ) -> tuple[np.ndarray, np.ndarray]:
    """(control, treatment) unit rows (e, n, columns), columns = value columns then covariates."""
    arms = []
    for lift in (1.0, 1.0 + effect):
        if design == "ratio_k2":
            a = rng.gamma(2.0, 2.5, size=(e, n))
            r = rng.gamma(2.0, 15.0, size=(e, n))
            den = rng.poisson(a) + 1.0
            num = rng.gamma(2.0 * den, r / 2.0) * lift
            den_pre = rng.poisson(a).astype(float)
            num_pre = rng.gamma(2.0 * den_pre, r / 2.0)  # shape 0 gives 0
            arms.append(np.stack([num, den, num_pre, den_pre], axis=-1))
            continue
        k = int(design[-1])
        base = rng.gamma(1.0, 1.0, size=(e, n))
        cols = [600.0 * base * rng.lognormal(0.0, 0.4, size=(e, n)) * lift,
                600.0 * base * rng.lognormal(0.0, 0.4, size=(e, n))]
        if k >= 3:
            cols += [rng.poisson(8.0 * base).astype(float), rng.poisson(1.0 + 2.0 * base).astype(float)]
        if k >= 5:
            cols += [rng.gamma(2.0, 1.0, size=(e, n)), 600.0 * base * rng.lognormal(0.0, 1.0, size=(e, n))]
        arms.append(np.stack(cols, axis=-1))
    return arms[0], arms[1]


def truth(design: str, effect: float) -> float:
    """True difference treatment - control of the metric."""
    if design == "ratio_k2":
        return 30.0 * effect  # E[Y]/E[X] = E[r] (r independent of X)
    return 600.0 * math.exp(0.4**2 / 2) * effect


def batch_moments(columns: tuple[str, ...], x: np.ndarray) -> Moments:
    """Moments of e experiments at once from x (e, n, k)."""
    return Moments.from_batch(columns, x)


def _cover(low: np.ndarray, high: np.ndarray, t: float) -> np.ndarray:
    return (low <= t) & (t <= high)  # NaN -> False (a miss)


def run_cell(rng: np.random.Generator, design: str, n: int, reps: int, effect: float) -> dict:
    kind, vals, covs = DESIGNS[design]
    cols = vals + covs
    k = len(covs)
    t = truth(design, effect)
    hits = {"unadj": [], "cuped": [], "cuped_dfk": []}
    vr, undefined = [], {"unadj": 0, "cuped": 0}
    chunk = max(1, CHUNK_VALUES // (n * len(cols)))
    for start in range(0, reps, chunk):
        e = min(chunk, reps - start)
        xc, xt = simulate(rng, design, e, n, effect)
        mc, mt = batch_moments(cols, xc), batch_moments(cols, xt)
        metric = RatioMetric("ratio", *vals) if kind == "ratio" else MeanMetric(vals[0])
        plain = independent_estimates(mc, mt, metric, ())
        adj = independent_estimates(mc, mt, metric, covs)
        lp = compare(plain.m_t, plain.m_c, plain.v_t, plain.v_c, n_t=plain.n_t, n_c=plain.n_c)
        la = compare(adj.m_t, adj.m_c, adj.v_t, adj.v_c, n_t=adj.n_t, n_c=adj.n_c)
        big_n = adj.n_t + adj.n_c
        infl = (big_n - 2.0) / (big_n - 2.0 - k)
        with np.errstate(invalid="ignore", divide="ignore"):
            infl = np.where(big_n - 2.0 - k > 0, infl, np.nan)
        lk = compare(adj.m_t, adj.m_c, adj.v_t * infl, adj.v_c * infl, n_t=adj.n_t, n_c=adj.n_c)
        # compare() takes df from n; redo the CI with the reduced df
        dfk = lk.df / infl
        q = critical_value(0.05, np.where(np.isfinite(dfk) & (dfk > 0), dfk, np.inf))
        q = np.where(np.isfinite(dfk) & (dfk > 0), q, np.nan)
        hits["unadj"].append(_cover(lp.abs_ci_low, lp.abs_ci_high, t))
        hits["cuped"].append(_cover(la.abs_ci_low, la.abs_ci_high, t))
        hits["cuped_dfk"].append(_cover(lk.abs_diff - q * lk.abs_se, lk.abs_diff + q * lk.abs_se, t))
        undefined["unadj"] += int(np.sum(~np.isfinite(lp.abs_ci_low)))
        undefined["cuped"] += int(np.sum(~np.isfinite(la.abs_ci_low)))
        vr.append(adj.variance_reduction)
    h = {key: np.concatenate(v).astype(float) for key, v in hits.items()}
    cov = {key: float(v.mean()) for key, v in h.items()}
    d = h["cuped"] - h["unadj"]
    se_diff = float(d.std(ddof=1) / math.sqrt(reps))
    se = {key: math.sqrt(max(p * (1 - p), 1e-12) / reps) for key, p in cov.items()}
    return {
        "n": n, "k": k,
        "unadj": round(cov["unadj"], 4), "cuped": round(cov["cuped"], 4), "cuped_dfk": round(cov["cuped_dfk"], 4),
        "se_unadj": round(se["unadj"], 4), "se_cuped": round(se["cuped"], 4),
        "diff": round(cov["cuped"] - cov["unadj"], 4), "se_diff": round(se_diff, 4),
        "median_vr": round(float(np.nanmedian(np.concatenate(vr))), 3),
        "undefined_unadj": undefined["unadj"], "undefined_cuped": undefined["cuped"],
    }


def ok_flags(cell: dict, tol: float) -> dict[str, bool]:
    nominal_tol = cell["cuped"] >= NOMINAL - tol
    vs_tol = cell["cuped"] >= cell["unadj"] - tol
    return {"nominal_mc": cell["cuped"] >= NOMINAL - 2 * cell["se_cuped"],
            "vs_unadj_mc": cell["cuped"] >= cell["unadj"] - 2 * cell["se_diff"],
            "nominal_tol": nominal_tol, "vs_unadj_tol": vs_tol, "either_tol": nominal_tol or vs_tol}


def smallest_ok(cells: list[dict], criterion: str, tol: float) -> int | None:
    """Smallest n from which on every grid size is ok by the criterion (None: not even the largest)."""
    best = None
    for cell in sorted(cells, key=lambda c: -c["n"]):
        if not ok_flags(cell, tol)[criterion]:
            break
        best = cell["n"]
    return best


def at_threshold(cells: list[dict], threshold: float, tol: float) -> dict:
    """The first grid cell at or above a rule's threshold, with its coverage."""
    above = [c for c in sorted(cells, key=lambda c: c["n"]) if c["n"] >= threshold]
    if not above:
        return {"threshold": threshold, "grid_n": None}
    c = above[0]
    return {"threshold": threshold, "grid_n": c["n"], "cuped": c["cuped"], "unadj": c["unadj"],
            "se_diff": c["se_diff"], **ok_flags(c, tol)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0, help="seed of the whole run (default 0)")
    ap.add_argument("--reps", type=int, default=40000, help="simulated experiments per (design, n)")
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="units per arm")
    ap.add_argument("--designs", nargs="+", default=list(DESIGNS), choices=list(DESIGNS))
    ap.add_argument("--effect", type=float, default=0.05, help="relative treatment effect (0 = A/A)")
    ap.add_argument("--rule", type=float, nargs=2, default=[20.0, 10.0], metavar=("C0", "C1"),
                    help="guard rule to evaluate: n >= max(C0, C1 (k + 1)) (default 20 10)")
    ap.add_argument("--tol", type=float, default=0.01, help="coverage tolerance of the *_tol criteria")
    args = ap.parse_args()
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    results: dict[str, list[dict]] = {}
    for design in args.designs:
        results[design] = [run_cell(rng, design, n, args.reps, args.effect) for n in sorted(args.sizes)]
    c0, c1 = args.rule
    guard = {}
    for design, cells in results.items():
        k = cells[0]["k"]
        guard[design] = {
            "k": k,
            "smallest_n": {crit: smallest_ok(cells, crit, args.tol) for crit in CRITERIA},
            "current_rule": at_threshold(cells, k + 3, args.tol),
            "guard_rule": at_threshold(cells, max(c0, c1 * (k + 1)), args.tol),
        }
    out = {
        "bench": "cuped_guard", "seed": args.seed, "reps": args.reps, "effect": args.effect,
        "nominal": NOMINAL, "tol": args.tol, "mc_se_at_nominal": round(math.sqrt(NOMINAL * (1 - NOMINAL) / args.reps), 4),
        "rule": f"n >= max({c0:g}, {c1:g} (k + 1))", "guard": guard, "cells": results,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
