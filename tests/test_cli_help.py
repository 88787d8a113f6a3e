"""Every command and command group of the `harness` CLI has help text and answers --help."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from harness.cli import app


def _walk(cmd, path: list[str]):
    yield path, cmd
    if hasattr(cmd, "commands"):  # Typer 0.29 vendors its own click: duck-type groups
        for name, sub in cmd.commands.items():
            yield from _walk(sub, [*path, name])


def test_every_command_has_help() -> None:
    root = typer.main.get_command(app)
    commands = list(_walk(root, []))
    assert len(commands) > 3, "expected the harness CLI to register its command groups"
    runner = CliRunner()
    for path, cmd in commands:
        assert (cmd.help or "").strip(), f"`harness {' '.join(path)}` has no help text"
        res = runner.invoke(app, [*path, "--help"])
        assert res.exit_code == 0, f"`harness {' '.join(path)} --help` failed: {res.output}"
        assert "Usage" in res.output
        for param in cmd.params:
            if getattr(param, "param_type_name", "") == "option" and not getattr(param, "hidden", False) and param.name != "help":
                assert (param.help or "").strip(), f"option {param.opts} of `harness {' '.join(path)}` has no help"
