"""Power, minimum detectable effect and sample size for a two-arm comparison.

Two-sided test of a difference of means with n1 control and n2 = ratio * n1 treatment units and
standardised effect d = delta / sigma (sigma the per-unit standard deviation; with CUPED,
sigma^2 (1 - r) where r is the variance reduction, Deng et al. 2013):

* z:  power = Phi(d / s - z_{1-a/2}) + Phi(-d / s - z_{1-a/2}),  s = sqrt(1/n1 + 1/n2);
* t:  power = P(T' > t_{1-a/2, df}) + P(T' < -t_{1-a/2, df}),  T' ~ noncentral t(df = n1 + n2 - 2,
  ncp = d / s) (the pooled two-sample t; equal to statsmodels' TTestIndPower / NormalIndPower).

MDE and sample size invert the power function numerically (brentq), since the two-tail and t forms
have no closed-form inverse.
"""

from __future__ import annotations

import math

from scipy import optimize, special, stats

from analysis.errors import AnalysisError


def power_two_sample(effect_size: float, nobs1: float, *, ratio: float = 1.0, alpha: float = 0.05,
                     test: str = "z") -> float:
    """Power of the two-sided test for a standardised effect.

    Calls the scipy.special functions behind scipy.stats.norm / t / nct directly (ndtr, ndtri, stdtrit,
    nctdtr): the same numbers (the noncentral-t upper tail as 1 - cdf, within 1e-16) at ~5 us instead
    of ~150 us a call, which matters because `mde` inverts this by root finding for every metric.
    """
    n2 = ratio * nobs1
    s = math.sqrt(1.0 / nobs1 + 1.0 / n2)
    ncp = effect_size / s
    if test == "z":
        crit = -special.ndtri(alpha / 2)
        return float(special.ndtr(ncp - crit) + special.ndtr(-crit - ncp))
    df = nobs1 + n2 - 2.0
    crit = -special.stdtrit(df, alpha / 2)
    return float((1.0 - special.nctdtr(df, ncp, crit)) + special.nctdtr(df, ncp, -crit))


def _check(alpha: float, power: float, test: str) -> None:
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise AnalysisError(f"alpha={alpha!r} and power={power!r} must be in (0, 1)")
    if power <= alpha:
        raise AnalysisError(f"power={power!r} must exceed alpha={alpha!r}")
    if test not in ("z", "welch", "t"):
        raise AnalysisError(f"test={test!r}: use 'z' or 'welch'")


def _test(test: str) -> str:
    return "z" if test == "z" else "t"


def mde(nobs1: float, sd: float, *, ratio: float = 1.0, alpha: float = 0.05, power: float = 0.8,
        test: str = "z", variance_reduction: float = 0.0) -> float:
    """Smallest absolute effect detected with `power` at `nobs1` control units (metric units)."""
    _check(alpha, power, test)
    if not nobs1 * min(ratio, 1.0) >= 2 or not sd >= 0 or not 0 <= variance_reduction < 1:
        raise AnalysisError(f"mde needs nobs1 >= 2, sd >= 0 and 0 <= variance_reduction < 1 "
                            f"(got {nobs1}, {sd}, {variance_reduction})")
    kind = _test(test)
    f = lambda d: power_two_sample(d, nobs1, ratio=ratio, alpha=alpha, test=kind) - power  # noqa: E731
    # bracket from the one-tailed z formula d0 = (z_{1-a/2} + z_power) s (noncentral t is NaN far out)
    s = math.sqrt(1.0 / nobs1 + 1.0 / (ratio * nobs1))
    hi = 1.5 * (stats.norm.isf(alpha / 2) + stats.norm.ppf(power)) * s
    while f(hi) < 0:
        hi *= 2.0
    d = optimize.brentq(f, 0.0, hi, xtol=1e-14, rtol=1e-13)
    return d * sd * math.sqrt(1.0 - variance_reduction)


def sample_size(effect: float, sd: float, *, ratio: float = 1.0, alpha: float = 0.05, power: float = 0.8,
                test: str = "z", variance_reduction: float = 0.0) -> float:
    """Control units needed (treatment = ratio * that) to detect an absolute `effect` (real-valued;
    round up)."""
    _check(alpha, power, test)
    if not effect != 0 or not sd > 0 or not 0 <= variance_reduction < 1:
        raise AnalysisError(f"sample_size needs effect != 0, sd > 0 and 0 <= variance_reduction < 1 "
                            f"(got {effect}, {sd}, {variance_reduction})")
    d = abs(effect) / (sd * math.sqrt(1.0 - variance_reduction))
    kind = _test(test)
    f = lambda n: power_two_sample(d, n, ratio=ratio, alpha=alpha, test=kind) - power  # noqa: E731
    lo = 2.0 / min(ratio, 1.0) + 1e-9
    if f(lo) > 0:
        return lo
    hi = 4.0
    while f(hi) < 0:
        hi *= 2.0
    return optimize.brentq(f, lo, hi, xtol=1e-10, rtol=1e-13)


def online_test_plan(lift_rel: float | None, mean: float, sd: float, *, rho: float | None = None, alpha: float = 0.05,
                     power: float = 0.8, users_per_day: float | None = None) -> dict[str, float | None]:
    """Users per arm (and days at `users_per_day` entering the test, both arms together) for a two-arm
    online test to detect a relative lift `lift_rel` of a per-user mean `mean` with per-user standard
    deviation `sd`, at `power` (two-sided z test, `sample_size`). With `rho`, the correlation of the
    per-user value with its pre-period value, CUPED's variance reduction rho^2 (Deng et al. 2013).

    The effect is the absolute difference lift_rel * mean. None where no test can detect it (no lift,
    or no variation)."""
    out: dict[str, float | None] = {"effect": None, "sd": None, "users_per_arm": None, "days": None}
    reduction = 0.0 if rho is None or not math.isfinite(rho) else min(rho * rho, 1.0 - 1e-12)
    out["sd"] = sd * math.sqrt(1.0 - reduction) if math.isfinite(sd) else None
    if lift_rel is None or not math.isfinite(lift_rel) or lift_rel == 0 or not sd > 0 or not math.isfinite(mean):
        return out
    effect = lift_rel * mean
    if effect == 0:
        return out
    n = sample_size(effect, sd, alpha=alpha, power=power, variance_reduction=reduction)
    out.update(effect=effect, users_per_arm=float(math.ceil(n)))
    if users_per_day is not None and users_per_day > 0:
        out["days"] = float(math.ceil(2 * math.ceil(n) / users_per_day))
    return out
