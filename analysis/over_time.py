"""Cumulative lifts day by day, with the always-valid band: the data behind an "over time" chart.

Each look d re-runs the whole analysis on the rows with `day_col <= d` (units summed over their rows
up to d with `unit_col`), so look d is exactly what an analyst would have seen on day d. The
always-valid interval and p-value (`sequential.py`) are carried as a running intersection / minimum
over the looks, which keeps P(some look excludes the true effect) <= alpha however often one looks;
the fixed-horizon p-value beside it shows why peeking at it is not safe.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import numpy as np

from analysis.aggregates import _literal, _quote, column_types, open_source
from analysis.config import AnalysisConfig
from analysis.errors import AnalysisError
from analysis.experiment import AnalysisInputs, TableLike, _Analysis
from analysis.metrics import Metric, check_unique_names, parse_metric
from analysis.results import DailyLift

MAX_LOOKS = 400  # a day column with more levels is probably not a day (a timestamp?)


def analyze_by_day(
    table: TableLike,
    *,
    day_col: str,
    arm_col: str,
    control: str,
    treatment: str | Sequence[str] | None = None,
    metrics: Sequence[Metric | str],
    unit_col: str | None = None,
    covariates: Sequence[str] = (),
    config: AnalysisConfig | None = None,
    encoding: str = "utf-8",
) -> list[DailyLift]:
    """Overall lifts of every metric and treatment after each day (levels of `day_col`, in sort order)."""
    cfg = config or AnalysisConfig()
    mets = [parse_metric(m) if isinstance(m, str) else m for m in metrics]
    check_unique_names(mets)
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    try:
        src = open_source(con, table, encoding)
        types = column_types(con, src)
        if day_col not in types:
            raise AnalysisError(f"day column {day_col!r} is not in the table; columns are {list(types)}")
        d = _quote(day_col)
        days = [r[0] for r in con.execute(f"SELECT DISTINCT {d} FROM {src} WHERE {d} IS NOT NULL ORDER BY 1").fetchall()]
        nulls = con.execute(f"SELECT count(*) FROM {src} WHERE {d} IS NULL").fetchall()[0][0]
        if nulls:
            raise AnalysisError(f"day column {day_col!r} is missing (NULL) on {nulls} row(s); fill or drop them")
        if not days:
            raise AnalysisError("the table is empty: no days to analyse")
        if len(days) > MAX_LOOKS:
            raise AnalysisError(f"day column {day_col!r} has {len(days)} distinct values (> {MAX_LOOKS}); give a "
                                "date column (cast timestamps to dates first)")
        looks = []
        kind = types[day_col]
        for i, day in enumerate(days):
            sub = f"(SELECT * FROM {src} WHERE {d} <= CAST({_literal(str(day))} AS {kind}))"
            try:
                arms = treatment if treatment is None or isinstance(treatment, str) else tuple(treatment)
                inputs = AnalysisInputs(src=sub, arm_col=arm_col, control=str(control), treatment=arms,
                                        metrics=tuple(mets), segments=(), unit_col=unit_col,
                                        covariates=tuple(covariates), config=cfg)
                looks.append((day, _Analysis(con, inputs).run()))
            except AnalysisError:
                if i == len(days) - 1:  # the full data must analyse; an early day may lack an arm
                    raise
    finally:
        con.close()
    out: list[DailyLift] = []
    for res in looks[-1][1].overall():
        low, high, p = -np.inf, np.inf, 1.0
        for i, (day, r) in enumerate(looks):
            try:
                lift = r.lift(res.metric, treatment=res.treatment)
            except KeyError:  # the arm had no rows yet on that day
                continue
            if np.isfinite(lift.seq_ci_low) and np.isfinite(lift.seq_ci_high):
                low, high = max(low, lift.seq_ci_low), min(high, lift.seq_ci_high)
            if np.isfinite(lift.seq_p_value):
                p = min(p, lift.seq_p_value)
            out.append(DailyLift(
                metric=lift.metric, treatment=lift.treatment, day=str(day), look=i + 1,
                n_control=lift.n_control, n_treatment=lift.n_treatment, control_mean=lift.control_mean,
                treatment_mean=lift.treatment_mean, abs_diff=lift.abs_diff, abs_ci_low=lift.abs_ci_low,
                abs_ci_high=lift.abs_ci_high, rel_diff=lift.rel_diff, p_value=lift.p_value,
                seq_ci_low=low if np.isfinite(low) else float("nan"),
                seq_ci_high=high if np.isfinite(high) else float("nan"), seq_p_value=p,
            ))
    return out
