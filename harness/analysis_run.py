"""Analyse a per-unit table and store it as a run: the API behind `harness analyze`.

The CLI only parses and prints; the replay and the dashboard call the same function. Order matters:
everything that can fail cheaply (the table, the metrics, the gate, the database) is checked before
the analysis, and the run and all its results are written in ONE transaction after it, so a failed
command leaves neither a lost analysis nor a half-written or `failed` run behind.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.config import AnalysisConfig
from analysis.errors import AnalysisError
from analysis.experiment import analyze
from analysis.gate import GateConfig, GateDecision, evaluate_gate
from analysis.metrics import PRE_SUFFIX, Metric
from analysis.over_time import analyze_by_day
from analysis.results import DailyLift, ExperimentResult
from analysis.units import unit_values
from harness.store import ResultsStore, RunExistsError, UnknownRunError
from harness.store.experiment import experiment_summary

TABLE_SUFFIXES = (".parquet", ".csv")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class AnalysisRun:
    """What `run_analysis` computed and stored."""

    run_id: str
    db: Path
    result: ExperimentResult
    decision: GateDecision | None
    daily: list[DailyLift] = field(default_factory=list)


def check_table_path(table: Path) -> Path:
    if not table.exists():
        raise AnalysisError(f"table {str(table)!r} not found; pass a .parquet or .csv file with one row per unit")
    if not table.is_file() or table.suffix.lower() not in TABLE_SUFFIXES:
        raise AnalysisError(f"table {str(table)!r} must be a .parquet or .csv file")
    return table


def run_analysis(
    table: Path,
    *,
    arm_col: str,
    control: str,
    treatments: Sequence[str] = (),
    metrics: Sequence[Metric],
    segments: Sequence[str] = (),
    unit_col: str | None = None,
    covariates: Sequence[str] = (),
    config: AnalysisConfig,
    gate: GateConfig | None = None,
    gate_path: Path | None = None,
    by_day: str | None = None,
    encoding: str = "utf-8",
    store: ResultsStore,
    run_id: str | None = None,
    replace: bool = False,
    store_units: bool = True,
    notes: str | None = None,
    command: dict[str, Any] | None = None,
) -> AnalysisRun:
    """Analyse `table`, apply `gate`, and store everything as one `analyze` run (one transaction)."""
    path = check_table_path(table)
    store.check_writable()
    if run_id is not None and not replace:  # fail before the (possibly long) analysis
        try:
            if store.run(run_id)["status"] == "complete":
                raise RunExistsError(f"run {run_id!r} already exists in {store.path}; pass --replace to overwrite it")
        except UnknownRunError:
            pass
    treatment: Any = list(treatments) if treatments else None
    common = dict(arm_col=arm_col, control=control, treatment=treatment, metrics=metrics, unit_col=unit_col,
                  covariates=covariates, config=config, encoding=encoding)
    result = analyze(path, segments=segments, **common)
    decision = evaluate_gate(result, gate) if gate is not None else None
    daily = analyze_by_day(path, day_col=by_day, **common) if by_day else []
    units = (unit_frame(path, result, metrics, arm_col=arm_col, unit_col=unit_col, segments=segments,
                        covariates=covariates, encoding=encoding) if store_units else None)
    run_config = {
        "command": "analyze", "table": str(path.resolve()), "arm_col": arm_col, "control": control,
        "treatment": treatment, "segments": list(segments), "covariates": list(covariates), "unit_col": unit_col,
        "by_day": by_day, "encoding": encoding, "analysis": config.to_dict(),
        "gate": str(gate_path.resolve()) if gate_path is not None else None, **(command or {}),
    }
    rid = store.write_run(
        kind="analyze", control=control, treatment=",".join(result.treatments), config=run_config,
        seed=config.seed, data_fingerprint=sha256(path), run_id=run_id, replace=replace, notes=notes,
        unit_metrics=units, lifts=result.lifts, checks=result.checks, heterogeneity=result.heterogeneity,
        power=result.power, gate=decision, gate_digest=sha256(gate_path) if gate_path is not None else None,
        daily_lifts=daily if by_day else None, summary=experiment_summary(result),
    )
    return AnalysisRun(rid, store.path, result, decision, daily)


def unit_frame(path: Path, result: ExperimentResult, metrics: Sequence[Metric], *, arm_col: str,
               unit_col: str | None, segments: Sequence[str], covariates: Sequence[str],
               encoding: str = "utf-8") -> pd.DataFrame:
    """The per-unit values behind the analysis, for `unit_metrics`: one row per (unit, arm) of the
    analysed arms, with the columns the analysis read (summed per unit as the analysis sums them)."""
    import duckdb

    from analysis.aggregates import column_types, open_source

    con = duckdb.connect()
    try:
        have = list(column_types(con, open_source(con, path, encoding)))
    finally:
        con.close()
    wanted = dict.fromkeys(c for m in metrics for c in m.value_columns)
    wanted.update(dict.fromkeys(c + PRE_SUFFIX for c in list(wanted) if c + PRE_SUFFIX in have))
    wanted.update(dict.fromkeys(c for c in covariates if c in have))
    return unit_values(path, arm_col=arm_col, arms=[result.control, *result.treatments], unit_col=unit_col,
                       value_columns=[c for c in wanted if c not in segments], attribute_columns=list(segments),
                       encoding=encoding)
