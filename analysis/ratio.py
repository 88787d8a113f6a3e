"""Ratio metrics by the delta method, and the linearisation every estimator shares.

A ratio metric of an arm is R = mean(Y) / mean(X) over units (Y, X per-unit sums, e.g. comment watch
time and video views). Views of one user are not independent, so the variance is computed over users
with the delta method (Deng, Knoblich and Lu 2018, KDD, eq. 3):

    Var(R) ~ (1/n) grad^T Sigma grad,   grad = (1/mu_X, -mu_Y/mu_X^2),
    i.e. Var(R) ~ (1/(n mu_X^2)) (s_Y^2 - 2 R s_XY + R^2 s_X^2),

with Sigma the unit-level sample covariance of (Y, X). A mean metric is the special case g(mu) = mu,
grad = 1. Each metric kind's `linearize` (analysis/metrics.py) returns g and grad (with batch dims),
which is all the CUPED, paired and lift code needs.
"""

from __future__ import annotations

import numpy as np

from analysis.aggregates import Moments
from analysis.metrics import Metric


def quad(grad_a: np.ndarray, sigma: np.ndarray, grad_b: np.ndarray) -> np.ndarray:
    """grad_a^T sigma grad_b over trailing dims."""
    return np.einsum("...i,...ij,...j->...", grad_a, sigma, grad_b)


def estimate(m: Moments, metric: Metric) -> tuple[np.ndarray, np.ndarray]:
    """(estimate, variance of the estimate) of one arm by the delta method (exact for means)."""
    sub = m.select(metric.value_columns)
    g, grad = metric.linearize(sub.mean)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = quad(grad, sub.cov(), grad) / np.asarray(sub.n, float)
    return g, var
