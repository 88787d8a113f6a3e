"""Mergeable sufficient statistics and the one query that computes them.

`Moments` holds, for a group of units (an arm, or an arm within a segment level), the count n, the
column means, the co-moment matrix C = sum_i (x_i - mean)(x_i - mean)^T, the third central moment
sums (for the tail check) and minima/maxima. Every estimator in this package (means, ratios by the delta
method, CUPED, Welch/z, power) is a function of these, so a DuckDB query, a Spark job or a stream of
daily partitions can produce them and `+` merges them (Chan, Golub and LeVeque 1979 pairwise update):

    n = na + nb,  d = mean_b - mean_a,  mean = mean_a + d nb / n,
    C = Ca + Cb + d d^T na nb / n,
    M3 = M3a + M3b + d^3 na nb (na - nb) / n^2 + 3 d (na M2b - nb M2a) / n.

Fields may carry leading batch dimensions (n: (...), mean: (..., k), comoment: (..., k, k)) so that
simulations and the Poisson bootstrap evaluate thousands of experiments with the same code.

The query reads the table once: for every (arm), (arm, segment) grouping set it computes counts and
plain power sums of shifted values (n, sum d, sum d_i d_j for the pairs some metric needs, sum d^3 for
the tail check, d = x - shift), which `Moments.from_sums` turns into centred moments:

    mean = S1/n + shift,  C = S2 - S1 S1^T / n,  M3 = S3 - 3 m S2 + 2 n m^3  (m = S1/n).

Plain sums are what DuckDB aggregates fastest (no per-row division as in Welford/`covar_samp`); the shift
near the column mean keeps the subtraction from cancelling (see `compute_moments`). Cross products no
metric needs are not computed (NaN in the matrix); min/max only for columns that need a range check.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from analysis.errors import AnalysisError

NULL_LEVEL = "(null)"


@dataclass(frozen=True)
class Moments:
    """Sufficient statistics of a group of units over `columns` (see module docstring)."""

    columns: tuple[str, ...]
    n: np.ndarray  # (...)
    mean: np.ndarray  # (..., k)
    comoment: np.ndarray  # (..., k, k); NaN where the cross product was not computed
    m3: np.ndarray  # (..., k); NaN where not computed
    minimum: np.ndarray  # (..., k)
    maximum: np.ndarray  # (..., k)

    # construction ---------------------------------------------------------------------------------
    @classmethod
    def from_arrays(cls, columns: Sequence[str], x: np.ndarray, weights: np.ndarray | None = None) -> Moments:
        """Exact moments of rows `x` (n, k); with `weights` (n,) or (n, B) frequency weights (bootstrap)."""
        x = np.asarray(x, dtype=float)
        if x.ndim == 1:
            x = x[:, None]
        if weights is None:
            n = np.asarray(float(x.shape[0]))
            mean = x.mean(axis=0) if x.shape[0] else np.full(x.shape[1], np.nan)
            d = x - mean
            com = d.T @ d
            m3 = (d**3).sum(axis=0)
            mn = x.min(axis=0) if x.shape[0] else np.full(x.shape[1], np.nan)
            mx = x.max(axis=0) if x.shape[0] else np.full(x.shape[1], np.nan)
            return cls(tuple(columns), n, mean, com, m3, mn, mx)
        w = np.asarray(weights, dtype=float)
        if w.ndim == 1:
            w = w[:, None]
        n = w.sum(axis=0)  # (B,)
        s = w.T @ x  # (B, k)
        cross = np.einsum("nb,nk,nl->bkl", w, x, x, optimize=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = s / n[:, None]
            com = cross - s[:, :, None] * s[:, None, :] / n[:, None, None]
        k = x.shape[1]
        nan = np.full((w.shape[1], k), np.nan)
        return cls(tuple(columns), n, mean, com, nan, nan.copy(), nan.copy())

    @classmethod
    def from_batch(cls, columns: Sequence[str], x: np.ndarray) -> Moments:
        """Moments of E experiments at once from x (E, n, k): the vectorised path simulations use."""
        e, n, k = x.shape
        mean = x.mean(axis=1)
        d = x - mean[:, None, :]
        nan = np.full((e, k), np.nan)
        return cls(tuple(columns), np.full(e, float(n)), mean, np.einsum("enk,enl->ekl", d, d), nan, nan, nan.copy())

    @classmethod
    def from_sums(cls, columns: Sequence[str], n: float, sums: np.ndarray, cross: np.ndarray,
                  cubes: np.ndarray | None = None, shift: np.ndarray | None = None,
                  minimum: np.ndarray | None = None, maximum: np.ndarray | None = None) -> Moments:
        """From raw (or shifted) power sums: sum x, sum x x^T, sum x^3 of (x - shift)."""
        k = len(columns)
        sums = np.asarray(sums, dtype=float)
        cross = np.asarray(cross, dtype=float)
        shift = np.zeros(k) if shift is None else np.asarray(shift, dtype=float)
        n = float(n)
        if n == 0:
            nan = np.full(k, np.nan)
            return cls(tuple(columns), np.asarray(0.0), nan, np.full((k, k), np.nan), nan, nan, nan)
        with np.errstate(invalid="ignore", over="ignore"):
            ms = sums / n  # mean of shifted values
            com = cross - np.outer(sums, sums) / n
            if cubes is None:
                m3 = np.full(k, np.nan)
            else:
                cubes = np.asarray(cubes, dtype=float)
                m3 = cubes - 3 * ms * np.diag(cross) + 2 * n * ms**3
        mn = np.full(k, np.nan) if minimum is None else np.asarray(minimum, dtype=float)
        mx = np.full(k, np.nan) if maximum is None else np.asarray(maximum, dtype=float)
        return cls(tuple(columns), np.asarray(n), ms + shift, com, m3, mn, mx)

    # merging ---------------------------------------------------------------------------------------
    def __add__(self, other: Moments) -> Moments:
        if self.columns != other.columns:
            raise AnalysisError(f"cannot merge moments over different columns: {self.columns} vs {other.columns}")
        na, nb = np.asarray(self.n, float), np.asarray(other.n, float)
        n = na + nb
        if np.all(na == 0):
            return other
        if np.all(nb == 0):
            return self
        with np.errstate(invalid="ignore", divide="ignore"):
            d = other.mean - self.mean
            fa = (nb / n)[..., None]
            mean = self.mean + d * fa
            w = (na * nb / n)[..., None, None]
            com = self.comoment + other.comoment + d[..., :, None] * d[..., None, :] * w
            m2a = np.diagonal(self.comoment, axis1=-2, axis2=-1)
            m2b = np.diagonal(other.comoment, axis1=-2, axis2=-1)
            m3 = (self.m3 + other.m3 + d**3 * (na * nb * (na - nb) / n**2)[..., None]
                  + 3 * d * (na[..., None] * m2b - nb[..., None] * m2a) / n[..., None])
        return Moments(self.columns, n, mean, com, m3,
                       np.fmin(self.minimum, other.minimum), np.fmax(self.maximum, other.maximum))

    # views -----------------------------------------------------------------------------------------
    def index(self, cols: Iterable[str]) -> list[int]:
        pos = {c: i for i, c in enumerate(self.columns)}
        return [pos[c] for c in cols]

    def select(self, cols: Sequence[str]) -> Moments:
        ix = self.index(cols)
        return Moments(tuple(cols), self.n, self.mean[..., ix], self.comoment[..., ix, :][..., :, ix],
                       self.m3[..., ix], self.minimum[..., ix], self.maximum[..., ix])

    def cov(self) -> np.ndarray:
        """Sample covariance (ddof=1) of the unit-level columns, (..., k, k)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.comoment / (np.asarray(self.n, float) - 1.0)[..., None, None]

    def var(self, col: str) -> np.ndarray:
        i = self.columns.index(col)
        return self.cov()[..., i, i]

    def skewness(self, col: str) -> float:
        """Sample skewness g1 = sqrt(n) M3 / M2^1.5 (biased moment estimator; fine for a warning)."""
        i = self.columns.index(col)
        n = float(self.n)
        m2 = float(self.comoment[i, i])
        if n < 3 or not m2 > 0:
            return float("nan")
        return math.sqrt(n) * float(self.m3[i]) / m2**1.5


# --------------------------------------------------------------------------------------------------
# sources


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def open_source(con: duckdb.DuckDBPyConnection, table: Any, encoding: str = "utf-8") -> str:
    """Register `table` with DuckDB and return a FROM-clause expression. Errors name the path.

    `encoding` applies to CSV files (DuckDB reads utf-8, utf-16 and latin-1).
    """
    if isinstance(table, pa.Table | pd.DataFrame):
        con.register("__src", table)
        return "__src"
    if isinstance(table, str | Path):
        text = str(table)
        path = Path(text)
        has_glob = any(ch in text for ch in "*?[")
        if not has_glob and not path.exists():
            raise AnalysisError(f"table {text!r} does not exist; give a .parquet or .csv file, a folder of "
                                "Parquet files, or a glob")
        suffixes = "".join(path.suffixes).lower()
        if path.is_dir():
            return f"read_parquet({_literal(str(path / '**' / '*.parquet'))}, union_by_name=true)"
        if suffixes.endswith((".parquet", ".pq")):
            return f"read_parquet({_literal(text)}, union_by_name=true)"
        if suffixes.endswith((".csv", ".csv.gz", ".tsv")):
            if path.is_file() and path.stat().st_size == 0:
                raise AnalysisError(f"table {text!r} is an empty file (0 bytes); export the per-unit table again")
            enc = encoding.lower().replace("_", "-")
            if enc not in CSV_ENCODINGS:
                raise AnalysisError(f"encoding {encoding!r} is not supported for CSV; use one of {list(CSV_ENCODINGS)}")
            opts = "" if enc == "utf-8" else f", encoding={_literal(enc)}"
            return f"read_csv_auto({_literal(text)}{opts})"
        raise AnalysisError(f"table {text!r}: unknown file type {suffixes or '(none)'}; use .parquet or .csv")
    raise AnalysisError(f"table must be a pyarrow Table, a pandas DataFrame or a path, got {type(table).__name__}")


CSV_ENCODINGS = ("utf-8", "utf-16", "latin-1")


def column_types(con: duckdb.DuckDBPyConnection, src: str) -> dict[str, str]:
    try:
        rows = con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()
    except duckdb.Error as exc:  # unreadable file, bad CSV, ...
        text = str(exc)
        if "not utf-8 encoded" in text or "Invalid unicode" in text:
            raise AnalysisError(f"cannot read the table ({src}): it is not UTF-8 text; pass its encoding "
                                f"(CLI: --encoding latin-1 or --encoding utf-16; analyze(encoding=...))") from None
        first = text.split("\n")[0]
        raise AnalysisError(f"cannot read the table ({src}): {first}") from None
    return {r[0]: str(r[1]) for r in rows}


# --------------------------------------------------------------------------------------------------
# the aggregation query


@dataclass(frozen=True)
class GroupKey:
    arm: str
    segment: str  # "all" or the segment column
    level: str  # "all" or the level


@dataclass(frozen=True)
class AggregateSpec:
    """What to compute: columns, the cross-product pairs needed, which columns get tail moments
    (third power sums, for the skewness check) and which get a range (min/max, for proportions)."""

    columns: tuple[str, ...]
    pairs: frozenset[tuple[int, int]]  # (i, j) with i <= j
    tail_columns: tuple[str, ...] = ()
    range_columns: tuple[str, ...] = ()

    @classmethod
    def from_blocks(cls, blocks: Sequence[Sequence[str]], tail_columns: Sequence[str] = (),
                    range_columns: Sequence[str] = ()) -> AggregateSpec:
        cols: dict[str, None] = {}
        for b in blocks:
            for c in b:
                cols.setdefault(c, None)
        for c in (*tail_columns, *range_columns):
            cols.setdefault(c, None)
        columns = tuple(cols)
        pos = {c: i for i, c in enumerate(columns)}
        pairs = set()
        for b in blocks:
            ix = sorted({pos[c] for c in b})
            for a in range(len(ix)):
                for bb in range(a, len(ix)):
                    pairs.add((ix[a], ix[bb]))
        for c in columns:
            pairs.add((pos[c], pos[c]))
        return cls(columns, frozenset(pairs), tuple(dict.fromkeys(tail_columns)),
                   tuple(dict.fromkeys(range_columns)))


# A column whose centred sum of squares is below this share of its shifted sum of squares has lost more
# than three digits to cancellation (S2 = C + n (mean - shift)^2): the query is rerun with the shift
# set to the column mean found by the first pass.
_RESHIFT_BELOW = 1e-3


_PARQUET_SRC = re.compile(r"read_parquet\(('(?:[^']|'')*'), union_by_name=true\)")


def _parquet_hints(con: duckdb.DuckDBPyConnection, files: str, columns: Sequence[str]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(shift, may_have_nulls) per column from the Parquet footers: min/max and null counts, no data pages.

    The shift is 0 when the column's range [lo, hi] reaches at least as close to 0 as it is wide (metric
    columns: counts, durations, deltas around 0; then |mean| is within a few ranges of 0), else the
    endpoint nearest 0 (an offset column such as 1e6 + noise is then centred to within its range).
    NULL-free needs a zero null count in every row group of every file (union_by_name fills a column
    missing from a file with NULLs).
    """
    rows = con.execute(
        f"SELECT path_in_schema, min(TRY_CAST(stats_min_value AS DOUBLE)), max(TRY_CAST(stats_max_value AS DOUBLE)), "
        f"bool_and(coalesce(stats_null_count = 0, false)), count(DISTINCT file_name), "
        f"(SELECT count(DISTINCT file_name) FROM parquet_metadata({files})) "
        f"FROM parquet_metadata({files}) GROUP BY 1").fetchall()
    info = {r[0]: r[1:] for r in rows}
    shift = np.zeros(len(columns))
    nullable = np.ones(len(columns), bool)
    for i, c in enumerate(columns):
        if c not in info:
            continue
        lo, hi, no_nulls, n_files, all_files = info[c]
        nullable[i] = not (no_nulls and n_files == all_files)
        if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
            continue
        gap = lo if lo > 0 else (-hi if hi < 0 else 0.0)
        if gap > hi - lo:
            shift[i] = lo if lo > 0 else hi
    return shift, nullable


def _shifts(con: duckdb.DuckDBPyConnection, src: str, columns: Sequence[str], rows: int = 1024
            ) -> tuple[np.ndarray, np.ndarray]:
    """(shift, may_have_nulls) per column: centring constants for the power sums, and NULL hints.

    Any shift is exact in exact arithmetic; one near the data keeps sum((x - s)^2) close to the centred
    sum, so `C = S2 - S1^2 / n` does not cancel. A Parquet scan (`open_source`) takes both from the file
    footers (`_parquet_hints`, milliseconds); other sources take the mean of the first `rows` rows (one
    page per column) and assume NULLs are possible. The SQL literal is the shortest exact repr.
    """
    k = len(columns)
    parquet = _PARQUET_SRC.fullmatch(src)
    try:
        if parquet:
            return _parquet_hints(con, parquet.group(1), columns)
        sel = ", ".join(f"avg(CAST({_quote(c)} AS DOUBLE))" for c in columns)
        inner = ", ".join(_quote(c) for c in columns)
        row = con.execute(f"SELECT {sel} FROM (SELECT {inner} FROM {src} LIMIT {rows})").fetchall()[0]
    except duckdb.Error:  # a cast the main query reports properly; centring is only an optimisation
        return np.zeros(k), np.ones(k, bool)
    shift = np.array([0.0 if v is None or not math.isfinite(v) else float(v) for v in row])
    return shift, np.ones(k, bool)


def _sql_double(x: float) -> str:
    return f"CAST('{float(x)!r}' AS DOUBLE)"


def _grouped_sql(src: str, arm_col: str, arms: Sequence[str] | None, segments: Sequence[str],
                 columns: Sequence[str], exprs: Sequence[str]) -> str:
    """SELECT the group keys and `exprs` over `src`, per (arm) and per (arm, segment level).

    `columns` are projections over `src` (e.g. "CAST(x AS DOUBLE) AS __v0") that `exprs` aggregate.
    Rows come back as (arm, segment values..., GROUPING flags..., exprs...); `_group_key` reads them.
    """
    arm_q = _quote(arm_col)
    proj = [f"CAST({arm_q} AS VARCHAR) AS __arm"]
    proj += [f"CAST({_quote(s)} AS VARCHAR) AS __s{j}" for j, s in enumerate(segments)]
    where = "" if arms is None else f" WHERE CAST({arm_q} AS VARCHAR) IN ({', '.join(_literal(a) for a in arms)})"
    seg_cols = [f"__s{j}" for j in range(len(segments))]
    if segments:
        keys = ", ".join(["__arm", *seg_cols, *(f"GROUPING({s})" for s in seg_cols)])
        group = "GROUPING SETS (" + ", ".join(["(__arm)", *(f"(__arm, {s})" for s in seg_cols)]) + ")"
    else:
        keys, group = "__arm", "__arm"
    return (f"SELECT {keys}, {', '.join(exprs)} FROM (SELECT {', '.join([*proj, *columns])} FROM {src}{where}) "
            f"GROUP BY {group}")


def _group_key(row: Sequence[Any], segments: Sequence[str]) -> tuple[GroupKey, int]:
    """The group of a `_grouped_sql` row, and the position of its first aggregate."""
    ns = len(segments)
    arm = NULL_LEVEL if row[0] is None else row[0]
    seg, lev = "all", "all"
    for s, lv, g in zip(segments, row[1:1 + ns], row[1 + ns:1 + 2 * ns], strict=True):
        if g == 0:
            seg, lev = s, NULL_LEVEL if lv is None else str(lv)
    return GroupKey(arm, seg, lev), 1 + 2 * ns


def _moments_query(con: duckdb.DuckDBPyConnection, src: str, arm_col: str, arms: Sequence[str] | None,
                   segments: Sequence[str], spec: AggregateSpec, shift: np.ndarray, nullable: np.ndarray,
                   per_column_counts: bool = False
                   ) -> tuple[dict[GroupKey, Moments], dict[GroupKey, np.ndarray], dict[GroupKey, np.ndarray]]:
    """One scan computing, per group, n, non-null counts and shifted power sums; see compute_moments.

    Without `per_column_counts` one count of rows with no NULL in any `nullable` column stands for all
    of them (their sum is NULL when one is): exact when it equals n, the normal case; otherwise the
    caller asks again per column, on the error path only. Columns known NULL-free are not counted.
    """
    cols = spec.columns
    k = len(cols)
    pairs = sorted(spec.pairs)
    tails = sorted(cols.index(c) for c in spec.tail_columns)
    ranges = sorted(cols.index(c) for c in spec.range_columns)
    v = [f"__v{i}" for i in range(k)]
    proj = [f"CAST({_quote(c)} AS DOUBLE){f' - {_sql_double(shift[i])}' if shift[i] else ''} AS {v[i]}"
            for i, c in enumerate(cols)]
    proj += [f"CAST({_quote(cols[i])} AS DOUBLE) AS __r{i}" for i in ranges]
    maybe_null = [x for x, z in zip(v, nullable, strict=True) if z]
    if per_column_counts:
        exprs = ["count(*)"] + [f"count({x})" for x in v]
    else:
        exprs = ["count(*)"] + ([f"count({' + '.join(maybe_null)})"] if maybe_null else [])
    exprs += [f"sum({x})" for x in v]
    exprs += [f"sum({v[i]} * {v[j]})" for i, j in pairs]
    exprs += [f"sum({v[i]} * {v[i]} * {v[i]})" for i in tails]
    exprs += [f"min(__r{i}), max(__r{i})" for i in ranges]
    sql = _grouped_sql(src, arm_col, arms, segments, proj, exprs)
    try:
        rows = con.execute(sql).fetchall()
    except duckdb.Error as exc:
        raise AnalysisError(f"aggregation query failed: {exc}; check that metric and covariate columns are "
                            "numeric") from exc
    moments: dict[GroupKey, Moments] = {}
    counts: dict[GroupKey, np.ndarray] = {}
    raw_sq: dict[GroupKey, np.ndarray] = {}
    for r in rows:
        key, first = _group_key(r, segments)
        vals = np.array([np.nan if x is None else float(x) for x in r[first:]])
        n, pos = vals[0], 1
        if per_column_counts:
            nonnull, pos = vals[pos:pos + k], pos + k
        elif maybe_null:
            nonnull, pos = np.full(k, vals[pos]), pos + 1
        else:
            nonnull = np.full(k, n)
        sums = vals[pos:pos + k]
        pos += k
        cross = np.full((k, k), np.nan)
        for (i, j), x in zip(pairs, vals[pos:pos + len(pairs)], strict=True):
            cross[i, j] = cross[j, i] = x
        pos += len(pairs)
        cubes = np.full(k, np.nan)
        cubes[tails] = vals[pos:pos + len(tails)]
        pos += len(tails)
        mn, mx = np.full(k, np.nan), np.full(k, np.nan)
        mn[ranges] = vals[pos:pos + 2 * len(ranges):2]
        mx[ranges] = vals[pos + 1:pos + 2 * len(ranges):2]
        moments[key] = Moments.from_sums(cols, n, sums, cross, cubes, shift=shift, minimum=mn, maximum=mx)
        counts[key] = nonnull
        raw_sq[key] = np.diag(cross).copy()
    return moments, counts, raw_sq


def _zero_cancelled(m: Moments, raw_sq: np.ndarray) -> Moments:
    """Set to exactly 0 the centred sums of squares that rounding cannot tell from 0.

    C = S2 - S1^2/n from rounded sums errs by at most about 3 n eps S2 (Higham 2002, sums of n terms),
    so a smaller C, or a negative one, is a constant column (Welford updates give exactly 0 there, and
    the "zero variance" handling downstream relies on it). Valid because the shift is near the mean:
    compute_moments reruns the query for columns where it was not.
    """
    n = float(m.n)
    com, m3 = m.comoment.copy(), m.m3.copy()
    with np.errstate(invalid="ignore"):
        zero = np.diag(com) <= 3.0 * max(n, 1.0) * np.finfo(float).eps * raw_sq
    if not zero.any():
        return m
    for i in np.flatnonzero(zero):
        computed = ~np.isnan(com[i])
        com[i, computed] = 0.0
        com[computed, i] = 0.0
        if not np.isnan(m3[i]):
            m3[i] = 0.0
    return replace(m, comoment=com, m3=m3)


def _needs_reshift(moments: dict[GroupKey, Moments], raw_sq: dict[GroupKey, np.ndarray],
                   counts: dict[GroupKey, np.ndarray], exact_zero: bool) -> np.ndarray:
    """Columns whose shifted sums lost more than 3 digits: C < _RESHIFT_BELOW * S2 in some group.

    With `exact_zero` (the shift came from the data) a C within rounding of 0 means a constant column
    and is no reason to rerun; with an arbitrary shift (0) it may be total cancellation, so it is.
    """
    bad = None
    for key, m in moments.items():
        c, s2 = np.diag(m.comoment), raw_sq[key]
        eps = 3.0 * max(float(m.n), 1.0) * np.finfo(float).eps
        with np.errstate(invalid="ignore"):
            lost = (np.isfinite(c) & np.isfinite(s2) & (s2 > 0) & (c < _RESHIFT_BELOW * s2)
                    & (counts[key] == float(m.n)))  # columns with NULLs are an error anyway
            if exact_zero:
                lost &= c > eps * s2
        bad = lost if bad is None else bad | lost
    return np.zeros(0, bool) if bad is None else bad


def compute_moments(con: duckdb.DuckDBPyConnection, src: str, *, arm_col: str, arms: Sequence[str] | None,
                    segments: Sequence[str], spec: AggregateSpec, sample_shift: bool = True
                    ) -> tuple[dict[GroupKey, Moments], dict[GroupKey, np.ndarray]]:
    """One scan: moments for every (arm) and (arm, segment level). Returns (moments, non-null counts).

    `arms=None` groups every arm in the table (NULL arms under `NULL_LEVEL`), so the arm counts come out of
    the same scan. The query computes only plain sums of shifted values, the mergeable sufficient
    statistics (n, S1 = sum d, S2 = sum d d^T for the needed pairs, S3 = sum d^3 for tail columns, d = x
    - shift), which DuckDB evaluates in one vectorised pass (running Welford/`covar_samp` updates per row
    cost several times more). Centring: C = S2 - S1 S1^T / n loses about log10(S2 / C) digits, so the
    shift comes from the data (`_shifts`: Parquet footer minima or the mean of the first rows; with
    `sample_shift=False`, for sources that are themselves aggregations, where LIMIT would run the whole
    subquery, it is 0), and any column still left with C < 1e-3 S2 in some group is recomputed with its
    mean from the first pass as the shift (a second scan, only for badly offset data). NaN or infinite
    values propagate into the sums, so a non-finite mean or comoment marks them; NULLs are left out of
    the sums and show in the non-null counts.
    """
    k = len(spec.columns)
    shift, nullable = _shifts(con, src, spec.columns) if sample_shift else (np.zeros(k), np.ones(k, bool))
    moments, counts, raw_sq = _moments_query(con, src, arm_col, arms, segments, spec, shift, nullable)
    per_column = any((c < float(moments[key].n)).any() for key, c in counts.items())
    if per_column:  # some NULLs: count them per column, to name the column (or ignore an unused arm)
        moments, counts, raw_sq = _moments_query(con, src, arm_col, arms, segments, spec, shift, nullable, True)
    redo = _needs_reshift(moments, raw_sq, counts, exact_zero=sample_shift)
    if redo.any():
        overall = [m for key, m in moments.items() if key.segment == "all" and key.arm != NULL_LEVEL]
        total = sum(float(m.n) for m in overall)
        if total > 0:
            with np.errstate(invalid="ignore", over="ignore"):
                mean = sum(float(m.n) * m.mean for m in overall) / total
            shift = np.where(redo & np.isfinite(mean), mean, shift)
            moments, counts, raw_sq = _moments_query(con, src, arm_col, arms, segments, spec, shift, nullable,
                                                     per_column)
    moments = {key: _zero_cancelled(m, raw_sq[key]) for key, m in moments.items()}
    return _exact_constants(con, src, arm_col, arms, segments, moments, counts), counts


def _constant_columns(m: Moments) -> np.ndarray:
    """Columns whose centred sum of squares is exactly 0 after `_zero_cancelled` (constant in the group)."""
    with np.errstate(invalid="ignore"):
        return np.diag(m.comoment) == 0.0


def _exact_constants(con: duckdb.DuckDBPyConnection, src: str, arm_col: str, arms: Sequence[str] | None,
                     segments: Sequence[str], moments: dict[GroupKey, Moments],
                     counts: dict[GroupKey, np.ndarray]) -> dict[GroupKey, Moments]:
    """Give columns that are constant in a group their exact value as the mean.

    The shifted power sums leave a constant column with mean = c + O(n eps |c - shift|), not c: an
    all-zero denominator came back as 1e-14, and a ratio over it as 1e14 with p = 1e-98. A second query,
    run only when some group has a zero centred sum of squares (rare: indicator columns of a tiny arm,
    an all-zero arm), reads min and max of those columns per group; where they are equal, the mean is
    that value exactly and the column's co-moments and third moment are exactly 0.
    """
    flagged = sorted({i for key, m in moments.items() if counts[key].size
                      for i in np.flatnonzero(_constant_columns(m) & (counts[key] == float(m.n)))})
    if not flagged:
        return moments
    cols = next(iter(moments.values())).columns
    proj = [f"CAST({_quote(cols[i])} AS DOUBLE) AS __c{i}" for i in flagged]
    exprs = [f"min(__c{i}), max(__c{i})" for i in flagged]
    rows = con.execute(_grouped_sql(src, arm_col, arms, segments, proj, exprs)).fetchall()
    out = dict(moments)
    for r in rows:
        key, first = _group_key(r, segments)
        m = out.get(key)
        if m is None:
            continue
        const = _constant_columns(m)
        mean, com, m3 = m.mean.copy(), m.comoment.copy(), m.m3.copy()
        changed = False
        for j, i in enumerate(flagged):
            lo, hi = r[first + 2 * j], r[first + 2 * j + 1]
            if const[i] and lo is not None and lo == hi:
                mean[i] = float(lo)
                computed = ~np.isnan(com[i])
                com[i, computed] = 0.0
                com[computed, i] = 0.0
                if not np.isnan(m3[i]):
                    m3[i] = 0.0
                changed = True
        if changed:
            out[key] = replace(m, mean=mean, comoment=com, m3=m3)
    return out
