"""Which CI to trust on heavy-tailed (lognormal) metrics: coverage, one-sided misses and width of the
normal-theory, bootstrap and winsorized intervals; the evidence behind the heavy-tail warning.

    .venv/bin/python bench/heavy_tail.py [--seed 0] [--reps 10000] [--boot-reps 400] [--resamples 1000]

Prints one JSON line. Per-unit values are lognormal(0, sigma) in control and (1 + effect) times
lognormal(0, sigma) in treatment (a multiplicative effect), sigma in {1, 1.5, 2}, n in {200, 1000,
5000} units per arm, effect in {0, +2%}. The two effects share their random numbers (the +2% treatment
arm is 1.02 times the A/A one), so the log and Fieller relative CIs, which are scale-equivariant, cover
in exactly the same replicates in both; the other methods nearly so. Truths: difference of means
effect * exp(sigma^2 / 2), relative lift = effect.

Methods (95%, two-sided), each with coverage, Monte-Carlo se sqrt(p(1-p)/reps), the one-sided misses
`over` (the CI lies entirely above the truth: the effect is overstated; for an increase-is-good metric
this is the harmful side, a false ship or a guardrail passed wrongly) and `under` (entirely below;
nominal 2.5% each), `over_share` (share of the misses that are `over`) and the mean width (absolute
CIs in units of the control mean exp(sigma^2/2), so every width reads as a relative lift):
* welch: Welch absolute CI (`analysis.lifts.compare`), covering the true difference;
* rel_delta, rel_log, rel_fieller: `analysis.lifts.relative_ci` with the Welch critical value, covering
  the true relative lift; `undefined` = share of replicates where the lift is undefined (control mean
  within 3 se of 0, or Fieller unbounded); coverage and widths are over the defined ones;
* boot_pct_abs / boot_bca_abs / boot_pct_rel / boot_bca_rel: percentile and BCa bootstrap of the
  difference and of the relative lift (`--boot-reps` replicates with `--resamples` resamples each, arms
  resampled independently; BCa as scipy.stats.bootstrap computes it, with its jackknife acceleration
  in closed form for these statistics; checked against scipy in development);
* winsor_q (q in {0.99, 0.995, 0.999}): both arms capped at the pooled q-quantile of the experiment
  (linear interpolation, as DuckDB quantile_cont), then Welch. `cover` is coverage of the true
  (untrimmed) difference, `cover_w` coverage of the winsorized estimand (the difference of E min(Y, c)
  with c the pooled population quantile), `shrink` = winsorized estimand / true difference (effect > 0),
  `bias` = mean(estimate - true difference) in units of the control mean; winsor_q_rel: the
  delta-method relative CI on the capped data, covering the true (untrimmed) relative lift.

Heavy-tail flags: `flag_per_arm` = share of replicates the current check (`checks.heavy_tail_check`:
n < 355 g1^2 in some arm, g1 the sample skewness) fires; `flag_diff` = share where the skewness of the
difference of the two arm means, (m3_t / n_t^2 - m3_c / n_c^2) / se^3 (m3 the third central moment),
exceeds 1 / sqrt(355) in size: the same Edgeworth bound applied to the statistic the CI is for
(for one arm it is exactly n < 355 g1^2); `flag_diff_pooled` = the same with one pooled shape
(m3, m2 pooled over the arms), |g1| |1/n_t^2 - 1/n_c^2| / (1/n_t + 1/n_c)^1.5 > 1/sqrt(355): what is
left when both arms have the same distribution, 0 for equal arms. `median_g1` is the median sample skewness of the control arm;
`need_n_pop` = 355 g1^2 with the population skewness of lognormal(sigma).

`unequal`: the same for a 10%/90% split (500 treatment, 4500 control units; bootstrap with
`--unequal-boot-reps` replicates), where the skewness of the two arm means no longer cancels in the
difference.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy import optimize, special, stats

# bench/analysis.py would shadow the `analysis` package (the script's folder comes first on sys.path)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.lifts import compare, critical_value, relative_ci  # noqa: E402

SIGMAS = (1.0, 1.5, 2.0)
SIZES = (200, 1000, 5000)
EFFECTS = (0.0, 0.02)
QUANTILES = (0.99, 0.995, 0.999)
ALPHA = 0.05
KOHAVI = 355.0
CHUNK_VALUES = 2_000_000  # values per arm and chunk


# --------------------------------------------------------------------------------------------------
# population quantities


def lognormal_skewness(sigma: float) -> float:
    s2 = sigma**2
    return (math.exp(s2) + 2.0) * math.sqrt(math.expm1(s2))


def capped_mean(sigma: float, scale: float, cap: float) -> float:
    """E min(scale X, cap) for X ~ lognormal(0, sigma)."""
    z = math.log(cap / scale) / sigma
    return scale * math.exp(sigma**2 / 2) * stats.norm.cdf(z - sigma) + cap * stats.norm.sf(z)


def winsor_estimand(sigma: float, effect: float, q: float) -> float:
    """E min(Y_t, c) - E min(Y_c, c), c the q-quantile of the 50/50 mixture of the two arms."""
    f = lambda c: 0.5 * (stats.norm.cdf(math.log(c) / sigma)  # noqa: E731
                         + stats.norm.cdf(math.log(c / (1 + effect)) / sigma)) - q
    c = optimize.brentq(f, 1e-9, 1e12, xtol=1e-12, rtol=1e-12)
    return capped_mean(sigma, 1 + effect, c) - capped_mean(sigma, 1.0, c)


# --------------------------------------------------------------------------------------------------
# tallies


class Tally:
    """Coverage, one-sided misses and width of one method over replicates (undefined CIs left out)."""

    def __init__(self) -> None:
        self.n = self.defined = self.hit = self.over = self.under = 0
        self.width = 0.0
        self.extra: dict[str, float] = {}

    def add(self, low: np.ndarray, high: np.ndarray, truth: float, width_unit: float = 1.0) -> None:
        ok = np.isfinite(low) & np.isfinite(high)
        self.n += low.size
        self.defined += int(ok.sum())
        lo, hi = low[ok], high[ok]
        self.over += int(np.sum(lo > truth))
        self.under += int(np.sum(hi < truth))
        self.hit += int(np.sum((lo <= truth) & (truth <= hi)))
        self.width += float(np.sum(hi - lo)) / width_unit

    def add_extra(self, key: str, values: np.ndarray) -> None:
        self.extra[key] = self.extra.get(key, 0.0) + float(np.sum(values))

    def result(self) -> dict:
        d = max(self.defined, 1)
        p = self.hit / d
        miss = self.over + self.under
        out = {"cover": round(p, 4), "se": round(math.sqrt(max(p * (1 - p), 1e-12) / d), 4),
               "over": round(self.over / d, 4), "under": round(self.under / d, 4),
               "over_share": round(self.over / miss, 3) if miss else None,
               "width": round(self.width / d, 4)}
        if self.defined < self.n:
            out["undefined"] = round(1 - self.defined / self.n, 4)
        for key, v in self.extra.items():
            out[key] = round(v / self.n, 5)
        return out


def welch_ci(xt: np.ndarray, xc: np.ndarray):
    """compare() on arm samples (reps, n): the Lift arrays and the Welch critical value."""
    nt, nc = xt.shape[1], xc.shape[1]
    mt, mc = xt.mean(axis=1), xc.mean(axis=1)
    vt, vc = xt.var(axis=1, ddof=1) / nt, xc.var(axis=1, ddof=1) / nc
    lift = compare(mt, mc, vt, vc, n_t=nt, n_c=nc, relative_method="delta")
    q = critical_value(ALPHA, np.where(np.isnan(lift.df), np.inf, lift.df))
    return lift, (mt, mc, vt, vc, q)


def skew_flags(xt: np.ndarray, xc: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(per-arm flag, difference flag, pooled-shape difference flag, control g1) per replicate."""
    out = []
    for x in (xt, xc):
        n = x.shape[1]
        d = x - x.mean(axis=1, keepdims=True)
        m2, m3 = np.sum(d * d, axis=1), np.sum(d * d * d, axis=1)  # central sums, as Moments
        out.append((n, m2, m3, math.sqrt(n) * m3 / m2**1.5))
    (nt, m2t, m3t, g1t), (nc, m2c, m3c, g1c) = out
    bound = 1 / math.sqrt(KOHAVI)
    per_arm = (nt < KOHAVI * g1t**2) | (nc < KOHAVI * g1c**2)
    skew_d = (m3t / nt**3 - m3c / nc**3) / (m2t / nt**2 + m2c / nc**2) ** 1.5
    # the same with one (pooled) shape for both arms: only the allocation is left, 0 for equal arms
    m2p, m3p = (m2t + m2c) / (nt + nc), (m3t + m3c) / (nt + nc)
    skew_p = m3p * (1 / nt**2 - 1 / nc**2) / (m2p * (1 / nt + 1 / nc)) ** 1.5
    return per_arm, np.abs(skew_d) > bound, np.abs(skew_p) > bound, g1c


# --------------------------------------------------------------------------------------------------
# normal-theory and winsorized intervals (many replicates)


def analytic_cells(rng: np.random.Generator, sigma: float, n_t: int, n_c: int, reps: int,
                   effects: tuple[float, ...], with_winsor: bool = True) -> dict[float, dict]:
    mu = math.exp(sigma**2 / 2)
    names = ["welch", "rel_delta", "rel_log", "rel_fieller"]
    if with_winsor:
        names += [f"winsor_{q:g}" for q in QUANTILES] + [f"winsor_{q:g}_rel" for q in QUANTILES]
    tallies = {e: {m: Tally() for m in names} for e in effects}
    flags = {e: {"per_arm": 0, "diff": 0, "diff_pooled": 0} for e in effects}
    g1s = []
    west = {(e, q): winsor_estimand(sigma, e, q) for e in effects for q in QUANTILES} if with_winsor else {}
    chunk = max(1, CHUNK_VALUES // max(n_t, n_c))
    for start in range(0, reps, chunk):
        r = min(chunk, reps - start)
        xc = rng.lognormal(0.0, sigma, size=(r, n_c))
        base_t = rng.lognormal(0.0, sigma, size=(r, n_t))
        for e in effects:
            xt = base_t * (1.0 + e)
            true_d = e * mu
            tl = tallies[e]
            lift, (mt, mc, vt, vc, q) = welch_ci(xt, xc)
            tl["welch"].add(lift.abs_ci_low, lift.abs_ci_high, true_d, mu)
            tl["rel_delta"].add(lift.rel_ci_low, lift.rel_ci_high, e)
            for method in ("log", "fieller"):
                _, lo, hi, _ = relative_ci(mt, mc, vt, vc, 0.0, q, method)
                tl[f"rel_{method}"].add(lo, hi, e)
            fa, fd, fp, g1c = skew_flags(xt, xc)
            flags[e]["per_arm"] += int(fa.sum())
            flags[e]["diff"] += int(fd.sum())
            flags[e]["diff_pooled"] += int(fp.sum())
            if e == effects[0]:
                g1s.append(g1c)
            if not with_winsor:
                continue
            pooled = np.concatenate([xt, xc], axis=1)
            caps = np.quantile(pooled, QUANTILES, axis=1)  # (len(QUANTILES), r)
            del pooled
            for qi, qq in enumerate(QUANTILES):
                cap = caps[qi][:, None]
                wl, _ = welch_ci(np.minimum(xt, cap), np.minimum(xc, cap))
                t = tl[f"winsor_{qq:g}"]
                t.add(wl.abs_ci_low, wl.abs_ci_high, true_d, mu)
                w_est = west[(e, qq)]
                t.add_extra("cover_w", (wl.abs_ci_low <= w_est) & (w_est <= wl.abs_ci_high))
                t.add_extra("bias", (wl.abs_diff - true_d) / mu)
                tl[f"winsor_{qq:g}_rel"].add(wl.rel_ci_low, wl.rel_ci_high, e)
    out = {}
    g1 = np.concatenate(g1s)
    for e in effects:
        res = {m: t.result() for m, t in tallies[e].items()}
        for qq in QUANTILES if with_winsor else ():
            w = res[f"winsor_{qq:g}"]
            w["estimand_w"] = round(west[(e, qq)] / mu, 5)  # in units of the control mean
            w["shrink"] = round(west[(e, qq)] / (e * mu), 4) if e else None
        out[e] = {"methods": res, "flag_per_arm": round(flags[e]["per_arm"] / reps, 4),
                  "flag_diff": round(flags[e]["diff"] / reps, 4),
                  "flag_diff_pooled": round(flags[e]["diff_pooled"] / reps, 4),
                  "median_g1": round(float(np.median(g1)), 2)}
    return out


# --------------------------------------------------------------------------------------------------
# bootstrap (fewer replicates)


def _quantile_rows(sorted_b: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Linear-interpolation quantile (numpy's default) of each row at its own probability p (rows,)."""
    b = sorted_b.shape[-1]
    pos = np.clip(p, 0.0, 1.0) * (b - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, b - 1)
    frac = pos - lo
    rows = np.arange(sorted_b.shape[0])
    return sorted_b[rows, lo] * (1 - frac) + sorted_b[rows, hi] * frac


def bca_interval(theta_b: np.ndarray, theta_hat: np.ndarray, a_hat: np.ndarray,
                 alpha: float = ALPHA / 2) -> tuple[np.ndarray, np.ndarray]:
    """BCa limits as scipy.stats.bootstrap (_bca_interval) computes them, rows = replicates."""
    bsz = theta_b.shape[-1]
    pct = (np.sum(theta_b < theta_hat[:, None], axis=1) + np.sum(theta_b <= theta_hat[:, None], axis=1)) / (2 * bsz)
    z0 = special.ndtri(pct)
    za = special.ndtri(alpha)
    num1, num2 = z0 + za, z0 - za
    a1 = special.ndtr(z0 + num1 / (1 - a_hat * num1))
    a2 = special.ndtr(z0 + num2 / (1 - a_hat * num2))
    s = np.sort(theta_b, axis=1)
    return _quantile_rows(s, a1), _quantile_rows(s, a2)


def jackknife_accel(xt: np.ndarray, xc: np.ndarray, effect_scale: float) -> tuple[float, float]:
    """scipy's acceleration a_hat for D = s mean_t - mean_c and R = s mean_t / mean_c - 1 (s = 1 + effect)."""
    nt, nc = xt.size, xc.size
    mt, mc = xt.mean(), xc.mean()
    # D: leave-one-out from t gives U_i = s (x_i - mean_t); from c, U_i = -(x_i - mean_c)
    ut, uc = effect_scale * (xt - mt), -(xc - mc)
    a_d = (np.sum(ut**3) / nt**3 + np.sum(uc**3) / nc**3) / 6 / (np.sum(ut**2) / nt**2 + np.sum(uc**2) / nc**2) ** 1.5
    # R: from t, theta_i = s (S_t - x_i) / ((n_t - 1) mean_c) - 1; from c, theta_i = s mean_t (n_c - 1) / (S_c - x_i) - 1
    tt = effect_scale * (xt.sum() - xt) / ((nt - 1) * mc) - 1
    tc = effect_scale * mt * (nc - 1) / (xc.sum() - xc) - 1
    ut, uc = (nt - 1) * (tt.mean() - tt), (nc - 1) * (tc.mean() - tc)
    a_r = (np.sum(ut**3) / nt**3 + np.sum(uc**3) / nc**3) / 6 / (np.sum(ut**2) / nt**2 + np.sum(uc**2) / nc**2) ** 1.5
    return float(a_d), float(a_r)


def bootstrap_cells(rng: np.random.Generator, sigma: float, n_t: int, n_c: int, reps: int, resamples: int,
                    effects: tuple[float, ...]) -> dict[float, dict]:
    mu = math.exp(sigma**2 / 2)
    names = ("boot_pct_abs", "boot_bca_abs", "boot_pct_rel", "boot_bca_rel")
    tallies = {e: {m: Tally() for m in names} for e in effects}
    idx_dtype = np.uint16 if max(n_t, n_c) <= np.iinfo(np.uint16).max else np.int64
    lims = {e: {m: ([], []) for m in names} for e in effects}
    for _ in range(reps):
        xc = rng.lognormal(0.0, sigma, size=n_c)
        xt = rng.lognormal(0.0, sigma, size=n_t)  # the A/A treatment arm; effect e scales it by 1 + e
        bt = xt[rng.integers(0, n_t, size=(resamples, n_t), dtype=idx_dtype)].mean(axis=1)
        bc = xc[rng.integers(0, n_c, size=(resamples, n_c), dtype=idx_dtype)].mean(axis=1)
        for e in effects:
            s = 1.0 + e
            d_b, r_b = s * bt - bc, s * bt / bc - 1
            d_hat, r_hat = s * xt.mean() - xc.mean(), s * xt.mean() / xc.mean() - 1
            a_d, a_r = jackknife_accel(xt, xc, s)
            for m, stat_b, hat, a in (("abs", d_b, d_hat, a_d), ("rel", r_b, r_hat, a_r)):
                plo, phi = np.quantile(stat_b, [ALPHA / 2, 1 - ALPHA / 2])
                blo, bhi = bca_interval(stat_b[None, :], np.array([hat]), np.array([a]))
                lims[e][f"boot_pct_{m}"][0].append(plo)
                lims[e][f"boot_pct_{m}"][1].append(phi)
                lims[e][f"boot_bca_{m}"][0].append(blo[0])
                lims[e][f"boot_bca_{m}"][1].append(bhi[0])
    out = {}
    for e in effects:
        for m in names:
            lo, hi = np.array(lims[e][m][0]), np.array(lims[e][m][1])
            if m.endswith("abs"):
                tallies[e][m].add(lo, hi, e * mu, mu)
            else:
                tallies[e][m].add(lo, hi, e)
        out[e] = {m: t.result() for m, t in tallies[e].items()}
    return out


# --------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0, help="seed of the whole run (default 0)")
    ap.add_argument("--reps", type=int, default=10000, help="replicates per cell, normal-theory and winsorized CIs")
    ap.add_argument("--boot-reps", type=int, default=400, help="replicates per cell for the bootstrap (0 = skip)")
    ap.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples per replicate")
    ap.add_argument("--sigmas", type=float, nargs="+", default=list(SIGMAS))
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="units per arm")
    ap.add_argument("--effects", type=float, nargs="+", default=list(EFFECTS), help="relative effects")
    ap.add_argument("--no-unequal", action="store_true", help="skip the 500/4500 split")
    ap.add_argument("--unequal-boot-reps", type=int, default=200, help="bootstrap replicates of the 500/4500 cells")
    args = ap.parse_args()
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    effects = tuple(args.effects)
    cells, unequal = [], []
    for sigma in args.sigmas:
        for n in args.sizes:
            res = analytic_cells(rng, sigma, n, n, args.reps, effects)
            boot = bootstrap_cells(rng, sigma, n, n, args.boot_reps, args.resamples, effects) if args.boot_reps else {}
            for e in effects:
                row = {"sigma": sigma, "n": n, "effect": e, **res[e]}
                row["methods"].update(boot.get(e, {}))
                cells.append(row)
        if not args.no_unequal:
            res = analytic_cells(rng, sigma, 500, 4500, args.reps, effects)
            ub = args.unequal_boot_reps
            boot = bootstrap_cells(rng, sigma, 500, 4500, ub, args.resamples, effects) if ub else {}
            for e in effects:
                row = {"sigma": sigma, "n_t": 500, "n_c": 4500, "effect": e, **res[e]}
                row["methods"].update(boot.get(e, {}))
                unequal.append(row)
    population = {f"{s:g}": {"g1": round(lognormal_skewness(s), 2),
                             "need_n_pop": round(KOHAVI * lognormal_skewness(s) ** 2)} for s in args.sigmas}
    out = {"bench": "heavy_tail", "seed": args.seed, "reps": args.reps, "boot_reps": args.boot_reps,
           "unequal_boot_reps": args.unequal_boot_reps, "resamples": args.resamples, "nominal": 1 - ALPHA,
           "population": population, "cells": cells, "unequal": unequal,
           "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
