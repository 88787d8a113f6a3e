"""`harness simulate` through the real CLI app."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from harness.cli import app
from harness.logs.store import LogStore
from harness.simulate.oracle import Oracle

runner = CliRunner()
SMALL = ["--users", "120", "--videos", "300", "--days", "3", "--seed", "5"]


def test_simulate_writes_a_valid_dataset_and_prints_the_summary(tmp_path: Path) -> None:
    out = tmp_path / "world"
    res = runner.invoke(app, ["simulate", *SMALL, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "comment_open_rate" in res.output and "impressions" in res.output
    with LogStore.open(out) as store:  # validates
        counts = store.counts()
    assert counts["users"] == 120 and counts["videos"] == 300
    assert f"{counts['impressions']:,}" in res.output
    oracle = Oracle.from_dataset(out)
    assert oracle.world.config.seed == 5 and len(oracle.request_ids) == counts["requests"]


def test_simulate_json_and_duckdb(tmp_path: Path) -> None:
    out = tmp_path / "world.duckdb"
    res = runner.invoke(app, ["simulate", *SMALL, "--out", str(out), "--format", "duckdb", "--json",
                              "--random-share", "0.2", "--slate-size", "4", "--candidates", "20"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    with LogStore.open(out) as store:
        counts = store.counts()
    assert summary["rows"]["impressions"] == counts["impressions"] == 4 * counts["requests"]
    assert summary["rows"]["candidates"] == 20 * counts["requests"]
    assert abs(summary["rates"]["random_share"] - 0.2) < 0.05
    assert Oracle.from_dataset(out).world.config.candidates == 20


def test_bad_options_and_existing_output_fail_cleanly(tmp_path: Path) -> None:
    res = runner.invoke(app, ["simulate", "--users", "0", "--out", str(tmp_path / "x")])
    assert res.exit_code == 3
    assert "users must be a positive integer" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "x").exists()
    out = tmp_path / "w"
    assert runner.invoke(app, ["simulate", *SMALL, "--out", str(out), "--json"]).exit_code == 0
    res = runner.invoke(app, ["simulate", *SMALL, "--out", str(out)])
    assert res.exit_code == 3 and "--overwrite" in res.output


def test_help_documents_every_option() -> None:
    res = runner.invoke(app, ["simulate", "--help"])
    assert res.exit_code == 0
    for opt in ("--users", "--videos", "--comments-per-video", "--days", "--pre-days", "--random-share",
                "--slate-size", "--candidates", "--seed", "--out", "--format", "--overwrite", "--json"):
        assert opt in res.output
