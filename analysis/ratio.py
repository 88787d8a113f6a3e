"""Ratio metrics by the delta method, and the linearisation every estimator shares.

A ratio metric of an arm is R = mean(Y) / mean(X) over units (Y, X per-unit sums, e.g. comment watch
time and video views). Views of one user are not independent, so the variance is computed over users
with the delta method (Deng, Knoblich and Lu 2018, KDD, eq. 3):

    Var(R) ~ (1/n) grad^T Sigma grad,   grad = (1/mu_X, -mu_Y/mu_X^2),
    i.e. Var(R) ~ (1/(n mu_X^2)) (s_Y^2 - 2 R s_XY + R^2 s_X^2),

with Sigma the unit-level sample covariance of (Y, X). A mean metric is the special case g(mu) = mu,
grad = 1. `linearize` returns g and grad for either kind (with batch dims), which is all the CUPED,
paired and lift code needs.
"""

from __future__ import annotations

import numpy as np

from analysis.aggregates import Moments


def point(mean: np.ndarray, kind: str) -> np.ndarray:
    """g(mean) for mean (..., kv): the metric value of an arm."""
    with np.errstate(invalid="ignore", divide="ignore"):
        if kind == "ratio":
            return mean[..., 0] / mean[..., 1]
        return mean[..., 0]


def linearize(mean: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(g, grad) with g (...) and grad (..., kv) evaluated at the arm means (..., kv)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        if kind == "ratio":
            num, den = mean[..., 0], mean[..., 1]
            g = num / den
            grad = np.stack([1.0 / den, -num / den**2], axis=-1)
            return g, grad
        return mean[..., 0], np.ones_like(mean[..., :1])


def quad(grad_a: np.ndarray, sigma: np.ndarray, grad_b: np.ndarray) -> np.ndarray:
    """grad_a^T sigma grad_b over trailing dims."""
    return np.einsum("...i,...ij,...j->...", grad_a, sigma, grad_b)


def estimate(m: Moments, value_cols: tuple[str, ...], kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(estimate, variance of the estimate) of one arm by the delta method (exact for means)."""
    sub = m.select(value_cols)
    g, grad = linearize(sub.mean, kind)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = quad(grad, sub.cov(), grad) / np.asarray(sub.n, float)
    return g, var
