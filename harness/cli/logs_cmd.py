"""`harness logs ...`: validate, describe, convert and import logged sessions.

A thin layer over `harness.logs`: each command parses options, calls one API function and prints a
rich table (or one JSON object with `--json`). Errors and JSON go through `harness.cli.shared`, so the
exit codes are the CLI's table (`harness.cli.shared`): 0 done, 3 error (bad data, missing paths, a
bug), with a one-line message on stderr and no traceback.

`harness logs validate` on logs that break the schema prints every issue (or the report with
`--json`) and exits 3: invalid logs are bad input, as they are for every other command that reads
them (`describe`, `convert`, `train`), never 1, which the CLI reserves for a gate's NO_SHIP.

The output format of `convert` and `import-kuairand` follows OUT's name (`*.duckdb`: one DuckDB
file; anything else: a folder of Parquet files); a `--format` that contradicts the name is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from harness.cli.shared import EXIT_ERROR, JsonOpt, UserError, cli_errors, console, print_json
from harness.logs.kuairand import KuaiRandFormatError
from harness.logs.store import FORMATS, LogFileError
from harness.logs.validate import LogValidationError

logs_app = typer.Typer(help="Logged sessions: validate, describe, convert and import (KuaiRand).",
                       no_args_is_help=True)

LogFormat = StrEnum("LogFormat", {f: f for f in FORMATS})  # type: ignore[misc]  # choices: harness.logs.store.FORMATS
LOG_ERRORS = (LogValidationError, KuaiRandFormatError, LogFileError)  # harness.logs' errors: bad logs or options


def register(app: typer.Typer) -> None:
    """Add this group's commands to the top-level app."""
    app.add_typer(logs_app, name="logs")


def log_error(exc: ValueError) -> UserError:
    """One line for `cli_errors()`: the count and the first issue, and where to see them all."""
    if isinstance(exc, LogValidationError) and exc.report.issues:
        head = str(exc).split("\n")[0]
        more = len(exc.report.issues) > 1
        return UserError(f"{head} {'First' if more else 'It'}: {exc.report.issues[0].message}"
                         + ("; `harness logs validate PATH` lists them all" if more else ""))
    return UserError(str(exc))


def output_format(out: Path, fmt: str | None) -> str:
    """The format OUT's name asks for (`*.duckdb`: duckdb, else parquet); a contradicting --format is refused."""
    named = "duckdb" if out.suffix.lower() == ".duckdb" else "parquet"
    if fmt is None or fmt == named:
        return named
    if fmt == "parquet":
        raise UserError(f"--format parquet writes a folder, but {out} is named like a DuckDB file; drop "
                        f"--format to write DuckDB, or name the folder without .duckdb")
    raise UserError(f"--format {fmt} writes one DuckDB file, but {out} does not end in .duckdb; name it "
                    f"{out.name}.duckdb, or drop --format to write a Parquet folder")


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


PathArg = typer.Argument(..., help="Logs: a folder of Parquet files or a .duckdb file.")
FormatOpt = typer.Option(None, "--format", help="Output format [default: from OUT's name: duckdb for *.duckdb, "
                                                "else a Parquet folder]; a contradicting value is refused.")


@logs_app.command("validate")
def validate_cmd(path: Path = PathArg, as_json: bool = JsonOpt) -> None:
    """Check logs against the schema; print OK with row counts, or every error (exit 3: bad input)."""
    from harness.logs.store import LogStore

    with cli_errors():
        try:
            with LogStore.open(path, validate=False) as store:
                report = store.validation()
        except LOG_ERRORS as exc:
            raise log_error(exc) from None
    if as_json:
        print_json(report.to_dict())
    elif report.ok:
        console().print(f"[green]OK[/green] {path}", soft_wrap=True, highlight=False)
        console().print(_kv_table("rows per table", list(report.counts.items())))
    else:
        console(err=True).print(f"[red]{len(report.issues)} error(s)[/red] in {path}:\n{report.format()}",
                                highlight=False)
    if not report.ok:
        raise typer.Exit(EXIT_ERROR)


@logs_app.command("describe")
def describe_cmd(path: Path = PathArg, as_json: bool = JsonOpt) -> None:
    """Sizes, date range, traffic and engagement rates, watch-time quantiles, and what the logs lack."""
    from harness.logs.describe import describe
    from harness.logs.store import LogStore

    with cli_errors():
        try:
            with LogStore.open(path, validate=True) as store:
                d = describe(store)
        except LOG_ERRORS as exc:
            raise log_error(exc) from None
    if as_json:
        print_json(d.to_dict())
        return
    con = console()
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
        ("fingerprint without floats", d.fingerprint_without_floats[:16]),
    ]))
    calibrated = Table(title="calibrated rates: measured vs published target", show_header=True)
    for name in ("rate", "measured", "target", "source"):
        calibrated.add_column(name, overflow="fold")
    for name, target in d.targets.items():
        calibrated.add_row(name, _fmt(getattr(d, name)), _fmt(target["value"]), target["source"])
    con.print(calibrated)
    con.print(_kv_table("feed", [("impressions per active user-day", d.impressions_per_user_day),
                                 ("requests per session", d.requests_per_session),
                                 ("comment share of time", d.comment_time_share),
                                 ("plays longer than the video (loops)", d.plays_over_duration)]))
    if d.absent:
        con.print("[yellow]absent:[/yellow] " + "; ".join(d.absent), highlight=False, soft_wrap=True)


@logs_app.command("convert")
def convert_cmd(
    src: Path = typer.Argument(..., help="Source logs (Parquet folder or .duckdb file)."),
    out: Path = typer.Argument(..., help="Where to write the converted logs: NAME.duckdb (one DuckDB file) or a "
                                         "folder (Parquet files)."),
    fmt: LogFormat | None = FormatOpt,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
) -> None:
    """Copy or convert logs between Parquet and DuckDB through full validation (nothing written on error)."""
    from harness.logs.store import LogStore, import_logs

    with cli_errors():
        kind = output_format(out, fmt and fmt.value)
        try:
            import_logs(src, out, kind, overwrite=overwrite)
        except LOG_ERRORS as exc:
            raise log_error(exc) from None
        with LogStore.open(out, validate=False) as store:
            counts, fp = store.counts(), store.fingerprint()
    console().print(f"[green]wrote[/green] {out} ({kind}), fingerprint {fp[:16]}", soft_wrap=True, highlight=False)
    console().print(_kv_table("rows per table", list(counts.items())))


def _progress(label: str) -> Callable[[], None]:
    status = console(err=True).status(label)
    status.start()
    return status.stop


@logs_app.command("import-kuairand")
def import_kuairand_cmd(
    src: Path = typer.Argument(..., help="Folder with KuaiRand log_*.csv files (and optional feature CSVs)."),
    out: Path = typer.Argument(..., help="Where to write the logs: NAME.duckdb (one DuckDB file) or a folder "
                                         "(Parquet files)."),
    fmt: LogFormat | None = FormatOpt,
    slate_size: int = typer.Option(6, "--slate-size", min=1,
                                   help="Most impressions per request when grouping a minute's rows."),
    session_gap_min: float = typer.Option(30.0, "--session-gap-min",
                                          help="Idle minutes that start a new session."),
    random_pool_size: int | None = typer.Option(
        None, "--random-pool-size",
        help="Size of the uniform random-exposure pool (KuaiRand's: 7583); gives random rows propensity 1/N "
             "(else null)."),
    clip_watch_time: bool = typer.Option(False, "--clip-watch-time",
                                         help="Cap play time at 10x the video duration (loops above the duration "
                                              "are kept as logged without this)."),
    random_join_window_s: float = typer.Option(60.0, "--random-join-window-s",
                                               help="A random-exposure row joins its user's nearest feed request "
                                                    "within this many seconds (else a request of its own)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
    as_json: bool = JsonOpt,
) -> None:
    """Import KuaiRand CSV logs into validated logs; say what the format lacks."""
    from harness.logs.kuairand import KuaiRandConfig, import_kuairand

    with cli_errors():
        kind = output_format(out, fmt and fmt.value)
        try:
            config = KuaiRandConfig(slate_size=slate_size, session_gap_min=session_gap_min,
                                    random_pool_size=random_pool_size, clip_watch_time=clip_watch_time,
                                    random_join_window_s=random_join_window_s)
        except ValueError as exc:  # the config's own checks: a bad option value
            raise UserError(f"{exc} (an option of `harness logs import-kuairand`)") from None
        stop = _progress(f"importing KuaiRand from {src}")
        try:
            summary = import_kuairand(src, out, fmt=kind, config=config, overwrite=overwrite)
        except LOG_ERRORS as exc:
            raise log_error(exc) from None
        finally:
            stop()
    if as_json:
        print_json(summary.to_dict())
        return
    con = console()
    con.print(f"[green]wrote[/green] {summary.out} ({kind}) from {', '.join(summary.log_files)}",
              soft_wrap=True, highlight=False)
    con.print(_kv_table("KuaiRand import", [
        ("log rows", summary.rows), ("users", summary.users), ("videos", summary.videos),
        ("requests", summary.requests), ("impressions", summary.impressions),
        ("random impressions", summary.random_impressions),
        ("videos with unknown duration", summary.videos_with_unknown_duration),
        ("clipped watch times", summary.clipped_watch_times),
    ]))
    con.print(f"requests: {summary.request_rule}", highlight=False, soft_wrap=True)
    con.print(f"propensity: {summary.propensity_rule}", highlight=False, soft_wrap=True)
    con.print("[yellow]the KuaiRand format lacks:[/yellow] " + "; ".join(summary.lacks), highlight=False,
              soft_wrap=True)
