"""The results store: round trips, validation, replace / resume, schema version."""

from __future__ import annotations

import dataclasses
import json
import math

import duckdb
import numpy as np
import pandas as pd
import pytest

from analysis.gate import GateDecision, RuleOutcome
from analysis.results import LIFT_FIELDS, CheckResult, LiftResult
from harness.store import (
    SCHEMA_VERSION,
    InvalidResultsError,
    ResultsReader,
    ResultsStore,
    RunExistsError,
    SchemaVersionError,
    UnknownRunError,
    default_db_path,
)
from harness.store.schema import CHECKS, LIFTS

RUN = dict(kind="analyze", control="base", treatment="lsvcr", config={"alpha": 0.05, "metrics": ["y"]},
           seed=7, data_fingerprint="f" * 64)


def lift(metric: str = "watch_time_s", segment: str = "all", level: str = "all", **kw) -> LiftResult:
    base = dict(
        metric=metric, kind="mean", segment=segment, segment_value=level, control="base", treatment="lsvcr",
        n_control=500, n_treatment=510, control_mean=10.0, treatment_mean=10.5, abs_diff=0.5, abs_se=0.2,
        abs_ci_low=0.108, abs_ci_high=0.892, rel_diff=0.05, rel_ci_low=0.01, rel_ci_high=0.09,
        rel_undefined_reason=None, p_value=0.0124, p_value_adjusted=0.0248, significant=True, df=1007.5,
        method="welch", relative_ci_method="delta", ci_method="normal", cuped="single",
        covariates="watch_time_s_pre", variance_reduction=0.31, alpha=0.05, correction="holm",
        correction_scope="metric", seq_ci_low=-0.2, seq_ci_high=1.2, seq_p_value=0.4, winsorized="",
        notes="",
    )
    base.update(kw)
    return LiftResult(**base)


def units(n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "unit_id": np.arange(n) * 3,
        "arm": np.where(np.arange(n) % 2 == 0, "base", "lsvcr"),
        "watch_time_s": rng.exponential(10.0, n),
        "watch_time_s_pre": rng.exponential(10.0, n),
        "liked": rng.random(n) < 0.3,
        "activity_level": rng.choice(["low", "high"], n),
    })


@pytest.fixture()
def store(tmp_path):
    return ResultsStore(tmp_path / "results.duckdb", lock_timeout_s=5)


def test_round_trip_every_table(store):
    run_id = store.create_run(**RUN, checkpoint_digests={"base": "a" * 64}, notes="first")
    assert store.run(run_id)["status"] == "running"
    lifts = [lift(), lift(segment="activity_level", level="high", rel_diff=None, rel_ci_low=None,
                          rel_ci_high=None, rel_undefined_reason="control mean is zero", df=math.inf)]
    checks = [CheckResult("srm", "", "all", True, "error", 0.09, 0.76, 0.001, "arms balanced"),
              CheckResult("heavy_tail", "watch_time_s", "all", False, "warning", 412.0, math.nan, 355.0, "max/mean high")]
    um = units()
    store.write_results(
        run_id, unit_metrics=um, lifts=lifts, checks=checks,
        heterogeneity=[{"metric": "watch_time_s", "treatment": "lsvcr", "segment": "activity_level", "n_levels": 2,
                        "q_stat": 1.5, "df": 1, "p_value": 0.22, "i2": 0.33, "notes": ""}],
        power=[{"metric": "watch_time_s", "treatment": "lsvcr", "n_control": 500, "n_treatment": 510, "sd": 4.0,
                "variance_reduction": 0.31, "alpha": 0.05, "power": 0.8, "mde_abs": 0.59, "mde_rel": 0.059}],
        gate=GateDecision("INCONCLUSIVE", [
            RuleOutcome("primary", "watch_time_s", True, "pass", "increases significantly"),
            RuleOutcome("guardrail", "video_interactions", False, "inconclusive", "non-inferiority not shown"),
        ], "lsvcr"),
        gate_digest="d" * 64,
        summary={"arm_counts": {"base": 500, "lsvcr": 510}, "srm_passed": True},
        ranking_metrics=[{"model": "lsvcr", "task": "video", "split": "test", "metric": "ndcg@5", "value": 0.42,
                          "seed": 1}],
    )
    run = store.run(run_id)
    assert run["status"] == "complete" and run["config"] == RUN["config"] and run["seed"] == 7
    assert run["checkpoint_digests"] == {"base": "a" * 64} and run["notes"] == "first"
    assert run["summary"] == {"arm_counts": {"base": 500, "lsvcr": 510}, "srm_passed": True}
    assert run["code_version"].startswith("0.1.0")

    got = store.lifts(run_id)
    assert list(got.columns) == LIFTS.column_names[1:]
    assert len(got) == 2
    for want, (_, row) in zip(lifts, got.iterrows(), strict=True):  # written order is kept
        for name, value in dataclasses.asdict(want).items():
            stored = row[name]
            if value is None or (isinstance(value, float) and math.isnan(value)):
                assert pd.isna(stored), name
            else:
                assert stored == pytest.approx(value) if isinstance(value, float) else stored == value, name
    assert got["df"].iloc[1] == math.inf and got["extra"].isna().all()

    ch = store.checks(run_id)
    assert list(ch.columns) == CHECKS.column_names[1:]
    assert ch["status"].tolist() == ["pass", "warn"]  # failed warning -> warn
    assert ch["p_value"].iloc[0] == pytest.approx(0.76) and pd.isna(ch["p_value"].iloc[1])

    wide = store.unit_metrics(run_id)
    assert list(wide.columns) == ["unit_id", "arm", "watch_time_s", "watch_time_s_pre", "liked", "activity_level"]
    assert wide["unit_id"].tolist() == [str(i) for i in um["unit_id"]]
    np.testing.assert_allclose(wide["watch_time_s"], um["watch_time_s"])
    np.testing.assert_array_equal(wide["liked"], um["liked"].astype(float))
    assert wide["activity_level"].tolist() == um["activity_level"].tolist()
    assert len(store.unit_metrics(run_id, wide=False)) == 40 * 3
    assert store.unit_ids(run_id) == {str(i) for i in um["unit_id"]}

    gd = store.gate_decisions(run_id)
    assert gd[["decision", "treatment", "rule", "metric", "passed", "outcome", "gate_digest"]].values.tolist() == [
        ["INCONCLUSIVE", "lsvcr", "primary", "watch_time_s", True, "pass", "d" * 64],
        ["INCONCLUSIVE", "lsvcr", "guardrail", "video_interactions", False, "inconclusive", "d" * 64],
    ]
    assert gd["reason"].tolist() == ["increases significantly", "non-inferiority not shown"]
    assert store.heterogeneity(run_id)["i2"].tolist() == [pytest.approx(0.33)]
    assert store.power(run_id)["mde_rel"].tolist() == [pytest.approx(0.059)]
    rm = store.ranking_metrics()
    assert rm[["run_id", "model", "metric", "value", "seed"]].values.tolist() == [[run_id, "lsvcr", "ndcg@5", 0.42, 1]]
    listed = store.runs()
    assert listed[["run_id", "status", "decision", "n_lifts"]].values.tolist() == [
        [run_id, "complete", "INCONCLUSIVE", 2]]


def test_every_analysis_result_field_has_a_column():
    """Drift guard: a LiftResult / CheckResult field the store lacks would only survive in `extra`."""
    assert set(LIFT_FIELDS) <= set(LIFTS.column_names)
    assert {f.name for f in dataclasses.fields(CheckResult)} <= set(CHECKS.column_names)


def test_design_vocabulary_and_unknown_fields(store):
    run_id = store.create_run(**RUN)
    store.write_results(run_id, lifts=[{"metric": "m", "estimate": 1.5, "ci_low": 1.0, "ci_high": 2.0,
                                        "rel_estimate": 0.1, "new_field": np.int64(3)}])
    row = store.lifts(run_id).iloc[0]
    assert (row["abs_diff"], row["abs_ci_low"], row["abs_ci_high"], row["rel_diff"]) == (1.5, 1.0, 2.0, 0.1)
    assert (row["segment"], row["segment_value"]) == ("all", "all")
    assert json.loads(row["extra"]) == {"new_field": 3}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        # abs_diff may be null since v2: a lift over a zero denominator is undefined, not an error
        ({"lifts": [{"abs_diff": 1.0}]}, "lifts row 0: required field 'metric'"),
        ({"lifts": [{"metric": "m", "abs_diff": "big"}]}, "field 'abs_diff' must be a number"),
        ({"lifts": [{"metric": "m", "abs_diff": 1, "n_control": 2.5}]}, "'n_control' must be an integer"),
        ({"lifts": {"metric": "m"}}, "expected a DataFrame or a list of rows"),
        ({"checks": [{"check": "srm"}]}, "checks row 0: required field 'status'"),
        ({"gate": {"decision": "MAYBE"}}, "decision must be one of SHIP, NO_SHIP, INCONCLUSIVE"),
        ({"gate": {"decision": "SHIP", "rules": [{"rule": "r", "passed": "yes"}]}}, "must be true or false"),
        ({"ranking_metrics": [{"model": "m", "task": "video", "split": "test", "metric": "ndcg@5", "value": 1,
                               "bogus": 1}]}, "unknown field(s) ['bogus']"),
        ({"unit_metrics": pd.DataFrame({"unit_id": [1], "y": [1.0]})}, "missing column(s) ['arm']"),
        ({"unit_metrics": pd.DataFrame({"unit_id": [1, 1], "arm": ["a", "a"], "y": [1.0, 2.0]})},
         "unit '1' appears more than once in arm 'a'"),
        ({"unit_metrics": pd.DataFrame({"unit_id": [1, None], "arm": ["a", "b"]})}, "'unit_id' is null in 1 row"),
        ({"status": "failed"}, "use fail_run"),
    ],
)
def test_bad_input_is_rejected_before_writing(store, kwargs, message):
    run_id = store.create_run(**RUN)
    store.write_results(run_id, lifts=[lift()])
    with pytest.raises(InvalidResultsError) as err:
        store.write_results(run_id, **kwargs)
    assert message in str(err.value)
    assert len(store.lifts(run_id)) == 1 and store.run(run_id)["status"] == "complete"


def test_bad_run_arguments(store):
    with pytest.raises(InvalidResultsError, match="kind must be one of"):
        store.create_run(**{**RUN, "kind": "train"})
    with pytest.raises(InvalidResultsError, match="run id 'a b' is invalid"):
        store.create_run(**RUN, run_id="a b")
    with pytest.raises(InvalidResultsError, match="seed must be an integer"):
        store.create_run(**{**RUN, "seed": 1.5})
    with pytest.raises(UnknownRunError, match="no run 'nope'.*harness runs list"):
        store.write_results("nope", lifts=[])
    with pytest.raises(UnknownRunError):
        store.fail_run("nope", "x")


def test_reader_reads_what_the_store_wrote_and_cannot_write(store):
    """The dashboard's `ResultsReader`: the store's reads, the same frames, and no write method at all."""
    run_id = store.write_run(**RUN, lifts=[lift()], unit_metrics=units(),
                             gate=GateDecision("SHIP", [RuleOutcome("primary", "watch_time_s", True, "pass", "up")],
                                               "lsvcr"))
    reader = ResultsReader(store.path, lock_timeout_s=1)
    for method in ("lifts", "checks", "gate_decisions", "unit_metrics", "replay_lifts", "test_plan"):
        pd.testing.assert_frame_equal(getattr(reader, method)(run_id), getattr(store, method)(run_id))
    pd.testing.assert_frame_equal(reader.runs(), store.runs())
    assert reader.run(run_id) == store.run(run_id) and reader.schema_version() == SCHEMA_VERSION
    writes = {"create_run", "write_run", "write_results", "append_unit_metrics", "append_replay_batch",
              "set_gate", "fail_run", "delete_run", "recording", "check_writable", "_write", "_ensure_schema"}
    assert all(callable(getattr(store, name)) for name in writes)
    assert not any(hasattr(reader, name) for name in writes)
    assert repr(reader) == f"ResultsReader({str(store.path)!r})"


def test_reads_on_missing_database_do_not_create_it(tmp_path):
    store = ResultsStore(tmp_path / "none.duckdb")
    assert store.runs().empty and list(store.runs().columns)[:2] == ["run_id", "created_at"]
    assert store.ranking_metrics().empty and store.schema_version() is None
    with pytest.raises(UnknownRunError):
        store.lifts("x")
    assert not (tmp_path / "none.duckdb").exists()


def test_replace_deletes_old_rows_and_never_duplicates(store):
    run_id = store.create_run(**RUN, run_id="exp-1")
    store.write_results(run_id, unit_metrics=units(), lifts=[lift(), lift("other")], gate={"decision": "SHIP"})
    store.write_results(run_id, lifts=[lift()])  # rewriting a table replaces it
    assert len(store.lifts(run_id)) == 1 and len(store.unit_metrics(run_id)) == 40
    with pytest.raises(RunExistsError, match="already exists and is complete; pass replace=True"):
        store.create_run(**RUN, run_id="exp-1")
    assert store.create_run(**{**RUN, "seed": 8}, run_id="exp-1", replace=True) == "exp-1"
    run = store.run("exp-1")
    assert run["status"] == "running" and run["seed"] == 8
    assert store.lifts("exp-1").empty and store.unit_metrics("exp-1").empty and store.gate_decisions("exp-1").empty
    with duckdb.connect(str(store.path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM runs").fetchall()[0][0] == 1


def test_resume_keeps_appended_batches(store):
    run_id = store.create_run(**RUN, run_id="replay-1")
    um = units(40)
    store.append_unit_metrics(run_id, um.iloc[:20])
    store.append_unit_metrics(run_id, um.iloc[10:20])  # a batch re-sent after a crash: overwritten, not duplicated
    store.fail_run(run_id, "RuntimeError: worker died")
    failed = store.run(run_id)
    assert failed["status"] == "failed" and failed["error"] == "RuntimeError: worker died"
    with pytest.raises(RunExistsError, match="different seed, config"):
        store.create_run(**{**RUN, "seed": 9, "config": {"alpha": 0.1}}, run_id=run_id)
    assert store.create_run(**RUN, run_id=run_id) == run_id  # same inputs: resumed
    assert store.run(run_id)["status"] == "running" and store.run(run_id)["error"] is None
    done = store.unit_ids(run_id)
    assert len(done) == 20
    store.append_unit_metrics(run_id, um[~um["unit_id"].astype(str).isin(done)])
    store.write_results(run_id, lifts=[lift()])  # unit_metrics=None keeps the batches
    wide = store.unit_metrics(run_id)
    assert len(wide) == 40 and len(store.unit_metrics(run_id, wide=False)) == 40 * 3
    np.testing.assert_allclose(
        wide.set_index("unit_id")["watch_time_s"].loc[um["unit_id"].astype(str)], um["watch_time_s"]
    )
    with pytest.raises(RunExistsError, match="is complete"):
        store.append_unit_metrics(run_id, um.iloc[:1])


def test_set_gate_replaces_the_previous_decision(store):
    run_id = store.create_run(**RUN)
    store.write_results(run_id, lifts=[lift()], gate={"decision": "SHIP", "rules": [
        {"rule": "primary", "metric": "m", "passed": True}, {"rule": "srm", "metric": "", "passed": True}]})
    store.set_gate(run_id, {"decision": "no_ship"}, gate_digest="e" * 64)
    gd = store.gate_decisions(run_id)
    assert len(gd) == 1 and gd["decision"].iloc[0] == "NO_SHIP" and pd.isna(gd["rule"].iloc[0])
    assert store.runs()["decision"].tolist() == ["NO_SHIP"]


def test_recording_marks_failed_and_reraises(store):
    run_id = store.create_run(**RUN)
    with pytest.raises(ZeroDivisionError), store.recording(run_id):
        1 / 0  # noqa: B018
    assert store.run(run_id)["status"] == "failed"
    assert store.run(run_id)["error"].startswith("ZeroDivisionError")


def test_schema_version_recorded_and_newer_refused(store, tmp_path):
    store.create_run(**RUN)
    assert store.schema_version() == SCHEMA_VERSION == 6
    with duckdb.connect(str(store.path)) as con:
        con.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(SchemaVersionError, match="version 99.*knows versions up to 6"):
        store.runs()
    with pytest.raises(SchemaVersionError):
        store.create_run(**RUN)
    other = tmp_path / "logs.duckdb"
    with duckdb.connect(str(other)) as con:
        con.execute("CREATE TABLE requests (request_id BIGINT)")
    with pytest.raises(SchemaVersionError, match="not a harness results database"):
        ResultsStore(other).runs()


def test_version_1_database_is_migrated_on_write(store):
    run_id = store.create_run(**RUN)
    with duckdb.connect(str(store.path)) as con:  # a database as version 1 wrote it
        con.execute("DROP TABLE daily_lifts")
        for c in ("bayes_prior", "bayes_chance_to_win", "bayes_ci_low"):
            con.execute(f"ALTER TABLE lifts DROP COLUMN {c}")
        con.execute("UPDATE schema_version SET version = 1")
    assert store.daily_lifts(run_id).empty and store.schema_version() == 1
    store.write_results(run_id, daily_lifts=[{"metric": "y", "treatment": "t", "day": "2026-01-01", "look": 1,
                                              "abs_diff": 0.5, "seq_p_value": 0.2}])
    assert store.schema_version() == SCHEMA_VERSION
    assert store.daily_lifts(run_id)[["metric", "look", "abs_diff"]].values.tolist() == [["y", 1, 0.5]]
    assert len(store.runs()) == 1
    store.write_results(run_id, lifts=[{"metric": "m", "abs_diff": 1.0, "bayes_chance_to_win": 0.9}])
    assert store.lifts(run_id)["bayes_chance_to_win"].tolist() == [0.9]


def test_default_path_honours_env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HARNESS_DB", raising=False)
    assert default_db_path() == tmp_path / "harness.duckdb"
    monkeypatch.setenv("HARNESS_DB", str(tmp_path / "x.duckdb"))
    assert ResultsStore().path == tmp_path / "x.duckdb"


def _same(a, b) -> bool:
    """Dataclass equality with NaN == NaN."""
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if not (x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))):
            return False
    return True


@pytest.mark.parametrize("with_summary", [True, False])
def test_experiment_round_trip_gives_the_same_gate(store, with_summary):
    from analysis.gate import evaluate_gate, parse_gate
    from analysis.results import ExperimentResult
    from harness.store.experiment import load_experiment, write_experiment

    lifts = [lift(seq_p_value=math.nan, df=math.inf),
             lift("video_interactions", abs_diff=-0.02, rel_diff=-0.002, rel_ci_low=-0.006, rel_ci_high=0.002,
                  p_value=0.3, p_value_adjusted=0.3, significant=False),
             lift(segment="activity_level", level="low", n_control=250, n_treatment=260)]
    checks = [CheckResult("srm", "", "all", True, "error", 0.1, 0.75, 0.001, "ok")]
    result = ExperimentResult("arm", "base", ("lsvcr",), {"base": 500, "lsvcr": 510}, {"alpha": 0.05}, lifts, checks)
    run_id = store.create_run(**RUN)
    if with_summary:
        write_experiment(store, run_id, result)
    else:  # e.g. a replay that wrote its lifts without a summary: counts come from the overall lifts
        store.write_results(run_id, lifts=lifts, checks=checks)
    back = load_experiment(store, run_id)
    assert all(_same(a, b) for a, b in zip(back.lifts, lifts, strict=True))
    assert all(_same(a, b) for a, b in zip(back.checks, checks, strict=True))
    assert (back.control, back.treatments, back.arm_counts) == ("base", ("lsvcr",), {"base": 500, "lsvcr": 510})
    gate = parse_gate({"min_units": 100, "primary": [{"metric": "watch_time_s"}],
                       "guardrail": [{"metric": "video_interactions", "margin": 0.01}]})
    assert evaluate_gate(back, gate) == evaluate_gate(result, gate)
    assert evaluate_gate(back, gate).decision == "SHIP"
