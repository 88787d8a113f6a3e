"""analysis.bayes against GrowthBook's gbstats Bayesian engine (EffectBayesianABTest) and by hand.

gbstats (0.5-0.8) pins numpy<2 and pandas<2, which the project cannot install alongside pandas>=2.1, so
it is not a declared dependency: GOLDEN holds values recorded from gbstats 0.8.0 (always checked), and
the live comparisons run where gbstats is importable (`pip install --no-deps gbstats==0.8.0`; its
Bayesian module runs on numpy 2 / pandas 2+).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from analysis.bayes import bayesian_lift

RTOL, ATOL = 1e-6, 1e-12
FIELDS = ("post_mean", "post_sd", "ci_low", "ci_high", "chance_to_win", "risk_control", "risk_treatment")


def _arm(n: int, s: float, ss: float) -> tuple[float, float]:
    """(mean, variance of the mean) from (n, sum, sum of squares), as gbstats' SampleMeanStatistic."""
    mean = s / n
    return mean, (ss - s**2 / n) / (n - 1) / n


def _ours(control, treatment, difference, prior, prior_on, inverse, alpha):
    (m_c, v_c), (m_t, v_t) = _arm(*control), _arm(*treatment)
    pm, pv, proper = prior
    return bayesian_lift(m_t, m_c, v_t, v_c, difference=difference, prior_mean=pm, prior_sd=pv**0.5,
                         proper=proper, prior_on=prior_on, inverse=inverse, alpha=alpha)


def _values(r) -> tuple[float, ...]:
    return tuple(getattr(r, f) for f in FIELDS)


# control (n, sum, sum_squares), treatment, difference, prior (mean, variance, proper), prior_type, inverse,
# alpha -> gbstats 0.8.0 (expected, uplift.stddev, ci[0], ci[1], chance_to_win, risk[0], risk[1])
GOLDEN = [
    ((1000, 10000.0, 108991.0), (1100, 11440.0, 130262.0), 'relative', (0, 1, False), 'relative', False, 0.05,
     (0.040000000000000036, 0.013809474929054925, 0.012933926493643558, 0.0670660735063565, 0.9981136194356924,
      0.040007569302628145, 7.569302628110799e-06)),
    ((1000, 10000.0, 108991.0), (1100, 11440.0, 130262.0), 'absolute', (0, 1, False), 'relative', False, 0.05,
     (0.40000000000000036, 0.13540960003492977, 0.1346020607705643, 0.6653979392294364, 0.9984315815290818,
      0.40006082064146553, 6.0820641465171376e-05)),
    ((5000, 600.0, 616.0), (5100, 586.5, 589.0), 'relative', (0, 0.09, True), 'relative', False, 0.05,
     (-0.04041781923933224, 0.05193756292936936, -0.14221357202567883, 0.06137793354701433, 0.21822551433337806,
      0.006486735929449471, 0.04690455516878172)),
    ((5000, 600.0, 616.0), (5100, 586.5, 589.0), 'absolute', (0, 0.09, True), 'relative', True, 0.1,
     (-0.004843699915760282, 0.0063649808982378375, -0.015313161831703632, 0.005625762000183065,
      0.7766690946634118, 0.005662834507868834, 0.0008191345921085522)),
    # near-zero control mean (0.02 with sd ~1): defined, but the relative posterior is wide
    ((200, 4.0, 199.0), (210, 31.5, 258.0), 'relative', (0.05, 0.01, True), 'relative', False, 0.05,
     (0.05008992316441028, 0.09999930291877651, -0.14590510903550283, 0.24608495536432334, 0.6917802071050216,
      0.06984160315739937, 0.0197516799929891)),
    # negative control mean, prior stated on the absolute scale
    ((300, -600.0, 1872.0), (300, -510.0, 1453.0), 'relative', (0, 0.09, True), 'absolute', False, 0.05,
     (-0.13242357171289473, 0.051346511498501946, -0.23306088498173033, -0.03178625844405916,
      0.004954082768984055, 8.034326702899259e-05, 0.13250391497992375)),
    # z ~ 9: chance to win 1, risk of treatment ~1e-22
    ((100000, 100000.0, 125000.0), (100000, 102000.0, 129040.0), 'absolute', (0.0, 0.0004, True), 'absolute',
     False, 0.05,
     (0.019753083981076374, 0.002222233196240411, 0.015397586951195837, 0.02410858101095691, 1.0,
      0.019753083981076374, 7.534527986879393e-23)),
    ((50, 150.0, 646.0), (60, 180.0, 776.0), 'relative', (0, 1, False), 'relative', False, 0.2,
     (0.0, 0.12765694770084507, -0.16359896117866318, 0.16359896117866318, 0.5, 0.05092775382486156,
      0.05092775382486156)),
]


@pytest.mark.parametrize("case", GOLDEN, ids=[f"golden{i}" for i in range(len(GOLDEN))])
def test_matches_recorded_gbstats(case):
    *args, expected = case
    np.testing.assert_allclose(_values(_ours(*args)), expected, rtol=RTOL, atol=ATOL)


def _gbstats_result(gb, control, treatment, difference, prior, prior_on, inverse, alpha):
    a, b = gb["SampleMeanStatistic"](*control), gb["SampleMeanStatistic"](*treatment)
    config = gb["EffectBayesianConfig"](difference_type=difference, prior_effect=gb["GaussianPrior"](*prior),
                                        prior_type=prior_on, inverse=inverse, alpha=alpha)
    g = gb["EffectBayesianABTest"](a, b, config).compute_result()
    assert g.error_message is None, g.error_message
    return (g.expected, g.uplift.stddev, g.ci[0], g.ci[1], g.chance_to_win, g.risk[0], g.risk[1])


@pytest.fixture(scope="module")
def gb():
    pytest.importorskip("gbstats")
    from gbstats.bayesian.tests import EffectBayesianABTest, EffectBayesianConfig, GaussianPrior
    from gbstats.models.statistics import SampleMeanStatistic
    return dict(EffectBayesianABTest=EffectBayesianABTest, EffectBayesianConfig=EffectBayesianConfig,
                GaussianPrior=GaussianPrior, SampleMeanStatistic=SampleMeanStatistic)


def test_golden_table_is_gbstats(gb):
    for *args, expected in GOLDEN:
        np.testing.assert_allclose(_gbstats_result(gb, *args), expected, rtol=1e-12, atol=1e-15)


def _random_arms(seed: int, k: int):
    """k (control, treatment) pairs of (n, sum, sum_squares) from skewed samples, lifts of both signs."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(k):
        shift = rng.normal(0, 0.15)
        xc = rng.lognormal(0, 1, int(rng.integers(30, 2000)))
        xt = rng.lognormal(shift, 1, int(rng.integers(30, 2000)))
        out.append(tuple((x.size, float(x.sum()), float((x**2).sum())) for x in (xc, xt)))
    out.append(((400, 8.0, 410.0), (380, -11.0, 395.0)))      # control mean 0.02, sd ~1: near zero
    out.append(((300, -600.0, 1872.0), (300, -510.0, 1453.0)))  # negative control mean
    return out


PRIORS = [(0, 1, False), (0, 0.09, True), (0.05, 0.01, True), (-0.2, 0.25, True)]


@pytest.mark.parametrize("difference", ["relative", "absolute"])
@pytest.mark.parametrize("prior_on", ["relative", "absolute"])
def test_matches_live_gbstats(gb, difference, prior_on):
    for (control, treatment), prior, inverse, alpha in itertools.product(
            _random_arms(11, 6), PRIORS, [False, True], [0.05, 0.1]):
        args = (control, treatment, difference, prior, prior_on, inverse, alpha)
        np.testing.assert_allclose(_values(_ours(*args)), _gbstats_result(gb, *args), rtol=RTOL, atol=ATOL,
                                   err_msg=repr(args))


def test_gbstats_defaults_are_flat(gb):
    prior = gb["GaussianPrior"]()
    assert (prior.mean, prior.variance, prior.proper) == (0, 1, False)
    config = gb["EffectBayesianConfig"]()
    assert (config.prior_type, config.difference_type, config.alpha, config.inverse) == \
        ("relative", "relative", 0.05, False)
    # our defaults: flat prior, relative difference, alpha 0.05 -> same numbers as gbstats' defaults
    control, treatment = (1000, 10000.0, 108991.0), (1100, 11440.0, 130262.0)
    a, b = gb["SampleMeanStatistic"](*control), gb["SampleMeanStatistic"](*treatment)
    g = gb["EffectBayesianABTest"](a, b).compute_result()
    (m_c, v_c), (m_t, v_t) = _arm(*control), _arm(*treatment)
    r = bayesian_lift(m_t, m_c, v_t, v_c)
    np.testing.assert_allclose(_values(r), (g.expected, g.uplift.stddev, *g.ci, g.chance_to_win, *g.risk),
                               rtol=RTOL, atol=ATOL)


def test_flat_prior_by_hand():
    # absolute: d = 0.3, s^2 = 0.01 + 0.03 = 0.04, s = 0.2, z = 1.5
    r = bayesian_lift(1.3, 1.0, 0.01, 0.03, difference="absolute")
    assert r.prior == "flat" and r.reason is None
    assert r.post_mean == pytest.approx(0.3) and r.post_sd == pytest.approx(0.2)
    assert r.chance_to_win == pytest.approx(stats.norm.cdf(1.5), rel=1e-12)
    q = stats.norm.ppf(0.975)
    assert (r.ci_low, r.ci_high) == (pytest.approx(0.3 - 0.2 * q), pytest.approx(0.3 + 0.2 * q))
    # E[max(-delta, 0)] = s (phi(z) - z Phi(-z)); E[max(delta, 0)] - E[max(-delta, 0)] = mean
    assert r.risk_treatment == pytest.approx(0.2 * (stats.norm.pdf(1.5) - 1.5 * stats.norm.sf(1.5)), rel=1e-12)
    assert r.risk_control - r.risk_treatment == pytest.approx(0.3, rel=1e-12)
    # relative, delta method: d = 0.1, s^2 = 0.02/4 + 2.2^2 * 0.01 / 16
    r = bayesian_lift(2.2, 2.0, 0.02, 0.01)
    s = np.sqrt(0.02 / 4 + 2.2**2 * 0.01 / 16)
    assert r.post_mean == pytest.approx(0.1) and r.post_sd == pytest.approx(s)
    assert r.chance_to_win == pytest.approx(stats.norm.cdf(0.1 / s), rel=1e-12)


def test_proper_prior_by_hand():
    # prior N(0, 0.2^2) on the absolute difference, data d = 0.3 with s = 0.2: equal precisions, so the
    # posterior mean is halfway (0.15) and the posterior sd is 0.2 / sqrt(2)
    r = bayesian_lift(1.3, 1.0, 0.01, 0.03, difference="absolute", prior_sd=0.2, proper=True, prior_on="absolute")
    assert r.post_mean == pytest.approx(0.15) and r.post_sd == pytest.approx(0.2 / np.sqrt(2))
    assert r.data_mean == pytest.approx(0.3) and r.data_sd == pytest.approx(0.2)
    assert r.prior == "N(0, 0.2^2) on the absolute lift"
    # the same prior stated on the relative lift (control mean 2): N(0, 0.1^2) relative = N(0, 0.2^2) absolute
    r2 = bayesian_lift(2.3, 2.0, 0.01, 0.03, difference="absolute", prior_sd=0.1, proper=True)
    assert r2.post_mean == pytest.approx(0.15) and r2.post_sd == pytest.approx(0.2 / np.sqrt(2))
    assert "rescaled" in r2.prior


def test_inverse_swaps_direction():
    a = bayesian_lift(1.1, 1.0, 0.004, 0.003)
    b = bayesian_lift(1.1, 1.0, 0.004, 0.003, inverse=True)
    assert b.chance_to_win == pytest.approx(1 - a.chance_to_win)
    assert (b.risk_control, b.risk_treatment) == (a.risk_treatment, a.risk_control)
    assert (b.post_mean, b.ci_low) == (a.post_mean, a.ci_low)


def test_undefined_gives_nan_and_reason():
    r = bayesian_lift(0.5, 0.0, 0.01, 0.01)
    assert r.reason == "control mean is zero"
    assert all(np.isnan(getattr(r, f)) for f in FIELDS)
    # absolute difference with a flat prior does not need the control mean
    assert bayesian_lift(0.5, 0.0, 0.01, 0.01, difference="absolute").reason is None
    # ... but a relative prior rescaled to it does
    assert bayesian_lift(0.5, 0.0, 0.01, 0.01, difference="absolute", proper=True).reason == "control mean is zero"
    assert "variance" in bayesian_lift(1.5, 1.0, 0.0, 0.0).reason
    assert bayesian_lift(np.nan, 1.0, 0.01, 0.01).reason == "non-finite input"
    near = bayesian_lift(1.0, 0.05, 0.01, 0.01, min_control_se=3)
    assert "standard errors of zero" in near.reason and np.isnan(near.chance_to_win)
    assert bayesian_lift(1.0, 0.05, 0.01, 0.01).reason is None  # off by default, as gbstats
    with pytest.raises(ValueError):
        bayesian_lift(1.0, 1.0, 0.01, 0.01, difference="ratio")
    with pytest.raises(ValueError):
        bayesian_lift(1.0, 1.0, 0.01, 0.01, proper=True, prior_sd=0.0)


def test_broadcasts_like_scalars():
    m_t = np.array([[1.1, 0.9, 0.5], [2.0, 1.0, 3.0]])
    m_c = np.array([1.0, 0.0, 0.5])
    r = bayesian_lift(m_t, m_c, 0.01, np.array([0.02, 0.02, 0.0]), proper=True)
    assert r.post_mean.shape == (2, 3) and r.reason.shape == (2, 3)
    for i, j in np.ndindex(2, 3):
        s = bayesian_lift(m_t[i, j], m_c[j], 0.01, [0.02, 0.02, 0.0][j], proper=True)
        assert r.reason[i, j] == s.reason
        np.testing.assert_allclose([getattr(r, f)[i, j] for f in FIELDS], _values(s), rtol=1e-14)
