"""Delta-method ratios, CUPED (single and multi) and the merge of sufficient statistics, against numpy."""

import numpy as np
import pytest
from scipy import stats

from analysis import AnalysisConfig, MeanMetric, Moments, RatioMetric, analyze


def _ratio_ref(num, den):
    """Delta-method variance of sum(num)/sum(den), written out independently."""
    n = len(num)
    r = num.mean() / den.mean()
    var = (np.var(num, ddof=1) - 2 * r * np.cov(num, den, ddof=1)[0, 1] + r**2 * np.var(den, ddof=1)) / (
        n * den.mean() ** 2)
    return r, var


def test_ratio_delta_method_matches_numpy(ab_frame):
    df = ab_frame
    m = RatioMetric("cwt_per_request", "comment_watch_time_s", "requests")
    r = analyze(df, arm_col="arm", control="control", metrics=[m], config=AnalysisConfig(cuped="none")).lift(m.name)
    c, t = df[df.arm == "control"], df[df.arm == "treatment"]
    rc, vc = _ratio_ref(c.comment_watch_time_s.to_numpy(), c.requests.to_numpy())
    rt, vt = _ratio_ref(t.comment_watch_time_s.to_numpy(), t.requests.to_numpy())
    dfw = (vt + vc) ** 2 / (vt**2 / (len(t) - 1) + vc**2 / (len(c) - 1))
    q = stats.t.ppf(0.975, dfw)
    assert r.control_mean == pytest.approx(rc, rel=1e-12)
    assert r.abs_diff == pytest.approx(rt - rc, rel=1e-10)
    assert r.abs_se == pytest.approx(np.sqrt(vt + vc), rel=1e-9)
    assert r.abs_ci_low == pytest.approx(rt - rc - q * np.sqrt(vt + vc), rel=1e-9)
    rel_se = np.sqrt(vt / rc**2 + rt**2 * vc / rc**4)
    assert r.rel_ci_high == pytest.approx(rt / rc - 1 + q * rel_se, rel=1e-9)


def test_cuped_single_matches_numpy(ab_frame):
    df = ab_frame
    r = analyze(df, arm_col="arm", control="control", metrics=["watch_time_s"]).lift("watch_time_s")
    c, t = df[df.arm == "control"], df[df.arm == "treatment"]
    y_c, x_c = c.watch_time_s.to_numpy(), c.watch_time_s_pre.to_numpy()
    y_t, x_t = t.watch_time_s.to_numpy(), t.watch_time_s_pre.to_numpy()
    # theta from the pooled within-arm covariance
    cxy = (np.sum((x_c - x_c.mean()) * (y_c - y_c.mean())) + np.sum((x_t - x_t.mean()) * (y_t - y_t.mean())))
    cxx = np.sum((x_c - x_c.mean()) ** 2) + np.sum((x_t - x_t.mean()) ** 2)
    theta = cxy / cxx
    xbar = np.r_[x_c, x_t].mean()
    adj_c, adj_t = y_c - theta * (x_c - xbar), y_t - theta * (x_t - xbar)
    diff = adj_t.mean() - adj_c.mean()
    var = np.var(adj_t, ddof=1) / len(adj_t) + np.var(adj_c, ddof=1) / len(adj_c)
    var0 = np.var(y_t, ddof=1) / len(y_t) + np.var(y_c, ddof=1) / len(y_c)
    assert r.cuped == "single" and r.covariates == "watch_time_s_pre"
    assert r.abs_diff == pytest.approx(diff, rel=1e-10)
    assert r.abs_se == pytest.approx(np.sqrt(var), rel=1e-9)
    assert r.variance_reduction == pytest.approx(1 - var / var0, rel=1e-9)
    assert r.variance_reduction > 0.3


def test_cuped_multi_matches_regression(ab_frame):
    df = ab_frame
    pres = [c for c in df.columns if c.endswith("_pre")]
    r = analyze(df, arm_col="arm", control="control", metrics=["video_interactions"],
                config=AnalysisConfig(cuped="multi")).lift("video_interactions")
    assert set(r.covariates.split(",")) == set(pres)
    parts = [df[df.arm == a] for a in ("control", "treatment")]
    # pooled within-arm regression = OLS on arm-demeaned data
    xs = np.vstack([p[pres].to_numpy() - p[pres].to_numpy().mean(0) for p in parts])
    ys = np.concatenate([p.video_interactions.to_numpy() - p.video_interactions.mean() for p in parts])
    theta = np.linalg.lstsq(xs, ys, rcond=None)[0]
    xbar = df[pres].to_numpy().mean(0)
    adj = [p.video_interactions.to_numpy() - (p[pres].to_numpy() - xbar) @ theta for p in parts]
    assert r.abs_diff == pytest.approx(adj[1].mean() - adj[0].mean(), rel=1e-9)
    se = np.sqrt(sum(np.var(a, ddof=1) / len(a) for a in adj))
    assert r.abs_se == pytest.approx(se, rel=1e-8)
    single = analyze(df, arm_col="arm", control="control", metrics=["video_interactions"]).lift("video_interactions")
    assert r.variance_reduction >= single.variance_reduction - 1e-9


def test_cuped_ratio_reduces_variance_and_matches_linearisation(ab_frame):
    df = ab_frame.copy()
    df["requests_pre"] = df.requests + np.random.default_rng(1).poisson(1, len(df))
    m = RatioMetric("cwt_per_request", "comment_watch_time_s", "requests")
    r = analyze(df, arm_col="arm", control="control", metrics=[m]).lift(m.name)
    assert r.covariates == "comment_watch_time_s_pre,requests_pre"
    parts = [df[df.arm == a] for a in ("control", "treatment")]
    # independent reference: linearised unit values l = (y - R x)/xbar, regressed on the covariates
    pooled_r = df.comment_watch_time_s.sum() / df.requests.sum()
    pooled_den = df.requests.mean()
    cov_cols = ["comment_watch_time_s_pre", "requests_pre"]
    lin = [(p.comment_watch_time_s - pooled_r * p.requests).to_numpy() / pooled_den for p in parts]
    xs = np.vstack([p[cov_cols].to_numpy() - p[cov_cols].to_numpy().mean(0) for p in parts])
    theta = np.linalg.lstsq(xs, np.concatenate([v - v.mean() for v in lin]), rcond=None)[0]
    xbar = df[cov_cols].to_numpy().mean(0)
    est = [p.comment_watch_time_s.mean() / p.requests.mean() - (p[cov_cols].to_numpy().mean(0) - xbar) @ theta
           for p in parts]
    assert r.abs_diff == pytest.approx(est[1] - est[0], rel=1e-9)
    assert 0 < r.variance_reduction < 1


def test_moments_merge_equals_whole():
    rng = np.random.default_rng(0)
    x = rng.normal(1e6, 3.0, size=(1000, 3))  # large offset: the update must stay accurate
    whole = Moments.from_arrays(["a", "b", "c"], x)
    merged = Moments.from_arrays(["a", "b", "c"], x[:300]) + Moments.from_arrays(["a", "b", "c"], x[300:])
    assert merged.mean == pytest.approx(whole.mean, rel=1e-14)
    assert merged.cov() == pytest.approx(np.cov(x.T), rel=1e-9)
    assert merged.m3 == pytest.approx(((x - x.mean(0)) ** 3).sum(0), rel=1e-6, abs=1e-3)
    sums = Moments.from_sums(["a", "b", "c"], 1000, (x - 1e6).sum(0), (x - 1e6).T @ (x - 1e6),
                             shift=np.full(3, 1e6))
    assert sums.cov() == pytest.approx(np.cov(x.T), rel=1e-9)


def test_duckdb_moments_match_numpy(ab_frame, tmp_path):
    path = tmp_path / "ab.parquet"
    ab_frame.to_parquet(path)
    a = analyze(path, arm_col="arm", control="control", metrics=[MeanMetric("wt", "watch_time_s")])
    b = analyze(ab_frame, arm_col="arm", control="control", metrics=[MeanMetric("wt", "watch_time_s")])
    assert a.lift("wt").abs_ci_low == pytest.approx(b.lift("wt").abs_ci_low, rel=1e-12)
    ab_frame.to_csv(tmp_path / "ab.csv", index=False)
    c = analyze(tmp_path / "ab.csv", arm_col="arm", control="control", metrics=[MeanMetric("wt", "watch_time_s")])
    assert c.lift("wt").p_value == pytest.approx(b.lift("wt").p_value, rel=1e-9)


def test_cuped_rows_carry_the_unadjusted_comparison():
    """With CUPED, each lift row also holds the comparison without it: equal to a run with cuped='none'."""
    import numpy as np
    import pandas as pd

    from analysis import AnalysisConfig, analyze

    rng = np.random.default_rng(3)
    n = 4000
    pre = rng.gamma(2.0, 10.0, n)
    arm = np.where(rng.random(n) < 0.5, "control", "treatment")
    y = pre * rng.lognormal(0, 0.3, n) * np.where(arm == "treatment", 1.03, 1.0)
    df = pd.DataFrame({"arm": arm, "y": y, "y_pre": pre, "seg": np.where(rng.random(n) < 0.5, "a", "b")})
    cup = analyze(df, arm_col="arm", control="control", metrics=["y"], segments=["seg"],
                  config=AnalysisConfig(cuped="single"))
    raw = analyze(df, arm_col="arm", control="control", metrics=["y"], segments=["seg"],
                  config=AnalysisConfig(cuped="none"))
    for a, b in zip(cup.lifts, raw.lifts, strict=True):
        assert a.cuped == "single" and b.cuped == "none"
        assert a.unadjusted_abs_diff == pytest.approx(b.abs_diff, rel=1e-12)
        assert a.unadjusted_abs_ci_low == pytest.approx(b.abs_ci_low, rel=1e-12)
        assert a.unadjusted_abs_ci_high == pytest.approx(b.abs_ci_high, rel=1e-12)
        assert a.unadjusted_rel_diff == pytest.approx(b.rel_diff, rel=1e-12)
        assert a.unadjusted_rel_ci_low == pytest.approx(b.rel_ci_low, rel=1e-12)
        assert a.unadjusted_p_value == pytest.approx(b.p_value, rel=1e-9)
        assert a.unadjusted_control_mean == pytest.approx(b.control_mean, rel=1e-12)
        assert a.abs_ci_high - a.abs_ci_low < b.abs_ci_high - b.abs_ci_low  # CUPED narrows
        assert np.isnan(b.unadjusted_abs_diff)  # nothing to add without CUPED
