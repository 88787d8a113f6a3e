"""Per-unit values: session-level rows summed to one row per (arm, unit).

One SQL builder serves the analysis itself (`experiment._Analysis`, which sums before computing any
statistic, so sessions of a user are never independent replicates) and `unit_values`, which hands the
same per-unit rows to callers that store them (the results database's `unit_metrics`).
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import pandas as pd

from analysis.aggregates import _quote, open_source


def unit_sums_sql(src: str, arm_col: str, unit_col: str, value_cols: Sequence[str], other_cols: Sequence[str]) -> str:
    """SELECT arm, unit, sum(value columns), any_value(other columns) FROM src GROUP BY arm, unit."""
    u, a = _quote(unit_col), _quote(arm_col)
    sums = "".join(f", sum({_quote(c)}) AS {_quote(c)}" for c in value_cols)
    firsts = "".join(f", any_value({_quote(c)}) AS {_quote(c)}" for c in other_cols)
    return f"(SELECT {a}, {u}{sums}{firsts} FROM {src} GROUP BY {a}, {u})"


def unit_values(table: object, *, arm_col: str, arms: Sequence[str], unit_col: str | None,
                value_columns: Sequence[str], attribute_columns: Sequence[str] = (),
                encoding: str = "utf-8") -> pd.DataFrame:
    """One row per (unit, arm) of the given arms: `unit_id` and `arm` as text, value columns as doubles
    (summed over a unit's rows with `unit_col`), attribute columns (segments) as text. Without
    `unit_col` every row is a unit and its row number is its id."""
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    try:
        src = open_source(con, table, encoding)
        a = _quote(arm_col)
        if unit_col:
            src = unit_sums_sql(src, arm_col, unit_col, value_columns, attribute_columns)
            unit = f"CAST({_quote(unit_col)} AS VARCHAR)"
            order = " ORDER BY arm, unit_id"
        else:
            unit, order = "CAST(row_number() OVER () - 1 AS VARCHAR)", ""
        cols = "".join([f", CAST({_quote(c)} AS DOUBLE) AS {_quote(c)}" for c in value_columns]
                       + [f", CAST({_quote(c)} AS VARCHAR) AS {_quote(c)}" for c in attribute_columns])
        where = f"CAST({a} AS VARCHAR) IN ({', '.join('?' for _ in arms)})"
        sql = f"SELECT {unit} AS unit_id, CAST({a} AS VARCHAR) AS arm{cols} FROM {src} WHERE {where}{order}"
        return con.execute(sql, list(arms)).df()
    finally:
        con.close()
