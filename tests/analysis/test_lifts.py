"""Welch/z/paired lifts against scipy and statsmodels; relative CIs against hand-computed formulas."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW, ztest

from analysis import AnalysisConfig, analyze
from analysis.lifts import compare, relative_ci

TOL = 1e-9


def _frame(a, b, name="y"):
    return pd.DataFrame({"arm": ["c"] * len(a) + ["t"] * len(b), name: np.concatenate([a, b])})


@pytest.fixture
def two_samples():
    rng = np.random.default_rng(3)
    return rng.gamma(2.0, 5.0, 120), rng.gamma(2.0, 5.5, 150)


def test_welch_equals_scipy(two_samples):
    a, b = two_samples
    r = analyze(_frame(a, b), arm_col="arm", control="c", metrics=["y"],
                config=AnalysisConfig(cuped="none", alpha=0.1)).lift("y")
    ref = stats.ttest_ind(b, a, equal_var=False)
    ci = ref.confidence_interval(0.9)
    assert r.p_value == pytest.approx(ref.pvalue, rel=TOL, abs=1e-12)
    assert r.abs_ci_low == pytest.approx(ci.low, rel=TOL)
    assert r.abs_ci_high == pytest.approx(ci.high, rel=TOL)
    assert r.df == pytest.approx(ref.df, rel=TOL)
    assert r.abs_diff == pytest.approx(b.mean() - a.mean(), rel=TOL)
    assert r.method == "welch"


def test_z_equals_statsmodels(two_samples):
    a, b = two_samples
    r = analyze(_frame(a, b), arm_col="arm", control="c", metrics=["y"],
                config=AnalysisConfig(cuped="none", test="z")).lift("y")
    cm = CompareMeans(DescrStatsW(b), DescrStatsW(a))
    low, high = cm.zconfint_diff(alpha=0.05, usevar="unequal")
    stat, p = ztest(b, a, usevar="unequal")
    assert (r.abs_ci_low, r.abs_ci_high) == (pytest.approx(low, rel=TOL), pytest.approx(high, rel=TOL))
    assert r.p_value == pytest.approx(p, rel=TOL)
    assert r.method == "z" and np.isinf(r.df)


def test_paired_equals_ttest_rel():
    rng = np.random.default_rng(4)
    base = rng.gamma(2.0, 10.0, 300)
    c = base + rng.normal(0, 2, 300)
    t = base * 1.02 + rng.normal(0, 2, 300)
    df = pd.DataFrame({"u": np.r_[np.arange(300), np.arange(300)], "arm": ["c"] * 300 + ["t"] * 300,
                       "y": np.r_[c, t]}).sample(frac=1.0, random_state=0)
    r = analyze(df, arm_col="arm", control="c", metrics=["y"], unit_col="u",
                config=AnalysisConfig(paired=True)).lift("y")
    ref = stats.ttest_rel(t, c)
    ci = ref.confidence_interval()
    assert r.p_value == pytest.approx(ref.pvalue, rel=TOL)
    assert (r.abs_ci_low, r.abs_ci_high) == (pytest.approx(ci.low, rel=TOL), pytest.approx(ci.high, rel=TOL))
    assert r.method == "paired-t" and r.df == 299
    # the pairing matters: the unpaired CI is far wider
    un = stats.ttest_ind(t, c, equal_var=False).confidence_interval()
    assert (ci.high - ci.low) < 0.5 * (un.high - un.low)


def test_relative_ci_methods_hand_computed():
    mt, mc, vt, vc, q = 11.0, 10.0, 0.09, 0.04, 1.959963984540054
    rel, lo, hi, reason = relative_ci(mt, mc, vt, vc, 0.0, q, "delta")
    se = np.sqrt(vt / mc**2 + mt**2 * vc / mc**4)
    assert (float(rel), float(lo), float(hi)) == pytest.approx((0.1, 0.1 - q * se, 0.1 + q * se), rel=1e-12)
    rel, lo, hi, _ = relative_ci(mt, mc, vt, vc, 0.0, q, "log")
    sl = np.sqrt(vt / mt**2 + vc / mc**2)
    assert float(lo) == pytest.approx(np.exp(np.log(1.1) - q * sl) - 1, rel=1e-12)
    assert float(hi) == pytest.approx(np.exp(np.log(1.1) + q * sl) - 1, rel=1e-12)
    rel, lo, hi, _ = relative_ci(mt, mc, vt, vc, 0.0, q, "fieller")
    # Fieller bounds solve (mt - r mc)^2 = q^2 (vt + r^2 vc)
    for r in (float(lo) + 1, float(hi) + 1):
        assert (mt - r * mc) ** 2 == pytest.approx(q**2 * (vt + r**2 * vc), rel=1e-9)
    assert reason.item() is None


def test_relative_undefined_near_zero_control():
    rel, lo, hi, reason = relative_ci(1.0, 0.01, 0.01, 0.01, 0.0, 1.96, "delta")
    assert np.isnan(rel) and np.isnan(lo) and "standard errors of zero" in reason.item()
    rel, *_, reason = relative_ci(1.0, 0.0, 0.01, 0.0, 0.0, 1.96, "delta")
    assert np.isnan(rel) and reason.item() == "control mean is zero"
    *_, reason = relative_ci(1.0, 0.5, 0.01, 0.1, 0.0, 1.96, "fieller", min_control_se=0.0)
    assert "unbounded" in reason.item()


def test_relative_ci_setting_shown_in_result(two_samples):
    a, b = two_samples
    for method in ("delta", "log", "fieller"):
        r = analyze(_frame(a, b), arm_col="arm", control="c", metrics=["y"],
                    config=AnalysisConfig(cuped="none", relative_ci=method)).lift("y")
        assert r.relative_ci_method == method
        assert r.rel_ci_low < r.rel_diff < r.rel_ci_high
        assert r.rel_diff == pytest.approx(b.mean() / a.mean() - 1, rel=1e-12)


def test_compare_vectorised_matches_scalar():
    m_t, m_c = np.array([1.0, 2.0]), np.array([0.5, 1.5])
    v = np.array([0.01, 0.02])
    lift = compare(m_t, m_c, v, v, n_t=np.array([50, 60]), n_c=np.array([40, 70]))
    one = compare(2.0, 1.5, 0.02, 0.02, n_t=60, n_c=70)
    assert lift.abs_ci_low[1] == pytest.approx(float(one.abs_ci_low))
    assert lift.p_value[1] == pytest.approx(float(one.p_value))
