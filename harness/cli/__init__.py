"""The `harness` command line: a thin Typer layer over the Python API.

Each command group lives in its own module with a `register(app)` function; heavy imports (torch,
transformers) happen inside command bodies so `harness --help` stays fast.
"""

from __future__ import annotations

import typer

from harness.cli import analysis_cmd, logs_cmd, models_cmd, simulate_cmd

app = typer.Typer(
    name="harness",
    help="LSVCR launch harness: simulate or import logs, train models, replay, analyse and gate launches.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _module in (logs_cmd, simulate_cmd, analysis_cmd, models_cmd):
    _module.register(app)


def main() -> None:
    app()
