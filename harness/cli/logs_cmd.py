"""`harness logs ...`: validate, describe, convert and import logged sessions.

A thin layer over `harness.logs`: each command parses options, calls one API function and prints a
rich table (or one JSON object with `--json`). User errors (bad data, missing paths) print a clear
message on stderr and exit 1, without a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

logs_app = typer.Typer(help="Logged sessions: validate, describe, convert and import (KuaiRand).",
                       no_args_is_help=True)


class LogFormat(StrEnum):
    parquet = "parquet"
    duckdb = "duckdb"


def register(app: typer.Typer) -> None:
    """Add this group's commands to the top-level app."""
    app.add_typer(logs_app, name="logs")


def _console(err: bool = False) -> Console:
    return Console(stderr=err, soft_wrap=True)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn the errors a user can fix into a message and exit code 1."""
    from harness.logs.kuairand import KuaiRandFormatError
    from harness.logs.validate import LogValidationError

    try:
        yield
    except LogValidationError as exc:
        _console(err=True).print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        raise typer.Exit(1) from None
    except (FileNotFoundError, FileExistsError, KuaiRandFormatError, ValueError) as exc:
        _console(err=True).print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        raise typer.Exit(1) from None


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _kv_table(title: str, rows: list[tuple[str, Any]]) -> Table:
    t = Table(title=title, show_header=True)
    t.add_column("figure")
    t.add_column("value", justify="right")
    for k, v in rows:
        t.add_row(k, _fmt(v))
    return t


def _print_json(obj: dict[str, Any]) -> None:
    typer.echo(json.dumps(obj, sort_keys=False, default=str))


PathArg = typer.Argument(..., help="Logs: a folder of Parquet files or a .duckdb file.")
JsonOpt = typer.Option(False, "--json", help="Print one JSON object instead of tables.")


@logs_app.command("validate")
def validate_cmd(path: Path = PathArg, as_json: bool = JsonOpt) -> None:
    """Check logs against the schema; print OK with row counts, or every error (exit 1)."""
    from harness.logs.store import LogStore

    with _user_errors():
        with LogStore.open(path, validate=False) as store:
            report = store.validation()
    if as_json:
        _print_json(report.to_dict())
    elif report.ok:
        _console().print(f"[green]OK[/green] {path}")
        _console().print(_kv_table("rows per table", list(report.counts.items())))
    else:
        _console(err=True).print(f"[red]{len(report.issues)} error(s)[/red] in {path}:\n{report.format()}",
                                 highlight=False)
    if not report.ok:
        raise typer.Exit(1)


@logs_app.command("describe")
def describe_cmd(path: Path = PathArg, as_json: bool = JsonOpt) -> None:
    """Sizes, date range, traffic and engagement rates, watch-time quantiles, and what the logs lack."""
    from harness.logs.describe import describe
    from harness.logs.store import LogStore

    with _user_errors(), LogStore.open(path, validate=True) as store:
        d = describe(store)
    if as_json:
        _print_json(d.to_dict())
        return
    con = _console()
    con.print(_kv_table("rows per table", list(d.counts.items())))
    con.print(_kv_table(f"{d.path} ({d.format})", [
        ("users (active)", f"{d.users} ({d.active_users})"), ("videos", d.videos), ("requests", d.requests),
        ("impressions", d.impressions), ("from", d.ts_min), ("to", d.ts_max), ("days", d.days),
        ("requests per user", d.requests_per_user),
        ("slate size mean (min-max)", f"{_fmt(d.slate_size_mean)} ({d.slate_size_min}-{d.slate_size_max})"),
        ("candidates per request", d.candidates_per_request),
        ("random-exposure share", d.random_share), ("like rate", d.like_rate),
        ("comment-open rate", d.comment_open_rate),
        ("comment interactions per open", d.comment_interaction_rate),
        ("comment watch s per open", d.comment_watch_time_per_open),
        ("watch s mean", d.watch_time_mean), ("watch s p10", d.watch_time_p10),
        ("watch s p50", d.watch_time_p50), ("watch s p90", d.watch_time_p90), ("watch s p99", d.watch_time_p99),
        ("propensity coverage", d.propensity_coverage), ("fingerprint", d.fingerprint[:16]),
    ]))
    if d.absent:
        con.print("[yellow]absent:[/yellow] " + "; ".join(d.absent), highlight=False)


@logs_app.command("convert")
def convert_cmd(
    src: Path = typer.Argument(..., help="Source logs (Parquet folder or .duckdb file)."),
    out: Path = typer.Argument(..., help="Where to write the converted logs."),
    fmt: LogFormat = typer.Option(LogFormat.parquet, "--format", help="Output format."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
) -> None:
    """Copy or convert logs between Parquet and DuckDB through full validation (nothing written on error)."""
    from harness.logs.store import LogStore, import_logs

    with _user_errors():
        import_logs(src, out, fmt.value, overwrite=overwrite)
        with LogStore.open(out, validate=False) as store:
            counts, fp = store.counts(), store.fingerprint()
    _console().print(f"[green]wrote[/green] {out} ({fmt.value}), fingerprint {fp[:16]}")
    _console().print(_kv_table("rows per table", list(counts.items())))


def _progress(label: str) -> Callable[[], None]:
    con = _console(err=True)
    status = con.status(label)
    status.start()
    return status.stop


@logs_app.command("import-kuairand")
def import_kuairand_cmd(
    src: Path = typer.Argument(..., help="Folder with KuaiRand log_*.csv files (and optional feature CSVs)."),
    out: Path = typer.Argument(..., help="Where to write the logs (folder for parquet, file for duckdb)."),
    fmt: LogFormat = typer.Option(LogFormat.parquet, "--format", help="Output format."),
    slate_size: int = typer.Option(6, "--slate-size", min=1,
                                   help="Most impressions per request when grouping a minute's rows."),
    session_gap_min: float = typer.Option(30.0, "--session-gap-min",
                                          help="Idle minutes that start a new session."),
    random_pool_size: int | None = typer.Option(
        None, "--random-pool-size",
        help="Size of the uniform random-exposure pool; gives random rows propensity 1/N (else null)."),
    clip_watch_time: bool = typer.Option(False, "--clip-watch-time",
                                         help="Clip play time above 10x the video duration instead of failing."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
    as_json: bool = JsonOpt,
) -> None:
    """Import KuaiRand CSV logs into validated logs; say what the format lacks."""
    from harness.logs.kuairand import KuaiRandConfig, import_kuairand

    with _user_errors():
        config = KuaiRandConfig(slate_size=slate_size, session_gap_min=session_gap_min,
                                random_pool_size=random_pool_size, clip_watch_time=clip_watch_time)
        stop = _progress(f"importing KuaiRand from {src}")
        try:
            summary = import_kuairand(src, out, fmt=fmt.value, config=config, overwrite=overwrite)
        finally:
            stop()
    if as_json:
        _print_json(summary.to_dict())
        return
    con = _console()
    con.print(f"[green]wrote[/green] {summary.out} ({fmt.value}) from {', '.join(summary.log_files)}")
    con.print(_kv_table("KuaiRand import", [
        ("log rows", summary.rows), ("users", summary.users), ("videos", summary.videos),
        ("requests", summary.requests), ("impressions", summary.impressions),
        ("random impressions", summary.random_impressions),
        ("videos with unknown duration", summary.videos_with_unknown_duration),
        ("clipped watch times", summary.clipped_watch_times),
    ]))
    con.print(f"requests: {summary.request_rule}", highlight=False)
    con.print(f"propensity: {summary.propensity_rule}", highlight=False)
    con.print("[yellow]the KuaiRand format lacks:[/yellow] " + "; ".join(summary.lacks), highlight=False)
