"""`harness analyze`, `harness gate`, `harness runs`: real commands on a small seeded table.

The numbers the CLI prints and stores are checked against the analysis layer's API called directly
(whose own maths is tested against scipy/statsmodels in tests/analysis), and the seeded effect.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from analysis.config import AnalysisConfig
from analysis.experiment import analyze
from analysis.gate import evaluate_gate, load_gate
from analysis.metrics import parse_metric
from harness.cli import app
from harness.store import ResultsStore

N = 2000  # units per arm
EFFECT = 1.0  # true watch-time lift (seconds per user); sd of the residual is 4 -> z ~ 8


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    rng = np.random.default_rng(20240601)
    n = 2 * N
    arm = np.repeat(["base", "lsvcr"], N)
    pre = rng.gamma(4.0, 5.0, n)
    watch = 0.8 * pre + rng.normal(0.0, 4.0, n) + EFFECT * (arm == "lsvcr")
    requests = rng.poisson(6.0, n) + 1
    frame = pd.DataFrame({
        "user_id": np.arange(n), "arm": arm, "watch_time_s": watch, "watch_time_s_pre": pre,
        "video_interactions": rng.poisson(2.0, n).astype(float),  # no effect
        "comment_watch_time_s": rng.gamma(2.0, 1.5, n), "requests": requests,
        "activity_level": rng.choice(["low", "high"], n),
    })
    path = tmp_path_factory.mktemp("data") / "ab.csv"
    frame.to_csv(path, index=False)
    return path


def write_gate(path: Path, primary: str, direction: str = "increase", guardrail: str = "") -> Path:
    text = f'alpha = 0.05\nmin_units = 100\n[[primary]]\nmetric = "{primary}"\ndirection = "{direction}"\n'
    if guardrail:
        text += f'[[guardrail]]\nmetric = "{guardrail}"\nmargin = 0.5\nmargin_type = "relative"\n'
    path.write_text(text)
    return path


BASE = ["--arm-col", "arm", "--control", "base", "--treatment", "lsvcr", "--metric", "watch_time_s",
        "--metric", "video_interactions", "--ratio", "comment_watch_time_s/requests", "--segment", "activity_level"]


def run(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "250", "HARNESS_DB": ""})


@pytest.fixture(scope="module")
def expected(table):
    """The analysis layer called directly with the options BASE gives the CLI."""
    metrics = [parse_metric(m) for m in ("watch_time_s", "video_interactions", "comment_watch_time_s/requests")]
    return analyze(table, arm_col="arm", control="base", treatment="lsvcr", metrics=metrics,
                   segments=["activity_level"], config=AnalysisConfig(seed=0))


@pytest.fixture(scope="module")
def analysed(table, tmp_path_factory) -> Path:
    """A results database with run 'ab' (no gate, units stored) and run 'two' (SHIP gate, no units)."""
    folder = tmp_path_factory.mktemp("analysed")
    db = folder / "r.duckdb"
    assert run("analyze", str(table), *BASE, "--db", str(db), "--run-id", "ab").exit_code == 0
    gate = write_gate(folder / "g.toml", "watch_time_s")
    res = run("analyze", str(table), *BASE, "--db", str(db), "--run-id", "two", "--gate", str(gate),
              "--no-store-units")
    assert res.exit_code == 0, res.output
    return db


@pytest.fixture()
def db_copy(analysed, tmp_path) -> Path:
    target = tmp_path / "r.duckdb"
    shutil.copy(analysed, target)
    return target


def test_analyze_json_equals_the_analysis_layer_and_is_stored(table, tmp_path, expected):
    db = tmp_path / "r.duckdb"
    res = run("analyze", str(table), *BASE, "--db", str(db), "--run-id", "ab-1", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    want = expected.to_dicts()
    assert doc["run_id"] == "ab-1" and doc["gate"] is None
    assert len(doc["lifts"]) == len(want["lifts"]) == 3 * 3  # 3 metrics x (all + 2 levels)
    for got, exp in zip(doc["lifts"], want["lifts"], strict=True):
        assert got.keys() == exp.keys()
        for k, v in exp.items():
            assert got[k] == (pytest.approx(v) if isinstance(v, float) else v), k
    assert [c["check"] for c in doc["checks"]] == [c["check"] for c in want["checks"]]

    wt = next(r for r in doc["lifts"] if r["metric"] == "watch_time_s" and r["segment"] == "all")
    assert wt["abs_ci_low"] < EFFECT < wt["abs_ci_high"] and wt["p_value"] < 1e-6
    assert wt["variance_reduction"] > 0.5  # the pre-period explains most of the variance

    store = ResultsStore(db)
    runrow = store.run("ab-1")
    assert runrow["kind"] == "analyze" and runrow["status"] == "complete" and runrow["seed"] == 0
    assert runrow["data_fingerprint"] == hashlib.sha256(table.read_bytes()).hexdigest()
    assert runrow["control"] == "base" and runrow["treatment"] == "lsvcr"
    assert runrow["config"]["analysis"]["cuped"] == "single" and runrow["summary"]["arm_counts"] == {
        "base": N, "lsvcr": N}
    stored = store.lifts("ab-1")
    np.testing.assert_allclose(stored["abs_diff"], [r["abs_diff"] for r in doc["lifts"]])
    np.testing.assert_allclose(stored["p_value_adjusted"], [r["p_value_adjusted"] for r in doc["lifts"]])
    units = store.unit_metrics("ab-1")
    assert len(units) == 2 * N
    assert set(units.columns) == {"unit_id", "arm", "watch_time_s", "watch_time_s_pre", "video_interactions",
                                  "comment_watch_time_s", "requests", "activity_level"}
    src = pd.read_csv(table)
    np.testing.assert_allclose(units["watch_time_s"].astype(float), src["watch_time_s"])


def test_analyze_table_prints_the_analysis_numbers(table, tmp_path, expected):
    res = run("analyze", str(table), *BASE, "--db", str(tmp_path / "r.duckdb"), "--no-store-units")
    assert res.exit_code == 0, res.output
    lift = expected.lift("watch_time_s")
    out = res.stdout
    for text in (f"{lift.abs_diff:+.4g}", f"{lift.abs_ci_low:+.4g}", f"{lift.abs_ci_high:+.4g}",
                 f"{lift.rel_diff:+.2%}", f"{lift.control_mean:.4g}", f"{lift.treatment_mean:.4g}",
                 f"{lift.p_value_adjusted:.3g}", f"{lift.variance_reduction:.1%}", "rel lift [CI] (delta)",
                 "activity_level=high", "srm", "stored as run ana-"):
        assert text in out, text


@pytest.mark.parametrize(
    ("primary", "direction", "decision", "code"),
    [("watch_time_s", "increase", "SHIP", 0), ("watch_time_s", "decrease", "NO_SHIP", 1),
     ("video_interactions", "increase", "INCONCLUSIVE", 2)],
)
def test_analyze_with_gate_sets_exit_code_and_stores_decision(table, tmp_path, expected, primary, direction,
                                                              decision, code):
    gate = write_gate(tmp_path / "gate.toml", primary, direction)
    db = tmp_path / "r.duckdb"
    res = run("analyze", str(table), *BASE, "--gate", str(gate), "--db", str(db), "--run-id", "g", "--json",
              "--no-store-units")
    assert res.exit_code == code, res.output
    doc = json.loads(res.stdout)
    want = evaluate_gate(expected, load_gate(gate))
    assert doc["gate"]["decision"] == want.decision == decision
    assert doc["gate"]["rules"] == [r.to_dict() for r in want.rules]
    stored = ResultsStore(db).gate_decisions("g")
    assert set(stored["decision"]) == {decision}
    assert stored["gate_digest"].iloc[0] == hashlib.sha256(gate.read_bytes()).hexdigest()


def test_gate_command_regates_a_stored_run(db_copy, tmp_path, expected):
    db = db_copy
    store = ResultsStore(db)
    ship = write_gate(tmp_path / "ship.toml", "watch_time_s", guardrail="video_interactions")
    res = run("gate", "ab", "--config", str(ship), "--db", str(db), "--json")
    assert res.exit_code == 0, res.output
    want = evaluate_gate(expected, load_gate(ship))
    doc = json.loads(res.stdout)
    assert doc["decision"] == want.decision == "SHIP" and doc["exit_code"] == 0
    assert doc["rules"] == [r.to_dict() for r in want.rules]  # same reasons, from the stored lifts
    assert store.gate_decisions("ab")["rule"].tolist() == [r.rule for r in want.rules]

    nope = write_gate(tmp_path / "no.toml", "video_interactions")
    res = run("gate", "ab", "--config", str(nope), "--db", str(db))
    assert res.exit_code == 2 and "INCONCLUSIVE" in res.stdout and "not significant" in res.stdout
    assert set(store.gate_decisions("ab")["decision"]) == {"INCONCLUSIVE"}  # replaced, not appended
    assert len(store.gate_decisions("ab")) == len(load_gate(nope).primary) + 2  # + srm, min_sample


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["gate", "missing-run", "--config", "{gate}"], "no run 'missing-run'"),
        (["gate", "ab", "--config", "{dir}/nope.toml"], "not found"),
        (["gate", "ab", "--config", "{bad}"], "not valid TOML"),
        (["gate", "ab", "--config", "{unknown_metric}"], "were not analysed"),
    ],
)
def test_gate_errors_exit_3_and_store_nothing(db_copy, tmp_path, args, message):
    db = db_copy
    paths = {"gate": write_gate(tmp_path / "g.toml", "watch_time_s"), "dir": tmp_path,
             "unknown_metric": write_gate(tmp_path / "u.toml", "revenue")}
    (tmp_path / "bad.toml").write_text("alpha = [")
    paths["bad"] = tmp_path / "bad.toml"
    res = run(*[a.format(**paths) for a in args], "--db", str(db))
    assert res.exit_code == 3, res.output
    assert message in res.stderr and "Traceback" not in res.output
    assert ResultsStore(db).gate_decisions("ab").empty


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{dir}/missing.csv", "--arm-col", "arm", "--control", "base", "--metric", "watch_time_s"], "not found"),
        (["{table}", "--arm-col", "arm", "--control", "base", "--metric", "revenue"], "revenue"),
        (["{table}", "--arm-col", "group", "--control", "base", "--metric", "watch_time_s"], "group"),
        (["{table}", "--arm-col", "arm", "--control", "ctrl", "--metric", "watch_time_s"], "ctrl"),
        (["{table}", "--arm-col", "arm", "--control", "base", "--ratio", "comment_watch_time_s"], "bad --ratio"),
        (["{table}", "--arm-col", "arm", "--control", "base"], "at least one --metric"),
        (["{table}", "--arm-col", "arm", "--control", "base", "--metric", "watch_time_s", "--alpha", "2"], "alpha"),
        (["{table}", "--arm-col", "arm", "--control", "base", "--metric", "watch_time_s", "--gate", "{dir}/g.toml"],
         "not found"),
    ],
)
def test_analyze_errors_exit_3_and_write_nothing(table, tmp_path, args, message):
    db = tmp_path / "r.duckdb"
    res = run("analyze", *[a.format(table=table, dir=tmp_path) for a in args], "--db", str(db))
    assert res.exit_code == 3, res.output
    assert message in res.stderr and "Traceback" not in res.output
    assert not db.exists()  # every check runs before the first write


def test_rerun_needs_replace_and_never_duplicates(table, db_copy):
    db = db_copy
    args = ["analyze", str(table), *BASE, "--db", str(db), "--run-id", "ab"]
    res = run(*args)
    assert res.exit_code == 3 and "pass --replace" in res.stderr
    assert run(*args, "--replace", "--no-store-units").exit_code == 0
    store = ResultsStore(db)
    assert store.runs()["run_id"].tolist() == ["two", "ab"]  # replaced = created afresh
    assert len(store.lifts("ab")) == 9 and store.unit_metrics("ab").empty


def test_parquet_sessions_are_summed_per_unit(table, tmp_path):
    src = pd.read_csv(table)
    half = src.assign(watch_time_s=src["watch_time_s"] / 2, watch_time_s_pre=src["watch_time_s_pre"] / 2)
    sessions = pd.concat([half, half]).sample(frac=1.0, random_state=1)  # two sessions per user
    path = tmp_path / "sessions.parquet"
    sessions[["user_id", "arm", "watch_time_s", "watch_time_s_pre"]].to_parquet(path)
    db = tmp_path / "r.duckdb"
    res = run("analyze", str(path), "--arm-col", "arm", "--control", "base", "--metric", "watch_time_s",
              "--unit-col", "user_id", "--db", str(db), "--run-id", "s", "--json")
    assert res.exit_code == 0, res.output
    per_user = analyze(table, arm_col="arm", control="base", metrics=[parse_metric("watch_time_s")])
    got = json.loads(res.stdout)["lifts"][0]
    assert got["abs_diff"] == pytest.approx(per_user.lift("watch_time_s").abs_diff)
    assert got["n_control"] == N
    units = ResultsStore(db).unit_metrics("s").set_index("unit_id")
    assert len(units) == 2 * N
    np.testing.assert_allclose(units.loc[src["user_id"].astype(str), "watch_time_s"], src["watch_time_s"])


def test_runs_list_and_show(db_copy, expected):
    db = db_copy
    res = run("runs", "list", "--db", str(db), "--json")
    assert res.exit_code == 0, res.output
    runs = json.loads(res.stdout)["runs"]
    assert [(r["run_id"], r["kind"], r["status"], r["decision"], r["n_lifts"]) for r in runs] == [
        ("ab", "analyze", "complete", None, 9), ("two", "analyze", "complete", "SHIP", 9)]
    assert runs[1]["summary"]["arm_counts"] == {"base": N, "lsvcr": N}
    res = run("runs", "list", "--db", str(db))
    assert res.exit_code == 0 and "two" in res.stdout and "SHIP" in res.stdout
    empty = run("runs", "list", "--db", str(db.parent / "none.duckdb"))
    assert empty.exit_code == 0 and "no runs in" in empty.stdout and not (db.parent / "none.duckdb").exists()

    res = run("runs", "show", "two", "--db", str(db), "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["run"]["run_id"] == "two" and doc["run"]["config"]["metrics"] == ["watch_time_s", "video_interactions"]
    want = expected.lift("watch_time_s")
    shown = next(r for r in doc["lifts"] if r["metric"] == "watch_time_s" and r["segment"] == "all")
    assert shown["abs_diff"] == pytest.approx(want.abs_diff) and shown["rel_ci_high"] == pytest.approx(want.rel_ci_high)
    assert {g["decision"] for g in doc["gate"]} == {"SHIP"} and doc["heterogeneity"]
    res = run("runs", "show", "two", "--db", str(db))
    assert res.exit_code == 0 and f"{want.abs_diff:+.4g}" in res.stdout and "SHIP" in res.stdout

    res = run("runs", "show", "three", "--db", str(db))
    assert res.exit_code == 3 and "no run 'three'" in res.stderr


def test_every_command_and_option_has_help():
    root = typer.main.get_command(app)
    commands = {"analyze": root.commands["analyze"], "gate": root.commands["gate"],
                **{f"runs {k}": v for k, v in root.commands["runs"].commands.items()}}
    assert set(commands) == {"analyze", "gate", "runs list", "runs show"}
    for name, cmd in commands.items():
        assert (cmd.help or "").strip(), name
        for param in cmd.params:
            assert (getattr(param, "help", None) or "").strip(), f"{name}: {param.name} has no help"
        res = run(*name.split(), "--help")
        assert res.exit_code == 0 and "Usage" in res.output
    assert "2 = INCONCLUSIVE, 3 = error" in run("gate", "--help").output
