"""Degenerate input: each gets a clear AnalysisError or a defined, documented result."""

import math

import numpy as np
import pandas as pd
import pytest

from analysis import AnalysisConfig, AnalysisError, RatioMetric, analyze

CFG = AnalysisConfig(cuped="none")


def _df(c, t, col="y"):
    return pd.DataFrame({"arm": ["c"] * len(c) + ["t"] * len(t), col: np.r_[np.asarray(c, float), np.asarray(t, float)]})


def test_empty_arm():
    df = _df([1.0, 2.0, 3.0], [])
    with pytest.raises(AnalysisError, match="only the control arm"):
        analyze(df, arm_col="arm", control="c", metrics=["y"], config=CFG)
    with pytest.raises(AnalysisError, match=r"treatment arm 't' not found .*arms present: \['c'\]"):
        analyze(df, arm_col="arm", control="c", treatment="t", metrics=["y"], config=CFG)
    with pytest.raises(AnalysisError, match="control arm 'x' not found"):
        analyze(df, arm_col="arm", control="x", metrics=["y"], config=CFG)


def test_empty_table():
    with pytest.raises(AnalysisError, match="the table is empty"):
        analyze(_df([], []), arm_col="arm", control="c", metrics=["y"], config=CFG)


def test_one_unit_in_an_arm():
    r = analyze(_df([1.0, 2.0, 4.0], [3.0]), arm_col="arm", control="c", metrics=["y"], config=CFG).lift("y")
    assert r.abs_diff == pytest.approx(3.0 - 7 / 3)
    assert math.isnan(r.abs_ci_low) and math.isnan(r.p_value) and "fewer than 2 units" in r.notes
    assert r.to_dict()["abs_ci_low"] is None  # JSON-safe


def test_zero_variance():
    r = analyze(_df([2.0] * 5, [3.0] * 5), arm_col="arm", control="c", metrics=["y"], config=CFG).lift("y")
    assert r.abs_diff == 1.0 and r.abs_se == 0.0
    assert math.isnan(r.p_value) and "zero variance" in r.notes
    assert not r.significant


@pytest.mark.parametrize("bad, message", [
    (np.nan, r"column 'y' has 1 missing \(NULL, or NaN from pandas\) value\(s\) in arm 't'"),
    (np.inf, r"column 'y' has NaN or infinite values in arm 't'"),
    (-np.inf, r"column 'y' has NaN or infinite values in arm 't'"),
])
def test_nan_or_inf_values(bad, message):
    with pytest.raises(AnalysisError, match=message):
        analyze(_df([1.0, 2.0, 3.0], [1.0, bad, 2.0]), arm_col="arm", control="c", metrics=["y"], config=CFG)


def test_nan_in_arrow_table_is_not_null():
    import pyarrow as pa
    t = pa.table({"arm": ["c", "c", "t", "t"], "y": [1.0, 2.0, float("nan"), 3.0]})
    with pytest.raises(AnalysisError, match=r"column 'y' has NaN or infinite values in arm 't'"):
        analyze(t, arm_col="arm", control="c", metrics=["y"], config=CFG)


def test_null_values():
    df = pd.DataFrame({"arm": ["c", "c", "t", "t"], "y": pd.array([1.0, None, 2.0, 3.0], dtype="Float64")})
    with pytest.raises(AnalysisError, match=r"column 'y' has 1 missing \(NULL"):
        analyze(df, arm_col="arm", control="c", metrics=["y"], config=CFG)


def test_missing_columns():
    df = _df([1.0, 2.0], [3.0, 4.0])
    with pytest.raises(AnalysisError, match=r"metric column 'nope' is not in the table; columns are \['arm', 'y'\]"):
        analyze(df, arm_col="arm", control="c", metrics=["nope"], config=CFG)
    with pytest.raises(AnalysisError, match="arm column 'group'"):
        analyze(df, arm_col="group", control="c", metrics=["y"], config=CFG)
    with pytest.raises(AnalysisError, match="segment column 'seg'"):
        analyze(df, arm_col="arm", control="c", metrics=["y"], segments=["seg"], config=CFG)


def test_non_numeric_metric():
    df = _df([1.0, 2.0], [3.0, 4.0]).assign(s=["a", "b", "c", "d"])
    with pytest.raises(AnalysisError, match="not numeric"):
        analyze(df, arm_col="arm", control="c", metrics=["s"], config=CFG)


def test_control_mean_zero():
    r = analyze(_df([0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 1.0]), arm_col="arm", control="c", metrics=["y"],
                config=CFG).lift("y")
    assert r.rel_diff is None and r.rel_ci_low is None
    assert r.rel_undefined_reason == "control mean is zero"
    assert r.abs_diff == 0.5


def test_ratio_with_zero_denominator():
    df = pd.DataFrame({"arm": ["c"] * 3 + ["t"] * 3, "num": [0.0] * 6, "den": [0.0] * 3 + [1.0] * 3})
    r = analyze(df, arm_col="arm", control="c", metrics=[RatioMetric("r", "num", "den")], config=CFG).lift("r")
    assert math.isnan(r.control_mean) and "sums to zero" in r.notes and r.rel_diff is None


def test_bad_inputs_named():
    with pytest.raises(AnalysisError, match="does not exist"):
        analyze("/no/such/file.parquet", arm_col="arm", control="c", metrics=["y"])
    with pytest.raises(AnalysisError, match="relative_ci"):
        AnalysisConfig(relative_ci="bogus")
    with pytest.raises(AnalysisError, match="declared twice"):
        analyze(_df([1.0, 2], [3.0, 4]), arm_col="arm", control="c", metrics=["y", "y"])
    with pytest.raises(AnalysisError, match="proportion metric"):
        from analysis import ProportionMetric
        analyze(_df([0.0, 2.0], [1.0, 0.0]), arm_col="arm", control="c", metrics=[ProportionMetric("y")], config=CFG)
