"""`harness replay`: logged sessions through two (or more) recommenders, off-policy lifts, gate, one stored run.

The command parses options, makes the embedded default work (the default world and the shipped
checkpoints when nothing else is given), and prints; `harness.replay.run.run_replay` does the work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from harness.cli.shared import DbOpt, JsonOpt, UserError, cli_errors, console, print_json
from harness.cli.tables import _table, fit, gate_table, num

DEFAULT_DATA = Path("data/world")
SHIPPED = Path(__file__).resolve().parents[2] / "shipped"


def register(app: typer.Typer) -> None:
    app.command("replay")(replay_cmd)


def _progress(enabled: bool):
    from tqdm import tqdm

    def make(label: str, total: int):
        if not enabled or total == 0:
            return lambda n: None
        bar = tqdm(total=total, desc=label, unit="", leave=False, dynamic_ncols=True, mininterval=0.5)

        def tick(n: int) -> None:
            bar.update(n)
            if bar.n >= bar.total:
                bar.close()

        return tick

    return make


def _traffic(text: str | None, n_arms: int) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        parts = tuple(float(x) for x in text.split("/"))
    except ValueError:
        raise UserError(f"--traffic {text!r}: give one share per arm separated by '/', e.g. 50/50") from None
    if len(parts) != n_arms or any(p <= 0 for p in parts):
        raise UserError(f"--traffic {text!r}: needs {n_arms} positive shares (control first), e.g. "
                        f"{'/'.join(['50'] * n_arms)}")
    return parts


def _default_data(data: Path | None, seed: int) -> Path:
    if data is not None:
        return data
    if not DEFAULT_DATA.exists():
        from harness.simulate.config import WorldConfig
        from harness.simulate.generate import simulate

        console(err=True).print(f"creating the default synthetic world in {DEFAULT_DATA} (seed 0) ...")
        simulate(WorldConfig(seed=0), DEFAULT_DATA, progress=True)
    return DEFAULT_DATA


def _checkpoints(checkpoints: Path | None) -> Path:
    """--checkpoints, else the shipped ones (trained on the default world's pre-period)."""
    return checkpoints if checkpoints is not None else SHIPPED


def _engine(name: str, address: str | None, workers: int, threads: int):
    """The batch engine of --engine (None: the local one); engine options stay out of the run's config, so a run
    started with one engine resumes with the other (the results are the same)."""
    if name not in ("local", "ray"):
        raise UserError(f"--engine {name!r}: choose local or ray")
    if name == "local":
        if address is not None:
            raise UserError("--ray-address needs --engine ray")
        return None
    from harness.replay.ray_engine import RayEngine, RayEngineError

    try:
        return RayEngine(address=address, workers=workers, threads_per_worker=threads)
    except RayEngineError as exc:
        raise UserError(str(exc)) from None


def replay_cmd(
    control: str = typer.Option("base", "--control", help="Control policy: a model name (base, lsvcr, ...), a "
                                                           "checkpoint path, or 'logging' (the logged policy)."),
    treatment: list[str] = typer.Option(["lsvcr"], "--treatment", help="Treatment policy; repeat for A/B/n."),
    data: Path | None = typer.Option(None, "--data", help="Logs (Parquet folder or .duckdb) [default: data/world, "
                                                          "the default synthetic world, created if missing]."),
    checkpoints: Path | None = typer.Option(None, "--checkpoints", help="Folder of checkpoint folders [default: the "
                                            "shipped ones, trained on the default world's pre-period]."),
    window_start: str | None = typer.Option(None, "--window-start", help="Replay requests from this time (ISO) "
                                            "[default: the synthetic world's experiment start]."),
    window_end: str | None = typer.Option(None, "--window-end", help="... and before this time [default: all]."),
    temperature: float | None = typer.Option(None, "--temperature", min=1e-6,
                                             help="Target = Plackett-Luce over exp(score / T) [default: "
                                                  "deterministic top-k, the production case]."),
    estimator: str = typer.Option("cascade_dr", "--estimator",
                                  help="Estimator behind the lifts and the gate: cascade_dr, rips, iips, pbm, dm "
                                       "(docs/replay.md)."),
    design: str = typer.Option("paired", "--design", help="paired (every user under every policy) or split "
                                                          "(users assigned by a salted hash, as online)."),
    traffic: str | None = typer.Option(None, "--traffic", help="split: shares per arm, control first, e.g. 50/50."),
    salt: str = typer.Option("replay", "--salt", help="split: the assignment salt."),
    clip: float | None = typer.Option(None, "--clip", min=1e-9, help="Cap importance weights at this value "
                                                                     "(the clipped mass is reported)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the reward model, Monte Carlo and the analysis."),
    truth: bool = typer.Option(True, "--truth/--no-truth", help="Compute the true lifts (synthetic logs only)."),
    allow_overlap: bool = typer.Option(False, "--allow-overlap", help="Run even if a model was trained on the "
                                                                      "window (the run is marked)."),
    gate: Path | None = typer.Option(None, "--gate", help="Launch-gate TOML; makes the exit code the decision "
                                                          "[default: analysis/gate_default.toml, exit 0]."),
    power: float = typer.Option(0.8, "--power", min=0.01, max=0.99, help="Test plan: power of the online test "
                                                                        "to detect the estimated lift."),
    users_per_day: float | None = typer.Option(None, "--users-per-day", min=1e-9,
                                               help="Test plan: users entering the online test per day, both arms "
                                                    "[default: the logs' own rate]."),
    batch_users: int = typer.Option(1000, "--batch-users", min=1, help="Users per batch: the unit of work, of "
                                                                       "storage and of --resume; bounds memory."),
    run_id: str | None = typer.Option(None, "--run-id", help="Id to store the run under [default: generated]."),
    resume: str | None = typer.Option(None, "--resume", metavar="RUN_ID",
                                      help="Resume an interrupted run (same options): its stored batches are kept, "
                                           "the rest computed; the results equal an uninterrupted run's."),
    replace: bool = typer.Option(False, "--replace", help="Replace a stored run with the same id."),
    db: Path | None = DbOpt,
    as_json: bool = JsonOpt,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars on stderr."),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="Reuse scores, the reward model and the truth of an "
                                                                "earlier run on the same logs and checkpoints, and "
                                                                "the window split by user batch "
                                                                "(.harness-cache/replay; --no-cache: a temporary "
                                                                "split, removed after the run)."),
    engine: str = typer.Option("local", "--engine", help="Where the user batches run: local (this process) or ray "
                                                         "(a pool of Ray actors; docs/scale.md). Same results."),
    ray_address: str | None = typer.Option(None, "--ray-address", help="--engine ray: connect to this Ray cluster "
                                           "(never shut down) [default: start a local runtime for this run]."),
    workers: int = typer.Option(2, "--workers", min=1, help="--engine ray: Ray actors, each with its own models."),
    threads_per_worker: int = typer.Option(1, "--threads-per-worker", min=1,
                                           help="--engine ray: torch threads (and CPUs reserved) per actor."),
) -> None:
    """Replay logged sessions through two policies: off-policy estimates of watch time, video interactions,
    comment watch time and comment interactions, paired lifts with CIs, the true lift beside each
    estimate on synthetic logs, and the launch gate; stored as one run.

    Exit codes: 0 = done (or SHIP with --gate), 1 = NO_SHIP, 2 = INCONCLUSIVE, 3 = error (nothing stored).
    """
    with cli_errors():
        from analysis.gate import load_gate
        from harness.cli.logs_cmd import log_error
        from harness.logs.store import LogFileError, LogValidationError
        from harness.replay.cache import DEFAULT_DIR as DEFAULT_CACHE
        from harness.replay.data import ReplayDataError
        from harness.replay.engine import ESTIMATORS
        from harness.replay.run import ReplayConfig, ReplayError, run_replay
        from harness.store import ResultsStore

        if estimator not in ESTIMATORS:
            raise UserError(f"--estimator {estimator!r}: choose one of {', '.join(ESTIMATORS)}")
        if design not in ("paired", "split"):
            raise UserError(f"--design {design!r}: choose paired or split")
        if traffic is not None and design != "split":
            raise UserError("--traffic applies to --design split only")
        if resume is not None and (run_id is not None and run_id != resume or replace):
            raise UserError("--resume RUN_ID continues that run: drop --run-id and --replace")
        names = [control, *treatment]
        batch_engine = _engine(engine, ray_address, workers, threads_per_worker)
        path = _default_data(data, seed)
        default_gate = Path(__file__).resolve().parents[2] / "analysis" / "gate_default.toml"
        gate_cfg = load_gate(gate if gate is not None else default_gate)
        cfg = ReplayConfig(data=path, control=control, treatments=tuple(treatment),
                           checkpoints=_checkpoints(checkpoints), window_start=window_start,
                           window_end=window_end, temperature=temperature, design=design,
                           traffic=_traffic(traffic, len(names)), salt=salt, clip=clip, seed=seed, truth=truth,
                           allow_overlap=allow_overlap, default_estimator=estimator, power=power,
                           users_per_day=users_per_day, batch_users=batch_users,
                           cache_dir=DEFAULT_CACHE if cache else None)
        err = console(err=True)
        try:
            out = run_replay(cfg, store=ResultsStore(db), gate=gate_cfg, gate_path=gate or default_gate,
                             run_id=resume or run_id, replace=replace, resume=resume is not None,
                             progress=_progress(progress and not as_json),
                             log=lambda s: err.print(s, highlight=False) if not as_json else None,
                             engine=batch_engine)
        except (ReplayError, ReplayDataError) as exc:
            raise UserError(str(exc)) from None
        except (LogValidationError, LogFileError) as exc:
            raise log_error(exc) from None
    if as_json:
        print_json({"run_id": out.run_id, "db": str(out.db), "config": cfg.to_dict(),
                    "lifts": out.lifts.to_dict("records"), "estimates": out.estimates.to_dict("records"),
                    "gate": out.decision.to_json() if out.decision else None, "warnings": out.warnings,
                    "notes": out.notes, "test_plan": out.test_plan.to_dict("records"),
                    "resumed_batches": out.resumed_batches, "reward_model": out.fit_report,
                    "timings_s": out.timings})
    else:
        _print(out, cfg)
    if gate is not None and out.decision is not None:
        raise typer.Exit(out.decision.exit_code)


def _lift_ci(r) -> str:
    """'-25.6% [-42.6, -8.5]' (wraps between words in a narrow column)."""
    if r.rel_diff is None or r.rel_diff != r.rel_diff:
        return "-"
    ci = _ci_pct(r.rel_ci_low, r.rel_ci_high)
    return f"{100 * float(r.rel_diff):+.1f}% {ci}" if ci != "-" else f"{100 * float(r.rel_diff):+.1f}%"


def _truth_cell(r) -> str:
    t = getattr(r, "true_rel_diff", None)
    if t is None or t != t:
        return "-"
    if r.rel_ci_low is None or r.rel_ci_low != r.rel_ci_low:
        return f"{100 * t:+.1f}%"
    return f"{100 * t:+.1f}% {'in' if r.rel_ci_low <= t <= r.rel_ci_high else 'OUT'}"


def _ci_pct(low: Any, high: Any) -> str:
    if low is None or high is None or low != low or high != high:
        return "-"
    return f"[{100 * float(low):+.1f}, {100 * float(high):+.1f}]"


def _print(out, cfg) -> None:
    con = console()
    for w in out.warnings:
        con.print(f"[bold red]WARNING[/bold red] {w}", highlight=False)
    lifts = out.lifts
    d = lifts[lifts["is_default"]]
    target = "top-k" if cfg.temperature is None else f"Plackett-Luce T={cfg.temperature}"
    for t in cfg.arms[1:]:
        tab = _table(f"Replay {cfg.control} -> {t}: {cfg.default_estimator}, {target}, {cfg.design} by user",
                     [("metric", "left"), ("control", "right"), ("treat.", "right"),
                      ("lift [95% CI]", "right"), ("p", "right"), ("true lift", "right"), ("verdict", "left")])
        for r in d[d["treatment"] == t].itertuples():
            low_ok = r.rel_ci_low is not None and r.rel_ci_low == r.rel_ci_low
            verdict = ("up" if low_ok and r.rel_ci_low > 0 else
                       "down" if low_ok and r.rel_ci_high < 0 else "flat" if low_ok else "n/a")
            tab.add_row(r.metric, num(r.control_value), num(r.treatment_value), _lift_ci(r), num(r.p_value, ".2g"),
                        _truth_cell(r), verdict)
        con.print(fit(tab, keep_whole=8))
    est = out.estimates
    tab = _table("Every estimator: relative lift vs the truth (in/OUT: the truth inside the 95% CI), and the "
                 "treatment's weight ESS", [("metric", "left"), ("estimator", "left"), ("lift [95% CI]", "right"),
                                            ("true lift", "right"), ("ESS", "right")])
    for r in lifts.itertuples():
        ess = est[(est["arm"] == r.treatment) & (est["metric"] == r.metric) & (est["estimator"] == r.estimator)]
        e = ess["ess"].iloc[0] if len(ess) else None
        tab.add_row(r.metric, r.estimator + ("*" if r.is_default else ""), _lift_ci(r), _truth_cell(r),
                    num(e, ".0f"))
    con.print(fit(tab, keep_whole=8))
    con.print("* the estimator behind the lifts and the gate (docs/replay.md says why)", highlight=False)
    for note in out.notes:
        con.print(f"[yellow]note[/yellow] {note}", highlight=False)
    _print_plan(con, out.test_plan)
    if out.decision is not None:
        con.print(gate_table(out.decision.decision, [r.to_dict() for r in out.decision.rules], out.decision.arms))
    con.print(f"stored as run {out.run_id} in {out.db} ({out.timings.get('total', 0):.0f} s)", highlight=False)


def _print_plan(con, plan) -> None:
    """The online test the estimate calls for: users per arm and days, without and with CUPED."""
    if plan is None or plan.empty:
        return
    first = plan.iloc[0]
    for t, g in plan.groupby("treatment", sort=False):
        tab = _table(f"Test plan for {t}: an online A/B test to detect the estimated lift at "
                     f"{100 * first['power']:.0f}% power (alpha {first['alpha']:g}, "
                     f"{num(first['users_per_day'], ',.0f')} users/day)",
                     [("metric", "left"), ("lift", "right"), ("users/arm", "right"), ("days", "right"),
                      ("with CUPED", "right"), ("days", "right")])
        for m, h in g.groupby("metric", sort=False):
            plain, cup = h[~h["cuped"]].iloc[0], h[h["cuped"]].iloc[0]
            lift = "-" if plain["lift_rel"] is None or plain["lift_rel"] != plain["lift_rel"] else \
                f"{100 * plain['lift_rel']:+.2f}%"
            tab.add_row(m, lift, num(plain["users_per_arm"], ",.0f"), num(plain["days"], ",.0f"),
                        num(cup["users_per_arm"], ",.0f"), num(cup["days"], ",.0f"))
        con.print(fit(tab, keep_whole=8))
    for n in dict.fromkeys(n for n in plan["note"] if isinstance(n, str)):
        con.print(f"[yellow]plan[/yellow] {n}", highlight=False)
