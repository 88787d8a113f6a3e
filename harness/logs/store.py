"""The logged-session store: write validated logs (Parquet folder or DuckDB file) and read them back.

Layout
------
* Parquet: a folder with one ``<table>.parquet`` per schema table (optional tables written empty) and
  any extra files (e.g. the synthetic world's parameters) next to them.
* DuckDB: one ``.duckdb`` file with one table per schema table, plus ``_files(name, content)`` for the
  extra files.

Both are written atomically: everything is built in a hidden temporary sibling, then moved into place
with ``os.replace``; a failure (invalid data included) leaves nothing at ``out`` (or the old content
when overwriting). Parquet files are byte-identical for identical input: fixed writer options (zstd,
fixed row-group size, statistics on, no pandas/timestamp metadata), and the footer's ``created_by``
only depends on the pyarrow version.

Readers never touch the files directly: `LogStore` is an in-memory DuckDB connection with one view
per table (``read_parquet`` views, or the DuckDB file ATTACHed READ_ONLY), so it never takes a write
lock and many readers can share the logs.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from harness.logs.schema import TABLE_ORDER, TABLES
from harness.logs.validate import (
    LogValidationError,
    ValidationReport,
    check_views,
    prepare_tables,
    table_counts,
)

__all__ = ["FORMATS", "LogFileError", "LogStore", "LogValidationError", "write_logs", "import_logs", "detect_format"]

# the tables the models read (models.histories.prepare_data): catalogue, requests and engagement
MODEL_TABLES = ("videos", "comments", "requests", "impressions", "comment_impressions")

Format = Literal["parquet", "duckdb"]
FORMATS: tuple[Format, ...] = ("parquet", "duckdb")
PARQUET_ROW_GROUP_SIZE = 1 << 20
PARQUET_COMPRESSION = "zstd"
FILES_TABLE = "_files"
FINGERPRINT_BATCH_ROWS = 1 << 17


class LogFileError(ValueError):
    """A file that holds no readable logs (e.g. not a DuckDB database)."""


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_str(s: str | Path) -> str:
    return "'" + str(s).replace("'", "''") + "'"


# ---------------------------------------------------------------------------------------------------
# writing


def _check_extra_names(extra_files: Mapping[str, bytes]) -> None:
    reserved = {f"{n}.parquet" for n in TABLE_ORDER}
    for name in extra_files:
        p = Path(name)
        if p.is_absolute() or ".." in p.parts or not p.parts or name in reserved:
            raise ValueError(f"extra file name {name!r} must be a relative path inside the log folder "
                             f"and not one of the table files ({', '.join(sorted(reserved))})")
        if not isinstance(extra_files[name], bytes | bytearray):
            raise TypeError(f"extra file {name!r} must be bytes, got {type(extra_files[name]).__name__}")


def _write_parquet_dir(tables: Mapping[str, pa.Table], folder: Path,
                       extra_files: Mapping[str, bytes]) -> None:
    folder.mkdir(parents=True)
    for name in TABLE_ORDER:
        pq.write_table(
            tables[name], folder / f"{name}.parquet",
            compression=PARQUET_COMPRESSION, row_group_size=PARQUET_ROW_GROUP_SIZE,
            use_dictionary=True, write_statistics=True, store_schema=True,
        )
    for name, content in sorted(extra_files.items()):
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(bytes(content))


def _write_duckdb_file(tables: Mapping[str, pa.Table], path: Path,
                       extra_files: Mapping[str, bytes]) -> None:
    con = duckdb.connect(str(path))
    try:
        con.execute("BEGIN TRANSACTION")
        for name in TABLE_ORDER:
            con.register("__src", tables[name])
            con.execute(f"CREATE TABLE {_q(name)} AS SELECT * FROM __src")
            con.unregister("__src")
        con.execute(f"CREATE TABLE {FILES_TABLE} (name VARCHAR PRIMARY KEY, content BLOB)")
        for name, content in sorted(extra_files.items()):
            con.execute(f"INSERT INTO {FILES_TABLE} VALUES (?, ?)", [name, bytes(content)])
        con.execute("COMMIT")
        con.execute("CHECKPOINT")
    finally:
        con.close()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)
    wal = path.with_name(path.name + ".wal")
    if wal.exists():
        wal.unlink(missing_ok=True)


def _replace_atomically(tmp: Path, out: Path) -> None:
    """Move `tmp` to `out`; an existing `out` is swapped out first and restored on failure."""
    if not (out.exists() or out.is_symlink()):
        os.replace(tmp, out)
        return
    old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        raise
    _remove(old)


def write_logs(tables: Mapping[str, pa.Table | pd.DataFrame], out: Path, *, fmt: Format = "parquet",
               extra_files: Mapping[str, bytes] | None = None, overwrite: bool = False) -> Path:
    """Validate `tables`, cast them to the schema and write them atomically to `out`.

    `tables` maps schema table names to Arrow tables or DataFrames; extra columns are kept (after the
    schema columns), absent optional tables are written empty. `fmt="parquet"` writes a folder with
    `<table>.parquet` files (byte-identical for identical input) plus `extra_files`; `fmt="duckdb"`
    writes one DuckDB file. Raises `LogValidationError` (listing every issue) on invalid data and
    `FileExistsError` if `out` exists and `overwrite` is False; in both cases nothing is written.
    Returns `out`.
    """
    out = Path(out)
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be 'parquet' or 'duckdb', got {fmt!r}")
    extra_files = dict(extra_files or {})
    _check_extra_names(extra_files)
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
    cast, report = prepare_tables(tables)
    report.raise_if_errors(f"logs for {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".duckdb" if fmt == "duckdb" else ""
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}{suffix}")
    try:
        if fmt == "parquet":
            _write_parquet_dir(cast, tmp, extra_files)
        else:
            _write_duckdb_file(cast, tmp, extra_files)
        _replace_atomically(tmp, out)
    except BaseException:
        _remove(tmp)
        raise
    return out


def detect_format(path: Path) -> Format:
    """'parquet' for a folder, 'duckdb' for a file (opening it checks that it is a DuckDB database)."""
    path = Path(path)
    if path.is_dir():
        return "parquet"
    if path.is_file():
        return "duckdb"
    raise FileNotFoundError(f"no logs at {path}: expected a folder of Parquet files or a .duckdb file")


class _ColumnDigest:
    """Canonical bytes of one column, fed batch by batch (see `LogStore.fingerprint`)."""

    def __init__(self) -> None:
        self.valid, self.values, self.data = hashlib.sha256(), hashlib.sha256(), hashlib.sha256()

    def update(self, arr: pa.Array) -> None:
        t = arr.type
        self.valid.update(arr.is_valid().to_numpy(zero_copy_only=False).astype(np.uint8).tobytes())
        if pa.types.is_dictionary(t):
            arr, t = arr.cast(t.value_type), t.value_type
        if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
            a = pc.fill_null(arr.cast(pa.large_string()), "")
            lengths = pc.binary_length(a).to_numpy(zero_copy_only=False).astype("<i8")
            self.values.update(lengths.tobytes())
            buf = a.buffers()[2]
            if buf is not None and len(a):
                offsets = np.frombuffer(a.buffers()[1], dtype="<i8")[a.offset: a.offset + len(a) + 1]
                self.data.update(memoryview(buf)[int(offsets[0]): int(offsets[-1])])
        elif pa.types.is_boolean(t):
            self.values.update(pc.fill_null(arr, False).to_numpy(zero_copy_only=False).astype(np.uint8).tobytes())
        elif pa.types.is_timestamp(t) or pa.types.is_integer(t):
            ints = arr.cast(pa.int64()) if pa.types.is_integer(t) else arr.cast(pa.timestamp(t.unit)).cast(pa.int64())
            self.values.update(pc.fill_null(ints, 0).to_numpy(zero_copy_only=False).astype("<i8").tobytes())
        elif pa.types.is_floating(t):
            floats = pc.fill_null(arr.cast(pa.float64()), 0.0)
            self.values.update(floats.to_numpy(zero_copy_only=False).astype("<f8").tobytes())
        else:  # rare extra columns (lists, structs, decimals): slow but canonical
            for v in arr.to_pylist():
                self.values.update(repr(v).encode() + b"\x1f")

    def digest(self) -> bytes:
        return self.valid.digest() + self.values.digest() + self.data.digest()


# ---------------------------------------------------------------------------------------------------
# reading


MEMORY_ENV = "HARNESS_DUCKDB_MEMORY"
DEFAULT_MEMORY = "1GB"


def duckdb_memory_limit() -> str:
    """DuckDB's memory limit for a log store: $HARNESS_DUCKDB_MEMORY or 1GB.

    Why a fixed limit: the whole-log checks (validation's distinct keys, the fingerprint's sorted read, the
    window checks) are hash tables and sorts over every row; DuckDB's default limit (80% of RAM) let them
    take 3 GB on a 1M-request log and grow with it. Under a limit DuckDB spills them to a temporary folder,
    so a command's memory does not follow the log size; measured on that log with 500 MB: peak RSS 0.7 GB
    instead of 3.0 GB, validation 13 s instead of 27 s, the fingerprint 16 s instead of 13 s. Results read
    into Arrow are not bounded by it (they stream out of DuckDB).
    """
    value = os.environ.get(MEMORY_ENV, DEFAULT_MEMORY).strip()
    if not re.fullmatch(r"\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)", value, re.IGNORECASE):
        raise LogFileError(f"${MEMORY_ENV} = {value!r} is not a memory size: use a number and a unit, e.g. 1GB or "
                         "512MB (DuckDB's memory limit for reading logs)")
    return value


class LogStore:
    """Read-only access to logged sessions through DuckDB views named like the schema tables.

    `con` is an in-memory DuckDB connection under a memory limit (`duckdb_memory_limit`, spilling to a
    temporary folder removed by `close`); `present` holds the tables that exist in the source (absent
    optional tables are empty views with the schema's columns).
    """

    def __init__(self, path: Path, fmt: Format, con: duckdb.DuckDBPyConnection,
                 present: frozenset[str], extra_names: tuple[str, ...]) -> None:
        self.path, self.format, self.con, self.present = path, fmt, con, present
        self._extra_names = extra_names
        self._fingerprints: dict[bool, str] = {}
        self._validation: ValidationReport | None = None
        self._spill: str | None = None

    # -- construction ---------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, validate: bool = True) -> LogStore:
        """Open a Parquet folder or a DuckDB file; with `validate`, raise `LogValidationError` on bad data."""
        path = Path(path)
        fmt = detect_format(path)
        limit = duckdb_memory_limit()
        con = duckdb.connect(":memory:")
        spill = tempfile.mkdtemp(prefix="harness-duckdb-")
        try:
            con.execute(f"SET memory_limit = '{limit}'")
            con.execute(f"SET temp_directory = {_sql_str(spill)}")
            present: set[str] = set()
            if fmt == "parquet":
                for name in TABLE_ORDER:
                    f = path / f"{name}.parquet"
                    if f.is_file():
                        con.execute(f"CREATE VIEW {_q(name)} AS SELECT * FROM read_parquet({_sql_str(f)})")
                        present.add(name)
                table_files = {f"{n}.parquet" for n in TABLE_ORDER}
                extras = tuple(sorted(
                    rel for p in path.rglob("*")
                    if p.is_file() and (rel := p.relative_to(path).as_posix()) not in table_files))
            else:
                try:
                    con.execute(f"ATTACH {_sql_str(path)} AS src (READ_ONLY)")
                except duckdb.Error as exc:
                    raise LogFileError(f"{path} is not a readable DuckDB log file: {exc}") from exc
                stored = {r[0] for r in con.sql(
                    "SELECT table_name FROM information_schema.tables WHERE table_catalog = 'src'").fetchall()}
                for name in TABLE_ORDER:
                    if name in stored:
                        con.execute(f"CREATE VIEW {_q(name)} AS SELECT * FROM src.{_q(name)}")
                        present.add(name)
                extras = tuple(r[0] for r in con.sql(
                    f"SELECT name FROM src.{FILES_TABLE} ORDER BY name").fetchall()) \
                    if FILES_TABLE in stored else ()
            for name in TABLE_ORDER:
                if name not in present:
                    cols = ", ".join(f"CAST(NULL AS {c.duckdb_type}) AS {_q(c.name)}"
                                     for c in TABLES[name].columns)
                    con.execute(f"CREATE VIEW {_q(name)} AS SELECT {cols} WHERE false")
            store = cls(path, fmt, con, frozenset(present), extras)
            store._spill = spill
            if validate:
                store.validation().raise_if_errors(f"logs at {path}")
        except BaseException:
            con.close()
            shutil.rmtree(spill, ignore_errors=True)
            raise
        return store

    # -- reading ------------------------------------------------------------------------------------

    def _check_table(self, name: str) -> None:
        if name not in TABLES:
            raise KeyError(f"unknown table {name!r}; tables: {', '.join(TABLE_ORDER)}")

    def tables(self, names: Sequence[str] = MODEL_TABLES) -> dict[str, pa.Table]:
        """Several tables by name (default: those the models read), as `table` gives each."""
        return {n: self.table(n) for n in names}

    def table(self, name: str, columns: Sequence[str] | None = None) -> pa.Table:
        """The table as Arrow, schema columns cast to their schema types, in stored row order."""
        self._check_table(name)
        cols = "*" if columns is None else ", ".join(_q(c) for c in columns)
        raw = self.con.sql(f"SELECT {cols} FROM {_q(name)}").to_arrow_table()
        spec = TABLES[name]
        arrays, fields = [], []
        for f in raw.schema:
            arr = raw.column(f.name)
            if f.name in spec.column_names:
                col = spec.column(f.name)
                arr = arr.cast(col.type)
                f = pa.field(col.name, col.type, nullable=col.nullable)
            arrays.append(arr)
            fields.append(f)
        return pa.Table.from_arrays(arrays, schema=pa.schema(fields))

    def df(self, name: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """The table as a pandas DataFrame (see `table`)."""
        return self.table(name, columns).to_pandas()

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pa.Table:
        """Run SQL over the table views and return the result as Arrow."""
        return self.con.sql(sql, params=params).to_arrow_table()

    def counts(self) -> dict[str, int]:
        """Rows per table (absent optional tables count 0)."""
        return table_counts(self.con, frozenset(TABLE_ORDER))

    def validation(self) -> ValidationReport:
        """The validation report of these logs (computed once)."""
        if self._validation is None:
            self._validation = check_views(self.con, set(self.present))
        return self._validation

    @property
    def extra_file_names(self) -> tuple[str, ...]:
        return self._extra_names

    def extra_file(self, name: str) -> bytes:
        """Content of an extra file stored with the logs (e.g. the synthetic world's parameters)."""
        if name not in self._extra_names:
            raise KeyError(f"no extra file {name!r} in {self.path}; have: {', '.join(self._extra_names) or 'none'}")
        if self.format == "parquet":
            return (self.path / name).read_bytes()
        rows = self.con.sql(f"SELECT content FROM src.{FILES_TABLE} WHERE name = ?", params=[name]).fetchall()
        return bytes(rows[0][0])

    def fingerprint(self, *, floats: bool = True) -> str:
        """sha256 over the tables' content, independent of storage format, row order and batching.

        Rows are read sorted by the table's key (so the stored order does not matter), schema columns
        cast to their schema types. Each column feeds its own digests with a canonical byte form:
        validity (one byte per row), then integers/timestamps as little-endian int64, floats as
        float64, booleans as one byte, strings as int64 lengths plus UTF-8 bytes (nulls as empty),
        anything else as the repr of each value. Concatenating per-column bytes makes the result
        independent of how DuckDB cuts the rows into batches. The fingerprint is the sha256 of every
        table's name, column names, row count and column digests.

        `floats=False` leaves the float columns' values out (their names stay in): what one seed of the
        synthetic world writes on every CPU, where the float bits differ between CPU kinds
        (docs/synthetic-world.md, "Reproducibility across CPUs").
        """
        if floats not in self._fingerprints:
            full = hashlib.sha256(b"lsvcr-logs-v2\n")  # both from one scan: the whole-log read is the cost
            bare = hashlib.sha256(b"lsvcr-logs-v2-without-float-values\n")
            for name in TABLE_ORDER:
                spec = TABLES[name]
                cols = self.con.sql(f"SELECT * FROM {_q(name)} LIMIT 0").columns
                keys = [k for k in spec.key if k in cols]
                order = f" ORDER BY {', '.join(_q(k) for k in keys)}" if keys else ""
                digests = [_ColumnDigest() for _ in cols]
                is_float = [c in spec.column_names and pa.types.is_floating(spec.column(c).type) for c in cols]
                n = 0
                for batch in self.con.sql(f"SELECT * FROM {_q(name)}{order}").to_arrow_reader(FINGERPRINT_BATCH_ROWS):
                    for i, c in enumerate(cols):
                        arr = batch.column(i)
                        if c in spec.column_names:
                            arr = arr.cast(spec.column(c).type)
                        is_float[i] = is_float[i] or pa.types.is_floating(arr.type)  # extra columns
                        digests[i].update(arr)
                    n += batch.num_rows
                head = f"\n{name}\n{chr(31).join(cols)}\n{n}\n".encode()
                full.update(head)
                bare.update(head)
                for d, f in zip(digests, is_float, strict=True):
                    full.update(d.digest())
                    if not f:
                        bare.update(d.digest())
            self._fingerprints = {True: full.hexdigest(), False: bare.hexdigest()}
        return self._fingerprints[floats]

    def all_tables(self) -> dict[str, pa.Table]:
        """Every schema table as Arrow (for conversion and small datasets)."""
        return self.tables(TABLE_ORDER)

    # -- lifetime -------------------------------------------------------------------------------------

    def close(self) -> None:
        self.con.close()
        if self._spill is not None:
            shutil.rmtree(self._spill, ignore_errors=True)

    def __enter__(self) -> LogStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LogStore({str(self.path)!r}, format={self.format!r})"


def import_logs(src: Path, out: Path, fmt: Format = "parquet", *, overwrite: bool = False) -> Path:
    """Copy or convert stored logs (Parquet folder <-> DuckDB file) through full validation.

    Invalid source logs raise `LogValidationError` and nothing is written at `out`.
    """
    with LogStore.open(src, validate=True) as store:
        tables = {n: store.table(n) for n in TABLE_ORDER if n in store.present}
        extras = {n: store.extra_file(n) for n in store.extra_file_names}
    return write_logs(tables, out, fmt=fmt, extra_files=extras, overwrite=overwrite)

