"""Edge cases that once gave a wrong answer: each test failed before its fix.

Constant columns have their exact mean and zero variance (the shifted power sums used to leave an
all-zero column at about 1e-14, which turned a ratio over it into 1e14 with p = 1e-98 and a SHIP).
"""

import math

import numpy as np
import pandas as pd
import pytest

from analysis import AnalysisConfig, RatioMetric, analyze
from analysis.gate import INCONCLUSIVE, evaluate_gate, parse_gate


def _ratio_table(rng, n=2000, zero_in="t"):
    den = rng.poisson(3.3, 2 * n) + 0.1
    if zero_in == "t":
        den[n:] = 0.0
    return pd.DataFrame({"arm": ["c"] * n + ["t"] * n, "num": rng.exponential(1 / 3, 2 * n), "den": den})


@pytest.mark.parametrize("fmt", ["frame", "parquet", "csv"])
def test_all_zero_denominator_is_undefined_not_a_ship(tmp_path, fmt):
    df = _ratio_table(np.random.default_rng(0))
    src = df
    if fmt != "frame":
        src = tmp_path / f"t.{fmt}"
        df.to_parquet(src) if fmt == "parquet" else df.to_csv(src, index=False)
    res = analyze(src, arm_col="arm", control="c", metrics=[RatioMetric("r", "num", "den")],
                  config=AnalysisConfig(cuped="none"))
    r = res.lift("r")
    assert r.control_mean == pytest.approx(df.num[:2000].sum() / df.den[:2000].sum(), rel=1e-12)
    assert math.isnan(r.treatment_mean) and math.isnan(r.abs_diff) and math.isnan(r.p_value)
    assert r.rel_diff is None and "denominator 'den' sums to zero in arm(s) ['t']" in r.rel_undefined_reason
    for direction in ("increase", "decrease"):
        gate = parse_gate({"min_units": 10, "primary": [{"metric": "r", "direction": direction}]})
        d = evaluate_gate(res, gate)
        assert d.decision == INCONCLUSIVE and d.exit_code == 2


@pytest.mark.parametrize("value", [0.0, 1 / 3, 0.1, 7.0, -2.5, 1e6 + 0.1])
def test_constant_column_has_its_exact_mean_and_zero_variance(value):
    rng = np.random.default_rng(1)
    n = 3000
    y = np.r_[rng.normal(5.0, 2.0, n), np.full(n, value)]
    df = pd.DataFrame({"arm": ["c"] * n + ["t"] * n, "y": y})
    r = analyze(df, arm_col="arm", control="c", metrics=["y"], config=AnalysisConfig(cuped="none")).lift("y")
    assert r.treatment_mean == value  # exact, not value + 1e-14
    assert r.abs_diff == pytest.approx(value - y[:n].mean(), rel=1e-12, abs=1e-12)
    # only the control's variance is left: se = s_c / sqrt(n)
    assert r.abs_se == pytest.approx(y[:n].std(ddof=1) / math.sqrt(n), rel=1e-9)


def test_zero_control_mean_gives_no_relative_lift():
    rng = np.random.default_rng(2)
    n = 1000
    df = pd.DataFrame({"arm": ["c"] * n + ["t"] * n, "y": np.r_[np.zeros(n), rng.exponential(1.0, n)],
                       "x": np.r_[np.full(n, 0.3), rng.exponential(0.3, n)]})
    res = analyze(df, arm_col="arm", control="c", metrics=["y", "x"], config=AnalysisConfig(cuped="none"))
    r = res.lift("y")
    assert r.control_mean == 0.0 and r.rel_diff is None and r.rel_undefined_reason == "control mean is zero"
    assert res.lift("x").control_mean == 0.3
    gate = parse_gate({"min_units": 10, "primary": [{"metric": "x"}],
                       "guardrail": [{"metric": "y", "margin": 0.01}]})
    d = evaluate_gate(res, gate)
    assert d.decision == INCONCLUSIVE
    assert any(x.metric == "y" and "relative lift undefined (control mean is zero)" in x.reason for x in d.rules)
