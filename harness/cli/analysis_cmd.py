"""`harness analyze`, `harness gate` and `harness runs ...`: analyse a per-unit table, gate a run, list runs.

A thin layer: options are parsed here, the work is `harness.analysis_run.run_analysis`,
`analysis.gate` and `harness.store`, tables come from `harness.cli.tables`, errors and JSON from
`harness.cli.shared` (exit codes: 0 done / SHIP, 1 NO_SHIP, 2 INCONCLUSIVE, 3 error with nothing stored).
Every `AnalysisConfig` setting has a flag; a gate file's `[analysis]` table sets those the user left
alone, and a flag that contradicts the gate is an error.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from analysis.config import BOOTSTRAP, CORRECTIONS, CUPED, RELATIVE_CI, SCOPES, TESTS
from harness.cli.shared import (
    EXIT_ERROR,
    DbOpt,
    JsonOpt,
    UserError,
    cli_errors,
    console,
    print_json,
    user_set,
)
from harness.cli.tables import (
    _missing,
    check_table,
    daily_table,
    detail_table,
    gate_table,
    heterogeneity_table,
    lift_table,
    sequential_table,
)

__all__ = ["EXIT_ERROR", "analyze_cmd", "gate_cmd", "register"]

runs_app = typer.Typer(help="Runs stored in the results database: list them, show one.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add this group's commands to the top-level app."""
    app.command("analyze")(analyze_cmd)
    app.command("gate")(gate_cmd)
    app.add_typer(runs_app, name="runs")


def _choices(values: tuple[Any, ...]) -> str:
    return ", ".join("none" if v is None else str(v) for v in values)


def _metrics(metric: list[str], ratio: list[str]) -> list[Any]:
    from analysis.metrics import parse_metric

    out = [parse_metric(m) for m in metric]
    for spec in ratio:
        body = spec.rpartition("=")[2]
        if body.count("/") != 1 or not all(p.strip() for p in body.split("/")):
            raise UserError(f"bad --ratio {spec!r}; write NUM/DEN or NAME=NUM/DEN, e.g. comment_watch_time_s/requests")
        out.append(parse_metric(spec))
    if not out:
        raise UserError("give at least one --metric COLUMN or --ratio NUM/DEN")
    return out


def _split(text: str | None) -> dict[str, float] | None:
    """--expected-split 'control=0.9,treatment=0.1' (shares or weights; normalised by AnalysisConfig)."""
    if text is None:
        return None
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        arm, eq, share = part.rpartition("=")
        try:
            if not eq or not arm:
                raise ValueError
            out[arm.strip()] = float(share)
        except ValueError:
            raise UserError(f"bad --expected-split {text!r}; write ARM=SHARE,ARM=SHARE, e.g. control=0.9,lsvcr=0.1") from None
    if not out:
        raise UserError("--expected-split is empty; write ARM=SHARE,ARM=SHARE, e.g. control=0.5,lsvcr=0.5")
    return out


_FLAG = re.compile(r"AnalysisConfig\.(\w+)=")
_CALL = re.compile(r"AnalysisConfig\((\w+)=([^)]*)\)")


def cli_wording(message: str) -> str:
    """Analysis messages name Python arguments; on the command line, name the flags instead."""
    message = _FLAG.sub(lambda m: f"--{m.group(1).replace('_', '-')} ", message)
    message = _CALL.sub(lambda m: f"--{m.group(1).replace('_', '-')} {m.group(2)}", message)
    return (message.replace("analyze(unit_col=...)", "--unit-col").replace("unit_col", "--unit-col")
            .replace("analyze(encoding=...)", "--encoding"))


# AnalysisConfig fields, each with its flag (the parameter of analyze_cmd of the same name)
_CONFIG_FIELDS = ("alpha", "test", "relative_ci", "cuped", "paired", "bootstrap", "n_boot", "seed", "expected_split",
                  "srm_alpha", "min_units", "winsorize", "correction", "correction_scope", "sequential_rho", "power",
                  "rel_min_control_se", "heavy_tail_factor", "bayes", "bayes_prior_sd")


def _config(ctx: typer.Context, values: dict[str, Any], gate: Any) -> Any:
    """AnalysisConfig from the flags; the gate's alpha and [analysis] fill what the user did not set."""
    from analysis.config import AnalysisConfig

    chosen = dict(values)
    wanted = dict(gate.analysis) if gate is not None else {}
    if gate is not None:
        wanted["alpha"] = gate.alpha
    for key, value in wanted.items():
        if user_set(ctx, key):
            given = chosen[key]
            if key == "expected_split" and given is not None and value is not None:
                given = {k: v / sum(given.values()) for k, v in given.items()}
                value = {k: v / sum(value.values()) for k, v in value.items()}
            if given != value:
                raise UserError(f"--{key.replace('_', '-')} {values[key]!r} contradicts the gate file, which sets "
                                f"{key} = {value!r}; drop the flag or change the gate")
        chosen[key] = value
    return AnalysisConfig(**chosen)


def analyze_cmd(
    ctx: typer.Context,
    table: Path = typer.Argument(..., help="Per-unit table: a .parquet or .csv file, one row per unit (or per session with --unit-col)."),
    arm_col: str = typer.Option(..., "--arm-col", help="Column holding each row's arm."),
    control: str = typer.Option(..., "--control", help="Arm value of the control group."),
    treatment: list[str] = typer.Option([], "--treatment", help="Treatment arm (repeatable; default: every other arm)."),
    metric: list[str] = typer.Option([], "--metric", "-m", help="Metric: COLUMN (mean per unit), NAME=COLUMN, or NUM/DEN. Repeatable."),
    ratio: list[str] = typer.Option([], "--ratio", help="Ratio metric NUM/DEN (or NAME=NUM/DEN): sum(NUM)/sum(DEN) per arm, delta-method CI. Repeatable."),
    covariate: list[str] = typer.Option([], "--covariate", help="Extra pre-period column for --cuped multi. Repeatable."),
    segment: list[str] = typer.Option([], "--segment", help="Column whose levels get their own lifts and a heterogeneity test. Repeatable."),
    unit_col: str | None = typer.Option(None, "--unit-col", help="Unit id column; rows are summed per unit and arm (required with --paired)."),
    by_day: str | None = typer.Option(None, "--by-day", help="Day column: also compute and store the cumulative lift after each day, with the always-valid band."),
    encoding: str = typer.Option("utf-8", "--encoding", help="Text encoding of a CSV table: utf-8, utf-16 or latin-1."),
    paired: bool = typer.Option(False, "--paired", help="Paired design: the same units measured under both arms (a replay)."),
    cuped: str = typer.Option("single", "--cuped", help=f"Variance reduction: {_choices(CUPED)} (single: each metric's own <col>_pre; multi: all *_pre plus --covariate)."),
    relative_ci: str = typer.Option("delta", "--relative-ci", help=f"Relative-lift CI: {_choices(RELATIVE_CI)}."),
    bootstrap: str = typer.Option("none", "--bootstrap", help=f"Bootstrap CI for the overall lifts: {_choices(BOOTSTRAP)}."),
    n_boot: int = typer.Option(2000, "--n-boot", help="Bootstrap resamples."),
    test: str = typer.Option("welch", "--test", help=f"Reference distribution: {_choices(TESTS)}."),
    correction: str = typer.Option("holm", "--correction", help=f"Multiple-testing correction: {_choices(CORRECTIONS)}."),
    correction_scope: str = typer.Option("metric", "--correction-scope", help=f"Correction family: {_choices(SCOPES)} (metric: a metric's segment levels; all: every lift)."),
    alpha: float = typer.Option(0.05, "--alpha", help="Two-sided significance level of every CI and test."),
    srm_alpha: float = typer.Option(0.001, "--srm-alpha", help="p-value below which the sample-ratio check fails."),
    expected_split: str | None = typer.Option(None, "--expected-split", help="Designed traffic split for the SRM check, e.g. control=0.9,lsvcr=0.1 (default: equal)."),
    min_units: int = typer.Option(100, "--min-units", help="Minimum units per arm (and segment level) for a lift to count."),
    winsorize: float | None = typer.Option(None, "--winsorize", help="Cap metric and covariate values at this pooled upper quantile, e.g. 0.999."),
    sequential_rho: float = typer.Option(0.01, "--sequential-rho", help="Mixture sd of the always-valid interval in per-unit sds; tightest near 2/rho^2 units per arm."),
    power: float = typer.Option(0.8, "--power", help="Target power of the reported minimum detectable effect."),
    rel_min_control_se: float = typer.Option(3.0, "--rel-min-control-se", help="Relative lift undefined when |control mean| < this many standard errors."),
    heavy_tail_factor: float = typer.Option(355.0, "--heavy-tail-factor", help="Heavy-tail check: warn when n < factor * skewness^2."),
    bayes: bool = typer.Option(False, "--bayes", help="Add the Bayesian view: chance to beat control, expected loss, credible interval."),
    bayes_prior_sd: float | None = typer.Option(None, "--bayes-prior-sd", help="Sd of a N(0, sd^2) prior on the relative lift (default: flat prior)."),
    gate: Path | None = typer.Option(None, "--gate", help="Launch-gate TOML file; sets the exit code 0/1/2 = SHIP/NO_SHIP/INCONCLUSIVE."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap (recorded with the run)."),
    db: Path | None = DbOpt,
    run_id: str | None = typer.Option(None, "--run-id", help="Id for the stored run (default: generated, e.g. ana-20250301-142501-3fa2)."),
    replace: bool = typer.Option(False, "--replace", help="Overwrite an existing run with the same --run-id."),
    store_units: bool = typer.Option(True, "--store-units/--no-store-units", help="Store the per-unit values in the results database."),
    notes: str | None = typer.Option(None, "--notes", help="Free text stored with the run."),
    as_json: bool = JsonOpt,
) -> None:
    """Analyse an A/B test table: lifts with CIs, CUPED, trust checks, optional launch gate; store it as a run.

    Exit codes: 0 = done (or SHIP with --gate), 1 = NO_SHIP, 2 = INCONCLUSIVE, 3 = error (nothing stored).
    """
    from analysis.errors import AnalysisError
    from analysis.gate import load_gate
    from harness.analysis_run import check_table_path, run_analysis
    from harness.store import ResultsStore

    values = dict(alpha=alpha, test=test, relative_ci=relative_ci, cuped=cuped, paired=paired,
                  bootstrap=None if bootstrap == "none" else bootstrap, n_boot=n_boot, seed=seed,
                  expected_split=None, srm_alpha=srm_alpha, min_units=min_units, winsorize=winsorize,
                  correction=correction, correction_scope=correction_scope, sequential_rho=sequential_rho,
                  power=power, rel_min_control_se=rel_min_control_se, heavy_tail_factor=heavy_tail_factor,
                  bayes=bayes, bayes_prior_sd=bayes_prior_sd)
    with cli_errors():
        try:
            check_table_path(table)
            metrics = _metrics(metric, ratio)
            values["expected_split"] = _split(expected_split)
            gate_cfg = load_gate(gate) if gate is not None else None
            config = _config(ctx, values, gate_cfg)
            with console(err=True).status(f"analysing {table.name} ...", spinner="dots"):
                done = run_analysis(
                    table, arm_col=arm_col, control=control, treatments=treatment, metrics=metrics,
                    segments=segment, unit_col=unit_col, covariates=covariate, config=config, gate=gate_cfg,
                    gate_path=gate, by_day=by_day, encoding=encoding, store=ResultsStore(db), run_id=run_id,
                    replace=replace, store_units=store_units, notes=notes,
                    command={"metrics": list(metric), "ratios": list(ratio)})
        except AnalysisError as exc:
            raise UserError(cli_wording(str(exc))) from None
    tables = done.result.to_dicts()
    decision = done.decision
    if as_json:
        doc: dict[str, Any] = {"run_id": done.run_id, "db": str(done.db), **tables, "gate": None}
        if decision is not None:
            doc["gate"] = decision.to_json()
        if by_day:
            doc["daily"] = [d.to_dict() for d in done.daily]
        print_json(doc)
    else:
        con = console()
        con.print(lift_table(tables["lifts"], f"lifts vs {control}: alpha={config.alpha:g}, {config.correction} "
                             f"by {config.correction_scope}"))
        for extra in (detail_table(tables["lifts"], tables["power"]), sequential_table(tables["lifts"]),
                      heterogeneity_table(tables["heterogeneity"])):
            if extra is not None:
                con.print(extra)
        if done.daily:
            con.print(daily_table([d.to_dict() for d in done.daily]))
        con.print(check_table([{**c, "message": cli_wording(c.get("message") or "")} for c in tables["checks"]]))
        if decision is not None:
            con.print(gate_table(decision.decision, [r.to_dict() for r in decision.rules], decision.arms))
        con.print(f"stored as run [bold]{done.run_id}[/bold] in {done.db}", highlight=False)
    if decision is not None:
        raise typer.Exit(decision.exit_code)


# ---------------------------------------------------------------------------------------------- gate
def gate_cmd(
    run_id: str = typer.Argument(..., help="Id of a stored, complete run (see `harness runs list`)."),
    config: Path = typer.Option(..., "--config", help="Launch-gate TOML file (format: analysis/gate_default.toml)."),
    treatment: str | None = typer.Option(None, "--treatment", help="Judge only this treatment arm (default: every arm; exit 0 only if all ship)."),
    db: Path | None = DbOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Apply a launch gate to a stored run, store the decision, print a reason per rule.

    Exit codes: 0 = SHIP, 1 = NO_SHIP, 2 = INCONCLUSIVE, 3 = error (unknown run, bad gate file, no results).
    """
    from analysis.errors import AnalysisError
    from analysis.gate import evaluate_gate, load_gate
    from harness.analysis_run import sha256
    from harness.store import ResultsStore
    from harness.store.experiment import load_experiment

    with cli_errors():
        try:
            gate_cfg = load_gate(config)
            store = ResultsStore(db)
            run = store.run(run_id)
            if run["status"] != "complete":
                raise UserError(f"run {run_id!r} is {run['status']}; only a complete run can be gated")
            decision = evaluate_gate(load_experiment(store, run_id), gate_cfg, treatment=treatment)
            store.set_gate(run_id, decision, gate_digest=sha256(config))
        except AnalysisError as exc:
            raise UserError(cli_wording(str(exc))) from None
    if as_json:
        print_json({"run_id": run_id, **decision.to_json()})
    else:
        console().print(gate_table(decision.decision, [r.to_dict() for r in decision.rules], decision.arms))
    raise typer.Exit(decision.exit_code)


# ---------------------------------------------------------------------------------------------- runs
@runs_app.command("list")
def runs_list_cmd(db: Path | None = DbOpt, as_json: bool = JsonOpt) -> None:
    """List the stored runs, oldest first, with status and gate decision."""
    from harness.store import ResultsStore

    with cli_errors():
        store = ResultsStore(db)
        runs = store.runs()
    if as_json:
        rows = runs.drop(columns=["config"]).to_dict("records")
        for r in rows:  # JSON text columns as objects, for machine readers
            r["checkpoint_digests"] = json.loads(r["checkpoint_digests"] or "{}")
            r["summary"] = json.loads(r["summary"]) if r["summary"] else {}
        print_json({"db": str(store.path), "runs": rows})
        return
    if runs.empty:
        console().print(f"no runs in {store.path}", highlight=False)
        return
    t = Table(title=f"runs in {store.path}", title_justify="left")
    for name in ("run_id", "created (UTC)", "kind", "control", "treatment", "status", "decision", "lifts"):
        t.add_column(name)
    for r in runs.to_dict("records"):
        t.add_row(r["run_id"], f"{r['created_at']:%Y-%m-%d %H:%M:%S}", r["kind"], str(r["control"] or ""),
                  str(r["treatment"] or ""), r["status"], str(r["decision"] or "-"), str(r["n_lifts"]))
    console().print(t)


@runs_app.command("show")
def runs_show_cmd(
    run_id: str = typer.Argument(..., help="Id of the run (see `harness runs list`)."),
    db: Path | None = DbOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Show one run: its inputs, lifts, trust checks and gate decision."""
    from harness.store import ResultsStore

    with cli_errors():
        store = ResultsStore(db)
        run = store.run(run_id)
        lifts = store.lifts(run_id).to_dict("records")
        checks = store.checks(run_id).to_dict("records")
        gate = store.gate_decisions(run_id).to_dict("records")
        extra = {"heterogeneity": store.heterogeneity(run_id).to_dict("records"),
                 "power": store.power(run_id).to_dict("records"),
                 "daily": store.daily_lifts(run_id).to_dict("records")}
    if as_json:
        print_json({"run": run, "lifts": lifts, "checks": checks, "gate": gate, **extra})
        return
    con = console()
    meta = Table(title=f"run {run_id}", title_justify="left", show_header=False)
    meta.add_column("field")
    meta.add_column("value")
    for key in ("kind", "status", "created_at", "control", "treatment", "seed", "data_fingerprint",
                "code_version", "notes", "error"):
        if not _missing(run.get(key)):
            meta.add_row(key, str(run[key]))
    meta.add_row("config", json.dumps(run["config"], sort_keys=True))
    if run["checkpoint_digests"]:
        meta.add_row("checkpoints", json.dumps(run["checkpoint_digests"], sort_keys=True))
    con.print(meta)
    if lifts:
        con.print(lift_table(lifts, "lifts"))
    if checks:
        con.print(check_table(checks))
    if extra["daily"]:
        con.print(daily_table(extra["daily"]))
    if gate:
        from analysis.gate import decisions_by_arm

        con.print(gate_table(gate[0]["decision"], gate, decisions_by_arm(gate)))
