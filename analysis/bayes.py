"""Bayesian view of a lift: normal posterior, chance to win, expected loss (risk), credible interval.

The same per-arm inputs as `lifts.py`: estimates m_t, m_c (means, ratios, CUPED-adjusted values), the
variances of those estimates v_t, v_c (s^2/n, not s^2) and their covariance c (0 for independent arms).

Likelihood. The observed difference d is taken as normal around the true effect delta:
d ~ N(delta, s^2), with
* absolute: d = m_t - m_c, s^2 = v_t + v_c - 2c;
* relative: d = (m_t - m_c) / m_c, s^2 = v_t/m_c^2 + m_t^2 v_c/m_c^4 - 2 m_t c/m_c^3 (first-order delta
  method on the ratio, no log transform; the "delta" variance of `lifts.py`).

Prior. delta ~ N(mu0, tau^2) when `proper`, else flat (improper, "uninformative"). mu0 = `prior_mean`,
tau = `prior_sd`, stated on the `prior_on` scale ("relative" by default); a prior on the other scale
than `difference` is rescaled by the control mean: relative -> absolute multiplies mu0 by |m_c| and
tau^2 by m_c^2, absolute -> relative divides by them.

Posterior (normal-normal conjugacy). Flat prior: delta | d ~ N(d, s^2). Proper prior: precision
1/sd^2 = 1/s^2 + 1/tau^2 and mean = sd^2 (d/s^2 + mu0/tau^2), a precision-weighted average that
shrinks d towards mu0.

Summaries of the posterior N(mu, sd^2), z = mu/sd, phi/Phi the standard normal pdf/cdf:
* equal-tailed credible interval mu +/- Phi^-1(1 - alpha/2) sd;
* chance to win P(delta > 0) = Phi(z) (P(delta < 0) when `inverse`, i.e. lower is better);
* expected loss ("risk") of shipping each arm, in the units of the difference (a fraction for
  relative): risk_treatment = E[max(-delta, 0)] = sd (phi(z) - z Phi(-z)), the effect given up by
  shipping treatment if it is in fact worse; risk_control = E[max(delta, 0)] = sd (phi(z) + z Phi(z)),
  the effect given up by keeping control. risk_control - risk_treatment = mu. With `inverse` the two
  swap (losses measured in the preferred direction).

Reference: GrowthBook's Bayesian engine (docs.growthbook.io, "Statistics: Bayesian"; package `gbstats`,
`gbstats.bayesian.tests.EffectBayesianABTest`, version 0.8.0). With the same inputs this module
reproduces its `expected`, `uplift.stddev`, `ci`, `chance_to_win` and `risk = [risk_control,
risk_treatment]` (tests/analysis/test_bayes.py checks to 1e-6). gbstats' defaults are a flat prior:
`GaussianPrior(mean=0, variance=1, proper=False)`, `MetricSettingsForStatsEngine(prior_proper=False,
prior_mean=0, prior_stddev=0.1)`, prior on the relative scale. Here too the default is flat (`proper=False`),
and `prior_sd=0.3` only takes effect with `proper=True`. Differences from gbstats: the covariance term
(gbstats assumes independent arms); `min_control_se` (0 = off, as gbstats); and an arm with zero
variance is allowed here as long as s^2 > 0 (gbstats then returns its uninformative default).

Undefined results are NaN with a `reason`: control mean zero (or within `min_control_se` standard
errors of zero) for a relative difference or a rescaled prior, non-finite input, or s^2 <= 0.
Inputs broadcast as numpy arrays; scalar inputs give float fields and a str | None reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

DIFFERENCES = ("relative", "absolute")


@dataclass(frozen=True)
class BayesResult:
    """Posterior summaries of the lift (floats for scalar input, else arrays); see module docstring."""

    difference: str          # "relative" (fraction of the control mean) | "absolute"
    prior: str               # e.g. "flat" or "N(0, 0.3^2) on the relative lift"
    data_mean: Any           # d, the observed difference
    data_sd: Any             # s, its standard error
    post_mean: Any
    post_sd: Any
    ci_low: Any              # equal-tailed 1 - alpha credible interval
    ci_high: Any
    chance_to_win: Any       # P(delta > 0), or P(delta < 0) when inverse
    risk_control: Any        # expected loss of keeping control
    risk_treatment: Any      # expected loss of shipping treatment
    alpha: float
    inverse: bool
    reason: Any              # None where defined, else why the values are NaN


def _prior_text(proper: bool, prior_mean: float, prior_sd: float, prior_on: str, difference: str) -> str:
    if not proper:
        return "flat"
    text = f"N({prior_mean:g}, {prior_sd:g}^2) on the {prior_on} lift"
    if prior_on != difference:
        text += f" (rescaled by the control mean to the {difference} difference)"
    return text


def bayesian_lift(m_t, m_c, v_t, v_c, *, cov=0.0, difference: str = "relative", prior_mean: float = 0.0,
                  prior_sd: float = 0.3, proper: bool = False, prior_on: str = "relative",
                  alpha: float = 0.05, inverse: bool = False, min_control_se: float = 0.0) -> BayesResult:
    """Posterior of the treatment-vs-control difference under a normal likelihood and a Gaussian or
    flat prior, with chance to win, expected losses and a credible interval (module docstring)."""
    if difference not in DIFFERENCES:
        raise ValueError(f"difference must be one of {DIFFERENCES}, got {difference!r}")
    if prior_on not in DIFFERENCES:
        raise ValueError(f"prior_on must be one of {DIFFERENCES}, got {prior_on!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if proper and not (np.isfinite(prior_sd) and prior_sd > 0):
        raise ValueError(f"a proper prior needs a finite prior_sd > 0, got {prior_sd!r}")
    m_t, m_c, v_t, v_c, c = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (m_t, m_c, v_t, v_c, cov)))
    scalar = m_t.ndim == 0
    reason = np.full(m_t.shape, None, dtype=object)
    relative = difference == "relative"
    needs_control = relative or (proper and prior_on != difference)

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if relative:
            d = (m_t - m_c) / m_c
            s2 = v_t / m_c**2 + m_t**2 * v_c / m_c**4 - 2 * m_t * c / m_c**3
        else:
            d = m_t - m_c
            s2 = v_t + v_c - 2 * c
        bad_var = ~(s2 > 0) | ~np.isfinite(s2)
        reason[bad_var] = "variance of the difference is zero, negative or not finite"
        if needs_control:
            near = np.abs(m_c) < min_control_se * np.sqrt(np.maximum(v_c, 0.0))
            reason[near] = (f"control mean is within {min_control_se:g} standard errors of zero, so the "
                            "ratio is unstable")
            reason[m_c == 0] = "control mean is zero"
        nonfinite = ~(np.isfinite(m_t) & np.isfinite(m_c) & np.isfinite(v_t) & np.isfinite(v_c) & np.isfinite(c))
        reason[nonfinite] = "non-finite input"
        undefined = reason != None  # noqa: E711 (elementwise on an object array)

        if proper:
            mu0, tau2 = float(prior_mean), float(prior_sd) ** 2
            if prior_on == "relative" and not relative:
                mu0, tau2 = mu0 * np.abs(m_c), tau2 * m_c**2
            elif prior_on == "absolute" and relative:
                mu0, tau2 = mu0 / np.abs(m_c), tau2 / m_c**2
            prec = 1.0 / s2 + 1.0 / tau2
            mu = (d / s2 + mu0 / tau2) / prec
            sd = np.sqrt(1.0 / prec)
        else:
            mu, sd = d, np.sqrt(s2)
        mu = np.where(undefined, np.nan, mu)
        sd = np.where(undefined, np.nan, sd)
        q = stats.norm.ppf(1 - alpha / 2)
        z = mu / sd
        pdf, cdf, sf = stats.norm.pdf(z), stats.norm.cdf(z), stats.norm.sf(z)
        p_win = cdf
        loss_ctrl = sd * (pdf + z * cdf)    # E[max(delta, 0)]
        loss_trt = sd * (pdf - z * sf)      # E[max(-delta, 0)]
        if inverse:
            p_win, loss_ctrl, loss_trt = sf, loss_trt, loss_ctrl

    def out(a):
        a = np.where(undefined, np.nan, a)
        return float(a) if scalar else a

    return BayesResult(
        difference=difference,
        prior=_prior_text(proper, prior_mean, prior_sd, prior_on, difference),
        data_mean=out(d), data_sd=out(np.sqrt(np.maximum(s2, 0.0))),
        post_mean=out(mu), post_sd=out(sd), ci_low=out(mu - q * sd), ci_high=out(mu + q * sd),
        chance_to_win=out(p_win), risk_control=out(loss_ctrl), risk_treatment=out(loss_trt),
        alpha=alpha, inverse=inverse, reason=reason[()] if scalar else reason,
    )
