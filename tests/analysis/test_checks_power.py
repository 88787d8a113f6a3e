"""SRM, multiple testing, power, heterogeneity and sequential maths against references."""

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower, TTestIndPower

from analysis import AnalysisConfig, adjust, analyze, cochran_q, mde, sample_size, srm_test
from analysis.multitest import adjust_families
from analysis.sequential import always_valid_p, confidence_sequence


def test_srm_matches_hand_chi_square():
    counts = {"control": 5100, "treatment": 4900}
    c = srm_test(counts)
    exp = np.array([5000.0, 5000.0])
    x2 = ((np.array([5100, 4900]) - exp) ** 2 / exp).sum()
    from scipy.special import gammaincc
    assert c.statistic == pytest.approx(x2)
    assert c.p_value == pytest.approx(gammaincc(0.5, x2 / 2), rel=1e-12)  # chi2(1) survival, by hand
    assert c.passed  # p = 0.0455 > 0.001
    bad = srm_test({"control": 5300, "treatment": 4700})
    assert not bad.passed and "MISMATCH" in bad.message
    weighted = srm_test({"control": 2000, "treatment": 8000}, {"control": 0.2, "treatment": 0.8})
    assert weighted.statistic == pytest.approx(0.0) and weighted.passed


def test_multiple_testing_equals_statsmodels():
    p = [0.01, 0.04, 0.03, 0.2, 0.001]
    assert adjust(p, "holm") == pytest.approx(multipletests(p, method="holm")[1].tolist())
    assert adjust(p, "bh") == pytest.approx(multipletests(p, method="fdr_bh")[1].tolist())
    assert adjust([0.01, 0.04, 0.03], "holm") == pytest.approx([0.03, 0.06, 0.06])  # by hand
    fam = adjust_families([0.01, 0.04, float("nan"), 0.03], ["a", "a", "a", "b"], "holm")
    assert fam[:2] == pytest.approx([0.02, 0.04]) and np.isnan(fam[2]) and fam[3] == pytest.approx(0.03)


def test_correction_scope(ab_frame):
    kw = dict(arm_col="arm", control="control", metrics=["watch_time_s", "video_interactions"],
              segments=["activity"])
    r_metric = analyze(ab_frame, **kw, config=AnalysisConfig(correction="holm", correction_scope="metric"))
    seg = [r for r in r_metric.lifts if r.metric == "watch_time_s" and not r.is_overall]
    assert [r.p_value_adjusted for r in seg] == pytest.approx(
        multipletests([r.p_value for r in seg], method="holm")[1].tolist())
    ov = r_metric.lift("watch_time_s")
    assert ov.p_value_adjusted == ov.p_value
    r_all = analyze(ab_frame, **kw, config=AnalysisConfig(correction="bh", correction_scope="all"))
    assert [r.p_value_adjusted for r in r_all.lifts] == pytest.approx(
        multipletests([r.p_value for r in r_all.lifts], method="fdr_bh")[1].tolist())


@pytest.mark.parametrize("ratio", [1.0, 2.0])
def test_power_equals_statsmodels(ratio):
    """statsmodels' power function evaluated at our MDE / sample size gives the target power (1e-9);
    its own root finder is looser (~1e-6), so the solved values agree to 1e-4."""
    sd = 3.0
    for n in (50, 1000):
        for test, ref in (("z", NormalIndPower()), ("welch", TTestIndPower())):
            d = mde(n, sd, ratio=ratio, test=test) / sd
            assert ref.power(d, n, 0.05, ratio=ratio) == pytest.approx(0.8, abs=1e-9)
            solved = ref.solve_power(effect_size=None, nobs1=n, ratio=ratio, alpha=0.05, power=0.8)
            assert d == pytest.approx(solved, rel=1e-4)
    for test, ref in (("z", NormalIndPower()), ("welch", TTestIndPower())):
        n = sample_size(0.3, sd, ratio=ratio, power=0.9, test=test)
        assert ref.power(0.1, n, 0.05, ratio=ratio) == pytest.approx(0.9, abs=1e-9)
        solved = ref.solve_power(effect_size=0.1, nobs1=None, ratio=ratio, alpha=0.05, power=0.9)
        assert n == pytest.approx(solved, rel=1e-4)
    # CUPED: a variance reduction r shrinks the MDE by sqrt(1 - r) and the sample size by (1 - r)
    assert mde(1000, sd, variance_reduction=0.75, test="z") == pytest.approx(0.5 * mde(1000, sd, test="z"))
    n_half = sample_size(0.3, sd, variance_reduction=0.5, test="z")
    assert NormalIndPower().power(0.1 / np.sqrt(0.5), n_half, 0.05) == pytest.approx(0.8, abs=1e-9)


def test_cochran_q_by_hand():
    d, v = [1.0, 2.0, 4.0], [0.25, 0.5, 1.0]
    q, df, p, i2, k = cochran_q(d, v)
    w = np.array([4.0, 2.0, 1.0])
    dw = (w * d).sum() / w.sum()
    assert q == pytest.approx((w * (np.array(d) - dw) ** 2).sum())
    assert df == 2 and k == 3 and i2 == pytest.approx(max(0, (q - 2) / q))
    assert p == pytest.approx(np.exp(-q / 2))  # chi2(2) survival is exp(-q/2)
    assert np.isnan(cochran_q([1.0], [0.1])[0])


def test_sequential_formulas_by_hand():
    d, v, tau, a = 0.3, 0.01, 0.2, 0.05
    lo, hi = confidence_sequence(d, v, tau=tau, alpha=a)
    h = np.sqrt(v * (v + tau**2) / tau**2 * (np.log((v + tau**2) / v) + 2 * np.log(1 / a)))
    assert (float(lo), float(hi)) == pytest.approx((d - h, d + h))
    lam = np.sqrt(v / (v + tau**2)) * np.exp(tau**2 * d**2 / (2 * v * (v + tau**2)))
    assert float(always_valid_p(d, v, tau=tau)) == pytest.approx(min(1, 1 / lam))
    # duality: the CS excludes 0 exactly when the always-valid p is below alpha
    assert (float(lo) > 0) == (float(always_valid_p(d, v, tau=tau)) < a)
    # always wider than the fixed-horizon z interval
    assert h > 1.96 * np.sqrt(v)
