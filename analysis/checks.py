"""Trust checks: sample ratio mismatch, minimum sample, heavy tails, and winsorisation.

* SRM: Pearson chi-square of the arm counts against the configured split,
  X^2 = sum_a (n_a - N p_a)^2 / (N p_a), df = arms - 1 (scipy.stats.chisquare); fails below
  `srm_alpha` (default 0.001, Kohavi, Tang and Xu 2020, ch. 21: SRM usually means a bug, and a strict
  threshold keeps false alarms rare over many experiments).
* Minimum sample: every arm has at least `min_units` units.
* Heavy tails, two checks, both from simulation (bench/heavy_tail.py, lognormal sigma 1-2, 200-5000
  units per arm, 10,000 experiments per cell; figures in docs/statistics.md):
  - `heavy_tail` (per arm): n < factor g1^2 (Kohavi, Deng, Longbotham and Xu 2014, "Seven rules of
    thumb", rule 7, factor 355: a one-sample bound for the CI of a mean). For the *difference* of two
    equal arms the skewness cancels and the Welch CI held (95.0-96.9% where this rule fired in every
    replicate), but the delta and log *relative* CIs under-covered (down to 91.3% and 90.2%) while
    Fieller held (95.0-96.3%): the remedy is `relative_ci="fieller"`, a warning only when the relative
    CI is delta or log. A bootstrap does not help (percentile 92.0%, BCa 84.2% at sigma 2, n 1000).
  - `skewed_difference` (per treatment): the third cumulant of the difference of means is
    mu3 (1/n_t^2 - 1/n_c^2), so rule 7 applied to the difference reads n_eff < factor g1^2 with
    n_eff = (1/n_t + 1/n_c)^3 / (1/n_t^2 - 1/n_c^2)^2 (infinite for equal arms) and g1 the pooled
    skewness. With a 10%/90% split the Welch CI covered 94.3/91.8/88.4% (sigma 1/1.5/2), the misses
    on the smaller arm's side; winsorising at the pooled 0.995 quantile restored about 94% but
    estimates a smaller effect (a lift shrinks to 72-94% of its size), so it is no remedy for a
    non-inferiority guardrail.
* Pre-period balance: for every CUPED covariate, a Welch test that its mean is the same in control and
  treatment. Randomisation makes the pre-period balanced in expectation, so a covariate that differs at
  p < `srm_alpha` points to a broken assignment (as an SRM does); CUPED corrects chance imbalance, not a
  biased split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

from analysis.aggregates import Moments
from analysis.errors import AnalysisError
from analysis.lifts import compare
from analysis.results import CheckResult


def srm_test(counts: Mapping[str, int], expected_split: Mapping[str, float] | None = None,
             alpha: float = 0.001) -> CheckResult:
    """Chi-square goodness-of-fit of arm counts to the expected split (equal shares by default)."""
    arms = list(counts)
    obs = np.array([float(counts[a]) for a in arms])
    if expected_split is None:
        share = np.full(len(arms), 1.0 / len(arms))
    else:
        missing = [a for a in arms if a not in expected_split]
        if missing:
            raise AnalysisError(f"expected_split has no share for arm(s) {missing}; it lists "
                                f"{sorted(expected_split)}")
        share = np.array([float(expected_split[a]) for a in arms])
        share = share / share.sum()
    total = obs.sum()
    if len(arms) < 2 or total == 0:
        return CheckResult("srm", "", "all", True, "info", float("nan"), float("nan"), alpha,
                           "fewer than two non-empty arms: SRM not tested")
    res = stats.chisquare(obs, total * share)
    stat, p = float(res.statistic), float(res.pvalue)
    observed = ", ".join(f"{a}={int(n)} ({n / total:.2%}, expected {s:.2%})" for a, n, s in zip(arms, obs, share, strict=True))
    passed = p >= alpha
    msg = f"chi2={stat:.3g}, p={p:.3g} ({'ok' if passed else 'MISMATCH'} at alpha={alpha:g}): {observed}"
    return CheckResult("srm", "", "all", passed, "info" if passed else "error", stat, p, alpha, msg)


def min_sample_check(counts: Mapping[str, int], min_units: int, segment: str = "all") -> CheckResult:
    small = {a: n for a, n in counts.items() if n < min_units}
    n_min = float(min(counts.values())) if counts else 0.0
    if small:
        return CheckResult("min_sample", "", segment, False, "warning", n_min, float("nan"), float(min_units),
                           f"arm(s) below the minimum of {min_units} units: {small}")
    return CheckResult("min_sample", "", segment, True, "info", n_min, float("nan"), float(min_units),
                       f"every arm has at least {min_units} units")


def heavy_tail_check(metric: str, column: str, arms: Mapping[str, Moments], factor: float = 355.0,
                     relative_ci: str = "delta") -> CheckResult:
    """Flag when some arm has n < factor * skewness^2; it matters for the delta/log relative CI."""
    worst_ratio, worst = 0.0, ""
    for arm, m in arms.items():
        g1 = m.skewness(column)
        if not np.isfinite(g1):
            continue
        need = factor * g1**2
        ratio = need / max(float(m.n), 1.0)
        if ratio > worst_ratio:
            worst_ratio, worst = ratio, f"{arm}: n={int(m.n)}, skewness={g1:.3g}, needs n > {need:.0f}"
    passed = worst_ratio <= 1.0
    if passed:
        msg = f"column {column!r}: sample large enough for its skewness" + (f" ({worst})" if worst else "")
        return CheckResult("heavy_tail", metric, "all", True, "info", worst_ratio, float("nan"), 1.0, msg)
    msg = (f"column {column!r} is heavy-tailed ({worst}): with equal-sized arms the skewness cancels in the "
           "difference and the Welch CI of the absolute lift holds (95-97% in lognormal simulations), but the "
           "delta and log relative CIs under-cover (down to 90%): use AnalysisConfig(relative_ci=fieller) "
           "(95-96%). If the tail may lack a finite variance, AnalysisConfig(winsorize=0.995) caps it (a "
           "smaller estimand). A bootstrap does not help (percentile 92%, BCa 84% in the same simulations)")
    severity = "info" if relative_ci == "fieller" else "warning"
    return CheckResult("heavy_tail", metric, "all", False, severity, worst_ratio, float("nan"), 1.0, msg)


def skewed_difference_check(metric: str, column: str, control: str, treatment: str, mc: Moments, mt: Moments,
                            factor: float = 355.0) -> CheckResult:
    """Rule 7 for the difference of means of unequal arms (see module docstring): warn when
    n_eff = (1/n_t + 1/n_c)^3 / (1/n_t^2 - 1/n_c^2)^2 < factor g1^2, g1 the pooled skewness."""
    nc, nt = float(mc.n), float(mt.n)
    g1 = (mc + mt).skewness(column) if min(nc, nt) >= 1 else float("nan")
    gap = abs(1.0 / nt**2 - 1.0 / nc**2) if min(nc, nt) > 0 else 0.0
    n_eff = (1.0 / nt + 1.0 / nc) ** 3 / gap**2 if gap > 0 else float("inf")
    need = factor * g1**2 if np.isfinite(g1) else 0.0
    if not need or n_eff >= need:
        size = "equal arms" if not np.isfinite(n_eff) else f"effective n {n_eff:.0f}"
        return CheckResult("skewed_difference", metric, treatment, True, "info", need / n_eff if need else 0.0,
                           float("nan"), 1.0, f"column {column!r}: {size}, difference of means near normal")
    small, large = (treatment, control) if nt < nc else (control, treatment)
    side = "low" if small == treatment else "high"
    msg = (f"column {column!r}: skewness {g1:.3g} with unequal arms ({small} n={int(min(nc, nt))}, {large} "
           f"n={int(max(nc, nt))}) skews the difference of means (effective n {n_eff:.0f} < {factor:g} g1^2 = "
           f"{need:.0f}); the normal CI tends to sit too {side} (simulated 10%/90% lognormal split: 88-94% "
           "coverage, up to 11% misses on one side) and a bootstrap does not fix it (83-96%). Compare "
           "equal-sized arms, or AnalysisConfig(winsorize=0.995) (about 94%, but a smaller estimand: not for "
           "non-inferiority guardrails)")
    return CheckResult("skewed_difference", metric, treatment, False, "warning", need / n_eff, float("nan"), 1.0, msg)


def proportion_check(metric: str, column: str, arms: Mapping[str, Moments]) -> CheckResult:
    lo = min(float(m.minimum[m.columns.index(column)]) for m in arms.values())
    hi = max(float(m.maximum[m.columns.index(column)]) for m in arms.values())
    if lo < 0 or hi > 1:
        raise AnalysisError(f"proportion metric {metric!r}: column {column!r} has values in [{lo:g}, {hi:g}], "
                            "outside [0, 1]; declare it as a MeanMetric or fix the column")
    return CheckResult("proportion_range", metric, "all", True, "info", hi, float("nan"), 1.0,
                       f"values of {column!r} lie in [{lo:g}, {hi:g}]")


def winsorize_caps(con, src: str, columns: Sequence[str], q: float, where: str) -> dict[str, float]:
    """Pooled upper q-quantile of each column (DuckDB quantile_cont), the caps for winsorising."""
    from analysis.aggregates import _quote

    if not columns:
        return {}
    sel = ", ".join(f"quantile_cont({_quote(c)}, {q!r})" for c in columns)
    row = con.execute(f"SELECT {sel} FROM {src} WHERE {where}").fetchone()
    return {c: float(v) for c, v in zip(columns, row, strict=True) if v is not None}


def balance_check(covariate: str, treatment: str, mc: Moments, mt: Moments, alpha: float) -> CheckResult:
    """Welch test of equal pre-period means of `covariate` in control and `treatment` (see module docstring)."""
    i, j = mc.columns.index(covariate), mt.columns.index(covariate)
    nc, nt = float(mc.n), float(mt.n)
    lift = compare(mt.mean[j], mc.mean[i], mt.var(covariate) / nt, mc.var(covariate) / nc, n_t=nt, n_c=nc)
    p = float(lift.p_value)
    passed = not (np.isfinite(p) and p < alpha)
    msg = (f"pre-period {covariate!r}: control {float(mc.mean[i]):.4g}, {treatment} {float(mt.mean[j]):.4g}, "
           f"difference {float(lift.abs_diff):+.4g}, p={p:.3g}" +
           ("" if passed else f" < {alpha:g}: the arms differed before the test; check the assignment"))
    return CheckResult("pre_balance", covariate, treatment, passed, "info" if passed else "warning",
                       float(lift.abs_diff), p, alpha, msg)

