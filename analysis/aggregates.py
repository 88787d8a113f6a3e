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

The query reads the table once: for every (arm), (arm, segment) grouping set it computes counts,
means, covariances (DuckDB's `covar_samp`, a stable streaming update rather than the cancellation-prone
sum(x^2) - (sum x)^2 / n) and skewness. Only the cross products some metric needs are computed (the
rest of the matrix is NaN). `Moments.from_sums` accepts raw power sums from other engines.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
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


def open_source(con: duckdb.DuckDBPyConnection, table: Any) -> str:
    """Register `table` with DuckDB and return a FROM-clause expression. Errors name the path."""
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
            return f"read_csv_auto({_literal(text)})"
        raise AnalysisError(f"table {text!r}: unknown file type {suffixes or '(none)'}; use .parquet or .csv")
    raise AnalysisError(f"table must be a pyarrow Table, a pandas DataFrame or a path, got {type(table).__name__}")


def column_types(con: duckdb.DuckDBPyConnection, src: str) -> dict[str, str]:
    try:
        rows = con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()
    except duckdb.Error as exc:  # unreadable file, bad CSV, ...
        raise AnalysisError(f"cannot read the table ({src}): {exc}") from exc
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
    """What to compute: columns, the cross-product pairs needed, which columns get tail moments."""

    columns: tuple[str, ...]
    pairs: frozenset[tuple[int, int]]  # (i, j) with i <= j
    tail_columns: tuple[str, ...] = ()

    @classmethod
    def from_blocks(cls, blocks: Sequence[Sequence[str]], tail_columns: Sequence[str] = ()) -> AggregateSpec:
        cols: dict[str, None] = {}
        for b in blocks:
            for c in b:
                cols.setdefault(c, None)
        for c in tail_columns:
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
        return cls(columns, frozenset(pairs), tuple(dict.fromkeys(tail_columns)))


def _shifts(con: duckdb.DuckDBPyConnection, src: str, columns: Sequence[str]) -> np.ndarray:
    """Rough column means from the first rows, used only to centre the sums (any value works)."""
    sel = ", ".join(f"avg(CAST({_quote(c)} AS DOUBLE))" for c in columns)
    inner = ", ".join(_quote(c) for c in columns)
    row = con.execute(f"SELECT {sel} FROM (SELECT {inner} FROM {src} LIMIT 4096)").fetchone()
    out = np.array([0.0 if v is None or not math.isfinite(v) else float(v) for v in row])
    return out


def _raise_nonfinite(con: duckdb.DuckDBPyConnection, src: str, arm_q: str, cols: Sequence[str]) -> None:
    """Raise an AnalysisError naming the first column and arm holding NaN or infinite values, if any."""
    sel = ", ".join(f"count(*) FILTER (WHERE NOT isfinite(CAST({_quote(c)} AS DOUBLE)))" for c in cols)
    for row in con.execute(f"SELECT CAST({arm_q} AS VARCHAR), {sel} FROM {src} GROUP BY 1 ORDER BY 1").fetchall():
        for c, bad in zip(cols, row[1:], strict=True):
            if bad:
                raise AnalysisError(f"column {c!r} has NaN or infinite values in arm {row[0]!r} ({bad} row(s)); "
                                    "drop or fix those rows before analysing")


def compute_moments(con: duckdb.DuckDBPyConnection, src: str, *, arm_col: str, arms: Sequence[str],
                    segments: Sequence[str], spec: AggregateSpec) -> tuple[dict[GroupKey, Moments],
                                                                         dict[GroupKey, np.ndarray]]:
    """One scan: moments for every (arm) and (arm, segment level). Returns (moments, non-null counts)."""
    cols = spec.columns
    k = len(cols)
    # DuckDB's avg / covar_samp / skewness are numerically stable (Welford-style updates), so the
    # moments need no pre-centring pass and the table is read once.
    q = [f"CAST({_quote(c)} AS DOUBLE)" for c in cols]
    tails = {cols.index(c) for c in spec.tail_columns}
    exprs: list[str] = ["count(*)"]
    exprs += [f"count({_quote(c)})" for c in cols]
    exprs += [f"avg({q[i]})" for i in range(k)]
    pairs = sorted(spec.pairs)
    exprs += [f"{'var_samp' if i == j else 'covar_samp'}({q[i]}{'' if i == j else ', ' + q[j]})" for i, j in pairs]
    tail_list = sorted(tails)
    exprs += [f"skewness({q[i]})" for i in tail_list]
    exprs += [f"min({_quote(cols[i])}), max({_quote(cols[i])})" for i in tail_list]
    arm_q = _quote(arm_col)
    seg_sel = ", ".join(f"CAST({_quote(s)} AS VARCHAR) AS {_quote('__seg_' + s)}" for s in segments)
    seg_grp = [f"GROUPING({_quote('__seg_' + s)})" for s in segments]
    sets = ["(__arm)"] + [f"(__arm, {_quote('__seg_' + s)})" for s in segments]
    arm_list = ", ".join(_literal(a) for a in arms)
    inner = (f"SELECT CAST({arm_q} AS VARCHAR) AS __arm{', ' + seg_sel if segments else ''}, * "
             f"FROM {src} WHERE CAST({arm_q} AS VARCHAR) IN ({arm_list})")
    seg_cols = "".join(f", {_quote('__seg_' + s)}" for s in segments)
    grp_cols = "".join(f", {g}" for g in seg_grp)
    sql = (f"SELECT __arm{seg_cols}{grp_cols}, {', '.join(exprs)} FROM ({inner}) "
           f"GROUP BY GROUPING SETS ({', '.join(sets)})")
    try:
        rows = con.execute(sql).fetchall()
    except duckdb.Error as exc:
        _raise_nonfinite(con, src, arm_q, cols)  # DuckDB's skewness rejects inf: name the culprit
        raise AnalysisError(f"aggregation query failed: {exc}; check that metric and covariate columns are "
                            "numeric") from exc
    out: dict[GroupKey, Moments] = {}
    counts: dict[GroupKey, np.ndarray] = {}
    ns = len(segments)
    for r in rows:
        arm = r[0]
        levels = r[1:1 + ns]
        grouping = r[1 + ns:1 + 2 * ns]
        vals = r[1 + 2 * ns:]
        seg, lev = "all", "all"
        for s, lv, g in zip(segments, levels, grouping, strict=True):
            if g == 0:
                seg, lev = s, NULL_LEVEL if lv is None else str(lv)
        it = iter(vals)

        def num(v: Any) -> float:
            return np.nan if v is None else float(v)

        n = float(next(it))
        nonnull = np.array([float(next(it)) for _ in range(k)])
        mean = np.array([num(next(it)) for _ in range(k)])
        com = np.full((k, k), np.nan)
        for i, j in pairs:
            v = num(next(it)) * (n - 1.0) if n >= 2 else (0.0 if n == 1 else np.nan)
            com[i, j] = com[j, i] = v
        m3 = np.full(k, np.nan)
        for i in tail_list:
            g = num(next(it))  # DuckDB: adjusted G1 = g1 sqrt(n (n-1)) / (n-2), g1 = sqrt(n) M3 / M2^1.5
            if n > 2 and np.isfinite(g):
                g1 = g * (n - 2.0) / np.sqrt(n * (n - 1.0))
                m3[i] = g1 * com[i, i] ** 1.5 / np.sqrt(n)
        mn = np.full(k, np.nan)
        mx = np.full(k, np.nan)
        for i in tail_list:
            mn[i] = num(next(it))
            mx[i] = num(next(it))
        key = GroupKey(arm, seg, lev)
        with np.errstate(invalid="ignore"):
            out[key] = Moments(cols, np.asarray(n), mean, com, m3, mn, mx)
        counts[key] = nonnull
    return out, counts
