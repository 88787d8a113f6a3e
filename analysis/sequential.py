"""Always-valid inference: the normal-mixture confidence sequence (mixture SPRT).

For a difference estimate D_n with (estimated) variance V_n at a look, the two-sample mixture SPRT of
Johari, Koomen, Pekelis and Walsh (2017, "Peeking at A/B tests", KDD; 2022 Operations Research) with a
N(0, tau^2) mixture over the effect has likelihood ratio

    Lambda_n = sqrt(V / (V + tau^2)) exp(tau^2 D^2 / (2 V (V + tau^2))),

and P(exists n: Lambda_n >= 1/alpha) <= alpha under H0 (Ville's inequality), for any number of looks at
any times. Inverting it gives the confidence sequence (Howard, Ramdas, McAuliffe and Sekhon 2021,
"Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann. Statist., normal mixture
boundary):

    D_n +/- sqrt( V (V + tau^2) / tau^2 * (log((V + tau^2) / V) + 2 log(1/alpha)) ),

and the always-valid p-value p_n = min(1, 1/Lambda_n) (take the running minimum / the running
intersection of intervals across looks). With estimated variances the guarantee is asymptotic
(Waudby-Smith et al. 2021, "Time-uniform central limit theory").

The tuning parameter tau (mixture standard deviation, in metric units) is `AnalysisConfig.sequential_rho`
times the per-unit standard deviation; the sequence is narrowest when V ~ tau^2, i.e. around
n ~ 2 / rho^2 units per arm for equal arms.
"""

from __future__ import annotations

import numpy as np


def mixture_half_width(variance, tau, alpha: float) -> np.ndarray:
    """Half-width of the normal-mixture confidence sequence at a look with Var(D) = variance."""
    v = np.asarray(variance, dtype=float)
    t2 = np.asarray(tau, dtype=float) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(v * (v + t2) / t2 * (np.log((v + t2) / v) + 2.0 * np.log(1.0 / alpha)))


def confidence_sequence(estimate, variance, *, tau, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of the always-valid interval at one look (arrays broadcast)."""
    est = np.asarray(estimate, dtype=float)
    h = mixture_half_width(variance, tau, alpha)
    return est - h, est + h


def always_valid_p(estimate, variance, *, tau) -> np.ndarray:
    """p = min(1, 1/Lambda) of the mixture SPRT for H0: no difference, at one look."""
    d = np.asarray(estimate, dtype=float)
    v = np.asarray(variance, dtype=float)
    t2 = np.asarray(tau, dtype=float) ** 2
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        log_lr = 0.5 * np.log(v / (v + t2)) + t2 * d**2 / (2.0 * v * (v + t2))
        return np.minimum(1.0, np.exp(-log_lr))


def monitor(estimates, variances, *, tau, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Running intersection of the intervals and running minimum of the p-values over looks (axis 0).

    Use it for daily looks: estimates[i], variances[i] are the cumulative results after look i.
    """
    low, high = confidence_sequence(estimates, variances, tau=tau, alpha=alpha)
    p = always_valid_p(estimates, variances, tau=tau)
    return (np.maximum.accumulate(low, axis=0), np.minimum.accumulate(high, axis=0),
            np.minimum.accumulate(p, axis=0))
