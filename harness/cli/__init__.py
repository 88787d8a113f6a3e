"""The `harness` command line: a thin Typer layer over the Python API.

Each command group lives in its own module with a `register(app)` function; heavy imports (torch,
transformers) happen inside command bodies so `harness --help` stays fast. Errors, JSON output and the
exit-code table are `harness.cli.shared`'s; usage errors (an unknown option, a bad choice, a missing
argument), which click would end with 2, end with 3 like every other error (`HarnessGroup`).
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from harness.cli import analysis_cmd, dashboard_cmd, logs_cmd, models_cmd, replay_cmd, simulate_cmd
from harness.cli.shared import EXIT_ERROR

_CLICK_USAGE = 2  # click's exit code for a usage error; ours is 2 = INCONCLUSIVE


class HarnessGroup(TyperGroup):
    """The root group: a usage error anywhere in the tree exits EXIT_ERROR (3), never click's 2."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except typer.TyperException as exc:  # click's UsageError, BadParameter, NoArgsIsHelpError, ...
            _as_error(exc)
            raise

    def invoke(self, ctx: Any) -> Any:  # sub-commands and sub-groups parse their arguments in here
        try:
            return super().invoke(ctx)
        except typer.TyperException as exc:
            _as_error(exc)
            raise


def _as_error(exc: Exception) -> None:
    if getattr(exc, "exit_code", None) == _CLICK_USAGE:
        exc.exit_code = EXIT_ERROR  # type: ignore[attr-defined]


app = typer.Typer(
    name="harness",
    cls=HarnessGroup,
    help="LSVCR launch harness: replay logged sessions through two recommenders (`harness replay`), simulate "
         "or import logs, train and evaluate models, analyse A/B tables and gate launches, and look at the stored "
         "results in a dashboard (`harness dashboard`).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _module in (replay_cmd, logs_cmd, simulate_cmd, analysis_cmd, models_cmd, dashboard_cmd):
    _module.register(app)


def main() -> None:
    app()
