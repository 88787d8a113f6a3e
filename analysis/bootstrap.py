"""Bootstrap CIs for a lift: percentile and BCa (scipy.stats.bootstrap) and the Poisson bootstrap.

The statistic is the same estimator as the normal path with the CUPED coefficient theta held fixed at
its full-sample value (standard practice; re-estimating theta per replicate changes little at scale):
per arm m = g(mean of value columns) - theta^T (mean of covariates - xbar), then D = m_t - m_c and
R = m_t / m_c - 1. Arms are resampled independently (units are the resampling unit, so sessions stay
together).

* "percentile" / "bca": scipy.stats.bootstrap on unit indices (BCa, Efron 1987, needs a jackknife over
  all units: cost O(n^2), meant for up to ~10^4 units per arm).
* "poisson": every unit gets a Poisson(1) weight per replicate (Hanley and MacGibbon 2006; Chamandy
  et al. 2012, "Estimating uncertainty for massive data streams"): replicates are weighted sums
  computed chunk by chunk in one pass, so memory stays bounded for millions of units. Percentile CI.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from analysis.metrics import Metric


@dataclass(frozen=True)
class ArmData:
    """Unit rows of one arm: value columns first, then covariates (n, kv + kx)."""

    x: np.ndarray
    kv: int


def _arm_stat(means: np.ndarray, kv: int, metric: Metric, theta: np.ndarray | None, xbar: np.ndarray | None):
    with np.errstate(invalid="ignore", divide="ignore"):
        g = metric.estimate(means[..., :kv])
    if theta is not None and theta.size:
        g = g - (means[..., kv:] - xbar) @ theta
    return g


def _diff_rel(mt, mc):
    with np.errstate(invalid="ignore", divide="ignore"):
        return mt - mc, mt / mc - 1.0


def scipy_bootstrap(t: ArmData, c: ArmData, metric: Metric, theta, xbar, *, method: str, n_boot: int,
                    alpha: float, seed: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """((abs_low, abs_high), (rel_low, rel_high)) by scipy.stats.bootstrap, method percentile or BCa."""
    kv = t.kv

    def make(which: int):
        def stat(it, ic, axis=-1):
            mt = t.x[np.asarray(it, dtype=np.intp)].mean(axis=-2)
            mc = c.x[np.asarray(ic, dtype=np.intp)].mean(axis=-2)
            out = _diff_rel(_arm_stat(mt, kv, metric, theta, xbar), _arm_stat(mc, kv, metric, theta, xbar))
            return out[which]
        return stat

    data = (np.arange(t.x.shape[0]), np.arange(c.x.shape[0]))
    scipy_method = "BCa" if method == "bca" else "percentile"
    res = []
    for which in (0, 1):
        r = stats.bootstrap(data, make(which), vectorized=True, n_resamples=n_boot, batch=50,
                            confidence_level=1 - alpha, method=scipy_method,
                            rng=np.random.default_rng(seed))
        res.append((float(r.confidence_interval.low), float(r.confidence_interval.high)))
    return res[0], res[1]


def poisson_bootstrap(t: ArmData, c: ArmData, metric: Metric, theta, xbar, *, n_boot: int, alpha: float,
                      seed: int, chunk: int = 65536) -> tuple[tuple[float, float], tuple[float, float]]:
    """Percentile CI from Poisson(1)-weighted replicates, one chunked pass per arm."""
    rng = np.random.default_rng(seed)

    def replicate_means(a: ArmData) -> np.ndarray:
        k = a.x.shape[1]
        sums = np.zeros((n_boot, k))
        wsum = np.zeros(n_boot)
        for start in range(0, a.x.shape[0], chunk):
            xs = a.x[start:start + chunk]
            w = rng.poisson(1.0, size=(xs.shape[0], n_boot)).astype(float)
            sums += w.T @ xs
            wsum += w.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return sums / wsum[:, None]

    mt = _arm_stat(replicate_means(t), t.kv, metric, theta, xbar)
    mc = _arm_stat(replicate_means(c), c.kv, metric, theta, xbar)
    d, r = _diff_rel(mt, mc)
    lo, hi = 100 * alpha / 2, 100 * (1 - alpha / 2)
    return ((float(np.nanpercentile(d, lo)), float(np.nanpercentile(d, hi))),
            (float(np.nanpercentile(r, lo)), float(np.nanpercentile(r, hi))))
