"""What every `harness` command shares: the exit-code table, the error handler, JSON output, options.

Exit codes (the whole CLI; docs/statistics.md "Exit codes"):

| code | meaning |
|---|---|
| 0 | done; with a launch gate: SHIP (every judged treatment may ship) |
| 1 | a launch gate said NO_SHIP (some judged treatment failed a rule) |
| 2 | a launch gate said INCONCLUSIVE (no failure, but not every rule passed) |
| 3 | error: bad input or a usage error, an unreadable file or database, or a bug; a message on stderr, nothing stored |

A gate's 1 and 2 must never be confused with a crash, so every failure of any kind ends in 3: known
errors as one line naming what is wrong and what to do, anything unexpected as one line saying it is a
bug (HARNESS_DEBUG=1 shows the traceback).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

EXIT_OK, EXIT_NO_SHIP, EXIT_INCONCLUSIVE, EXIT_ERROR = 0, 1, 2, 3
EXIT_CODES = {
    EXIT_OK: "done, or SHIP with a gate",
    EXIT_NO_SHIP: "NO_SHIP",
    EXIT_INCONCLUSIVE: "INCONCLUSIVE",
    EXIT_ERROR: "error (message on stderr; nothing stored)",
}


class UserError(Exception):
    """A mistake in the command line or its inputs: printed without a traceback, exit code 3."""


def console(err: bool = False) -> Console:
    # Tables wrap to the terminal; messages on stderr stay one unbroken line (greppable, copyable).
    return Console(stderr=err, soft_wrap=err)


def print_error(message: str) -> None:
    """One red line on stderr; the text is escaped so TOML keys like [[primary]] print verbatim."""
    console(err=True).print(f"[red]error:[/red] {escape(message)}", highlight=False)


def _known_errors() -> tuple[type[BaseException], ...]:
    import duckdb

    from analysis.errors import AnalysisError
    from harness.store import StoreError

    return (UserError, AnalysisError, StoreError, OSError, UnicodeError, duckdb.Error)


@contextmanager
def cli_errors() -> Iterator[None]:
    """Every failure becomes one message on stderr and exit code 3 (never 1, which means NO_SHIP)."""
    try:
        yield
    except typer.Exit:
        raise
    except _known_errors() as exc:
        print_error(_describe(exc))
        raise typer.Exit(EXIT_ERROR) from None
    except Exception as exc:  # a bug: still exit 3, never a traceback that exits 1
        if os.environ.get("HARNESS_DEBUG"):
            raise
        print_error(f"unexpected {type(exc).__name__}: {exc}. This is a bug in the harness; rerun with "
                    "HARNESS_DEBUG=1 to see the traceback and report it")
        raise typer.Exit(EXIT_ERROR) from None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return (f"a file is not valid {exc.encoding} text (byte {exc.start}: {exc.reason}); pass --encoding "
                "(e.g. latin-1, utf-16) or re-save the file as UTF-8")
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"{exc.filename} not found"
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    text = str(exc)
    return text.split("\n")[0] if text else type(exc).__name__


def jsonable(value: Any) -> Any:
    """JSON-safe: NaN/inf/NA -> null, numpy scalars -> Python, datetimes -> ISO text, paths -> text."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    if value is not None and not isinstance(value, str | int | float | bool):
        try:
            import pandas as pd

            if pd.isna(value):
                return None
        except (TypeError, ValueError):
            pass
        return str(value)
    return value


def print_json(obj: Any) -> None:
    """One JSON document on stdout; NaN never appears (it is not JSON): null instead."""
    typer.echo(json.dumps(jsonable(obj), allow_nan=False))


DbOpt = typer.Option(None, "--db", envvar="HARNESS_DB",
                     help="Results database file (default: $HARNESS_DB, else ./harness.duckdb).")
JsonOpt = typer.Option(False, "--json", help="Print one JSON document instead of tables.")


def user_set(ctx: typer.Context, name: str) -> bool:
    """Whether the user gave option `name` (command line or environment), not its default value."""
    # By name: Typer vendors its own click, whose ParameterSource is not click's.
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")
