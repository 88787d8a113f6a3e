"""Store an analysis layer `ExperimentResult` as a run, and rebuild it from the database.

The rebuild is what lets `harness gate RUN_ID` (and the dashboard) apply a launch gate to a stored
run without the original table: the gate reads only the overall lifts, the checks, the arm counts
and the analysis alpha, all of which the run keeps. Stored NULLs come back as NaN in float fields
(the analysis layer's "not computable"), as None in optional fields.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pandas as pd

from analysis.results import CheckResult, ExperimentResult, HeterogeneityResult, LiftResult, PowerResult
from harness.store.errors import InvalidResultsError
from harness.store.results import ResultsStore
from harness.store.rows import is_missing, plain


def experiment_summary(result: ExperimentResult) -> dict[str, Any]:
    """Run-level results kept in `runs.summary`: what a rebuild needs beyond the result tables."""
    return {
        "arm_col": result.arm_col,
        "control": result.control,
        "treatments": list(result.treatments),
        "arm_counts": {str(k): int(v) for k, v in result.arm_counts.items()},
        "srm_passed": bool(result.srm_passed),
        "config": result.config,
    }


def write_experiment(
    store: ResultsStore,
    run_id: str,
    result: ExperimentResult,
    *,
    unit_metrics: pd.DataFrame | None = None,
    gate: Any = None,
    gate_digest: str | None = None,
) -> None:
    """All tables of `result` (plus unit metrics and gate decision, if given) in one transaction."""
    store.write_results(
        run_id,
        unit_metrics=unit_metrics,
        lifts=result.lifts,
        checks=result.checks,
        heterogeneity=result.heterogeneity,
        power=result.power,
        gate=gate,
        gate_digest=gate_digest,
        summary=experiment_summary(result),
    )


def _build(cls: type, row: dict[str, Any]) -> Any:
    """A result dataclass from a stored row: NULL -> None (optional fields), NaN (float), '' (str), False."""
    values = {}
    for f in dataclasses.fields(cls):
        value = plain(row.get(f.name))
        annotation = str(f.type)
        if is_missing(value):
            if "None" in annotation:
                value = None
            elif annotation == "float":
                value = math.nan
            elif annotation == "str":
                value = ""
            elif annotation == "bool":
                value = False
            elif annotation == "int":
                value = 0
        values[f.name] = value
    return cls(**values)


def load_experiment(store: ResultsStore, run_id: str) -> ExperimentResult:
    """Rebuild the `ExperimentResult` of a stored run (analyze or replay) from its tables."""
    run = store.run(run_id)
    lifts = [_build(LiftResult, r) for r in store.lifts(run_id).to_dict("records")]
    if not lifts:
        raise InvalidResultsError(
            f"run {run_id!r} ({run['kind']}, {run['status']}) has no lifts stored; only a run with "
            "results can be gated"
        )
    summary = run.get("summary") or {}
    overall = [r for r in lifts if r.is_overall]
    control = summary.get("control") or run["control"] or lifts[0].control
    treatments = tuple(summary.get("treatments") or dict.fromkeys(r.treatment for r in lifts))
    counts = summary.get("arm_counts")
    if not counts:  # a run written without a summary: take the counts from the overall lifts
        counts = {}
        for r in overall or lifts:
            counts.setdefault(r.control, r.n_control)
            counts.setdefault(r.treatment, r.n_treatment)
    config = summary.get("config") or run["config"].get("analysis") or {"alpha": lifts[0].alpha}
    return ExperimentResult(
        arm_col=summary.get("arm_col", run["config"].get("arm_col", "arm")),
        control=control,
        treatments=treatments,
        arm_counts={str(k): int(v) for k, v in counts.items()},
        config=config,
        lifts=lifts,
        checks=[_build(CheckResult, r) for r in store.checks(run_id).to_dict("records")],
        heterogeneity=[_build(HeterogeneityResult, r) for r in store.heterogeneity(run_id).to_dict("records")],
        power=[_build(PowerResult, r) for r in store.power(run_id).to_dict("records")],
    )
