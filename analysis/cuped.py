"""CUPED variance reduction (Deng, Xu, Kohavi and Walker 2013, WSDM) for mean and ratio metrics.

With per-unit linearised metric l_i = grad^T v_i (v the metric's value columns; grad from
the metric's `linearize`, = 1 for means) and pre-period covariates x_i (one: "single"; several: "multi",
a regression on all of them), the adjusted arm estimate is

    m_a* = g(mean_a) - theta^T (xbar_a - xbar),   theta = Sigma_xx^{-1} Sigma_x v grad,

where Sigma is the pooled within-arm unit covariance (so the treatment effect does not leak into
theta), grad is evaluated at the pooled means, and xbar is the mean of x over both arms (it cancels in
the difference). Its variance is

    Var(m_a*) ~ (grad_a^T S_vv grad_a - 2 theta^T S_xv grad_a + theta^T S_xx theta) / n_a

(arm covariances S). For ratio metrics this is the delta-method CUPED of Deng et al. 2018 (KDD),
sec. 4. Estimation error in theta is ignored (O(1/n)); randomisation makes xbar_t - xbar_c mean-zero, so
the adjusted difference stays unbiased. The reported variance reduction is
1 - Var(adjusted difference) / Var(unadjusted difference) (equal to rho^2 for one covariate and
equal arms).

Paired designs (same units in both arms) are handled by `paired_estimates`: the covariance between the
arms' estimates, grad_c^T S_ct grad_t / n, enters Var(D) = v_t + v_c - 2 cov.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.aggregates import Moments
from analysis.metrics import Metric
from analysis.ratio import quad

# CUPED estimates k slopes from the data, and its 95% CI falls short by about 0.1 k / n (n units per
# arm) on skewed per-user data (bench/cuped_guard.py, 40,000 experiments per cell): ratio CUPED (k = 2)
# covered 89.8% at 5 units per arm and 92.8% at 10. From 10 (k + 1) units per arm on, coverage stayed
# within one point of nominal and of the unadjusted CI for k = 1, 2, 3, 5 (95.1, 94.2, 94.4, 94.1%).
CUPED_UNITS_PER_PARAMETER = 10


def cuped_min_units(k: int) -> int:
    """Fewest units per arm for CUPED with k covariates: 10 (k + 1); smaller arms are analysed unadjusted."""
    return CUPED_UNITS_PER_PARAMETER * (k + 1)


@dataclass(frozen=True)
class ArmPair:
    """Per-arm estimates and their (co)variances, ready for `lifts.compare` (arrays, any shape)."""

    m_t: np.ndarray
    m_c: np.ndarray
    v_t: np.ndarray
    v_c: np.ndarray
    cov: np.ndarray
    n_t: np.ndarray
    n_c: np.ndarray
    variance_reduction: np.ndarray
    unit_var: np.ndarray  # pooled unit-level variance of the linearised metric, before CUPED
    theta: np.ndarray | None


def _pooled_mean(mc: Moments, mt: Moments) -> np.ndarray:
    nc, nt = np.asarray(mc.n, float)[..., None], np.asarray(mt.n, float)[..., None]
    return (nc * mc.mean + nt * mt.mean) / (nc + nt)


def independent_estimates(mc: Moments, mt: Moments, metric: Metric, covariates: tuple[str, ...] = ()) -> ArmPair:
    """CUPED-adjusted (or plain, without covariates) estimates of two independent arms."""
    value_cols = metric.value_columns
    linearize = metric.linearize
    cols = tuple(value_cols) + tuple(c for c in covariates if c not in value_cols)
    c, t = mc.select(cols), mt.select(cols)
    kv = len(value_cols)
    nc, nt = np.asarray(c.n, float), np.asarray(t.n, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        gc, grad_c = linearize(c.mean[..., :kv])
        gt, grad_t = linearize(t.mean[..., :kv])
        sc, st = c.cov(), t.cov()
        s_vv_c, s_vv_t = sc[..., :kv, :kv], st[..., :kv, :kv]
        v_c0 = quad(grad_c, s_vv_c, grad_c) / nc
        v_t0 = quad(grad_t, s_vv_t, grad_t) / nt
        pooled_c = (c.comoment + t.comoment) / (nc + nt - 2.0)[..., None, None]
        _, grad_p = linearize(_pooled_mean(c, t)[..., :kv])
        unit_var = quad(grad_p, pooled_c[..., :kv, :kv], grad_p)
        if len(cols) == kv:
            zero = np.zeros_like(v_c0)
            return ArmPair(gt, gc, v_t0, v_c0, zero, nt, nc, zero, unit_var, None)
        s_xx = pooled_c[..., kv:, kv:]
        s_xv = pooled_c[..., kv:, :kv]
        b = np.einsum("...ij,...j->...i", s_xv, grad_p)
        theta = np.einsum("...ij,...j->...i", np.linalg.pinv(s_xx), b)
        xbar = _pooled_mean(c, t)[..., kv:]

        def adjust(g, grad, s, n, mean):
            shift = np.einsum("...i,...i->...", theta, mean[..., kv:] - xbar)
            v = (quad(grad, s[..., :kv, :kv], grad)
                 - 2 * np.einsum("...i,...ij,...j->...", theta, s[..., kv:, :kv], grad)
                 + quad(theta, s[..., kv:, kv:], theta)) / n
            return g - shift, v

        mc_adj, v_c = adjust(gc, grad_c, sc, nc, c.mean)
        mt_adj, v_t = adjust(gt, grad_t, st, nt, t.mean)
        vr = 1.0 - (v_t + v_c) / (v_t0 + v_c0)
    return ArmPair(mt_adj, mc_adj, v_t, v_c, np.zeros_like(v_c), nt, nc, vr, unit_var, theta)


def paired_estimates(joint: Moments, control_cols: tuple[str, ...], treatment_cols: tuple[str, ...],
                     metric: Metric) -> ArmPair:
    """Estimates for a paired design from moments over (control columns, treatment columns) per unit."""
    j = joint.select(tuple(control_cols) + tuple(treatment_cols))
    kv = len(control_cols)
    n = np.asarray(j.n, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        gc, grad_c = metric.linearize(j.mean[..., :kv])
        gt, grad_t = metric.linearize(j.mean[..., kv:])
        s = j.cov()
        v_c = quad(grad_c, s[..., :kv, :kv], grad_c) / n
        v_t = quad(grad_t, s[..., kv:, kv:], grad_t) / n
        cov = quad(grad_c, s[..., :kv, kv:], grad_t) / n
        unit_var = n * (v_c + v_t) / 2.0
    zero = np.zeros_like(v_c)
    return ArmPair(gt, gc, v_t, v_c, cov, n, n, zero, unit_var, None)
