"""`harness analyze`, `harness gate` and `harness runs ...`: analyse a per-unit table, gate a run, list runs.

A thin layer over `analysis.experiment.analyze`, `analysis.gate` and `harness.store`. Every number
printed comes from the analysis layer's result fields (the same names as `--json` and the results
database). Exit codes: with a gate 0 = SHIP, 1 = NO_SHIP, 2 = INCONCLUSIVE; 0 without one; 3 = a user
error (missing file, unknown column or arm, bad spec, unknown run, bad gate file), in which case nothing
is written to the database.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

EXIT_ERROR = 3
TABLE_SUFFIXES = (".parquet", ".csv")

runs_app = typer.Typer(help="Runs stored in the results database: list them, show one.", no_args_is_help=True)


class Cuped(StrEnum):
    none = "none"
    single = "single"
    multi = "multi"


class RelativeCI(StrEnum):
    delta = "delta"
    log = "log"
    fieller = "fieller"


class Bootstrap(StrEnum):
    none = "none"
    percentile = "percentile"
    bca = "bca"
    poisson = "poisson"


class Correction(StrEnum):
    holm = "holm"
    bh = "bh"
    none = "none"


class RefDist(StrEnum):
    welch = "welch"
    z = "z"


def register(app: typer.Typer) -> None:
    """Add this group's commands to the top-level app."""
    app.command("analyze")(analyze_cmd)
    app.command("gate")(gate_cmd)
    app.add_typer(runs_app, name="runs")


# ---------------------------------------------------------------------------------------------- helpers
def _console(err: bool = False) -> Console:
    # Tables wrap to the terminal; messages on stderr stay one unbroken line (greppable, copyable).
    return Console(stderr=err, soft_wrap=err)


class UserError(Exception):
    """A mistake in the command line or its inputs: printed without a traceback, exit code 3."""


@contextmanager
def _user_errors() -> Iterator[None]:
    """Errors a user can fix become one red line on stderr and exit code 3."""
    from analysis.errors import AnalysisError
    from harness.store import StoreError

    try:
        yield
    except (UserError, AnalysisError, StoreError, FileNotFoundError) as exc:
        _console(err=True).print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(EXIT_ERROR) from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _jsonable(value: Any) -> Any:
    """JSON-safe: NaN/inf/NA -> null, numpy scalars -> Python, datetimes -> ISO text."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is not None and not isinstance(value, str | int | float | bool):
        try:
            import pandas as pd

            if pd.isna(value):
                return None
        except (TypeError, ValueError):
            pass
        return str(value)
    return value


def _print_json(obj: Any) -> None:
    typer.echo(json.dumps(_jsonable(obj), allow_nan=False))


def _missing(v: Any) -> bool:
    if v is None:
        return True
    try:
        return bool(isinstance(v, float) and math.isnan(v))
    except TypeError:
        return False


def _num(v: Any, fmt: str = ".4g") -> str:
    if _missing(v):
        return "-"
    return format(float(v), fmt) if isinstance(v, int | float) else str(v)


def _interval(est: Any, low: Any, high: Any, fmt: str) -> str:
    if _missing(est):
        return "-"
    ci = f" [{_num(low, fmt)}, {_num(high, fmt)}]" if not (_missing(low) or _missing(high)) else ""
    return f"{_num(est, fmt)}{ci}"


def lift_table(rows: Sequence[dict[str, Any]], title: str) -> Table:
    """Rich table of lift rows (LiftResult fields, from `to_dict()` or the results database)."""
    methods = sorted({str(r.get("relative_ci_method")) for r in rows if not _missing(r.get("relative_ci_method"))})
    t = Table(title=title, title_justify="left")
    for name, justify in (("metric", "left"), ("segment", "left"), ("n ctrl/trt", "right"),
                          ("control", "right"), ("treatment", "right"), ("abs lift [CI]", "right"),
                          (f"rel lift [CI] ({'/'.join(methods) or '-'})", "right"), ("p", "right"),
                          ("adj p", "right"), ("CUPED VR", "right")):
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        seg = "all" if r.get("segment") in (None, "all") else f"{r['segment']}={r.get('segment_value')}"
        rel = _interval(r.get("rel_diff"), r.get("rel_ci_low"), r.get("rel_ci_high"), "+.2%")
        if rel == "-" and r.get("rel_undefined_reason"):
            rel = f"- ({r['rel_undefined_reason']})"
        t.add_row(
            str(r["metric"]), seg, f"{r.get('n_control')}/{r.get('n_treatment')}",
            _num(r.get("control_mean")), _num(r.get("treatment_mean")),
            _interval(r.get("abs_diff"), r.get("abs_ci_low"), r.get("abs_ci_high"), "+.4g"), rel,
            _num(r.get("p_value"), ".3g"), _num(r.get("p_value_adjusted"), ".3g"),
            _num(r.get("variance_reduction"), ".1%"),
        )
    return t


def check_table(rows: Sequence[dict[str, Any]]) -> Table:
    t = Table(title="trust checks", title_justify="left")
    for name in ("check", "metric", "segment", "status", "statistic", "p", "message"):
        t.add_column(name)
    for r in rows:
        status = r.get("status") or ("pass" if r.get("passed") else "fail")
        colour = {"pass": "green", "warn": "yellow"}.get(str(status), "red")
        t.add_row(str(r["check"]), str(r.get("metric") or ""), str(r.get("segment") or ""),
                  f"[{colour}]{status}[/{colour}]", _num(r.get("statistic")), _num(r.get("p_value"), ".3g"),
                  str(r.get("message") or ""))
    return t


def gate_table(decision: str, rules: Sequence[dict[str, Any]]) -> Table:
    colour = {"SHIP": "green", "NO_SHIP": "red"}.get(decision, "yellow")
    t = Table(title=f"launch gate: [bold {colour}]{decision}[/bold {colour}]", title_justify="left")
    for name in ("rule", "metric", "outcome", "reason"):
        t.add_column(name)
    for r in rules:
        if _missing(r.get("rule")):
            continue
        outcome = r.get("outcome") or ("pass" if r.get("passed") else "fail")
        t.add_row(str(r["rule"]), str(r.get("metric") or ""), str(outcome), str(r.get("reason") or ""))
    return t


# ---------------------------------------------------------------------------------------------- analyze
def _table_path(table: Path) -> Path:
    if not table.exists():
        raise UserError(f"table {str(table)!r} not found; pass a .parquet or .csv file with one row per unit")
    if not table.is_file() or table.suffix.lower() not in TABLE_SUFFIXES:
        raise UserError(f"table {str(table)!r} must be a .parquet or .csv file")
    return table


def _metrics(metric: Sequence[str], ratio: Sequence[str]) -> list[Any]:
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


def _unit_frame(path: Path, result: Any, metrics: Sequence[Any], *, arm_col: str, unit_col: str | None,
                segments: Sequence[str], covariates: Sequence[str]) -> Any:
    """The per-unit values behind the analysis, for `unit_metrics`: one row per (unit, arm).

    Session-level rows are summed to the unit, as the analysis does; without a unit column the row
    number is the unit id. Only analysed arms and the columns the analysis read are kept.
    """
    import duckdb

    from analysis.metrics import PRE_SUFFIX

    con = duckdb.connect()
    try:
        reader = "read_parquet" if path.suffix.lower() == ".parquet" else "read_csv_auto"
        literal = "'" + str(path).replace("'", "''") + "'"  # DDL cannot take a prepared parameter
        con.execute(f"CREATE VIEW src AS SELECT * FROM {reader}({literal})")
        have = [r[0] for r in con.execute("DESCRIBE src").fetchall()]
        wanted = dict.fromkeys(c for m in metrics for c in m.value_columns)
        wanted.update(dict.fromkeys(c + PRE_SUFFIX for c in list(wanted) if c + PRE_SUFFIX in have))
        wanted.update(dict.fromkeys(c for c in covariates if c in have))
        values = [c for c in wanted if c not in segments]

        def q(name: str) -> str:
            return '"' + name.replace('"', '""') + '"'

        arms = [result.control, *result.treatments]
        where = f"{q(arm_col)}::VARCHAR IN ({', '.join('?' for _ in arms)})"
        if unit_col:
            cols = ", ".join([f"sum({q(c)})::DOUBLE AS {q(c)}" for c in values]
                             + [f"any_value({q(s)})::VARCHAR AS {q(s)}" for s in segments])
            sql = (f"SELECT {q(unit_col)}::VARCHAR AS unit_id, {q(arm_col)}::VARCHAR AS arm, {cols} FROM src "
                   f"WHERE {where} GROUP BY ALL ORDER BY arm, unit_id")
        else:
            cols = ", ".join([f"{q(c)}::DOUBLE AS {q(c)}" for c in values]
                             + [f"{q(s)}::VARCHAR AS {q(s)}" for s in segments])
            sql = (f"SELECT (row_number() OVER () - 1)::VARCHAR AS unit_id, {q(arm_col)}::VARCHAR AS arm, "
                   f"{cols} FROM src WHERE {where}")
        return con.execute(sql, arms).df()
    finally:
        con.close()


DbOpt = typer.Option(None, "--db", envvar="HARNESS_DB",
                     help="Results database file (default: $HARNESS_DB, else ./harness.duckdb).")
JsonOpt = typer.Option(False, "--json", help="Print one JSON document instead of tables.")


def analyze_cmd(
    table: Path = typer.Argument(..., help="Per-unit table: a .parquet or .csv file, one row per unit (or per session with --unit-col)."),
    arm_col: str = typer.Option(..., "--arm-col", help="Column holding each row's arm."),
    control: str = typer.Option(..., "--control", help="Arm value of the control group."),
    treatment: str | None = typer.Option(None, "--treatment", help="Arm value of the treatment (default: every other arm)."),
    metric: list[str] = typer.Option([], "--metric", "-m", help="Metric: COLUMN (mean per unit), NAME=COLUMN, or NUM/DEN. Repeatable."),
    ratio: list[str] = typer.Option([], "--ratio", help="Ratio metric NUM/DEN (or NAME=NUM/DEN): sum(NUM)/sum(DEN) per arm, delta-method CI. Repeatable."),
    covariate: list[str] = typer.Option([], "--covariate", help="Extra pre-period column for --cuped multi. Repeatable."),
    cuped: Cuped = typer.Option(Cuped.single, "--cuped", help="Variance reduction: none, single (each metric's own <col>_pre) or multi (all *_pre plus --covariate)."),
    segment: list[str] = typer.Option([], "--segment", help="Column whose levels get their own lifts and a heterogeneity test. Repeatable."),
    unit_col: str | None = typer.Option(None, "--unit-col", help="Unit id column; rows are summed per unit and arm (required with --paired)."),
    paired: bool = typer.Option(False, "--paired", help="Paired design: the same units measured under both arms (a replay)."),
    relative_ci: RelativeCI = typer.Option(RelativeCI.delta, "--relative-ci", help="Relative-lift CI: delta (symmetric), log (delta on log ratio) or fieller."),
    bootstrap: Bootstrap = typer.Option(Bootstrap.none, "--bootstrap", help="Bootstrap CI for the overall lifts: none, percentile, bca or poisson."),
    n_boot: int = typer.Option(2000, "--n-boot", help="Bootstrap resamples."),
    test: RefDist = typer.Option(RefDist.welch, "--test", help="Reference distribution: welch (t) or z."),
    correction: Correction = typer.Option(Correction.holm, "--correction", help="Multiple-testing correction across segment levels: holm, bh or none."),
    alpha: float = typer.Option(0.05, "--alpha", help="Two-sided significance level of every CI and test."),
    min_units: int = typer.Option(100, "--min-units", help="Minimum units per arm (and segment level) for a lift to count."),
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
    from analysis.config import AnalysisConfig
    from analysis.experiment import analyze
    from analysis.gate import evaluate_gate, load_gate
    from harness.store import ResultsStore, UnknownRunError
    from harness.store.experiment import write_experiment

    with _user_errors():
        path = _table_path(table)
        metrics = _metrics(metric, ratio)
        gate_cfg = load_gate(gate) if gate is not None else None
        config = AnalysisConfig(
            alpha=alpha, test=test.value, relative_ci=relative_ci.value, cuped=cuped.value, paired=paired,
            bootstrap=None if bootstrap is Bootstrap.none else bootstrap.value, n_boot=n_boot, seed=seed,
            correction=correction.value, min_units=min_units,
        )
        store = ResultsStore(db)
        if run_id is not None and not replace:  # fail before the (possibly long) analysis
            with suppress(UnknownRunError):
                if store.run(run_id)["status"] == "complete":
                    raise UserError(f"run {run_id!r} already exists in {store.path}; pass --replace to overwrite it")
        with _console(err=True).status(f"analysing {path.name} ...", spinner="dots"):
            result = analyze(path, arm_col=arm_col, control=control, treatment=treatment, metrics=metrics,
                             segments=segment, unit_col=unit_col, covariates=covariate, config=config)
            decision = evaluate_gate(result, gate_cfg) if gate_cfg is not None else None
            units = (_unit_frame(path, result, metrics, arm_col=arm_col, unit_col=unit_col, segments=segment,
                                 covariates=covariate) if store_units else None)
        run_config = {
            "command": "analyze", "table": str(path.resolve()), "arm_col": arm_col, "control": control,
            "treatment": treatment, "metrics": list(metric), "ratios": list(ratio), "segments": list(segment),
            "covariates": list(covariate), "unit_col": unit_col, "analysis": config.to_dict(),
            "gate": str(gate.resolve()) if gate is not None else None,
        }
        rid = store.create_run(kind="analyze", control=control, treatment=",".join(result.treatments),
                               config=run_config, seed=seed, data_fingerprint=_sha256(path), run_id=run_id,
                               replace=replace, notes=notes)
        with store.recording(rid):
            write_experiment(store, rid, result, unit_metrics=units, gate=decision,
                             gate_digest=_sha256(gate) if gate is not None else None)

    tables = result.to_dicts()
    if as_json:
        doc: dict[str, Any] = {"run_id": rid, "db": str(store.path), **tables, "gate": None}
        if decision is not None:
            doc["gate"] = {"decision": decision.decision, "exit_code": decision.exit_code,
                           "reason": decision.reason, "rules": [r.to_dict() for r in decision.rules]}
        _print_json(doc)
    else:
        con = _console()
        con.print(lift_table(tables["lifts"], f"lifts: {', '.join(result.treatments)} vs {control} "
                             f"(alpha={alpha:g}, {correction.value} correction)"))
        con.print(check_table(tables["checks"]))
        if decision is not None:
            con.print(gate_table(decision.decision, [r.to_dict() for r in decision.rules]))
        con.print(f"stored as run [bold]{rid}[/bold] in {store.path}", highlight=False)
    if decision is not None:
        raise typer.Exit(decision.exit_code)


# ---------------------------------------------------------------------------------------------- gate
def gate_cmd(
    run_id: str = typer.Argument(..., help="Id of a stored, complete run (see `harness runs list`)."),
    config: Path = typer.Option(..., "--config", help="Launch-gate TOML file (format: analysis/gate_default.toml)."),
    db: Path | None = DbOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Apply a launch gate to a stored run, store the decision, print a reason per rule.

    Exit codes: 0 = SHIP, 1 = NO_SHIP, 2 = INCONCLUSIVE, 3 = error (unknown run, bad gate file, no results).
    """
    from analysis.gate import evaluate_gate, load_gate
    from harness.store import ResultsStore
    from harness.store.experiment import load_experiment

    with _user_errors():
        gate_cfg = load_gate(config)
        store = ResultsStore(db)
        run = store.run(run_id)
        if run["status"] != "complete":
            raise UserError(f"run {run_id!r} is {run['status']}; only a complete run can be gated")
        decision = evaluate_gate(load_experiment(store, run_id), gate_cfg)
        store.set_gate(run_id, decision, gate_digest=_sha256(config))
    if as_json:
        _print_json({"run_id": run_id, "decision": decision.decision, "exit_code": decision.exit_code,
                     "reason": decision.reason, "rules": [r.to_dict() for r in decision.rules]})
    else:
        _console().print(gate_table(decision.decision, [r.to_dict() for r in decision.rules]))
    raise typer.Exit(decision.exit_code)


# ---------------------------------------------------------------------------------------------- runs
@runs_app.command("list")
def runs_list_cmd(db: Path | None = DbOpt, as_json: bool = JsonOpt) -> None:
    """List the stored runs, oldest first, with status and gate decision."""
    from harness.store import ResultsStore

    with _user_errors():
        store = ResultsStore(db)
        runs = store.runs()
    if as_json:
        rows = runs.drop(columns=["config"]).to_dict("records")
        for r in rows:  # JSON text columns as objects, for machine readers
            r["checkpoint_digests"] = json.loads(r["checkpoint_digests"] or "{}")
            r["summary"] = json.loads(r["summary"]) if r["summary"] else {}
        _print_json({"db": str(store.path), "runs": rows})
        return
    if runs.empty:
        _console().print(f"no runs in {store.path}", highlight=False)
        return
    t = Table(title=f"runs in {store.path}", title_justify="left")
    for name in ("run_id", "created (UTC)", "kind", "control", "treatment", "status", "decision", "lifts"):
        t.add_column(name)
    for r in runs.to_dict("records"):
        t.add_row(r["run_id"], f"{r['created_at']:%Y-%m-%d %H:%M:%S}", r["kind"], str(r["control"] or ""),
                  str(r["treatment"] or ""), r["status"], str(r["decision"] or "-"), str(r["n_lifts"]))
    _console().print(t)


@runs_app.command("show")
def runs_show_cmd(
    run_id: str = typer.Argument(..., help="Id of the run (see `harness runs list`)."),
    db: Path | None = DbOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Show one run: its inputs, lifts, trust checks and gate decision."""
    from harness.store import ResultsStore

    with _user_errors():
        store = ResultsStore(db)
        run = store.run(run_id)
        lifts = store.lifts(run_id).to_dict("records")
        checks = store.checks(run_id).to_dict("records")
        gate = store.gate_decisions(run_id).to_dict("records")
        extra = {"heterogeneity": store.heterogeneity(run_id).to_dict("records"),
                 "power": store.power(run_id).to_dict("records")}
    if as_json:
        _print_json({"run": run, "lifts": lifts, "checks": checks, "gate": gate, **extra})
        return
    con = _console()
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
    if gate:
        con.print(gate_table(gate[0]["decision"], gate))
