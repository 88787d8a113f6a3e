"""Turn what the analysis layer and the replay hand over into validated rows of the results tables.

Accepted inputs are deliberately loose in *container* (a DataFrame, a list of dicts, dataclasses or
NamedTuples, or a result object with `to_dicts()`) and strict in *content*: a missing required field
or a value of the wrong type is an `InvalidResultsError` naming the table, the row and the field,
raised before anything is written.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from harness.store.errors import InvalidResultsError
from harness.store.schema import (
    CHECKS,
    DAILY_LIFTS,
    GATE_DECISIONS,
    GATE_DECISIONS_TABLE,
    HETEROGENEITY,
    LIFTS,
    POWER,
    RANKING_METRICS,
    REPLAY_BATCHES,
    REPLAY_ESTIMATES,
    REPLAY_LIFTS,
    REPLAY_TEST_PLAN,
    Column,
    Table,
    is_required,
    sql_kind,
)


def to_records(obj: Any, what: str) -> list[dict[str, Any]]:
    """A list of plain dicts from a DataFrame, a `to_dicts()` object, or an iterable of row objects."""
    if obj is None:
        return []
    if isinstance(obj, pd.DataFrame):
        return [dict(r) for r in obj.to_dict("records")]
    if hasattr(obj, "to_dicts") and callable(obj.to_dicts):
        return [dict(r) for r in obj.to_dicts()]
    if isinstance(obj, Mapping | str | bytes):
        raise InvalidResultsError(
            f"{what}: expected a DataFrame or a list of rows, got a {type(obj).__name__}"
        )
    if not isinstance(obj, Iterable):
        raise InvalidResultsError(f"{what}: expected a DataFrame or a list of rows, got {type(obj).__name__}")
    return [as_dict(r, f"{what} row {i}") for i, r in enumerate(obj)]


def as_dict(row: Any, where: str) -> dict[str, Any]:
    """One row as a dict: a Mapping, a dataclass, a NamedTuple, or an object with `to_dict()`."""
    if isinstance(row, Mapping):
        return dict(row)
    if dataclasses.is_dataclass(row) and not isinstance(row, type):
        return {f.name: getattr(row, f.name) for f in dataclasses.fields(row)}
    if hasattr(row, "_asdict"):
        return dict(row._asdict())
    if hasattr(row, "to_dict") and callable(row.to_dict):
        return dict(row.to_dict())
    raise InvalidResultsError(f"{where}: cannot read a row from a {type(row).__name__}; pass dicts")


def plain(value: Any) -> Any:
    """numpy scalars and enums as plain Python values, for DuckDB and JSON."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def to_json(obj: Any) -> str:
    """Canonical JSON (sorted keys) so equal configs have equal text, e.g. for resume checks."""
    return json.dumps(obj, sort_keys=True, default=_json_default)


def _json_default(value: Any) -> Any:
    v = plain(value)
    if v is not value:
        return v
    if isinstance(value, np.ndarray):
        return value.tolist()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, set | frozenset | tuple):
        return sorted(value) if isinstance(value, set | frozenset) else list(value)
    return str(value)


def _convert(value: Any, column: Column, where: str) -> Any:
    """Validate one value against its column's SQL type; None for missing (NaN counts as missing)."""
    value = plain(value)
    kind = sql_kind(column)
    if is_missing(value) or (kind == "text" and is_required(column) and isinstance(value, str) and not value.strip()):
        if is_required(column):
            raise InvalidResultsError(f"{where}: required field {column.name!r} is missing or empty")
        return None
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidResultsError(f"{where}: field {column.name!r} must be a number, got {value!r}")
        return float(value)
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int | float) or not float(value).is_integer():
            raise InvalidResultsError(f"{where}: field {column.name!r} must be an integer, got {value!r}")
        return int(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise InvalidResultsError(f"{where}: field {column.name!r} must be true or false, got {value!r}")
        return value
    if kind == "text":
        if not isinstance(value, str | int | float):
            raise InvalidResultsError(f"{where}: field {column.name!r} must be text, got {type(value).__name__}")
        return str(value)
    return value


def table_rows(
    table: Table,
    obj: Any,
    *,
    aliases: Mapping[str, str] | None = None,
    defaults: Mapping[str, Any] | None = None,
    derive: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Validated rows of `table` (without run_id) from any accepted container.

    `aliases` renames input fields, `defaults` fills missing ones, `derive` computes fields from others.
    Fields with no column go to the JSON column `extra` where the table has one, else are an error.
    """
    columns = [c for c in table.columns if c.name not in ("run_id", "extra")]
    known = {c.name for c in columns}
    has_extra = "extra" in table.column_names
    out = []
    for i, rec in enumerate(to_records(obj, table.name)):
        where = f"{table.name} row {i}"
        rec = {(aliases or {}).get(k, k): v for k, v in rec.items()}
        rec.pop("run_id", None)
        for key, value in (defaults or {}).items():
            if is_missing(rec.get(key)):
                rec[key] = value
        if derive is not None:
            rec = derive(rec)
        row = {c.name: _convert(rec.get(c.name), c, where) for c in columns}
        rest = {k: plain(v) for k, v in rec.items() if k not in known}
        if has_extra:
            row["extra"] = to_json(rest) if rest else None
        elif rest:
            raise InvalidResultsError(
                f"{where}: unknown field(s) {sorted(rest)}; {table.name} has {sorted(known)}"
            )
        out.append(row)
    return out


# The vocabulary of docs/architecture.md (Contract 3) maps onto LiftResult's field names.
_LIFT_ALIASES = {
    "estimate": "abs_diff",
    "std_error": "abs_se",
    "ci_low": "abs_ci_low",
    "ci_high": "abs_ci_high",
    "rel_estimate": "rel_diff",
    "rel_ci_method": "relative_ci_method",
}


def lift_rows(lifts: Any) -> list[dict[str, Any]]:
    """Rows of `lifts` (LiftResult fields; a missing segment means the overall lift, 'all')."""
    return table_rows(LIFTS, lifts, aliases=_LIFT_ALIASES, defaults={"segment": "all", "segment_value": "all"})


def _check_status(rec: dict[str, Any]) -> dict[str, Any]:
    passed, status = plain(rec.get("passed")), rec.get("status")
    if is_missing(status) and isinstance(passed, bool):
        rec["status"] = "pass" if passed else ("fail" if rec.get("severity") == "error" else "warn")
    elif not is_missing(status):
        rec["status"] = str(status).lower()
        if is_missing(passed):
            rec["passed"] = rec["status"] == "pass"
    return rec


def check_rows(checks: Any) -> list[dict[str, Any]]:
    """Rows of `checks` (CheckResult fields); `status` is derived from `passed` and `severity` when absent."""
    return table_rows(CHECKS, checks, aliases={"name": "check", "detail": "message"}, derive=_check_status)


def heterogeneity_rows(rows: Any) -> list[dict[str, Any]]:
    return table_rows(HETEROGENEITY, rows)


def power_rows(rows: Any) -> list[dict[str, Any]]:
    return table_rows(POWER, rows)


def daily_rows(rows: Any) -> list[dict[str, Any]]:
    return table_rows(DAILY_LIFTS, rows)


def _require_fields(table: Table, obj: Any) -> list[dict[str, Any]]:
    """The records of `obj`, after checking that every required (NOT NULL) field is there.

    A DataFrame lacking required columns, or a row lacking required fields, is refused with all the
    missing names at once (not only the first), so one fix makes the input pass.
    """
    required = [c.name for c in table.columns if is_required(c) and c.name != "run_id"]
    if isinstance(obj, pd.DataFrame):
        absent = [c for c in required if c not in obj.columns]
        if absent:
            raise InvalidResultsError(
                f"{table.name}: missing required column(s) {absent}; the table needs {required} "
                f"(columns present: {list(obj.columns)})"
            )
    records = to_records(obj, table.name)
    for i, rec in enumerate(records):
        absent = [c for c in required if is_missing(plain(rec.get(c)))
                  or (isinstance(rec.get(c), str) and not rec[c].strip())]
        if absent:
            raise InvalidResultsError(
                f"{table.name} row {i}: required field(s) {absent} missing or empty; every row needs {required}"
            )
    return records


def _unique(table: Table, rows: list[dict[str, Any]], key: tuple[str, ...], what: str) -> None:
    """Refuse two rows with the same `key` (the primary key without run_id), naming both rows."""
    seen: dict[tuple[Any, ...], int] = {}
    for i, row in enumerate(rows):
        k = tuple(row[c] for c in key)
        if k in seen:
            raise InvalidResultsError(
                f"{table.name}: rows {seen[k]} and {i} both have {dict(zip(key, k, strict=True))}; "
                f"pass one row per {what}"
            )
        seen[k] = i


def _one_default(table: Table, rows: list[dict[str, Any]], group: tuple[str, ...]) -> None:
    """At most one estimator per `group` may be the default (the one the run's lifts and gate use)."""
    defaults: dict[tuple[Any, ...], str] = {}
    for row in rows:
        if not row["is_default"]:
            continue
        k = tuple(row[c] for c in group)
        if k in defaults:
            raise InvalidResultsError(
                f"{table.name}: estimators {defaults[k]!r} and {row['estimator']!r} are both is_default for "
                f"{dict(zip(group, k, strict=True))}; mark at most one estimator per {' and '.join(group)} as the default"
            )
        defaults[k] = row["estimator"]


def replay_estimate_rows(rows: Any) -> list[dict[str, Any]]:
    """Rows of `replay_estimates` (one per arm, metric and estimator; fields without a column go to `extra`)."""
    out = table_rows(REPLAY_ESTIMATES, _require_fields(REPLAY_ESTIMATES, rows))
    _unique(REPLAY_ESTIMATES, out, ("arm", "metric", "estimator"), "arm, metric and estimator")
    _one_default(REPLAY_ESTIMATES, out, ("arm", "metric"))
    return out


def _inside(value: Any, low: Any, high: Any) -> bool | None:
    """value in [low, high]; None when any is missing or not a number (the type check reports the latter)."""
    numbers = [plain(v) for v in (value, low, high)]
    if any(is_missing(v) or isinstance(v, bool) or not isinstance(v, int | float) for v in numbers):
        return None
    return bool(numbers[1] <= numbers[0] <= numbers[2])


def _covers(rec: dict[str, Any]) -> dict[str, Any]:
    """Derive covers_abs / covers_rel from the true lift and the interval when they are not given."""
    for scale in ("abs", "rel"):
        if is_missing(plain(rec.get(f"covers_{scale}"))):
            rec[f"covers_{scale}"] = _inside(rec.get(f"true_{scale}_diff"), rec.get(f"{scale}_ci_low"),
                                             rec.get(f"{scale}_ci_high"))
    return rec


def replay_lift_rows(rows: Any) -> list[dict[str, Any]]:
    """Rows of `replay_lifts` (one per treatment, metric and estimator); covers_abs / covers_rel are
    derived from true_*_diff and the interval when absent (null without an oracle)."""
    out = table_rows(REPLAY_LIFTS, _require_fields(REPLAY_LIFTS, rows), derive=_covers)
    _unique(REPLAY_LIFTS, out, ("treatment", "metric", "estimator"), "treatment, metric and estimator")
    _one_default(REPLAY_LIFTS, out, ("treatment", "metric"))
    return out


def replay_batch_rows(rows: Any) -> list[dict[str, Any]]:
    """Rows of `replay_batches` (one per batch, arm, metric and estimator)."""
    out = table_rows(REPLAY_BATCHES, _require_fields(REPLAY_BATCHES, rows))
    _unique(REPLAY_BATCHES, out, ("batch", "arm", "metric", "estimator"), "batch, arm, metric and estimator")
    return out


def test_plan_rows(rows: Any) -> list[dict[str, Any]]:
    """Rows of `replay_test_plan` (one per treatment, metric and cuped)."""
    out = table_rows(REPLAY_TEST_PLAN, _require_fields(REPLAY_TEST_PLAN, rows))
    _unique(REPLAY_TEST_PLAN, out, ("treatment", "metric", "cuped"), "treatment, metric and cuped")
    return out


GATE_RULE_FIELDS = ("rule", "metric", "passed", "outcome", "reason", "estimate", "ci_low", "ci_high", "harm_bound",
                    "limit", "margin", "margin_type", "p_value", "p_adjusted")


def gate_rows(gate: Any) -> tuple[str, list[dict[str, Any]]]:
    """(decision, rule rows) from a GateDecision-like object or a mapping {'decision', 'rules'}."""
    if isinstance(gate, Mapping):
        decision, rules = gate.get("decision"), gate.get("rules", [])
    elif hasattr(gate, "decision"):
        decision, rules = gate.decision, getattr(gate, "rules", [])
    else:
        raise InvalidResultsError(
            f"gate: expected a GateDecision or a mapping with 'decision' and 'rules', got {type(gate).__name__}"
        )
    # An enum decision may carry the label as its value or as its name (value = exit code).
    labels = [decision.value, decision.name] if isinstance(decision, enum.Enum) else [decision]
    decision = next((str(v).upper() for v in labels if str(v).upper() in GATE_DECISIONS), labels[0])
    if decision not in GATE_DECISIONS:
        raise InvalidResultsError(f"gate: decision must be one of {', '.join(GATE_DECISIONS)}, got {decision!r}")
    treatment = plain(gate.get("treatment") if isinstance(gate, Mapping) else getattr(gate, "treatment", None))
    rule_columns = (
        Column("rule", "VARCHAR NOT NULL", "rule name"),
        *(c for c in GATE_DECISIONS_TABLE.columns if c.name in GATE_RULE_FIELDS[1:]),
    )
    rows = []
    for i, rec in enumerate(to_records(rules, "gate rules")):
        rec = {"rule" if k == "name" else k: v for k, v in rec.items()}
        row = {c.name: _convert(rec.get(c.name), c, f"gate rule {i}") for c in rule_columns}
        if row["outcome"] is None and row["passed"] is not None:
            row["outcome"] = "pass" if row["passed"] else "fail"
        arm = rec.get("treatment")  # a multi-arm gate names the arm on every rule
        arm = treatment if is_missing(arm) or arm == "" else arm
        rows.append({"treatment": None if is_missing(arm) else str(arm), **row})
    if not rows:  # keep the decision even when the gate reported no rules
        rows.append({"treatment": None if is_missing(treatment) else str(treatment),
                     **dict.fromkeys(GATE_RULE_FIELDS)})
    return decision, rows


RANKING_DEFAULTS = {"protocol": "leave-one-out", "slice": "all"}  # what every row before schema v5 was


def ranking_rows(ranking: Any) -> list[dict[str, Any]]:
    """Rows of `ranking_metrics` (model, task, split, metric, value, seed, protocol, slice, n_queries); a row
    without protocol or slice is a leave-one-out figure over all queries."""
    return table_rows(RANKING_METRICS, ranking, defaults=RANKING_DEFAULTS)


def split_unit_frame(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Long (unit_id, arm, metric, value) and (unit_id, arm, attribute, value) frames from a wide one.

    Numeric and boolean columns are metrics (booleans as 0/1); all other columns are attributes, kept
    as text. `unit_id` and `arm` are required, non-null, and (unit_id, arm) must be unique.
    """
    if not isinstance(frame, pd.DataFrame):
        raise InvalidResultsError(f"unit_metrics: expected a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in ("unit_id", "arm") if c not in frame.columns]
    if missing:
        raise InvalidResultsError(
            f"unit_metrics: missing column(s) {missing}; rename the unit and arm columns to 'unit_id' "
            f"and 'arm' (columns present: {list(frame.columns)})"
        )
    for col in ("unit_id", "arm"):
        nulls = frame[col].isna()
        if nulls.any():
            raise InvalidResultsError(
                f"unit_metrics: column {col!r} is null in {int(nulls.sum())} row(s), first at row "
                f"{int(np.argmax(nulls.to_numpy()))}"
            )
    keys = pd.DataFrame({"unit_id": frame["unit_id"].astype(str), "arm": frame["arm"].astype(str)})
    dup = keys.duplicated()
    if dup.any():
        first = keys[dup].iloc[0]
        raise InvalidResultsError(
            f"unit_metrics: unit {first['unit_id']!r} appears more than once in arm {first['arm']!r} "
            f"({int(dup.sum())} duplicate row(s)); pass one row per unit and arm"
        )
    values = frame.drop(columns=["unit_id", "arm"])
    numeric = [
        c for c in values.columns
        if pd.api.types.is_numeric_dtype(values[c]) or pd.api.types.is_bool_dtype(values[c])
    ]
    other = [c for c in values.columns if c not in numeric]
    metrics = _melt(keys, values[numeric].astype("float64"), "metric")
    attrs = _melt(keys, values[other].astype("string"), "attribute")
    return metrics, attrs


def _melt(keys: pd.DataFrame, values: pd.DataFrame, name: str) -> pd.DataFrame:
    wide = pd.concat([keys.reset_index(drop=True), values.reset_index(drop=True)], axis=1)
    long = wide.melt(id_vars=["unit_id", "arm"], var_name=name, value_name="value")
    long[name] = long[name].astype(str)
    return long
