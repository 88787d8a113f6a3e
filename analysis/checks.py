"""Trust checks: sample ratio mismatch, minimum sample, heavy tails, and winsorisation.

* SRM: Pearson chi-square of the arm counts against the configured split,
  X^2 = sum_a (n_a - N p_a)^2 / (N p_a), df = arms - 1 (scipy.stats.chisquare); fails below
  `srm_alpha` (default 0.001, Kohavi, Tang and Xu 2020, ch. 21: SRM usually means a bug, and a strict
  threshold keeps false alarms rare over many experiments).
* Minimum sample: every arm has at least `min_units` units.
* Heavy tails: the normal approximation to a mean of n units with skewness g1 is adequate when
  n > 355 g1^2 (Kohavi, Deng, Longbotham and Xu 2014, "Seven rules of thumb", rule 7: from a
  Edgeworth bound for a 95% CI to keep its nominal coverage within 1%). Below that the CI is flagged;
  winsorising (capping at a pooled upper quantile, `AnalysisConfig.winsorize`) is the recorded remedy.
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


def heavy_tail_check(metric: str, column: str, arms: Mapping[str, Moments], factor: float = 355.0
                     ) -> CheckResult:
    """Flag when some arm has n < factor * skewness^2 (normal CI of the mean unreliable)."""
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
    msg = (f"column {column!r} is too heavy-tailed for the normal CI ({worst}); consider "
           "AnalysisConfig(winsorize=0.999) or a bootstrap CI") if not passed else \
        f"column {column!r}: sample large enough for its skewness" + (f" ({worst})" if worst else "")
    return CheckResult("heavy_tail", metric, "all", passed, "info" if passed else "warning",
                       worst_ratio, float("nan"), 1.0, msg)


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
    from analysis.lifts import compare

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

