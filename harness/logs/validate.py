"""Validation of logged sessions against the schema, run as DuckDB SQL over one view per table.

Why SQL: every check is one scan (or one join) that DuckDB runs in parallel, so validating millions of
impressions costs seconds, and the same code serves in-memory Arrow tables (`write_logs`) and stored
logs (`LogStore.open`).

Checks, in order (all are collected; none stops the others, except that a column with a wrong type is
left out of the value checks that read it):

* ``missing_table``: users, videos, requests, impressions must exist; comments, candidates and
  comment_impressions are optional (absent = empty).
* ``unknown_table``: a table name the schema does not know (a typo would silently drop data).
* ``missing_column``: every schema column must be present (all-null is fine where nullable).
* ``wrong_type``: the column's Arrow type must cast *safely* to the schema type: any integer for an
  integer column (values must fit), any integer or float for a float column, bool for bool, any string
  type for string, any timestamp unit for a timestamp; a string where a number belongs is an error.
* ``null``: a null in a non-nullable column (all key columns are non-nullable).
* ``duplicate_key``: two rows with the same key.
* ``negative``: duration_s, watch_time_s, comment_watch_time_s, dwell_s must be finite and >= 0.
* ``watch_time_units``: a units check, not a cap. Watch time above the duration is legitimate (a
  short-video feed loops the video until the user swipes; KuaiRand logs play_time_ms above duration_ms),
  so no single impression is refused for it, however long. The check fails only when the *median* of
  watch_time_s / duration_s over impressions of videos with a known duration (duration_s > 0; 0 means
  "unknown" in public logs) is above 10, which loops cannot produce but milliseconds read as seconds
  do; it then names the first impression above 10x.
* ``propensity_range``: a non-null propensity must lie in (0, 1].
* ``unknown_reference``: requests.user_id in users; impressions / candidates / comment_impressions
  request_id in requests and video_id in videos; comments.video_id in videos;
  comment_impressions.comment_id in comments.
* ``comment_video_mismatch``: a comment impression's comment must sit under its video_id.
* ``comment_not_shown``: a comment impression's (request_id, video_id) must be in impressions.
* ``ts_order``: for each user, sorting the user's requests by request_id must give non-decreasing ts,
  i.e. there is no pair of requests r1 < r2 of one user with ts(r2) < ts(r1). Consecutive pairs
  suffice: the check compares each request with the previous request_id of the same user.
* ``negative_position``: impressions.position and comment_impressions.position must be >= 0.

Each issue names the table, the column, the first offending row (its key values, in key order) and the
number of offending rows, and says what to do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import duckdb
import pandas as pd
import pyarrow as pa

from harness.logs.schema import TABLE_ORDER, TABLES, Table

REQUIRED_TABLES: tuple[str, ...] = tuple(n for n in TABLE_ORDER if TABLES[n].required)
NON_NEGATIVE: tuple[tuple[str, str], ...] = (
    ("videos", "duration_s"),
    ("impressions", "watch_time_s"),
    ("impressions", "comment_watch_time_s"),
    ("comment_impressions", "dwell_s"),
)
WATCH_UNITS_MEDIAN_RATIO = 10.0  # median watch/duration above this: a unit error, not loops


class LogValidationError(ValueError):
    """Logged sessions that break the schema; `.report` holds every issue found."""

    def __init__(self, report: ValidationReport, where: str = "") -> None:
        self.report = report
        head = f"{where}: " if where else ""
        super().__init__(f"{head}{len(report.issues)} validation error(s); nothing was written.\n"
                         + report.format())


@dataclass(frozen=True)
class ValidationIssue:
    """One failed check. `first_row` holds the key values (and the bad value) of the first offender."""

    check: str
    table: str
    column: str | None
    count: int
    first_row: dict[str, Any] | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ValidationReport:
    """Every issue found plus the row count of each table (absent tables count 0)."""

    issues: list[ValidationIssue] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.issues

    def format(self) -> str:
        return "\n".join(f"  - [{i.check}] {i.message}" for i in self.issues)

    def raise_if_errors(self, where: str = "") -> None:
        if self.issues:
            raise LogValidationError(self, where)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "counts": self.counts, "issues": [i.to_dict() for i in self.issues]}


class _StoreLike(Protocol):
    con: duckdb.DuckDBPyConnection
    present: frozenset[str]


# ---------------------------------------------------------------------------------------------------
# types


def type_compatible(actual: pa.DataType, target: pa.DataType) -> bool:
    """Whether `actual` may be stored as `target` (a safe cast then checks that values fit)."""
    t = pa.types
    if t.is_null(actual):
        return True  # an all-null column: the null check decides
    if t.is_dictionary(actual):
        return type_compatible(actual.value_type, target)
    if t.is_integer(target):
        return t.is_integer(actual)
    if t.is_floating(target):
        return t.is_integer(actual) or t.is_floating(actual) or t.is_decimal(actual)
    if t.is_boolean(target):
        return t.is_boolean(actual)
    if t.is_string(target) or t.is_large_string(target):
        return t.is_string(actual) or t.is_large_string(actual) or t.is_string_view(actual)
    if t.is_timestamp(target):
        return t.is_timestamp(actual)
    return actual == target


def _fmt_type(dt: pa.DataType) -> str:
    return str(dt)


def to_arrow(table: pa.Table | pd.DataFrame) -> pa.Table:
    """Arrow table without pandas metadata (which would make files depend on the index)."""
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    if not isinstance(table, pa.Table):
        raise TypeError(f"expected a pyarrow.Table or pandas.DataFrame, got {type(table).__name__}")
    return table.replace_schema_metadata(None)


def cast_to_schema(table: pa.Table, spec: Table) -> tuple[pa.Table, list[ValidationIssue]]:
    """Cast the schema columns of `table` to their schema types; schema columns first, extras after.

    Columns that are missing or cannot be cast are reported and kept as they are (missing ones are
    left out), so the value checks can skip them.
    """
    issues: list[ValidationIssue] = []
    arrays, fields = [], []
    names = table.column_names
    for col in spec.columns:
        if col.name not in names:
            issues.append(_missing_column(spec, col.name))
            continue
        arr = table.column(col.name)
        if not type_compatible(arr.type, col.type):
            issues.append(_wrong_type(spec, col.name, arr.type, col.type))
            arrays.append(arr)
            fields.append(pa.field(col.name, arr.type))
            continue
        try:
            arr = arr.cast(col.type, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            issues.append(_wrong_type(spec, col.name, arr.type, col.type, detail=str(exc)))
            arrays.append(arr)
            fields.append(pa.field(col.name, arr.type))
            continue
        arrays.append(arr)
        fields.append(pa.field(col.name, col.type, nullable=col.nullable))
    schema_names = set(spec.column_names)
    for name in names:
        if name not in schema_names:
            arrays.append(table.column(name))
            fields.append(table.schema.field(name).remove_metadata())
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields)), issues


def _missing_column(spec: Table, name: str) -> ValidationIssue:
    col = spec.column(name)
    fix = ("add it (all-null is allowed for this nullable column)" if col.nullable
           else "add it; it may not be null")
    return ValidationIssue("missing_column", spec.name, name, 0, None,
                           f"{spec.name}.{name}: column is missing ({col.meaning}). Fix: {fix}.")


def _wrong_type(spec: Table, name: str, actual: pa.DataType, target: pa.DataType,
                detail: str = "") -> ValidationIssue:
    extra = f" ({detail})" if detail else ""
    return ValidationIssue(
        "wrong_type", spec.name, name, 0, None,
        f"{spec.name}.{name}: type {_fmt_type(actual)} cannot be stored as {_fmt_type(target)}{extra}. "
        f"Fix: convert the column to {_fmt_type(target)} before loading (e.g. pd.to_numeric / astype; "
        "pandas turns integers with nulls into floats, use the nullable 'Int64' dtype).")


# ---------------------------------------------------------------------------------------------------
# the row checks (SQL)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _fmt_row(row: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in row.items())


def _first_offender(con: duckdb.DuckDBPyConnection, select: str, from_where: str,
                    order: str) -> tuple[int, dict[str, Any] | None]:
    """Count the rows of `from_where` and return the first by `order` as a dict."""
    sql = f"SELECT count(*) OVER () AS __n, {select} {from_where} ORDER BY {order} LIMIT 1"
    names, rows = _fetch(con, sql)
    if not rows:
        return 0, None
    n, *values = rows[0]
    return int(n), dict(zip(names[1:], [_plain(v) for v in values], strict=True))


def _fetch(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and rows of a small result (execute+fetchall is the cheapest round trip)."""
    cur = con.execute(sql)
    rows = cur.fetchall()
    return [d[0] for d in cur.description], rows


def _plain(v: Any) -> Any:
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return v


@dataclass(frozen=True)
class _Pred:
    """A row-level check: rows of `table` (alias t) where `where` holds are offenders.

    `extra` adds columns to the first-offender row (the bad value, the referenced duration, ...).
    """

    check: str
    table: str
    column: str
    where: str
    problem: str
    fix: str
    extra: str = ""


class _Checker:
    """Runs the row checks over views named like the tables; `ok_cols` lists the usable columns.

    Why batched: each table is scanned once with one `count(*) FILTER (WHERE ...)` per check (and the
    key's distinct count); only checks that found offenders run a second query for the first row. On
    valid data that is one query per table plus the ts-order window.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, present: set[str],
                 ok_cols: dict[str, set[str]]) -> None:
        self.con, self.present, self.ok_cols = con, present, ok_cols
        self.issues: list[ValidationIssue] = []
        self.counts: dict[str, int] = {n: 0 for n in TABLE_ORDER}

    def usable(self, table: str, *cols: str) -> bool:
        return table in self.present and all(c in self.ok_cols.get(table, set()) for c in cols)

    def add(self, check: str, table: str, column: str | None, n: int, first: dict[str, Any] | None,
            problem: str, fix: str) -> None:
        if n == 0:
            return
        where = f"{table}.{column}" if column else table
        msg = f"{where}: {n} row(s) {problem}; first at {_fmt_row(first or {})}. Fix: {fix}"
        self.issues.append(ValidationIssue(check, table, column, n, first, msg))

    def keys(self, spec: Table) -> list[str]:
        """The key columns that can be shown (a key column of the wrong type is left out)."""
        return [k for k in spec.key if k in self.ok_cols.get(spec.name, set())]

    def key_select(self, spec: Table) -> str:
        return ", ".join(f"t.{_q(k)} AS {_q(k)}" for k in self.keys(spec)) or "NULL AS no_usable_key"

    def key_order(self, spec: Table) -> str:
        return ", ".join(f"{_q(k)} NULLS FIRST" for k in self.keys(spec)) or "1"

    # -- the predicates -----------------------------------------------------------------------------

    def preds(self, name: str) -> list[_Pred]:
        spec, out = TABLES[name], []
        u = self.usable
        for col in spec.columns:
            if not col.nullable and u(name, col.name):
                out.append(_Pred("null", name, col.name, f"t.{_q(col.name)} IS NULL",
                                 "have a null (the column is non-nullable)",
                                 f"fill or drop these rows; {col.name} is '{col.meaning}'."))
        for table, column in NON_NEGATIVE:
            if table == name and u(name, column):
                c = f"t.{_q(column)}"
                out.append(_Pred("negative", name, column, f"{c} < 0 OR NOT isfinite(CAST({c} AS DOUBLE))",
                                 "are negative or not finite",
                                 f"{column} is seconds >= 0; clip or drop these rows.", f"{c} AS {_q(column)}"))
        if name in ("impressions", "comment_impressions"):
            if u(name, "propensity"):
                out.append(_Pred(
                    "propensity_range", name, "propensity",
                    "t.propensity IS NOT NULL AND NOT (t.propensity > 0 AND t.propensity <= 1)",
                    "have a propensity outside (0, 1]",
                    "a propensity is a probability > 0 (the row was shown); use null where unknown.",
                    "t.propensity AS propensity"))
            if u(name, "position"):
                out.append(_Pred("negative_position", name, "position", "t.position < 0",
                                 "have a negative position", "positions are 0-based slots; renumber from 0.",
                                 "t.position AS position"))
        for table, column, ref in REFERENCES:
            if table == name:
                out.extend(self.reference(table, column, ref))
        if name == "comment_impressions":
            if u(name, "comment_id", "video_id") and u("comments", "comment_id", "video_id"):
                out.append(_Pred(
                    "comment_video_mismatch", name, "comment_id",
                    "EXISTS (SELECT 1 FROM comments c WHERE c.comment_id = t.comment_id "
                    "AND c.video_id <> t.video_id)",
                    "show a comment that belongs to another video",
                    "comment_impressions.video_id must equal comments.video_id of the comment.",
                    "(SELECT any_value(c.video_id) FROM comments c WHERE c.comment_id = t.comment_id) "
                    "AS comment_video_id"))
            if u(name, "request_id", "video_id") and u("impressions", "request_id", "video_id"):
                out.append(_Pred(
                    "comment_not_shown", name, "video_id",
                    "t.request_id IS NOT NULL AND t.video_id IS NOT NULL AND NOT EXISTS "
                    "(SELECT 1 FROM impressions i WHERE i.request_id = t.request_id AND i.video_id = t.video_id)",
                    "belong to a (request_id, video_id) that is not in impressions",
                    "a comment section can only be opened on a video shown in that request; "
                    "add the impression or drop these rows."))
        return out

    def reference(self, table: str, column: str, ref_table: str) -> list[_Pred]:
        if not (self.usable(table, column) and self.usable(ref_table, column)):
            return []
        if TABLES[ref_table].required and ref_table not in self.present:
            return []  # already reported as a missing table
        c = f"t.{_q(column)}"
        extra = "" if column in TABLES[table].key else f"{c} AS {_q(column)}"
        return [_Pred("unknown_reference", table, column,
                      f"{c} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {_q(ref_table)} r WHERE r.{_q(column)} = {c})",
                      f"reference a {column} that is not in {ref_table}",
                      f"add the missing rows to {ref_table} or drop these rows.", extra)]

    # -- running ------------------------------------------------------------------------------------

    def run_table(self, name: str) -> None:
        spec = TABLES[name]
        preds = self.preds(name)
        parts = ["count(*)"] + [f"count(*) FILTER (WHERE {p.where})" for p in preds]
        key_ok = self.usable(name, *spec.key)
        if key_ok:
            nn = " AND ".join(f"t.{_q(k)} IS NOT NULL" for k in spec.key)
            distinct = f"count(DISTINCT ({', '.join(f't.{_q(k)}' for k in spec.key)},)) FILTER (WHERE {nn})"
            parts.append(f"count(*) FILTER (WHERE {nn}) - {distinct}")
        row = _fetch(self.con, f"SELECT {', '.join(parts)} FROM {_q(name)} t")[1][0]
        self.counts[name] = int(row[0])
        for p, k in zip(preds, row[1:], strict=False):
            if k:
                select = self.key_select(spec) + (f", {p.extra}" if p.extra else "")
                n, first = _first_offender(self.con, select, f"FROM {_q(name)} t WHERE {p.where}",
                                           self.key_order(spec))
                self.add(p.check, name, p.column, n, first, p.problem, p.fix)
        if key_ok and row[-1]:
            self.duplicates(spec)

    def duplicates(self, spec: Table) -> None:
        keys = ", ".join(_q(k) for k in spec.key)
        nn = " AND ".join(f"{_q(k)} IS NOT NULL" for k in spec.key)
        sql = (f"SELECT sum(c) OVER () AS n, count(*) OVER () AS k, {keys} FROM "
               f"(SELECT {keys}, count(*) AS c FROM {_q(spec.name)} WHERE {nn} GROUP BY ALL "
               f"HAVING count(*) > 1) ORDER BY {self.key_order(spec)} LIMIT 1")
        rows = _fetch(self.con, sql)[1]
        if not rows:
            return
        n, k, *values = rows[0]
        first = dict(zip(spec.key, [_plain(v) for v in values], strict=True))
        self.add("duplicate_key", spec.name, ",".join(spec.key), int(n), first,
                 f"share {int(k)} duplicated key(s) ({', '.join(spec.key)})",
                 "each key must appear once; drop the duplicates or fix the ids.")

    def watch_units(self) -> None:
        """Median watch_time_s / duration_s above WATCH_UNITS_MEDIAN_RATIO: a unit error (loops are fine)."""
        if not (self.usable("impressions", "watch_time_s", "video_id", *TABLES["impressions"].key)
                and self.usable("videos", "video_id", "duration_s")):
            return
        r = WATCH_UNITS_MEDIAN_RATIO
        known = ("FROM impressions t JOIN videos v ON v.video_id = t.video_id "
                 "WHERE v.duration_s > 0 AND isfinite(CAST(v.duration_s AS DOUBLE)) "
                 "AND t.watch_time_s >= 0 AND isfinite(CAST(t.watch_time_s AS DOUBLE))")
        median = _fetch(self.con, f"SELECT median(t.watch_time_s / v.duration_s) {known}")[1][0][0]
        if median is None or median <= r:
            return
        spec = TABLES["impressions"]
        select = self.key_select(spec) + ", t.watch_time_s AS watch_time_s, v.duration_s AS duration_s"
        n, first = _first_offender(self.con, select, f"{known} AND t.watch_time_s > {r} * v.duration_s",
                                   self.key_order(spec))
        self.add("watch_time_units", "impressions", "watch_time_s", n, first,
                 f"watch more than {r:g}x the video's duration_s, and the median watch / duration over "
                 f"impressions of videos with a known duration is {median:.4g} (above {r:g}; loops cannot "
                 "make the typical play that long)",
                 "check the units: watch_time_s and videos.duration_s are both seconds (milliseconds "
                 "divided by 1000).")

    def ts_order(self) -> None:
        if not self.usable("requests", "request_id", "user_id", "ts"):
            return
        select = "user_id, request_id, ts, prev_request_id, prev_ts"
        from_where = ("FROM (SELECT user_id, request_id, ts, "
                      "lag(request_id) OVER w AS prev_request_id, lag(ts) OVER w AS prev_ts "
                      "FROM requests WHERE user_id IS NOT NULL AND request_id IS NOT NULL "
                      "WINDOW w AS (PARTITION BY user_id ORDER BY request_id)) WHERE ts < prev_ts")
        n, first = _first_offender(self.con, select, from_where, "user_id, request_id")
        self.add("ts_order", "requests", "ts", n, first,
                 "go back in time (a user's requests sorted by request_id must have non-decreasing ts)",
                 "number each user's requests in time order (request_id increasing with ts).")


REFERENCES: tuple[tuple[str, str, str], ...] = (
    ("requests", "user_id", "users"),
    ("impressions", "request_id", "requests"),
    ("impressions", "video_id", "videos"),
    ("candidates", "request_id", "requests"),
    ("candidates", "video_id", "videos"),
    ("comment_impressions", "request_id", "requests"),
    ("comment_impressions", "video_id", "videos"),
    ("comment_impressions", "comment_id", "comments"),
    ("comments", "video_id", "videos"),
)


def _view_schemas(con: duckdb.DuckDBPyConnection, names: Sequence[str]) -> dict[str, pa.Schema]:
    return {n: con.sql(f"SELECT * FROM {_q(n)} LIMIT 0").to_arrow_table().schema for n in names}


def table_counts(con: duckdb.DuckDBPyConnection, present: set[str] | frozenset[str]) -> dict[str, int]:
    """Rows per schema table in one query (absent tables count 0)."""
    names = [n for n in TABLE_ORDER if n in present]
    got: dict[str, int] = {}
    if names:
        sql = " UNION ALL ".join(f"SELECT '{n}' AS t, count(*) AS n FROM {_q(n)}" for n in names)
        got = {t: int(k) for t, k in _fetch(con, sql)[1]}
    return {n: got.get(n, 0) for n in TABLE_ORDER}


def check_views(con: duckdb.DuckDBPyConnection, present: set[str],
                pre_issues: Sequence[ValidationIssue] = (),
                ok_cols: dict[str, set[str]] | None = None) -> ValidationReport:
    """Run all checks over a connection with one view per schema table (absent ones empty).

    `ok_cols` are the columns usable for value checks; when None they are derived from the views'
    types (the path for stored logs), otherwise the caller has already checked columns and types.
    """
    issues = list(pre_issues)
    if ok_cols is None:
        ok_cols = {}
        schemas = _view_schemas(con, sorted(present))
        for name in present:
            spec, schema = TABLES[name], schemas[name]
            ok_cols[name] = set()
            for col in spec.columns:
                if col.name not in schema.names:
                    issues.append(_missing_column(spec, col.name))
                elif not type_compatible(schema.field(col.name).type, col.type):
                    issues.append(_wrong_type(spec, col.name, schema.field(col.name).type, col.type))
                else:
                    ok_cols[name].add(col.name)
    for name in REQUIRED_TABLES:
        if name not in present:
            issues.append(ValidationIssue(
                "missing_table", name, None, 0, None,
                f"{name}: required table is missing ({TABLES[name].meaning}). "
                f"Fix: provide {name} (required tables: {', '.join(REQUIRED_TABLES)})."))
    ck = _Checker(con, present, ok_cols)
    for name in TABLE_ORDER:
        if name in present:
            ck.run_table(name)
    ck.watch_units()
    ck.ts_order()
    issues.extend(ck.issues)
    return ValidationReport(issues, ck.counts)


def prepare_tables(tables: Mapping[str, pa.Table | pd.DataFrame]
                   ) -> tuple[dict[str, pa.Table], ValidationReport]:
    """Cast every given table to the schema, add empty optional tables, validate all of it.

    Returns the cast tables (all schema tables, absent optional ones empty) and the report.
    """
    issues: list[ValidationIssue] = []
    unknown = [n for n in tables if n not in TABLES]
    for n in unknown:
        issues.append(ValidationIssue(
            "unknown_table", n, None, 0, None,
            f"{n}: unknown table. Fix: use one of {', '.join(TABLE_ORDER)} (check the spelling)."))
    cast: dict[str, pa.Table] = {}
    ok_cols: dict[str, set[str]] = {}
    for name in TABLE_ORDER:
        spec = TABLES[name]
        if name in tables:
            table, col_issues = cast_to_schema(to_arrow(tables[name]), spec)
            issues.extend(col_issues)
            bad = {i.column for i in col_issues}
            ok_cols[name] = {c for c in spec.column_names if c in table.column_names and c not in bad}
        else:
            table = spec.arrow_schema().empty_table()
            ok_cols[name] = set(spec.column_names)
        cast[name] = table
    present = {n for n in TABLE_ORDER if n in tables}
    con = duckdb.connect(":memory:")
    try:
        for name, table in cast.items():
            con.register(name, table)
        report = check_views(con, present, issues, ok_cols)
    finally:
        con.close()
    return cast, report


def validate(store_or_tables: _StoreLike | Mapping[str, pa.Table | pd.DataFrame]) -> ValidationReport:
    """Validate a `LogStore` or a mapping of table name -> Arrow table / DataFrame.

    Returns the report (`report.ok`, `report.issues`); call `report.raise_if_errors()` to raise
    `LogValidationError` listing every issue.
    """
    if isinstance(store_or_tables, Mapping):
        return prepare_tables(store_or_tables)[1]
    return check_views(store_or_tables.con, set(store_or_tables.present))
