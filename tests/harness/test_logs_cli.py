"""`harness logs ...` through CliRunner on real temporary data: exit codes, output, files."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.logs import LogStore, write_logs
from tests.harness.logs_fixtures import valid_tables

FIXTURE = Path(__file__).parent / "fixtures" / "kuairand"
runner = CliRunner()


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_logs(valid_tables(), tmp_path_factory.mktemp("cli") / "logs")


def _bad(tmp_path: Path) -> Path:
    t = valid_tables()
    t["impressions"].loc[3, "watch_time_s"] = -1.0
    t["requests"].loc[5, "user_id"] = 99
    folder = tmp_path / "bad"
    folder.mkdir()
    for name, df in t.items():
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), folder / f"{name}.parquet")
    return folder


def test_validate_ok_and_errors(good: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["logs", "validate", str(good)])
    assert r.exit_code == 0, r.output
    assert "OK" in r.output and "impressions" in r.output and "12" in r.output
    r = runner.invoke(app, ["logs", "validate", str(good), "--json"])
    assert json.loads(r.output) == {"ok": True, "issues": [], "counts": {
        "users": 3, "videos": 6, "comments": 4, "requests": 6, "impressions": 12, "candidates": 18,
        "comment_impressions": 4}}
    bad = _bad(tmp_path)
    r = runner.invoke(app, ["logs", "validate", str(bad)])
    assert r.exit_code == 3
    assert "2 error(s)" in r.output
    assert "impressions.watch_time_s: 1 row(s) are negative" in r.output
    assert "request_id=2, position=1" in r.output
    assert "requests.user_id: 1 row(s) reference a user_id that is not in users" in r.output
    assert "Traceback" not in r.output
    r = runner.invoke(app, ["logs", "validate", str(bad), "--json"])
    assert r.exit_code == 3
    assert {i["check"] for i in json.loads(r.output)["issues"]} == {"negative", "unknown_reference"}


def test_describe_table_and_json(good: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["logs", "describe", str(good)])
    assert r.exit_code == 0, r.output
    for text in ("comment-open rate", "0.25", "random-exposure share", "0.1667", "watch s p50", "10"):
        assert text in r.output
    r = runner.invoke(app, ["logs", "describe", str(good), "--json"])
    d = json.loads(r.output)
    assert d["impressions"] == 12 and d["comment_open_rate"] == pytest.approx(0.25)
    assert d["watch_time_p90"] == pytest.approx(39.0) and d["absent"] == []
    r = runner.invoke(app, ["logs", "describe", str(_bad(tmp_path))])
    assert r.exit_code == 3 and "validation error" in r.output
    r = runner.invoke(app, ["logs", "describe", str(tmp_path / "missing")])
    assert r.exit_code == 3 and "no logs at" in r.output


def test_convert_round_trip_and_failure(good: Path, tmp_path: Path) -> None:
    out = tmp_path / "c.duckdb"
    r = runner.invoke(app, ["logs", "convert", str(good), str(out), "--format", "duckdb"])
    assert r.exit_code == 0, r.output
    with LogStore.open(out) as a, LogStore.open(good) as b:
        assert a.format == "duckdb" and a.fingerprint() == b.fingerprint()
    r = runner.invoke(app, ["logs", "convert", str(good), str(out), "--format", "duckdb"])
    assert r.exit_code == 3 and "--overwrite" in r.output
    r = runner.invoke(app, ["logs", "convert", str(_bad(tmp_path)), str(tmp_path / "x")])
    assert r.exit_code == 3 and "nothing was written" in r.output
    assert not (tmp_path / "x").exists()


def test_convert_takes_the_format_from_the_name(good: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["logs", "convert", str(good), str(tmp_path / "out.duckdb")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out.duckdb").is_file()
    with LogStore.open(tmp_path / "out.duckdb") as store:
        assert store.format == "duckdb"
    r = runner.invoke(app, ["logs", "convert", str(tmp_path / "out.duckdb"), str(tmp_path / "folder")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "folder" / "impressions.parquet").is_file()
    for name, fmt in (("x.duckdb", "parquet"), ("x", "duckdb")):
        r = runner.invoke(app, ["logs", "convert", str(good), str(tmp_path / name), "--format", fmt])
        assert r.exit_code == 3 and f"--format {fmt}" in r.stderr and "Traceback" not in r.output
        assert not (tmp_path / name).exists()


def test_import_kuairand(tmp_path: Path) -> None:
    out = tmp_path / "kr.duckdb"
    r = runner.invoke(app, ["logs", "import-kuairand", str(FIXTURE), str(out), "--format", "duckdb",
                            "--slate-size", "6", "--random-pool-size", "100"])
    assert r.exit_code == 0, r.output
    assert "the KuaiRand format lacks" in r.output and "candidate sets" in r.output
    assert "1/100 on random traffic" in r.output
    with LogStore.open(out) as store:
        assert store.counts()["requests"] == 18 and store.counts()["impressions"] == 45
    r = runner.invoke(app, ["logs", "import-kuairand", str(FIXTURE), str(tmp_path / "j"), "--json"])
    assert r.exit_code == 0
    assert json.loads(r.output)["requests"] == 18
    r = runner.invoke(app, ["logs", "import-kuairand", str(tmp_path / "nothing"), str(tmp_path / "y")])
    assert r.exit_code == 3 and "no KuaiRand log files" in r.output and not (tmp_path / "y").exists()
    r = runner.invoke(app, ["logs", "import-kuairand", str(FIXTURE), str(tmp_path / "y"), "--slate-size", "0"])
    assert r.exit_code != 0 and not (tmp_path / "y").exists()


def test_every_logs_command_has_help() -> None:
    from harness.cli.logs_cmd import logs_app

    for cmd in logs_app.registered_commands:
        name = cmd.name or cmd.callback.__name__
        assert cmd.callback.__doc__, name
        r = runner.invoke(app, ["logs", name, "--help"])
        assert r.exit_code == 0 and "Usage" in r.output
        for param in cmd.callback.__defaults__ or ():
            assert getattr(param, "help", None), f"{name}: an option without help"
