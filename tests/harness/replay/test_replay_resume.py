"""A replay killed with SIGKILL at several points and resumed (`--resume RUN_ID`) ends with the results of an
uninterrupted run, with no duplicated rows; bad inputs end with a clear message, exit 3 and nothing stored."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.simulate.config import WorldConfig
from harness.simulate.generate import simulate
from harness.store import ResultsStore

runner = CliRunner()
HARNESS = str(Path(sys.executable).with_name("harness"))
TABLES = ("replay_estimates", "replay_lifts", "lifts", "checks", "heterogeneity", "power", "replay_test_plan",
          "replay_batches", "gate_decisions")


@pytest.fixture(scope="module")
def world(small_world):
    return small_world


def _args(world, db: Path, *extra: str) -> list[str]:
    data, ck = world
    return ["replay", "--data", str(data), "--checkpoints", str(ck), "--db", str(db), "--control", "pop",
            "--treatment", "base", "--batch-users", "10", "--no-progress", "--no-cache", "--gate",
            str(Path(__file__).resolve().parents[3] / "analysis" / "gate_default.toml"), *extra]


def _table(db: Path, table: str, run_id: str) -> pd.DataFrame:
    with duckdb.connect(str(db), read_only=True) as con:
        df = con.execute(f"SELECT * EXCLUDE (run_id) FROM {table} WHERE run_id = ?", [run_id]).df()
    drop = [c for c in ("evaluated_at",) if c in df.columns]
    return df.drop(columns=drop).sort_values(list(df.columns[:3])).reset_index(drop=True)


def _units(db: Path, run_id: str) -> pd.DataFrame:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT unit_id, arm, metric, value FROM unit_metrics WHERE run_id = ? "
                           "ORDER BY unit_id, arm, metric", [run_id]).df()


def _kill_after(cmd: list[str], line_start: str | None, delay: float = 0.0) -> None:
    """Start the replay, SIGKILL it when a stderr line starts with `line_start` (or after `delay` s)."""
    proc = subprocess.Popen([HARNESS, *cmd[0:]], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    assert proc.stderr is not None
    if line_start is None:
        time.sleep(delay)
    else:
        for line in proc.stderr:
            if line.startswith(line_start):
                break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_sigkill_then_resume_equals_an_uninterrupted_run(world, tmp_path):
    db = tmp_path / "r.duckdb"
    ref = runner.invoke(app, [*_args(world, db), "--run-id", "ref", "--json"])
    assert ref.exit_code in (0, 1, 2), ref.output
    n_batches = json.loads(ref.stdout.strip().splitlines()[-1])
    assert n_batches["resumed_batches"] == 0
    points = [("window:", 0.0), ("batch 1/", 0.0), ("batch 5/", 0.0), (None, 4.0)]
    for i, (line, delay) in enumerate(points):
        rid = f"killed{i}"
        _kill_after(_args(world, db, "--run-id", rid), line, delay)
        store = ResultsStore(db)
        stored = store.replay_batch_ids(rid) if rid in set(store.runs()["run_id"]) else set()
        if line == "batch 5/":
            assert len(stored) >= 5
        r = runner.invoke(app, [*_args(world, db, "--resume", rid), "--json"]) if rid in set(
            store.runs()["run_id"]) else runner.invoke(app, [*_args(world, db, "--run-id", rid), "--json"])
        assert r.exit_code == ref.exit_code, r.output
        out = json.loads(r.stdout.strip().splitlines()[-1])
        assert out["resumed_batches"] == len(stored)
        assert store.run(rid)["status"] == "complete"
        for table in TABLES:
            pd.testing.assert_frame_equal(_table(db, table, rid), _table(db, table, "ref"), check_exact=False,
                                          rtol=1e-12, obj=table)
        u, u_ref = _units(db, rid), _units(db, "ref")
        assert not u.duplicated(["unit_id", "arm", "metric"]).any()
        pd.testing.assert_frame_equal(u, u_ref, check_exact=False, rtol=1e-12)
    # a complete run is not resumed again
    r = runner.invoke(app, _args(world, db, "--resume", "ref"))
    assert r.exit_code == 3 and "already complete" in r.output


def test_resume_refuses_other_inputs(world, tmp_path):
    db = tmp_path / "r.duckdb"
    r = runner.invoke(app, _args(world, db, "--resume", "nope"))
    assert r.exit_code == 3 and "no run 'nope' to resume" in r.output
    _kill_after(_args(world, db, "--run-id", "k"), "batch 1/")
    r = runner.invoke(app, _args(world, db, "--resume", "k", "--seed", "4"))
    assert r.exit_code == 3 and "cannot be resumed with these inputs" in r.output
    assert ResultsStore(db).run("k")["status"] in ("running", "failed")


def _copy_logs(world, tmp_path, edit) -> Path:
    """A Parquet copy of the world's logs with one table edited (pandas)."""
    import shutil

    data, _ = world
    out = tmp_path / "logs"
    shutil.copytree(data, out)
    for name, fn in edit.items():
        f = out / f"{name}.parquet"
        frame = fn(pd.read_parquet(f))
        frame.to_parquet(f, index=False)
    return out


def _window_start_request(world) -> int:
    from harness.logs.store import LogStore
    from harness.logs.window import experiment_start

    data, _ = world
    store = LogStore.open(data)
    start = experiment_start(store)
    rid = store.query("SELECT min(request_id) AS r FROM requests WHERE ts >= ?",
                      [start.astype("datetime64[us]").item()]).to_pylist()[0]["r"]
    store.close()
    return int(rid)


def test_bad_logs_end_clearly_with_nothing_stored(world, tmp_path):
    data, ck = world
    first = _window_start_request(world)

    def zero_propensity(f):
        f.loc[(f["request_id"] == first) & (f["position"] == 2), "propensity"] = 0.0
        return f

    cases = [
        ({"impressions": zero_propensity}, [],
         f"propensity outside (0, 1]; first at request_id={first}, position=2, propensity=0.0"),
        ({"impressions": lambda f: f.drop(columns=["slot_propensity"])}, [],
         "cannot run for 'pop' on these logs: the logs lack impressions.slot_propensity"),
        ({"candidates": lambda f: f[f["request_id"] != first]}, [], "have no candidate set"),
    ]
    for edit, extra, message in cases:
        logs = _copy_logs(world, tmp_path / message[:8].replace(" ", "_"), edit)
        db = tmp_path / f"{abs(hash(message))}.duckdb"
        r = runner.invoke(app, ["replay", "--data", str(logs), "--checkpoints", str(ck), "--db", str(db),
                                "--control", "pop", "--treatment", "base", "--no-progress", "--no-cache",
                                "--allow-overlap", *extra])
        assert r.exit_code == 3, r.output
        assert message in " ".join(r.output.split()), r.output
        assert "Traceback" not in r.output
        assert not db.exists() or ResultsStore(db).runs().empty  # nothing half-written
    # the estimators that still apply are named, and one of them runs
    logs = _copy_logs(world, tmp_path / "noslot2", {"impressions": lambda f: f.drop(columns=["slot_propensity"])})
    r = runner.invoke(app, ["replay", "--data", str(logs), "--checkpoints", str(ck), "--db", str(tmp_path / "x.db"),
                            "--control", "pop", "--treatment", "base", "--no-progress", "--no-cache",
                            "--allow-overlap"])
    said = " ".join(r.output.split())
    assert "Estimators that still apply: iips" in said and "rips" not in said.split("still apply")[1]
    r = runner.invoke(app, ["replay", "--data", str(logs), "--checkpoints", str(ck), "--db", str(tmp_path / "x.db"),
                            "--control", "pop", "--treatment", "base", "--no-progress", "--no-cache",
                            "--allow-overlap", "--estimator", "iips", "--no-truth", "--json"])
    assert r.exit_code == 0, r.output
    got = {e["estimator"] for e in json.loads(r.stdout.strip().splitlines()[-1])["estimates"]}
    assert "iips" in got and not {"rips", "cascade_dr"} & got


def test_an_arm_without_users_is_refused(world, tmp_path):
    data, ck = world
    db = tmp_path / "r.duckdb"
    r = runner.invoke(app, ["replay", "--data", str(data), "--checkpoints", str(ck), "--db", str(db), "--control",
                            "pop", "--treatment", "base", "--design", "split", "--traffic", "1/100000",
                            "--no-progress", "--no-cache"])
    assert r.exit_code == 3 and "no users" in r.output and "['pop']" in r.output, r.output
    assert not db.exists() or ResultsStore(db).runs().empty


def test_checkpoint_of_other_logs_is_refused(world, tmp_path):
    """A checkpoint trained on another world (same ids, other seed) does not match these logs."""
    data, ck = world
    other = tmp_path / "other"
    simulate(WorldConfig(users=90, videos=200, comments_per_video=6.0, days=4, seed=9), other, progress=False)
    r = runner.invoke(app, ["train", "--model", "pop", "--data", str(other), "--out", str(tmp_path / "ck" / "pop"),
                            "--until", "experiment-start", "--no-progress"])
    assert r.exit_code == 0, r.output
    (tmp_path / "ck" / "base").symlink_to(ck / "base")
    db = tmp_path / "r.duckdb"
    r = runner.invoke(app, ["replay", "--data", str(data), "--checkpoints", str(tmp_path / "ck"), "--db", str(db),
                            "--control", "pop", "--treatment", "base", "--no-progress", "--no-cache"])
    assert r.exit_code == 3 and "trained on other logs" in " ".join(r.output.split()), r.output
    assert not db.exists() or ResultsStore(db).runs().empty
