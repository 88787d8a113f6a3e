"""`harness simulate`: write a synthetic short-video world's logged sessions plus its ground truth.

A thin layer over `harness.simulate.generate.simulate`: parse options into a `WorldConfig`, generate
with a progress bar, write through the log store, print the row counts and the calibration rates
(rich tables, or one JSON object with `--json`). Errors go through `harness.cli.shared.cli_errors`:
a bad option or an existing output exits 3 with a one-line message, no traceback. The format follows
`--out`'s name (`*.duckdb`: one DuckDB file, else a Parquet folder), as for `harness logs convert`.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from harness.cli.logs_cmd import FormatOpt, LogFormat, output_format
from harness.cli.shared import JsonOpt, UserError, cli_errors, console, print_json
from harness.simulate.config import EXAMINATION, RANDOM_MODES, Behaviour, WorldConfig

_DEFAULT = WorldConfig()  # option defaults come from the config, never restated


def register(app: typer.Typer) -> None:
    """Add this group's commands to the top-level app."""
    app.command("simulate")(simulate_command)


def simulate_command(
    users: int = typer.Option(_DEFAULT.users, "--users", help="Number of users."),
    videos: int = typer.Option(_DEFAULT.videos, "--videos", help="Number of videos in the catalogue."),
    comments_per_video: float = typer.Option(_DEFAULT.comments_per_video, "--comments-per-video",
                                             help="Mean number of comments under a video."),
    days: int = typer.Option(_DEFAULT.days, "--days", help="Logged days (pre-period + experiment)."),
    pre_days: int | None = typer.Option(None, "--pre-days",
                                        help="Days of pre-period before the experiment (default: days // 2)."),
    random_share: float = typer.Option(_DEFAULT.random_share, "--random-share",
                                       help="Random exposure: share of impressions (--random-mode slot, default "
                                            "0.37% as KuaiRand) or of requests (slate)."),
    random_mode: str = typer.Option(_DEFAULT.random_mode, "--random-mode",
                                    help=f"Random exposure: {' or '.join(RANDOM_MODES)} (slot: single slots from "
                                         "the catalogue outside the candidates; slate: whole random slates)."),
    examination: str = typer.Option(_DEFAULT.behaviour.examination, "--examination",
                                     help=f"How users view a slate: {' or '.join(EXAMINATION)} (cascade: top-down, "
                                          "leaving when unsatisfied; position: world v1's independent slots)."),
    slate_size: int = typer.Option(_DEFAULT.slate_size, "--slate-size", help="Videos shown per request (k)."),
    candidates: int = typer.Option(_DEFAULT.candidates, "--candidates", help="Retrieval candidates per request (n)."),
    seed: int = typer.Option(0, "--seed", help="Seed of every random draw (same seed, same bytes)."),
    out: Path = typer.Option(Path("data/world"), "--out", help="Output: a folder (parquet) or a NAME.duckdb file."),
    fmt: LogFormat | None = FormatOpt,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
    as_json: bool = JsonOpt,
) -> None:
    """Generate a synthetic world (users, videos, comments with text) and its logged sessions.

    Writes all seven log tables plus the world's parameters (world/config.json, world/arrays.npz), so
    `World.load` / `Oracle.from_dataset` rebuild the world and its ground truth from the output alone.
    """
    from harness.simulate.generate import simulate

    with cli_errors():
        kind = output_format(out, fmt and fmt.value)
        try:
            config = WorldConfig(users=users, videos=videos, comments_per_video=comments_per_video, days=days,
                                 pre_days=pre_days, random_share=random_share, random_mode=random_mode,
                                 slate_size=slate_size, candidates=candidates, seed=seed,
                                 behaviour=Behaviour(examination=examination))
        except ValueError as exc:  # WorldConfig's own checks: a bad option value
            raise UserError(str(exc)) from None
        path, summary = simulate(config, out, fmt=kind, overwrite=overwrite, progress=not as_json)
    if as_json:
        print_json({"path": str(path), "seed": seed, **summary.to_dict()})
        return
    con = console()
    rows = Table(title=f"synthetic world written to {path}")
    rows.add_column("table")
    rows.add_column("rows", justify="right")
    for name, n in summary.rows.items():
        rows.add_row(name, f"{n:,}")
    con.print(rows)
    rates = Table(title="rates (targets: KuaiComt / KuaiRand)")
    rates.add_column("rate")
    rates.add_column("value", justify="right")
    rates.add_column("target", justify="right")
    for name, v in summary.rates.items():
        t = summary.targets.get(name)
        rates.add_row(name, f"{v:.4g}", "-" if t is None else f"{t:.4g}")
    con.print(rates)
