"""One CLI policy: every `harness` command fails the same way (harness/cli/shared.py's exit-code table).

Each command gets one bad input (a missing path, an unknown run, a bad option value) and must exit 3
(never 1, which a gate uses for NO_SHIP), print one line on stderr that names the problem (not "a
bug") and no traceback. The walk covers the whole `harness --help` tree: a new command fails this test
until it is given a bad input here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from harness.cli import app
from harness.cli.shared import EXIT_ERROR

runner = CliRunner()


def _leaves(cmd, path: tuple[str, ...] = ()):
    subs = getattr(cmd, "commands", None)  # Typer vendors its own click: duck-type groups
    if not subs:
        yield " ".join(path)
        return
    for name, sub in subs.items():
        yield from _leaves(sub, (*path, name))


def _bad_inputs(tmp: Path) -> dict[str, list[str]]:
    missing = str(tmp / "missing")
    db = str(tmp / "results.duckdb")
    return {
        "logs validate": ["logs", "validate", missing],
        "logs describe": ["logs", "describe", missing],
        "logs convert": ["logs", "convert", missing, str(tmp / "out")],
        "logs import-kuairand": ["logs", "import-kuairand", missing, str(tmp / "out")],
        "simulate": ["simulate", "--users", "0", "--out", str(tmp / "world")],
        "train": ["train", "--model", "pop", "--data", missing, "--out", str(tmp / "ck" / "pop")],
        "evaluate": ["evaluate", "--models", "pop", "--data", missing, "--checkpoints", str(tmp / "ck")],
        "analyze": ["analyze", str(tmp / "missing.csv"), "--arm-col", "arm", "--control", "a", "--metric", "m",
                    "--db", db],
        "gate": ["gate", "no-such-run", "--config", str(tmp / "missing.toml"), "--db", db],
        "runs list": ["runs", "list", "--db", str(tmp)],  # a folder, not a database file
        "runs show": ["runs", "show", "no-such-run", "--db", db],
        "replay": ["replay", "--data", missing, "--db", db],
        "dashboard": ["dashboard", "--db", db, "--headless"],  # no such database file
    }


def test_every_command_exits_3_with_one_line_and_no_traceback(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HARNESS_DB", str(tmp_path / "env.duckdb"))
    commands = set(_leaves(typer.main.get_command(app)))
    bad = _bad_inputs(tmp_path)
    assert commands == set(bad), f"give every command a bad input here: {sorted(commands ^ set(bad))}"
    for name, args in bad.items():
        r = runner.invoke(app, args)
        err = r.stderr.strip()
        assert r.exit_code == EXIT_ERROR, f"`harness {name}`: exit {r.exit_code}\n{r.output}"
        assert err.startswith("error:") and "\n" not in err, f"`harness {name}`: stderr {err!r}"
        assert "This is a bug" not in err, f"`harness {name}` reports a user mistake as a bug: {err}"
        assert "Traceback" not in r.output and r.exception is None or isinstance(r.exception, SystemExit)
    assert not (tmp_path / "out").exists() and not (tmp_path / "world").exists()


def test_an_unexpected_error_is_a_bug_with_exit_3(tmp_path: Path, monkeypatch) -> None:
    """Training no longer turns every ValueError into "bad input": a bug says so, still exit 3."""
    from harness.cli import models_cmd
    from harness.logs import write_logs
    from tests.harness.logs_fixtures import valid_tables

    logs = write_logs(valid_tables(), tmp_path / "logs")

    def broken(*args, **kwargs):
        raise ValueError("an internal shape mismatch")

    monkeypatch.setattr(models_cmd, "_train", broken)
    monkeypatch.delenv("HARNESS_DEBUG", raising=False)
    r = runner.invoke(app, ["train", "--model", "pop", "--data", str(logs), "--out", str(tmp_path / "ck")])
    assert r.exit_code == EXIT_ERROR
    assert "unexpected ValueError: an internal shape mismatch" in r.stderr and "This is a bug" in r.stderr
    assert "Traceback" not in r.output


def test_one_error_handler_and_one_json_printer() -> None:
    cli = Path(__file__).parents[1] / "harness" / "cli"
    for f in sorted(cli.glob("*.py")):
        if f.name == "shared.py":
            continue
        text = f.read_text()
        for banned in ("echo(json.dumps", "print(json.dumps", "@contextmanager", "typer.Exit(1)", "Exit(code=1)", "def _print_json",
                       "def _user_errors"):
            assert banned not in text, f"{f.name}: {banned!r} belongs in harness/cli/shared.py"


def test_model_choices_match_the_models_package() -> None:
    """models_cmd restates these tuples (their modules load torch, which `harness --help` must not)."""
    from harness.cli import models_cmd
    from models.adapters import KNOWN_NAMES
    from models.evaluation import SPLITS
    from models.lsvcr.config import ABLATIONS
    from models.lsvcr.train import STAGES
    from models.protocols import PROTOCOLS

    assert {m.value for m in models_cmd.ModelKind} == set(KNOWN_NAMES)
    assert {s.value for s in models_cmd.Stage} == set(STAGES)
    assert {s.value for s in models_cmd.Split} == set(SPLITS)
    assert {p.value for p in models_cmd.EvalProtocol} == set(PROTOCOLS)
    assert {a.value for a in models_cmd.Ablation} == {a for a in ABLATIONS if a is not None}


def test_the_cli_loads_without_torch() -> None:
    code = "import sys, harness.cli; assert 'torch' not in sys.modules, 'harness --help would load torch'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


@pytest.mark.parametrize("fmt,name", [("parquet", "x.duckdb"), ("duckdb", "x")])
def test_simulate_refuses_a_format_its_output_name_contradicts(tmp_path: Path, fmt: str, name: str) -> None:
    r = runner.invoke(app, ["simulate", "--users", "20", "--videos", "60", "--days", "2", "--out",
                            str(tmp_path / name), "--format", fmt])
    assert r.exit_code == EXIT_ERROR and f"--format {fmt}" in r.stderr
    assert not (tmp_path / name).exists()


@pytest.mark.parametrize("args", [["bogus"], ["gate"], ["train", "--model", "nope", "--data", "x"],
                                  ["logs", "validate"], ["runs", "list", "--bogus"], ["analyze", "t.csv"]])
def test_usage_errors_exit_3_not_clicks_2(args: list[str]) -> None:
    """Click ends a usage error with 2, which the CLI's table gives to a gate's INCONCLUSIVE."""
    r = runner.invoke(app, args)
    assert r.exit_code == EXIT_ERROR, r.output
    assert "Traceback" not in r.output


def test_help_still_exits_0() -> None:
    for args in (["--help"], ["logs", "--help"], ["runs", "show", "--help"]):
        assert runner.invoke(app, args).exit_code == 0
