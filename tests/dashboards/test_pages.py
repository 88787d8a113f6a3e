"""Every page of the dashboard, driven by Streamlit's AppTest on a database built by real runs, with the
values shown checked against what the database holds (tests/dashboards/conftest.py builds it)."""

from __future__ import annotations

import math
import tomllib

import pandas as pd
import pytest

from dashboards.format import PRIMARY_METRICS
from harness.store import ResultsReader, ResultsStore
from tests.dashboards.conftest import GATE
from tests.dashboards.helpers import (
    all_text,
    axis_titles,
    chart_data,
    charts,
    frames,
    metrics,
    no_exception,
    open_page,
    texts,
)

PAGES = ("Runs", "Decision", "Metrics", "Over time", "Segments", "Test plan", "Models", "Truth", "Compare")


def _evaluate_ids(store: ResultsStore) -> list[str]:
    runs = store.runs()
    return list(runs[runs["kind"] == "evaluate"]["run_id"])


def _same(shown: pd.Series, stored: pd.Series) -> None:
    assert list(shown) == pytest.approx(list(stored), rel=1e-12, abs=0, nan_ok=True)


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("run", ["ab-cuped", "ab-raw", "rep-1", "evaluate"])
def test_every_page_renders_every_kind_of_run(results_db, monkeypatch, page, run):
    if run == "evaluate":
        run = _evaluate_ids(ResultsStore(results_db))[0]
    at = open_page(monkeypatch, results_db, page=page, run=run)
    no_exception(at)
    assert not [t for t in texts(at, "error") if not t.startswith("### Launch decision")]  # NO_SHIP is red
    assert at.main.get("header")[0].value == page
    # every table can be downloaded
    assert len(at.main.get("download_button")) >= len(frames(at))


def test_the_first_screen_is_the_newest_runs_decision(results_db, monkeypatch):
    at = open_page(monkeypatch, results_db)
    no_exception(at)
    newest = ResultsStore(results_db).runs().sort_values("created_at")["run_id"].iloc[-1]
    assert at.session_state["run"] == newest == "rep-1"
    assert at.main.get("header")[0].value == "Decision"


# ---------------------------------------------------------------------------------------------- Runs
def test_runs_table_lists_and_filters_the_stored_runs(results_db, monkeypatch):
    store = ResultsStore(results_db)
    stored = store.runs()
    at = open_page(monkeypatch, results_db, page="Runs")
    shown = frames(at)[0]
    assert set(shown["run_id"]) == set(stored["run_id"])
    by_id = stored.set_index("run_id")
    for r in shown.to_dict("records"):
        decision = by_id.loc[r["run_id"], "decision"]
        assert r["decision"] == (decision if isinstance(decision, str) else "")
        assert r["kind"] == by_id.loc[r["run_id"], "kind"] and r["status"] == "complete"
    rep = shown[shown["run_id"] == "rep-1"].iloc[0]
    assert rep["design"] == "paired" and rep["estimator"] == "cascade_dr" and rep["treatments"] == "pop"
    assert shown[shown["run_id"] == "ab-cuped"].iloc[0]["treatments"] == "lsvcr, lsvcr_b"
    at.multiselect(key="f-kind").set_value(["replay"]).run()
    assert list(frames(at)[0]["run_id"]) == ["rep-1"]
    at.multiselect(key="f-kind").set_value([]).run()
    at.text_input(key="f-text").set_value("ab-").run()
    assert set(frames(at)[0]["run_id"]) == {"ab-cuped", "ab-raw"}


def test_picking_two_runs_opens_one_and_compares_with_the_other(results_db, monkeypatch):
    at = open_page(monkeypatch, results_db, page="Runs")
    at.multiselect(key="pick").set_value(["ab-raw", "ab-cuped"]).run()
    assert at.session_state["run"] == "ab-raw" and at.session_state["compare"] == "ab-cuped"
    at.sidebar.radio(key="page").set_value("Compare").run()
    no_exception(at)
    fields = frames(at)[0].set_index("field")
    assert fields.loc["data", "differs"] == False  # noqa: E712 (numpy bool)
    assert fields.loc["decision", "ab-cuped"] == "NO_SHIP" and fields.loc["decision", "differs"]


# ------------------------------------------------------------------------------------------ Decision
def test_decision_banner_and_one_line_per_rule(results_db, monkeypatch):
    store = ResultsStore(results_db)
    gate = store.gate_decisions("ab-cuped")
    at = open_page(monkeypatch, results_db, page="Decision", run="ab-cuped")
    banner = texts(at, "error")  # NO_SHIP is red
    assert banner == [f"### Launch decision for lsvcr, lsvcr_b: {gate['decision'].iloc[0]}"] and \
        gate["decision"].iloc[0] == "NO_SHIP"
    lines = [t for t in texts(at, "markdown") if t.startswith(":")]
    assert len(lines) == len(gate)
    for line, r in zip(lines, gate.to_dict("records"), strict=True):
        colour = {"pass": "green", "fail": "red", "inconclusive": "orange"}[r["outcome"]]
        assert line.startswith(f":{colour}[**{r['outcome']}**] **{r['rule']}**")
        assert line.endswith(f"({r['treatment']}): {r['reason']}")
    cards = metrics(at)
    counts = store.run("ab-cuped")["summary"]["arm_counts"]
    assert {k: v for k, v in cards.items() if k.startswith("units")} == \
        {f"units · {arm}": f"{n:,}" for arm, n in counts.items()}
    srm = store.checks("ab-cuped").query("check == 'srm'").iloc[0]
    assert cards["SRM"] == ("pass" if srm["status"] == "pass" else srm["status"].upper())


def test_decision_health_strip_of_a_replay(results_db, monkeypatch):
    store = ResultsStore(results_db)
    est = store.replay_estimates("rep-1")
    default = est[est["is_default"] & (est["arm"] == "pop")]
    at = open_page(monkeypatch, results_db, page="Decision", run="rep-1")
    no_exception(at)
    decision = store.gate_decisions("rep-1")["decision"].iloc[0]
    shown = texts(at, {"SHIP": "success", "NO_SHIP": "error", "INCONCLUSIVE": "warning"}[decision])
    assert f"### Launch decision for pop: {decision}" in shown
    cards = metrics(at)
    assert cards["weight ESS · pop"] == f"{round(default['ess'].min()):,}"
    assert cards["largest weight · pop"] == f"{default['max_weight_share'].max():.1%}"
    assert cards["units · logging"] == cards["units · pop"] == f"{store.run('rep-1')['summary']['arm_counts']['pop']:,}"
    weights = frames(at)[1]  # checks, then the weight diagnostics
    assert len(weights) == len(est) and list(weights["ess"]) == pytest.approx(list(est["ess"]), nan_ok=True)


def test_failed_checks_are_shown_in_red(db_copy, monkeypatch):
    store = ResultsStore(db_copy)
    store.write_results("ab-raw", checks=[{"check": "srm", "metric": "", "segment": "all", "passed": False,
                                           "severity": "error", "p_value": 1e-6, "message": "sample ratio off"},
                                          {"check": "heavy_tail", "metric": "watch_time_s", "segment": "all",
                                           "passed": False, "severity": "warning", "message": "a few huge values"}])
    at = open_page(monkeypatch, db_copy, page="Decision", run="ab-raw")
    lines = texts(at, "markdown")
    assert ":red[**fail** · srm: sample ratio off]" in lines
    assert ":orange[**warn** · heavy_tail · watch_time_s: a few huge values]" in lines
    assert metrics(at)["SRM"] == "FAIL"
    assert "No launch decision is stored" in all_text(at)


# ------------------------------------------------------------------------------------------- Metrics
def test_metrics_table_matches_the_stored_lifts_primary_metrics_first(results_db, monkeypatch):
    store = ResultsStore(results_db)
    lifts = store.lifts("ab-cuped")
    overall = lifts[lifts["segment"] == "all"]
    at = open_page(monkeypatch, results_db, page="Metrics", run="ab-cuped")
    shown = frames(at)[0]
    order = list(dict.fromkeys(shown["metric"]))
    assert order[:4] == list(PRIMARY_METRICS) and order[4] == "comment_watch_time_s_per_requests"
    merged = shown.merge(overall, on=["metric", "treatment"], suffixes=("", "_db"))
    assert len(merged) == len(overall) == len(shown)
    for col in ("control_mean", "treatment_mean", "abs_diff", "abs_ci_low", "abs_ci_high", "rel_diff", "rel_ci_low",
                "rel_ci_high", "n_control", "n_treatment", "p_value", "p_value_adjusted", "variance_reduction"):
        _same(merged[col], merged[f"{col}_db"])
    assert set(merged["correction"]) == {"holm"} and set(merged["correction_scope"]) == {"metric"}
    assert "Adjusted p: Holm, scope 'metric'" in all_text(at)


def test_cuped_beside_the_unadjusted_lift_stored_with_the_run(results_db, monkeypatch):
    """The analysis stores each CUPED row's comparison without CUPED; it equals the stored lifts of the same
    table analysed with --cuped none (run ab-raw)."""
    store = ResultsStore(results_db)
    raw = store.lifts("ab-raw")
    raw = raw[raw["segment"] == "all"].set_index(["metric", "treatment"])
    at = open_page(monkeypatch, results_db, page="Metrics", run="ab-cuped")
    shown = frames(at)[0].set_index(["metric", "treatment"])
    watch = shown.loc[("watch_time_s", "lsvcr")]
    assert watch["cuped"] == "single" and watch["variance_reduction"] > 0.5
    adjusted = shown[shown["cuped"] != "none"]
    assert len(adjusted) >= 2
    for col in ("abs_diff", "abs_ci_low", "abs_ci_high", "rel_diff", "rel_ci_low", "rel_ci_high"):
        _same(adjusted[f"unadjusted_{col}"], raw.loc[adjusted.index, col])
    assert shown.loc[shown["cuped"] == "none", "unadjusted_abs_diff"].isna().all()
    # CUPED narrows the interval of the metric with a pre-period covariate
    assert watch["abs_ci_high"] - watch["abs_ci_low"] < watch["unadjusted_abs_ci_high"] - watch["unadjusted_abs_ci_low"]
    assert "stored with the run" in all_text(at)


def test_forest_plot_draws_the_lifts_and_the_gates_guardrail_margins(results_db, monkeypatch):
    store = ResultsStore(results_db)
    gate = tomllib.loads(GATE.read_text())
    at = open_page(monkeypatch, results_db, page="Metrics", run="ab-cuped")
    data = chart_data(at)[0]
    marks = data[data["value"].notna()]
    expected = {(g["metric"], -g["margin"]) for g in gate["guardrail"]}
    assert {(m.split("(")[-1].rstrip(")"), v) for m, v in zip(marks["label"], marks["value"], strict=True)} == expected
    stored = store.gate_decisions("ab-cuped").query("rule == 'guardrail'")  # the margins are stored (schema v6)
    assert set(zip(stored["metric"], stored["limit"], strict=True)) == expected
    assert set(stored["margin_type"]) == {"relative"}
    lifts = store.lifts("ab-cuped").query("segment == 'all'")
    points = data[data["estimate"].notna()]
    assert sorted(points["estimate"]) == pytest.approx(sorted(lifts["rel_diff"]))
    assert "relative lift, treatment / control - 1 (%)" in axis_titles(charts(at)[0])


def test_absolute_toggle_draws_each_metric_in_its_units(results_db, monkeypatch):
    at = open_page(monkeypatch, results_db, page="Metrics", run="ab-cuped", scale="absolute")
    specs = charts(at)
    assert len(specs) == 5  # one chart per metric: their units differ
    titles = set().union(*(axis_titles(s) for s in specs))
    assert "absolute lift, treatment - control (s per user)" in titles
    assert "absolute lift, treatment - control (interactions per user)" in titles
    assert "absolute lift, treatment - control (s per request)" in titles
    lifts = ResultsStore(results_db).lifts("ab-cuped").query("segment == 'all' and metric == 'comment_watch_time_s'")
    first = chart_data(at)[0]
    assert sorted(first["estimate"].dropna()) == pytest.approx(sorted(lifts["abs_diff"]))


def test_csv_download_carries_the_stored_numbers(results_db, monkeypatch):
    from streamlit.delta_generator import DeltaGenerator

    seen: dict[str, bytes] = {}
    original = DeltaGenerator.download_button

    def spy(self, label, data, *args, **kwargs):
        seen[kwargs.get("file_name") or label] = data
        return original(self, label, data, *args, **kwargs)

    monkeypatch.setattr(DeltaGenerator, "download_button", spy)
    at = open_page(monkeypatch, results_db, page="Metrics", run="ab-cuped")
    no_exception(at)
    import io

    csv = pd.read_csv(io.BytesIO(seen["ab-cuped-lifts.csv"]))
    lifts = ResultsStore(results_db).lifts("ab-cuped").query("segment == 'all'")
    merged = csv.merge(lifts, on=["metric", "treatment"], suffixes=("", "_db"))
    assert len(merged) == len(lifts)
    for col in ("abs_diff", "rel_ci_low", "p_value_adjusted"):
        assert list(merged[col]) == pytest.approx(list(merged[f"{col}_db"]), rel=1e-12)


# ----------------------------------------------------------------------------------------- Over time
def test_over_time_shows_the_stored_cumulative_lift_and_always_valid_band(results_db, monkeypatch):
    daily = ResultsStore(results_db).daily_lifts("ab-cuped")
    at = open_page(monkeypatch, results_db, page="Over time", run="ab-cuped", scale="absolute")
    at.selectbox(key="ot-metric").set_value("watch_time_s").run()
    at.selectbox(key="ot-treatment").set_value("lsvcr").run()
    want = daily[(daily["metric"] == "watch_time_s") & (daily["treatment"] == "lsvcr")].sort_values("look")
    data = chart_data(at)[0].dropna(subset=["estimate"])
    assert list(data["day"]) == list(want["day"]) and len(want) == 4
    _same(data["estimate"], want["abs_diff"])
    _same(data["seq_low"], want["seq_ci_low"])
    _same(data["seq_high"], want["seq_ci_high"])
    assert "always-valid" in all_text(at)
    _same(frames(at)[0]["seq_p_value"], want["seq_p_value"])
    at.sidebar.radio(key="scale").set_value("relative").run()
    data = chart_data(at)[0].dropna(subset=["estimate"])
    _same(data["estimate"], want["rel_diff"])
    assert "switch the sidebar to absolute" in all_text(at)


def test_over_time_without_daily_lifts_says_how_to_get_them(results_db, monkeypatch):
    at = open_page(monkeypatch, results_db, page="Over time", run="rep-1")
    assert "has no daily lifts" in all_text(at) and "--by-day" in all_text(at)


# ------------------------------------------------------------------------------------------ Segments
def test_segments_match_the_database_and_warn_about_uncorrected_reads(results_db, monkeypatch):
    store = ResultsStore(results_db)
    lifts = store.lifts("ab-raw")
    segment_rows = lifts[lifts["segment"] != "all"]
    at = open_page(monkeypatch, results_db, page="Segments", run="ab-raw")
    warning = texts(at, "warning")
    assert len(warning) == 1 and warning[0].startswith(f"{len(segment_rows)} segment lifts are read without")
    at.selectbox(key="seg-metric").set_value("watch_time_s").run()
    at.selectbox(key="seg-treatment").set_value("lsvcr").run()
    want = lifts[(lifts["metric"] == "watch_time_s") & (lifts["treatment"] == "lsvcr")]
    shown = frames(at)[0]
    assert list(shown["segment_value"]) == list(want["segment_value"])
    _same(shown["rel_diff"], want["rel_diff"])
    _same(shown["rel_ci_low"], want["rel_ci_low"])
    het = store.heterogeneity("ab-raw").query("metric == 'watch_time_s' and treatment == 'lsvcr'")
    lines = [t for t in texts(at, "markdown") if "Cochran's Q" in t]
    assert len(lines) == len(het) == 2
    for line, r in zip(lines, het.to_dict("records"), strict=True):
        assert line.startswith(f"**{r['segment']}** ({r['n_levels']} levels): Cochran's Q = {r['q_stat']:.3g}")
    chart = chart_data(at)[0].dropna(subset=["estimate"])
    assert sorted(chart["estimate"]) == pytest.approx(sorted(want["rel_diff"].dropna()))


def test_corrected_segments_raise_no_warning(results_db, monkeypatch):
    at = open_page(monkeypatch, results_db, page="Segments", run="ab-cuped")
    assert not at.main.get("warning")


# ----------------------------------------------------------------------------------------- Test plan
PLAN = pd.DataFrame({
    "treatment": ["pop", "pop"], "metric": ["watch_time_s", "comment_interactions"],
    "estimator": ["cascade_dr", "cascade_dr"], "cuped": [True, False], "lift_abs": [12.5, 0.0],
    "lift_rel": [0.011, 0.0], "sd": [300.0, 0.4], "users_per_arm": [45_000.0, float("nan")], "alpha": [0.05, 0.05],
    "power": [0.8, 0.8], "users_per_day": [10_000.0, 10_000.0], "days": [9.0, float("nan")],
})


def test_test_plan_without_the_store_method_says_so(results_db, monkeypatch):
    monkeypatch.delattr(ResultsReader, "test_plan", raising=False)
    at = open_page(monkeypatch, results_db, page="Test plan", run="rep-1")
    no_exception(at)
    assert "This run has no test plan." in all_text(at)
    assert not at.main.get("slider")


def test_test_plan_of_a_run_without_rows_says_so(results_db, monkeypatch):
    monkeypatch.setattr(ResultsReader, "test_plan", lambda self, run_id: PLAN.iloc[:0], raising=False)
    at = open_page(monkeypatch, results_db, page="Test plan", run="rep-1")
    assert "This run has no test plan." in all_text(at)


def test_test_plan_rows_and_the_daily_traffic_slider(results_db, monkeypatch):
    monkeypatch.setattr(ResultsReader, "test_plan", lambda self, run_id: PLAN.copy(), raising=False)
    at = open_page(monkeypatch, results_db, page="Test plan", run="rep-1")
    no_exception(at)
    shown = frames(at)[0]
    assert list(shown["metric"]) == ["comment_interactions", "watch_time_s"]  # primary order
    assert at.slider(key="traffic").value == 10_000
    watch = shown.set_index("metric").loc["watch_time_s"]
    assert watch["days_at_traffic"] == watch["days"] == 9  # ceil(2 x 45,000 / 10,000)
    at.slider(key="traffic").set_value(4_000).run()
    watch = frames(at)[0].set_index("metric").loc["watch_time_s"]
    assert watch["days_at_traffic"] == math.ceil(2 * 45_000 / 4_000) == 23
    assert watch["users_per_arm"] == 45_000
    lines = [t for t in texts(at, "markdown") if "users per arm" in t]
    assert any("45,000 users per arm → 23 days at 4,000 users/day" in t for t in lines)
    assert any("never (no lift to detect)" in t for t in lines)


def test_stored_test_plan_of_the_replay(results_db, monkeypatch):
    store = ResultsStore(results_db)
    plan = store.test_plan("rep-1") if hasattr(store, "test_plan") else pd.DataFrame()
    if plan.empty:
        pytest.skip("this replay stores no test plan yet")
    at = open_page(monkeypatch, results_db, page="Test plan", run="rep-1")
    no_exception(at)
    shown = frames(at)[0]
    merged = shown.merge(plan, on=["treatment", "metric", "cuped"], suffixes=("", "_db"))
    assert len(merged) == len(plan) == len(shown)
    _same(merged["users_per_arm"], merged["users_per_arm_db"])
    traffic = at.slider(key="traffic").value
    for r in merged.to_dict("records"):
        assert r["days_at_traffic"] == math.ceil(2 * r["users_per_arm"] / traffic)


def test_test_plan_page_of_an_analysis_shows_its_stored_power(results_db, monkeypatch):
    power = ResultsStore(results_db).power("ab-cuped")
    at = open_page(monkeypatch, results_db, page="Test plan", run="ab-cuped")
    assert "This run has no test plan." in all_text(at)
    shown = frames(at)[0]
    merged = shown.merge(power, on=["metric", "treatment"], suffixes=("", "_db"))
    assert len(merged) == len(power)
    _same(merged["mde_rel"], merged["mde_rel_db"])


# -------------------------------------------------------------------------------------------- Models
def test_models_table_and_error_bars_over_seeds(results_db, monkeypatch):
    store = ResultsStore(results_db)
    ids = _evaluate_ids(store)
    rows = pd.concat([store.ranking_metrics(i) for i in ids])
    at = open_page(monkeypatch, results_db, page="Models", run=ids[0])
    no_exception(at)
    wide = frames(at)[0].set_index(["model", "task"])
    for (task, metric), g in rows.groupby(["task", "metric"]):
        assert wide.loc[("pop", task), metric] == pytest.approx(g["value"].mean())
    every = frames(at)[1]
    assert len(every) == len(rows) and set(every["seed"]) == {0, 1}
    data = chart_data(at)[0]
    assert (data["seeds"] == 2).all()
    ndcg = data[(data["task"] == "video") & (data["metric"] == "ndcg@5")].iloc[0]
    values = rows[(rows["task"] == "video") & (rows["metric"] == "ndcg@5")]["value"]
    assert (ndcg["low"], ndcg["high"]) == pytest.approx((values.min(), values.max()))
    assert "error bars: lowest to highest seed" in all_text(at)


def test_models_of_a_replay_are_its_checkpoints(results_db, monkeypatch):
    at = open_page(monkeypatch, results_db, page="Models", run="rep-1")
    assert set(frames(at)[0]["model"]) == {"pop"}
    at = open_page(monkeypatch, results_db, page="Models", run="ab-cuped")
    assert "names no checkpoints" in all_text(at)


# --------------------------------------------------------------------------------------------- Truth
def test_truth_beside_every_estimate_with_coverage(results_db, monkeypatch):
    lifts = ResultsStore(results_db).replay_lifts("rep-1")
    at = open_page(monkeypatch, results_db, page="Truth", run="rep-1")
    no_exception(at)
    shown = frames(at)[0]
    merged = shown.merge(lifts, on=["metric", "estimator"], suffixes=("", "_db"))
    assert len(merged) == len(lifts) == 20
    _same(merged["rel_diff"], merged["rel_diff_db"])
    _same(merged["true_rel_diff"], merged["true_rel_diff_db"])
    assert list(merged["covers_rel"]) == list(merged["covers_rel_db"])
    coverage = frames(at)[1].set_index("estimator")
    for est, g in lifts.groupby("estimator"):
        assert coverage.loc[est, "covered"] == int(g["covers_rel"].sum())
        assert coverage.loc[est, "with_truth"] == len(g) == 4
    line = next(t for t in texts(at, "markdown") if t.startswith("**Coverage**"))
    assert f"cascade_dr (default) {int(lifts[lifts.estimator == 'cascade_dr']['covers_rel'].sum())} of 4" in line
    specs = charts(at)
    assert len(specs) == 4  # one per metric
    truth = lifts.query("metric == 'comment_watch_time_s'")["true_rel_diff"].iloc[0]
    assert chart_data(at)[0]["value"].dropna().tolist() == pytest.approx([truth] * 5)


def test_truth_of_a_run_without_oracle(results_db, monkeypatch):
    at = open_page(monkeypatch, results_db, page="Truth", run="ab-cuped")
    assert "has no true lifts" in all_text(at)


# ------------------------------------------------------------------------------------------- Compare
def test_compare_two_runs_side_by_side(results_db, monkeypatch):
    store = ResultsStore(results_db)
    at = open_page(monkeypatch, results_db, page="Compare", run="ab-cuped")
    assert "Pick a second run" in all_text(at)
    at.sidebar.selectbox(key="compare").set_value("ab-raw").run()
    no_exception(at)
    tables = frames(at)
    assert len(tables) == 3  # what differs, then one table per side
    for side, rid in ((tables[1], "ab-cuped"), (tables[2], "ab-raw")):
        want = store.lifts(rid).query("segment == 'all'")
        merged = side.merge(want, on=["metric", "treatment"], suffixes=("", "_db"))
        assert len(merged) == len(want)
        _same(merged["rel_diff"], merged["rel_diff_db"])
    data = chart_data(at)[0]
    assert set(data["group"].dropna()) == {"ab-cuped", "ab-raw"}


def test_compare_two_estimators_of_a_replay(results_db, monkeypatch):
    lifts = ResultsStore(results_db).replay_lifts("rep-1")
    at = open_page(monkeypatch, results_db, page="Compare", run="rep-1")
    assert at.radio(key="compare-mode").value == "two estimators"
    at.selectbox(key="cmp-est-b").set_value("dm").run()
    a, b = frames(at)
    for side, est in ((a, "cascade_dr"), (b, "dm")):
        want = lifts[lifts["estimator"] == est].set_index("metric")
        _same(side["rel_diff"], want.loc[side["metric"], "rel_diff"])


def test_compare_two_treatments(results_db, monkeypatch):
    lifts = ResultsStore(results_db).lifts("ab-cuped").query("segment == 'all'")
    at = open_page(monkeypatch, results_db, page="Compare", run="ab-cuped")
    at.radio(key="compare-mode").set_value("two treatments").run()
    a, b = frames(at)
    assert set(a["treatment"]) == {"lsvcr"} and set(b["treatment"]) == {"lsvcr_b"}
    want = lifts[lifts["treatment"] == "lsvcr_b"].set_index("metric")
    _same(b["abs_diff"], want.loc[b["metric"], "abs_diff"])
