"""The peeking-safe gate: A/A tests gated after each of 20 daily looks.

With `mode = "fixed"` a gate read daily ships (or blocks) a null change far more often than alpha:
that is the peeking problem. With `mode = "sequential"` the gate reads the always-valid p-value, and
the chance that ANY of the 20 looks finds a significant primary stays at most alpha (Johari et al. 2017).
Each look's lift row is built exactly as `analyze` builds it (Welch lift from the cumulative data,
always-valid p from the same variance and tau = rho * sd), and the real `evaluate_gate` judges it.
"""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from analysis import AnalysisConfig, analyze, evaluate_gate, parse_gate
from analysis.lifts import compare
from analysis.results import ExperimentResult
from analysis.sequential import always_valid_p

LOOKS, PER_DAY, REPS = 20, 500, 400


def _template():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"arm": np.repeat(["c", "t"], 200), "y": rng.exponential(10.0, 400)})
    return analyze(df, arm_col="arm", control="c", metrics=["y"], config=AnalysisConfig(cuped="none"))


def _rejections(mode: str, seed: int = 1) -> np.ndarray:
    """(REPS, LOOKS) bool: the gate's primary rule is decided (pass or fail, i.e. significant) at the look."""
    tmpl = _template()
    row0 = tmpl.lift("y")
    gate = parse_gate({"min_units": 0, "srm_policy": "ignore", "correction": "none", "mode": mode,
                       "primary": [{"metric": "y"}]})
    rng = np.random.default_rng(seed)
    yc = rng.exponential(10.0, (REPS, LOOKS * PER_DAY))
    yt = rng.exponential(10.0, (REPS, LOOKS * PER_DAY))
    n = np.arange(1, LOOKS + 1) * PER_DAY
    out = np.zeros((REPS, LOOKS), bool)
    for j, k in enumerate(n):
        mc, mt = yc[:, :k].mean(1), yt[:, :k].mean(1)
        vc, vt = yc[:, :k].var(1, ddof=1) / k, yt[:, :k].var(1, ddof=1) / k
        lift = compare(mt, mc, vt, vc, n_t=k, n_c=k)
        unit_sd = np.sqrt((vc + vt) * k / 2)
        seq_p = always_valid_p(lift.abs_diff, lift.abs_se**2, tau=0.01 * unit_sd)
        for i in range(REPS):
            row = replace(row0, n_control=int(k), n_treatment=int(k), control_mean=float(mc[i]),
                          treatment_mean=float(mt[i]), abs_diff=float(lift.abs_diff[i]), abs_se=float(lift.abs_se[i]),
                          p_value=float(lift.p_value[i]), seq_p_value=float(seq_p[i]))
            res = ExperimentResult("arm", "c", ("t",), {"c": int(k), "t": int(k)}, tmpl.config, [row], [])
            d = evaluate_gate(res, gate)
            out[i, j] = d.rules[-1].outcome != "inconclusive"
    return out


@pytest.mark.slow
def test_sequential_gate_keeps_the_false_positive_rate_over_20_looks():
    seq = _rejections("sequential").any(axis=1).mean()
    fixed = _rejections("fixed").any(axis=1).mean()
    se = np.sqrt(0.05 * 0.95 / REPS)
    assert seq <= 0.05 + 2 * se, seq  # at most alpha (it is conservative: typically ~1%)
    assert fixed > 0.15, fixed  # peeking at fixed-horizon p-values: ~25-35% over 20 looks


def test_sequential_mode_reads_the_always_valid_numbers():
    res = _template()
    row = res.lift("y")
    gate = parse_gate({"min_units": 0, "srm_policy": "ignore", "mode": "sequential", "primary": [{"metric": "y"}],
                       "guardrail": []})
    d = evaluate_gate(res, gate)
    primary = d.rules[-1]
    assert primary.p_value == row.seq_p_value and "always-valid p_adj" in primary.reason
    assert (primary.ci_low, primary.ci_high) == (row.seq_ci_low, row.seq_ci_high)


def test_sequential_rho_reproduces_gbstats_tuning():
    """rho = 2 sqrt((-2 ln a + ln(1 - 2 ln a)) / N*) gives gbstats' sequential interval and p-value
    (SequentialTwoSidedTTest with sequential_tuning_parameter N*) for equal arms."""
    from gbstats.frequentist.tests import SequentialConfig, SequentialTwoSidedTTest
    from gbstats.models.statistics import SampleMeanStatistic

    rng = np.random.default_rng(5)
    n, alpha = 3000, 0.05
    for n_star, shift in ((5000, 0.3), (20000, 0.0), (1000, -0.5)):
        c, t = rng.exponential(10.0, n), rng.exponential(10.0, n) + shift
        rho = 2 * np.sqrt((-2 * np.log(alpha) + np.log(1 - 2 * np.log(alpha))) / n_star)
        df = pd.DataFrame({"arm": np.repeat(["c", "t"], n), "y": np.r_[c, t]})
        row = analyze(df, arm_col="arm", control="c", metrics=["y"],
                      config=AnalysisConfig(cuped="none", sequential_rho=float(rho), alpha=alpha)).lift("y")
        stat = [SampleMeanStatistic(n=n, sum=float(x.sum()), sum_squares=float((x**2).sum())) for x in (c, t)]
        gb = SequentialTwoSidedTTest(stat[0], stat[1], SequentialConfig(
            difference_type="absolute", alpha=alpha, sequential_tuning_parameter=n_star))
        low, high = gb.confidence_interval
        assert (row.seq_ci_low, row.seq_ci_high) == pytest.approx((low, high), rel=1e-9)
        assert row.seq_p_value == pytest.approx(gb.p_value, rel=1e-9, abs=1e-12)
