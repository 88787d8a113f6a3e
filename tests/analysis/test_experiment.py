"""The orchestrator end to end: segments, session-level rows, paired replays, winsorising, bootstrap, dicts."""

import numpy as np
import pandas as pd
import pytest

from analysis import AnalysisConfig, AnalysisError, RatioMetric, analyze, cochran_q
from analysis.results import CHECK_FIELDS, LIFT_FIELDS


def test_segments_and_heterogeneity(ab_frame):
    r = analyze(ab_frame, arm_col="arm", control="control", metrics=["watch_time_s"], segments=["activity", "is_new"])
    levels = {(x.segment, x.segment_value) for x in r.lifts if not x.is_overall}
    assert levels == {("activity", "low"), ("activity", "mid"), ("activity", "high"),
                      ("is_new", "true"), ("is_new", "false")}
    for x in r.lifts:  # each segment lift equals the analysis of that subset alone
        if x.segment == "activity":
            sub = analyze(ab_frame[ab_frame.activity == x.segment_value], arm_col="arm", control="control",
                          metrics=["watch_time_s"]).lift("watch_time_s")
            assert x.abs_diff == pytest.approx(sub.abs_diff, rel=1e-6)
    h = next(h for h in r.heterogeneity if h.segment == "activity")
    rows = [x for x in r.lifts if x.segment == "activity"]
    q, df, p, _, _ = cochran_q([x.abs_diff for x in rows], [x.abs_se**2 for x in rows])
    assert (h.q_stat, h.df, h.p_value) == pytest.approx((q, df, p))


def test_session_rows_are_summed_to_users(ab_frame):
    df = ab_frame[["user_id", "arm", "watch_time_s"]]
    half = df.assign(watch_time_s=df.watch_time_s / 2)
    sessions = pd.concat([half, half]).sample(frac=1.0, random_state=0)
    cfg = AnalysisConfig(cuped="none")
    a = analyze(sessions, arm_col="arm", control="control", metrics=["watch_time_s"], unit_col="user_id", config=cfg)
    b = analyze(df, arm_col="arm", control="control", metrics=["watch_time_s"], config=cfg)
    assert a.lift("watch_time_s").abs_ci_low == pytest.approx(b.lift("watch_time_s").abs_ci_low, rel=1e-9)
    assert a.arm_counts == b.arm_counts
    bad = pd.concat([df, df.assign(arm="treatment")])
    with pytest.raises(AnalysisError, match="appear in more than one arm"):
        analyze(bad, arm_col="arm", control="control", metrics=["watch_time_s"], unit_col="user_id")


def test_paired_ratio_and_pairing_check():
    rng = np.random.default_rng(2)
    n = 500
    views = rng.poisson(6, n) + 1.0
    base = rng.gamma(2.0, 3.0, n) * views
    rows = []
    for arm, f in (("base", 1.0), ("lsvcr", 1.04)):
        rows.append(pd.DataFrame({"u": np.arange(n), "arm": arm, "cwt": base * f * rng.lognormal(0, 0.05, n),
                                  "views": views}))
    df = pd.concat(rows).iloc[:-3]  # three units lack a treatment row
    m = RatioMetric("cwt_per_view", "cwt", "views")
    r = analyze(df, arm_col="arm", control="base", metrics=[m], unit_col="u", config=AnalysisConfig(paired=True))
    x = r.lift("cwt_per_view")
    assert x.method == "paired-t" and x.n_control == n - 3
    assert x.abs_ci_low < 0.04 * base.sum() / views.sum() < x.abs_ci_high
    pairing = next(c for c in r.checks if c.check == "pairing")
    assert not pairing.passed and "3 unmatched" in pairing.message
    # hand-computed delta method on the pairs
    c = df[df.arm == "base"].set_index("u").loc[np.arange(n - 3)]
    t = df[df.arm == "lsvcr"].set_index("u").loc[np.arange(n - 3)]
    rc, rt = c.cwt.mean() / c.views.mean(), t.cwt.mean() / t.views.mean()
    lin = (t.cwt - rt * t.views) / t.views.mean() - (c.cwt - rc * c.views) / c.views.mean()
    assert x.abs_se == pytest.approx(lin.std(ddof=1) / np.sqrt(n - 3), rel=1e-9)


def test_winsorize_is_recorded(ab_frame):
    r = analyze(ab_frame, arm_col="arm", control="control", metrics=["watch_time_s"],
                config=AnalysisConfig(winsorize=0.99, cuped="none"))
    cap = ab_frame.watch_time_s.quantile(0.99)
    capped = ab_frame.assign(watch_time_s=ab_frame.watch_time_s.clip(upper=cap))
    ref = analyze(capped, arm_col="arm", control="control", metrics=["watch_time_s"],
                  config=AnalysisConfig(cuped="none")).lift("watch_time_s")
    assert r.lift("watch_time_s").abs_diff == pytest.approx(ref.abs_diff, rel=1e-9)
    assert "q0.99" in r.lift("watch_time_s").winsorized
    assert any(c.check == "winsorize" for c in r.checks)


def test_heavy_tail_warning():
    rng = np.random.default_rng(0)
    y = rng.pareto(1.5, 2000)
    df = pd.DataFrame({"arm": np.repeat(["c", "t"], 1000), "y": y})
    r = analyze(df, arm_col="arm", control="c", metrics=["y"])
    c = next(c for c in r.checks if c.check == "heavy_tail")
    assert not c.passed and "winsorize" in c.message


@pytest.mark.parametrize("method", ["percentile", "bca", "poisson"])
def test_bootstrap_close_to_normal_ci(method):
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"arm": np.repeat(["c", "t"], 400), "y": rng.normal(10, 2, 800) + np.repeat([0, 0.5], 400)})
    normal = analyze(df, arm_col="arm", control="c", metrics=["y"], config=AnalysisConfig(cuped="none")).lift("y")
    boot = analyze(df, arm_col="arm", control="c", metrics=["y"],
                   config=AnalysisConfig(cuped="none", bootstrap=method, n_boot=1000, seed=3)).lift("y")
    assert boot.ci_method == f"bootstrap-{method}"
    assert boot.abs_ci_low == pytest.approx(normal.abs_ci_low, abs=0.05)
    assert boot.abs_ci_high == pytest.approx(normal.abs_ci_high, abs=0.05)
    again = analyze(df, arm_col="arm", control="c", metrics=["y"],
                    config=AnalysisConfig(cuped="none", bootstrap=method, n_boot=1000, seed=3)).lift("y")
    assert again.abs_ci_low == boot.abs_ci_low  # deterministic by seed


def test_to_dicts_stable_keys(ab_frame):
    r = analyze(ab_frame, arm_col="arm", control="control", metrics=["watch_time_s", "requests"],
                segments=["activity"])
    d = r.to_dicts()
    assert set(d) == {"summary", "lifts", "checks", "heterogeneity", "power"}
    assert tuple(d["lifts"][0]) == LIFT_FIELDS and tuple(d["checks"][0]) == CHECK_FIELDS
    import json
    json.dumps(d)  # JSON-safe: no NaN, numpy scalars or tuples
    p = next(x for x in r.power if x.metric == "watch_time_s")
    assert p.mde_abs > 0 and p.variance_reduction == pytest.approx(r.variance_reduction["watch_time_s"])
