"""Absolute and relative lifts with Welch t / z tests and three relative-CI methods.

Every estimator in the package reduces to per-arm estimates m_t, m_c (means, ratios, CUPED-adjusted
values) with variances v_t, v_c and covariance c (0 for independent arms, > 0 for paired designs).
From these:

* absolute difference D = m_t - m_c, Var(D) = v_t + v_c - 2c; CI D +/- q se with q the 1 - alpha/2
  quantile of t(df) (Welch-Satterthwaite df = (v_t + v_c)^2 / (v_t^2/(n_t-1) + v_c^2/(n_c-1)),
  Welch 1947) or of N(0, 1) ("z"); paired designs use df = n - 1. Two-sided p = 2 P(T > |D| / se).
* relative difference R = m_t / m_c - 1, CI by `relative_ci`:
  - "delta": symmetric, Var(R) = v_t/m_c^2 + m_t^2 v_c/m_c^4 - 2 m_t c/m_c^3 (first-order Taylor).
  - "log": delta method on log(m_t/m_c): Var = v_t/m_t^2 + v_c/m_c^2 - 2c/(m_t m_c); CI
    exp(log(m_t/m_c) +/- q se) - 1; needs both means > 0; asymmetric, never below -100%.
  - "fieller": the set {rho : (m_t - rho m_c)^2 <= q^2 (v_t - 2 rho c + rho^2 v_c)} (Fieller 1954),
    bounded only when the control mean is significantly non-zero (m_c^2 > q^2 v_c); minus 1.
  The relative lift is undefined (NaN, with a reason) when m_c = 0 or |m_c| < k sqrt(v_c) (k =
  `rel_min_control_se`): dividing by a control mean that could be zero gives a number, not a lift.

Functions take numpy arrays (any shape, broadcast) so simulations can evaluate thousands of experiments
at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


def welch_df(v_t: np.ndarray, v_c: np.ndarray, n_t: np.ndarray, n_c: np.ndarray) -> np.ndarray:
    """Welch-Satterthwaite degrees of freedom of a difference of two independent means."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return (v_t + v_c) ** 2 / (v_t**2 / (n_t - 1.0) + v_c**2 / (n_c - 1.0))


def critical_value(alpha: float, df: np.ndarray | float) -> np.ndarray:
    """1 - alpha/2 quantile of t(df); df = inf gives the normal quantile."""
    df = np.asarray(df, dtype=float)
    q = np.where(np.isinf(df), stats.norm.ppf(1 - alpha / 2), stats.t.ppf(1 - alpha / 2, np.where(np.isinf(df), 1.0, df)))
    return q


def two_sided_p(stat: np.ndarray, df: np.ndarray | float) -> np.ndarray:
    df = np.asarray(df, dtype=float)
    a = np.abs(stat)
    return np.where(np.isinf(df), 2 * stats.norm.sf(a), 2 * stats.t.sf(a, np.where(np.isinf(df), 1.0, df)))


@dataclass(frozen=True)
class Lift:
    """Arrays of lift statistics (any shape); see module docstring for the formulas."""

    abs_diff: np.ndarray
    abs_se: np.ndarray
    abs_ci_low: np.ndarray
    abs_ci_high: np.ndarray
    p_value: np.ndarray
    df: np.ndarray
    rel_diff: np.ndarray
    rel_ci_low: np.ndarray
    rel_ci_high: np.ndarray
    rel_reason: np.ndarray  # object array of str | None


def relative_ci(m_t: np.ndarray, m_c: np.ndarray, v_t: np.ndarray, v_c: np.ndarray, cov: np.ndarray,
                q: np.ndarray, method: str, min_control_se: float = 3.0
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(rel_diff, low, high, reason) with NaN and a reason where the relative lift is undefined."""
    m_t, m_c, v_t, v_c, cov, q = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in
                                                        (m_t, m_c, v_t, v_c, cov, q)))
    shape = m_t.shape
    reason = np.full(shape, None, dtype=object)
    se_c = np.sqrt(np.maximum(v_c, 0.0))
    zero = m_c == 0
    near = ~zero & (np.abs(m_c) < min_control_se * se_c)
    reason[zero] = "control mean is zero"
    reason[near] = (f"control mean is within {min_control_se:g} standard errors of zero, so the ratio "
                    "is unstable")
    nonfinite = ~np.isfinite(m_c) | ~np.isfinite(m_t)
    reason[nonfinite & (reason == None)] = "a mean is not finite"  # noqa: E711
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = m_t / m_c - 1.0
        if method == "delta":
            var = v_t / m_c**2 + m_t**2 * v_c / m_c**4 - 2 * m_t * cov / m_c**3
            se = np.sqrt(np.maximum(var, 0.0))
            low, high = rel - q * se, rel + q * se
        elif method == "log":
            bad = (m_t <= 0) | (m_c <= 0)
            reason[bad & (reason == None)] = "log-ratio CI needs both means > 0"  # noqa: E711
            var = v_t / m_t**2 + v_c / m_c**2 - 2 * cov / (m_t * m_c)
            se = np.sqrt(np.maximum(var, 0.0))
            lr = np.log(m_t / m_c)
            low, high = np.exp(lr - q * se) - 1.0, np.exp(lr + q * se) - 1.0
        elif method == "fieller":
            # (m_t - r m_c)^2 - q^2 (v_t - 2 r cov + r^2 v_c) <= 0  <=>  a r^2 + b r + c <= 0
            a = m_c**2 - q**2 * v_c
            b = -2 * (m_t * m_c - q**2 * cov)
            c = m_t**2 - q**2 * v_t
            disc = b**2 - 4 * a * c
            unbounded = (a <= 0) | (disc < 0)
            reason[unbounded & (reason == None)] = (  # noqa: E711
                "Fieller interval is unbounded: the control mean is not significantly different from zero")
            sq = np.sqrt(np.maximum(disc, 0.0))
            r1 = (-b - sq) / (2 * a)
            r2 = (-b + sq) / (2 * a)
            low, high = np.minimum(r1, r2) - 1.0, np.maximum(r1, r2) - 1.0
        else:
            raise ValueError(f"unknown relative CI method {method!r}")
    undefined = reason != None  # noqa: E711
    nan = np.nan
    rel = np.where(undefined, nan, rel)
    low = np.where(undefined, nan, low)
    high = np.where(undefined, nan, high)
    return rel, low, high, reason


def compare(m_t, m_c, v_t, v_c, *, n_t, n_c, cov=0.0, alpha: float = 0.05, test: str = "welch",
            paired: bool = False, relative_method: str = "delta", min_control_se: float = 3.0) -> Lift:
    """Absolute and relative lift of treatment over control from per-arm estimates and variances.

    v_t, v_c are variances of the arm *estimates* (e.g. s^2/n for a mean), not of unit values.
    """
    m_t, m_c, v_t, v_c, cov, n_t, n_c = (np.asarray(a, dtype=float) for a in (m_t, m_c, v_t, v_c, cov, n_t, n_c))
    diff = m_t - m_c
    var = v_t + v_c - 2 * cov
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.sqrt(np.where(var >= 0, var, np.nan))
        if test == "z":
            df = np.full(np.broadcast(diff, se).shape, np.inf)
        elif paired:
            df = np.broadcast_to(n_t - 1.0, np.broadcast(diff, se).shape).astype(float)
        else:
            df = welch_df(v_t, v_c, n_t, n_c)
        df = np.where(np.isnan(df) & (se == 0), np.inf, df)
        q = critical_value(alpha, np.where(np.isnan(df), np.inf, df))
        q = np.where(np.isnan(df), np.nan, q)
        stat = diff / se
        p = np.where(se > 0, two_sided_p(stat, np.where(np.isnan(df), np.inf, df)), np.nan)
        p = np.where(np.isnan(df), np.nan, p)
        low, high = diff - q * se, diff + q * se
    rel, rlow, rhigh, reason = relative_ci(m_t, m_c, v_t, v_c, cov, q, relative_method, min_control_se)
    return Lift(diff, se, low, high, p, df, rel, rlow, rhigh, reason)
