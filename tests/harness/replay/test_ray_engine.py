"""`harness replay --engine ray` on a local Ray runtime: the same per-user values, estimates, lifts and gate as
the local engine (to 1e-12); a worker killed mid-run loses and duplicates nothing; a local run resumes on Ray;
a runtime the engine started is stopped on Ctrl-C; bad options and a missing Ray end with exit 3.

The Ray tests need `ray` (the `ray` extra, which scripts/setup.sh installs, so CI runs them). They share one
local runtime of 2 CPUs (module fixture); the engine uses a runtime it finds and leaves it running.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from typer.testing import CliRunner

from analysis.gate import load_gate
from harness.cli import app
from harness.replay.run import LocalEngine, ReplayConfig, run_replay
from harness.store import ResultsStore

runner = CliRunner()
HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="ray is not installed (pip install 'lsvcr-harness[ray]'; "
                                                    "scripts/setup.sh installs it, so CI runs these tests)")
GATE = Path(__file__).resolve().parents[3] / "analysis" / "gate_default.toml"
TABLES = ("replay_estimates", "replay_lifts", "lifts", "checks", "heterogeneity", "power", "replay_test_plan",
          "replay_batches", "gate_decisions")
BATCH_USERS = 15


@pytest.fixture(scope="module")
def world(small_world):
    return small_world


@pytest.fixture(scope="module")
def reference(world, tmp_path_factory):
    """The local engine's run: (db, run id, exit code)."""
    db = tmp_path_factory.mktemp("ref") / "r.duckdb"
    r = runner.invoke(app, _args(world, db, "--run-id", "local", "--engine", "local"))
    assert r.exit_code in (0, 1, 2), r.output
    return db, "local", r.exit_code


@pytest.fixture(scope="module")
def ray_runtime():
    """One local Ray runtime (2 CPUs) for the module's Ray tests."""
    import ray

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "disabled")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        yield ray
        ray.shutdown()


def _args(world, db: Path, *extra: str) -> list[str]:
    data, ck = world
    return ["replay", "--data", str(data), "--checkpoints", str(ck), "--db", str(db), "--control", "pop",
            "--treatment", "base", "--batch-users", str(BATCH_USERS), "--no-progress", "--no-cache", "--gate",
            str(GATE), *extra]


def _config(world) -> ReplayConfig:
    """The config `_args` gives the CLI (so API runs and CLI runs are the same run)."""
    data, ck = world
    return ReplayConfig(data=data, control="pop", treatments=("base",), checkpoints=ck, batch_users=BATCH_USERS,
                        cache_dir=None)


def _api_run(world, db: Path, run_id: str, engine, **kw):
    return run_replay(_config(world), store=ResultsStore(db), gate=load_gate(GATE), gate_path=GATE, run_id=run_id,
                      engine=engine, **kw)


def _table(db: Path, table: str, run_id: str) -> pd.DataFrame:
    with duckdb.connect(str(db), read_only=True) as con:
        df = con.execute(f"SELECT * EXCLUDE (run_id) FROM {table} WHERE run_id = ?", [run_id]).df()
    df = df.drop(columns=[c for c in ("evaluated_at",) if c in df.columns])
    return df.sort_values(list(df.columns[:4])).reset_index(drop=True)


def _units(db: Path, run_id: str) -> pd.DataFrame:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT unit_id, arm, metric, value FROM unit_metrics WHERE run_id = ? "
                           "ORDER BY unit_id, arm, metric", [run_id]).df()


def _assert_same_run(db: Path, rid: str, reference) -> None:
    ref_db, ref_id, _ = reference
    u, u_ref = _units(db, rid), _units(ref_db, ref_id)
    assert not u.duplicated(["unit_id", "arm", "metric"]).any()
    assert len(u) == len(u_ref) and u["unit_id"].nunique() > 50
    pd.testing.assert_frame_equal(u, u_ref, check_exact=False, rtol=1e-12, atol=1e-12)
    for table in TABLES:
        got, want = _table(db, table, rid), _table(ref_db, table, ref_id)
        assert len(want) > 0 or table in ("heterogeneity", "power"), table
        pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-12, atol=1e-12, obj=table)
    assert ResultsStore(db).run(rid)["status"] == "complete"


# ------------------------------------------------------------------------------------- options, no Ray needed
@pytest.mark.parametrize("args, message", [
    (["--engine", "spark"], "choose local or ray"),
    (["--ray-address", "auto"], "--ray-address needs --engine ray"),
    (["--engine", "ray", "--workers", "0"], "--workers"),
    (["--engine", "ray", "--threads-per-worker", "0"], "--threads-per-worker"),
])
def test_bad_engine_options_exit_3(tmp_path, args, message) -> None:
    r = runner.invoke(app, ["replay", "--data", str(tmp_path / "none"), "--db", str(tmp_path / "r.duckdb"),
                            "--no-progress", *args])
    assert r.exit_code == 3, r.output
    assert message in r.output and "Traceback" not in r.output
    assert not (tmp_path / "r.duckdb").exists()


def test_missing_ray_says_how_to_install(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    r = runner.invoke(app, ["replay", "--engine", "ray", "--data", str(tmp_path / "none"), "--db",
                            str(tmp_path / "r.duckdb"), "--no-progress"])
    assert r.exit_code == 3, r.output
    assert "pip install 'lsvcr-harness[ray]'" in r.output
    assert not (tmp_path / "r.duckdb").exists()


@needs_ray
def test_unreachable_cluster_exits_3_at_once(tmp_path) -> None:
    r = runner.invoke(app, ["replay", "--engine", "ray", "--ray-address", "127.0.0.1:1", "--data",
                            str(tmp_path / "none"), "--db", str(tmp_path / "r.duckdb"), "--no-progress"])
    assert r.exit_code == 3, r.output
    assert "--ray-address 127.0.0.1:1: nothing answers there" in r.output
    assert not (tmp_path / "r.duckdb").exists()


def test_the_cli_does_not_import_ray() -> None:
    """`harness --help` stays fast: ray is imported by the Ray engine only, when a run asks for it."""
    code = ("import sys; from typer.testing import CliRunner; from harness.cli import app; "
            "r = CliRunner().invoke(app, ['replay', '--help']); assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'torch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------------------------------------ Ray
@needs_ray
def test_own_runtime_is_sized_and_stopped_on_ctrl_c(world, monkeypatch) -> None:
    """Without an address and with no runtime up, the engine starts one of workers x threads CPUs and shuts it
    down even when interrupted (runs before the module's shared runtime exists)."""
    import ray

    from harness.replay.ray_engine import RayEngine

    assert not ray.is_initialized(), "this test must run before the module's shared runtime starts"
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    seen = {}

    class Interrupted:  # a context whose reward-model fit is interrupted (Ctrl-C) once the runtime is up
        cfg = _config(world)
        timings: dict[str, float] = {}
        parts = None

        def fit(self):
            seen["cpus"] = ray.cluster_resources().get("CPU")
            seen["auth"] = os.environ.get("RAY_AUTH_MODE")
            raise KeyboardInterrupt

    engine = RayEngine(workers=2, threads_per_worker=1)
    with pytest.raises(KeyboardInterrupt):
        list(engine.map_batches(Interrupted(), [(0, [1, 2]), (1, [3])]))  # type: ignore[arg-type]
    assert seen == {"cpus": 2.0, "auth": "disabled"}
    assert not ray.is_initialized() and engine.actors == []


@needs_ray
def test_ray_equals_local(world, reference, ray_runtime, tmp_path) -> None:
    """The CLI with --engine ray --workers 2: every stored table equal to the local engine's run."""
    db = tmp_path / "r.duckdb"
    r = runner.invoke(app, _args(world, db, "--run-id", "ray", "--engine", "ray", "--workers", "2"))
    assert r.exit_code == reference[2], r.output
    _assert_same_run(db, "ray", reference)
    cfg = ResultsStore(db).run("ray")["config"]
    assert "engine" not in str(cfg) and "workers" not in str(cfg)  # engine options are not the run's identity
    assert ray_runtime.is_initialized()  # a runtime the engine found is left running


@needs_ray
def test_killed_worker_loses_and_duplicates_nothing(world, reference, ray_runtime, tmp_path) -> None:
    """SIGKILL a worker process mid-batch: that batch goes to another actor, a new actor takes the dead one's
    place, every batch is yielded once, and the stored run equals the local one."""
    from harness.replay.ray_engine import RayEngine

    ray_engine = RayEngine(workers=2, threads_per_worker=1)
    yielded: list[int] = []
    killed: list[int] = []

    class KillOneWorker:
        def map_batches(self, ctx, todo):
            for b, units, stats in ray_engine.map_batches(ctx, todo):
                yielded.append(b)
                if not killed:  # the worker that computed the first batch gets the next one at once: kill it in it
                    killed.append(ray_engine.report.pid_of[b])
                    threading.Timer(0.3, os.kill, (killed[0], signal.SIGKILL)).start()
                yield b, units, stats

    out = _api_run(world, tmp_path / "r.duckdb", "killed", KillOneWorker())
    rep = ray_engine.report
    n_batches = len(ResultsStore(tmp_path / "r.duckdb").replay_batch_ids("killed"))
    assert n_batches >= 5 and sorted(yielded) == list(range(n_batches))  # each batch yielded once
    assert rep.resubmitted >= 1 and rep.replaced_workers >= 1
    assert len(set(rep.pid_of.values()) - set(killed)) >= 1  # the rest ran in other worker processes
    assert out.resumed_batches == 0
    _assert_same_run(tmp_path / "r.duckdb", "killed", reference)


@needs_ray
def test_local_run_resumes_on_ray(world, reference, ray_runtime, tmp_path) -> None:
    """A local run stopped after 2 batches, resumed with one Ray worker: the uninterrupted run's results."""
    from harness.replay.ray_engine import RayEngine

    class StopAfterTwo:
        def map_batches(self, ctx, todo):
            for i, item in enumerate(LocalEngine().map_batches(ctx, todo)):
                if i == 2:
                    raise KeyboardInterrupt
                yield item

    db = tmp_path / "r.duckdb"
    with pytest.raises(KeyboardInterrupt):
        _api_run(world, db, "partial", StopAfterTwo())
    assert len(ResultsStore(db).replay_batch_ids("partial")) == 2
    engine = RayEngine(workers=1, threads_per_worker=1)
    out = _api_run(world, db, "partial", engine, resume=True)
    assert out.resumed_batches == 2 and len(engine.report.compute_s) >= 4
    _assert_same_run(db, "partial", reference)
