"""What an analysis reads, checked and reshaped before any statistic sees it.

`analyze` (and `analyze_by_day`) resolve their arguments into frozen `AnalysisInputs`; `_Source` checks
the table against them (columns present and numeric, unit ids, arms, the aggregates' missing and
non-finite values), winsorises and sums rows to units in SQL, and collects the trust checks and notes
this finds. The statistics (`experiment._Analysis`) extend it; they never touch the raw table.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import duckdb
import numpy as np

from analysis.aggregates import NULL_LEVEL, GroupKey, Moments, _literal, _quote, column_types
from analysis.checks import min_sample_check, srm_test, winsorize_caps
from analysis.config import AnalysisConfig
from analysis.errors import AnalysisError
from analysis.metrics import PRE_SUFFIX, Metric
from analysis.results import OVERALL, CheckResult
from analysis.units import unit_sums_sql

_NUMERIC = ("INT", "DOUBLE", "FLOAT", "DECIMAL", "REAL", "NUMERIC", "BOOLEAN")
# Column names that usually hold a unit id: user_id, unit_id, uid, id, user, ...
_ID_LIKE = re.compile(r"(^|_)(id|uid|user|unit|userid|unitid)$", re.IGNORECASE)


@dataclass(frozen=True)
class AnalysisInputs:
    """What one analysis reads, resolved once by `analyze` (or `analyze_by_day`) and never changed."""

    src: str  # a DuckDB FROM-clause expression (`aggregates.open_source`)
    arm_col: str
    control: str
    treatment: str | tuple[str, ...] | None  # None: every other arm
    metrics: tuple[Metric, ...]
    segments: tuple[str, ...]
    unit_col: str | None
    covariates: tuple[str, ...]  # extra covariates for cuped="multi"
    config: AnalysisConfig


class _Source:
    """The table one analysis reads: its columns checked, its arms resolved, and its rows winsorised or
    summed to units before any statistic sees them; collects the checks and notes found on the way."""

    arm_counts: dict[str, int]  # rows (units with unit_col) per arm, set by the run before `_resolve_arms`
    treatments: list[str]  # set by `_resolve_arms`
    arms: list[str]  # control first, then the treatments

    def __init__(self, con: duckdb.DuckDBPyConnection, inputs: AnalysisInputs) -> None:
        self.con, self.inputs, self.cfg = con, inputs, inputs.config
        self.arm_col, self.control, self.metrics = inputs.arm_col, inputs.control, list(inputs.metrics)
        self.segments, self.unit_col, self.extra_covs = list(inputs.segments), inputs.unit_col, inputs.covariates
        self.treatment_arg = inputs.treatment
        self.src = inputs.src
        self.types = column_types(con, self.src)
        self.notes: list[str] = []
        self.checks: list[CheckResult] = []
        self.winsor = ""

    # -- input validation ---------------------------------------------------------------------------
    def _require(self, cols: Sequence[str], what: str) -> None:
        have = list(self.types)
        for c in cols:
            if c not in self.types:
                raise AnalysisError(f"{what} column {c!r} is not in the table; columns are {have}")

    def _numeric(self, cols: Sequence[str], what: str) -> None:
        for c in cols:
            t = self.types[c].upper()
            if not any(k in t for k in _NUMERIC):
                raise AnalysisError(f"{what} column {c!r} has type {t}, not numeric; cast it or pick "
                                    "another column")

    def _covariates(self, m: Metric) -> tuple[str, ...]:
        if self.cfg.paired or self.cfg.cuped == "none":
            return ()
        if m.covariates:
            return m.covariates
        if self.cfg.cuped == "single":
            return m.own_covariates(self.types)
        pres = [c for c in self.types if c.endswith(PRE_SUFFIX)
                and any(k in self.types[c].upper() for k in _NUMERIC)]
        return tuple(dict.fromkeys([*pres, *self.extra_covs]))

    def _unit(self) -> str:
        if self.unit_col is None:  # callers run only with a unit column; a bug otherwise
            raise AnalysisError("internal: a unit-level step ran without unit_col")
        return self.unit_col

    def _has_rows(self) -> None:
        if not self.con.execute(f"SELECT 1 FROM {self.src} LIMIT 1").fetchall():
            raise AnalysisError(f"the table is empty: it has columns {list(self.types)} but no rows; there is nothing to analyse "
                                "(a header-only export?)")

    def _unit_ids(self) -> None:
        """Refuse NULL unit ids (they would merge into one pseudo-unit), naming the rows."""
        u = _quote(self._unit())
        rows = self.con.execute(
            f"SELECT count(*) OVER (), rn FROM (SELECT row_number() OVER () AS rn, {u} AS u FROM {self.src}) "
            "WHERE u IS NULL ORDER BY rn LIMIT 10").fetchall()
        if rows:
            shown = ", ".join(str(r[1]) for r in rows)
            raise AnalysisError(f"unit column {self.unit_col!r} is missing (NULL) on {rows[0][0]} row(s), e.g. data "
                                f"row(s) {shown} (1-based, header not counted); every row needs its unit id: fill "
                                "or drop them")

    def _repeated_ids(self) -> None:
        """Without unit_col every row is a unit: warn when an id-like column says rows repeat a unit."""
        ids = [c for c in self.types if _ID_LIKE.search(c) and c != self.arm_col]
        for c in ids[:2]:
            n, distinct, example = self.con.execute(
                f"SELECT count(*), count(DISTINCT {_quote(c)}), (SELECT {_quote(c)} FROM {self.src} "
                f"GROUP BY 1 HAVING count(*) > 1 LIMIT 1) FROM {self.src}").fetchall()[0]
            if distinct < n:
                msg = (f"column {c!r} has {n - distinct} repeated value(s) (e.g. {example!r}) but every row is "
                       f"counted as a unit; if rows are sessions or duplicates, pass --unit-col {c} "
                       "(analyze(unit_col=...)) to sum them per unit")
                self.checks.append(CheckResult("unit_ids", "", OVERALL, False, "warning", float(n - distinct),
                                               float("nan"), 0.0, msg))

    # -- sources ------------------------------------------------------------------------------------
    def _winsorize(self, value_cols: Sequence[str], covs: Sequence[str]) -> None:
        q = self.cfg.winsorize
        if q is None:
            return
        cols = list(dict.fromkeys([*value_cols, *covs]))
        arm_in = f"CAST({_quote(self.arm_col)} AS VARCHAR) IN ({', '.join(_literal(a) for a in self.arms)})"
        caps = winsorize_caps(self.con, self.src, cols, q, arm_in)
        repl = ", ".join(f"LEAST({_quote(c)}, {float(v)!r}) AS {_quote(c)}" for c, v in caps.items())
        if repl:
            self.src = f"(SELECT * REPLACE ({repl}) FROM {self.src})"
        self.winsor = f"capped at pooled q{q:g}: " + ", ".join(f"{c}<={v:.6g}" for c, v in caps.items())
        self.checks.append(CheckResult("winsorize", "", OVERALL, True, "info", float(q), float("nan"), float(q),
                                       self.winsor))

    def _unit_level(self, value_cols: Sequence[str], other_cols: Sequence[str]) -> None:
        """Sum rows to one per (arm, unit); reject units seen in several arms (unless paired)."""
        u, a = _quote(self._unit()), _quote(self.arm_col)
        if not self.cfg.paired:
            row = self.con.execute(
                f"SELECT count(*), any_value(u) FROM (SELECT {u} AS u FROM {self.src} GROUP BY {u} "
                f"HAVING count(DISTINCT {a}) > 1)").fetchall()[0]
            if row[0]:
                raise AnalysisError(f"{row[0]} unit(s) of {self.unit_col!r} appear in more than one arm of "
                                    f"{self.arm_col!r} (e.g. {row[1]!r}); that breaks randomisation by unit. "
                                    "Fix the assignment, or set AnalysisConfig(paired=True) for a paired design")
        self.src = unit_sums_sql(self.src, self.arm_col, self._unit(), value_cols, other_cols)

    @staticmethod
    def _counts_from(moments: dict[GroupKey, Moments]) -> dict[str, int]:
        """Arm -> rows, from the overall groups of the moments query (sorted as `_arm_counts`, NULL last)."""
        counts = {k.arm: int(m.n) for k, m in moments.items() if k.segment == OVERALL}
        return {a: counts[a] for a in sorted(counts, key=lambda a: (a == NULL_LEVEL, a))}

    def _arm_counts(self) -> dict[str, int]:
        a = _quote(self.arm_col)
        rows = self.con.execute(
            f"SELECT CAST({a} AS VARCHAR), count(*) FROM {self.src} GROUP BY 1 ORDER BY 1").fetchall()
        if self.unit_col is not None:
            rows = self.con.execute(
                f"SELECT CAST({a} AS VARCHAR), count(DISTINCT {_quote(self.unit_col)}) FROM {self.src} "
                "GROUP BY 1 ORDER BY 1").fetchall()
        return {NULL_LEVEL if k is None else k: int(n) for k, n in rows}

    def _resolve_arms(self) -> None:
        arms = [a for a in self.arm_counts if a != NULL_LEVEL]
        if self.control not in arms:
            raise AnalysisError(f"control arm {self.control!r} not found in column {self.arm_col!r}; arms "
                                f"present: {arms or '(none: the table is empty)'}")
        t = self.treatment_arg
        if t is None:
            ts = [a for a in arms if a != self.control]
        elif isinstance(t, str):
            ts = [t]
        else:
            ts = [str(x) for x in t]
        if not ts:
            raise AnalysisError(f"column {self.arm_col!r} has only the control arm {self.control!r}; "
                                "there is no treatment to compare")
        for x in ts:
            if x not in arms:
                raise AnalysisError(f"treatment arm {x!r} not found in column {self.arm_col!r}; arms "
                                    f"present: {arms}")
            if x == self.control:
                raise AnalysisError(f"treatment arm {x!r} is also the control arm")
        self.treatments = ts
        self.arms = [self.control, *ts]
        if NULL_LEVEL in self.arm_counts:
            self.notes.append(f"{self.arm_counts[NULL_LEVEL]} row(s) with a missing arm ignored")
        if not self.cfg.paired:
            counts = {a: self.arm_counts[a] for a in arms}
            self.checks.append(srm_test(counts, self.cfg.expected_split, self.cfg.srm_alpha))
        self.checks.append(min_sample_check({a: self.arm_counts[a] for a in self.arms}, self.cfg.min_units))

    # -- validation of the aggregates ---------------------------------------------------------------
    def _validate(self, moments: dict[GroupKey, Moments], counts: dict[GroupKey, np.ndarray],
                  arms: Sequence[str], label: Callable[[str], str] = lambda c: c) -> None:
        for arm in arms:
            key = GroupKey(arm, OVERALL, OVERALL)
            if key not in moments:
                raise AnalysisError(f"arm {arm!r} has no rows to analyse")
            m = moments[key]
            n = float(m.n)
            for i, col in enumerate(m.columns):
                missing = n - counts[key][i]
                if missing > 0:
                    raise AnalysisError(f"column {label(col)!r} has {int(missing)} missing (NULL, or NaN from pandas) value(s) in "
                                        f"arm {arm!r}; fill them (e.g. 0 for no activity) or drop those rows")
                if not np.isfinite(m.mean[i]):  # NaN and inf propagate into the sums
                    raise AnalysisError(f"column {label(col)!r} has NaN or infinite values in arm {arm!r}; "
                                        "drop or fix those rows before analysing")
                if not np.isfinite(m.comoment[i, i]):  # finite values whose squares overflow
                    raise AnalysisError(f"column {label(col)!r} has values too large to square in double "
                                        f"precision (|x| > 1e154) in arm {arm!r}; rescale the column")
