"""`harness evaluate --protocol temporal` through CliRunner: slices printed and stored, checkpoints that may
have trained after the cut refused, options that belong to the other protocol refused."""

from __future__ import annotations

import json
import shutil

import duckdb
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.logs.store import write_logs
from tests.models.fixtures import cyclic_world

runner = CliRunner()
# cyclic_world: user u's 12 requests lie at T0 + u * 100,000 s + 0..660 s; the cut leaves users 0-4 before it
CUT = "2024-01-06T05:00:00"
LATER = "2024-01-11T00:00:00"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("t")
    logs = write_logs(cyclic_world(n_users=10, n_videos=40, n_requests=12), root / "logs")
    ck = root / "ck"
    for name, until in (("pop", CUT), ("pop_all", None), ("pop_later", LATER)):
        args = ["train", "--model", "pop", "--data", str(logs), "--out", str(ck / name)]
        r = runner.invoke(app, args + (["--until", until] if until else []))
        assert r.exit_code == 0, r.output
    shutil.copytree(ck / "pop", ck / "pop_old")  # a checkpoint written before training_data existed
    config = json.loads((ck / "pop_old" / "config.json").read_text())
    del config["training_data"]
    (ck / "pop_old" / "config.json").write_text(json.dumps(config))
    return logs, ck


def _evaluate(logs, ck, *extra):
    return runner.invoke(app, ["evaluate", "--models", "pop", "--data", str(logs), "--checkpoints", str(ck), *extra])


def test_temporal_results_per_slice_printed_and_stored(tmp_path, setup) -> None:
    logs, ck = setup
    db = tmp_path / "r.duckdb"
    r = _evaluate(logs, ck, "--protocol", "temporal", "--until", CUT, "--queries-per-user", "3", "--json", "--db",
                  str(db))
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["protocol"] == "temporal" and out["until"] == "2024-01-06T05:00:00.000000" and out["queries_per_user"] == 3
    got = {(x["task"], x["slice"]): x["n_queries"] for x in out["results"]}
    assert set(got) == {(t, s) for t in ("video", "comment") for s in ("all", "warm", "cold")}
    assert got[("video", "all")] == 5 * 3  # users 5-9 act after the cut, 3 queries each
    for task in ("video", "comment"):
        assert got[(task, "all")] == got[(task, "warm")] + got[(task, "cold")]
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT DISTINCT task, protocol, slice, n_queries FROM ranking_metrics").fetchall()
        config = json.loads(con.execute("SELECT config FROM runs").fetchone()[0])
    assert {(t, s): n for t, p, s, n in rows if p == "temporal"} == got
    assert config["protocol"] == "temporal" and config["queries_per_user"] == 3
    r = _evaluate(logs, ck, "--protocol", "temporal", "--until", CUT, "--no-store")
    assert r.exit_code == 0, r.output
    assert "slice" in r.output and "cold" in r.output and "temporal, cut 2024-01-06T05:00:00" in r.output


@pytest.mark.parametrize("model, message", [
    ("pop_old", "records no training window"),
    ("pop_all", "trained on every request of these logs (up to 2024-01-11T10:11:00"),
    ("pop_later", "trained on requests up to 2024-01-11T00:00:00.000000, after the cut 2024-01-06T05:00:00"),
])
def test_checkpoints_that_may_have_seen_the_test_period_are_refused(setup, model, message) -> None:
    logs, ck = setup
    r = runner.invoke(app, ["evaluate", "--models", model, "--data", str(logs), "--checkpoints", str(ck),
                            "--protocol", "temporal", "--until", CUT, "--no-store"])
    assert r.exit_code == 3 and message in r.output and "--until" in r.output and "Traceback" not in r.output
    # the same checkpoints are fine under leave-one-out
    ok = runner.invoke(app, ["evaluate", "--models", model, "--data", str(logs), "--checkpoints", str(ck), "--no-store"])
    assert ok.exit_code == 0, ok.output


@pytest.mark.parametrize("args, message", [
    (["--protocol", "temporal"], "--protocol temporal needs --until"),
    (["--until", CUT], "--until applies to --protocol temporal only"),
    (["--protocol", "temporal", "--until", CUT, "--split", "valid"], "--split valid applies to leave-one-out only"),
    (["--queries-per-user", "10"], "--queries-per-user applies to --protocol temporal only"),
    (["--protocol", "temporal", "--until", "yesterday"], "--until: 'yesterday' is not a time"),
    (["--protocol", "temporal", "--until", "experiment-start"], "records no experiment start"),
    (["--protocol", "temporal", "--until", "2030-01-01"], "no engaged video event or comment record lies at or after"),
])
def test_bad_protocol_options(setup, args, message) -> None:
    logs, ck = setup
    r = _evaluate(logs, ck, *args, "--no-store")
    assert r.exit_code == 3 and message in r.output and "Traceback" not in r.output
