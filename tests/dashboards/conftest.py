"""One results database built by real runs, shared by the dashboard tests (built once per session, ~10 s).

- `ab-cuped`: `harness analyze` of an A/B/n export (control, lsvcr, lsvcr_b; 1,200 users per arm) with CUPED on
  the pre-period, a segment, cumulative lifts by day and the default launch gate;
- `ab-raw`: the same table with `--cuped none --correction none` and a five-level segment (the unadjusted
  sibling of `ab-cuped`, and many segment lifts read without a correction);
- two `harness evaluate` runs of a popularity model on a tiny synthetic world (seeds 0 and 1);
- `rep-1`: `harness replay` of that world's experiment days, logging policy vs the popularity model, with
  the truth and the default gate (the tiny world of tests/harness/replay/test_replay_e2e.py, smaller).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits
from typer.testing import CliRunner

from harness.cli import app
from harness.simulate.config import WorldConfig
from harness.simulate.generate import simulate

ROOT = Path(__file__).resolve().parents[2]
GATE = ROOT / "analysis" / "gate_default.toml"
METRICS = ("watch_time_s", "video_interactions", "comment_watch_time_s", "comment_interactions")
runner = CliRunner()


def _export(path: Path) -> None:
    rng = np.random.default_rng(11)
    n = 1200
    arm = np.repeat(["control", "lsvcr", "lsvcr_b"], n)
    pre = rng.gamma(4.0, 5.0, 3 * n)
    lift = np.select([arm == "lsvcr", arm == "lsvcr_b"], [1.5, 0.3], 0.0)
    pd.DataFrame({
        "user_id": np.arange(3 * n),
        "arm": arm,
        "watch_time_s": 0.8 * pre + rng.normal(0.0, 4.0, 3 * n) + lift,
        "watch_time_s_pre": pre,
        "video_interactions": 10.0 + rng.normal(0.0, 0.05, 3 * n),
        "comment_watch_time_s": 20.0 + rng.normal(0.0, 0.1, 3 * n) - 0.5 * (arm == "lsvcr_b"),
        "comment_interactions": 5.0 + rng.normal(0.0, 0.02, 3 * n),
        "requests": rng.poisson(6.0, 3 * n) + 1,
        "activity": rng.choice(["low", "high"], 3 * n),
        "region": rng.choice(["north", "south", "east", "west", "centre"], 3 * n),
        "day": rng.choice(["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"], 3 * n),
    }).to_parquet(path, index=False)


def _ok(args: list[str]) -> None:
    r = runner.invoke(app, args)
    assert r.exit_code in (0, 1, 2), r.output[-3000:]  # 1 / 2: a gate's NO_SHIP / INCONCLUSIVE


@pytest.fixture(scope="session")
def results_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture database (read-only for the tests: copy it before changing it)."""
    root = tmp_path_factory.mktemp("dashboard")
    db = root / "results.duckdb"
    table = root / "export.parquet"
    _export(table)
    metrics = [a for m in METRICS for a in ("--metric", m)]
    common = ["analyze", str(table), "--arm-col", "arm", "--control", "control", "--treatment", "lsvcr",
              "--treatment", "lsvcr_b", *metrics, "--ratio", "comment_watch_time_s/requests", "--db", str(db)]
    _ok([*common, "--segment", "activity", "--by-day", "day", "--gate", str(GATE), "--run-id", "ab-cuped"])
    _ok([*common, "--segment", "activity", "--segment", "region", "--cuped", "none", "--correction", "none",
         "--run-id", "ab-raw"])
    world = root / "world"
    simulate(WorldConfig(users=120, videos=200, comments_per_video=6.0, days=4, seed=3), world, progress=False)
    ck = root / "ck"
    _ok(["train", "--model", "pop", "--data", str(world), "--out", str(ck / "pop"), "--until", "experiment-start",
         "--no-progress"])
    for seed in ("0", "1"):
        _ok(["evaluate", "--models", "pop", "--data", str(world), "--checkpoints", str(ck), "--seed", seed,
             "--db", str(db)])
    # One OpenMP thread for the reward model's gradient boosting: on a busy 2-core machine its default thread
    # pool oversubscribes the cores (measured: 85 s instead of 3 s for this fit at load 6).
    with threadpool_limits(1):
        _ok(["replay", "--data", str(world), "--checkpoints", str(ck), "--control", "logging", "--treatment", "pop",
             "--gate", str(GATE), "--db", str(db), "--no-progress", "--no-cache", "--run-id", "rep-1"])
    return db


@pytest.fixture()
def db_copy(results_db: Path, tmp_path: Path) -> Path:
    """A private copy of the fixture database, for tests that change or lock it."""
    out = tmp_path / "copy.duckdb"
    shutil.copy(results_db, out)
    return out


@pytest.fixture(autouse=True)
def fresh_cache() -> None:
    """Each test reads the database afresh (the cache is per process; some tests patch the store)."""
    from dashboards.data import clear_cache

    clear_cache()
