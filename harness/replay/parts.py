"""The window's log rows split once by user batch, so each batch reads only its own rows.

Without this, every batch filtered the whole log by its user list: B batches cost B scans of the log
(7.3 s a batch on a 1M-request world), and the models' histories were built from every log table read
whole in `prepare`, so memory followed the log's size, not the batch's. Here one DuckDB `COPY ...
PARTITION_BY (batch)` per table writes, for the window's users, their requests, impressions and comment
impressions before the window's end (history and window both) and the window's candidate sets, into
Parquet folders `<table>/batch=<b>/`. A batch then opens a small in-memory DuckDB whose views carry the
log tables' names over its own files, and the replay's readers (`load_window`, the event log) run on it
unchanged. Cost: two passes over the log (write, then read once in total) instead of B.

The folder is keyed by everything its content depends on (the logs' fingerprint, the window, the user ->
batch assignment, `VERSION`), written under a temporary name and renamed when complete, so a killed build
leaves nothing a later run would trust, and `--resume` or a second replay of the same window (another
treatment) reuses it. It lives in the replay's cache folder (its size is about the window users' share of
the log; `--no-cache` puts it in a temporary folder removed after the run). On a Ray cluster the workers
read it, so the cache folder must be on storage every node mounts, like the logs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from harness.logs.store import LogStore
from harness.replay.data import ReplayDataError

VERSION = 1
WINDOW_TABLES = ("requests", "impressions", "comment_impressions", "candidates")
HISTORY_TABLES = ("requests", "impressions", "comment_impressions")  # what the models' event log reads


def _ts(t: np.datetime64) -> Any:
    return t.astype("datetime64[us]").item()


def _sql_path(p: Path) -> str:
    return "'" + str(p).replace("'", "''") + "'"


@dataclass(frozen=True)
class WindowParts:
    """A complete partition folder (see the module docstring); `source(b)` reads batch b."""

    root: Path
    n_batches: int
    rows: dict[str, int]  # rows written per table
    bytes: int
    owned: bool = False  # a temporary folder this run created (removed by `discard`)

    @classmethod
    def key(cls, fingerprint: str, start: np.datetime64, end: np.datetime64 | None, users: np.ndarray,
            batch: np.ndarray) -> str:
        h = hashlib.sha256(json.dumps({"version": VERSION, "logs": fingerprint, "start": str(start),
                                       "end": str(end)}).encode())
        h.update(np.ascontiguousarray(users, np.int64).tobytes())
        h.update(np.ascontiguousarray(batch, np.int64).tobytes())
        return h.hexdigest()[:24]

    @classmethod
    def ensure(cls, logs: LogStore, start: np.datetime64, end: np.datetime64 | None, users: np.ndarray,
               batch: np.ndarray, *, folder: Path | None, fingerprint: str) -> WindowParts:
        """The partition of this window and batching under `folder` (built now unless a complete one is there);
        `folder` None: a temporary folder, removed by `discard`."""
        n_b = int(batch.max()) + 1 if len(batch) else 0
        if folder is None:
            tmp = Path(tempfile.mkdtemp(prefix="harness-window-"))
            return cls._build(logs, start, end, users, batch, tmp / "parts", n_b, owned=True)
        folder = folder.expanduser().resolve()  # Ray workers run elsewhere
        root = folder / f"window-{cls.key(fingerprint, start, end, users, batch)}"
        got = cls._open(root, n_b)
        if got is not None:
            return got
        folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=folder))
        try:
            built = cls._build(logs, start, end, users, batch, tmp / "parts", n_b, owned=False)
            if root.exists() and cls._open(root, n_b) is None:  # incomplete or of an older VERSION: not trusted
                shutil.rmtree(root)
            try:
                os.replace(built.root, root)
            except OSError:  # another run finished the same folder first: theirs is as good
                if cls._open(root, n_b) is None:
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        opened = cls._open(root, n_b)
        assert opened is not None
        return opened

    @classmethod
    def _open(cls, root: Path, n_b: int) -> WindowParts | None:
        try:
            m = json.loads((root / "manifest.json").read_text())
        except (OSError, ValueError):
            return None
        if m.get("version") != VERSION or m.get("n_batches") != n_b:
            return None
        return cls(root, n_b, {k: int(v) for k, v in m["rows"].items()}, int(m["bytes"]))

    @classmethod
    def _build(cls, logs: LogStore, start: np.datetime64, end: np.datetime64 | None, users: np.ndarray,
               batch: np.ndarray, root: Path, n_b: int, *, owned: bool) -> WindowParts:
        root.mkdir(parents=True)
        assign = pa.table({"user_id": pa.array(users, pa.int64()), "batch": pa.array(batch, pa.int64())})
        con: duckdb.DuckDBPyConnection = logs.con
        view = f"__batch_of_{os.getpid()}"
        con.register(view, assign)
        before = "" if end is None else " AND r.ts < ?"
        hist_p: list[Any] = [] if end is None else [_ts(end)]
        win_p: list[Any] = [_ts(start), *hist_p]
        selects = {
            "requests": (f"SELECT r.*, m.batch FROM requests r JOIN {view} m USING (user_id) WHERE true{before}",
                         hist_p),
            "impressions": (f"SELECT i.*, m.batch FROM impressions i JOIN requests r USING (request_id) "
                            f"JOIN {view} m USING (user_id) WHERE true{before}", hist_p),
            "comment_impressions": (f"SELECT c.*, m.batch FROM comment_impressions c JOIN requests r USING "
                                    f"(request_id) JOIN {view} m USING (user_id) WHERE true{before}", hist_p),
            "candidates": (f"SELECT c.*, m.batch FROM candidates c JOIN requests r USING (request_id) "
                           f"JOIN {view} m USING (user_id) WHERE r.ts >= ?{before}", win_p),
        }
        rows: dict[str, int] = {}
        try:
            con.execute("SET preserve_insertion_order = false")  # lets COPY stream without keeping row order
            for name, (sql, params) in selects.items():
                (root / name).mkdir()
                schema = root / "_schema" / f"{name}.parquet"  # the columns, for a batch without rows here
                schema.parent.mkdir(exist_ok=True)
                con.execute(f"COPY (SELECT * EXCLUDE (batch) FROM ({sql}) LIMIT 0) TO {_sql_path(schema)} "
                            "(FORMAT PARQUET)", params)
                got = con.execute(f"COPY ({sql}) TO {_sql_path(root / name)} (FORMAT PARQUET, PARTITION_BY (batch), "
                                  "OVERWRITE_OR_IGNORE)", params).fetchone()
                rows[name] = int(got[0]) if got else 0
        finally:
            con.execute("RESET preserve_insertion_order")
            con.unregister(view)
        size = sum(f.stat().st_size for f in root.rglob("*.parquet"))
        (root / "manifest.json").write_text(json.dumps({"version": VERSION, "n_batches": n_b, "rows": rows,
                                                        "bytes": size, "start": str(start), "end": str(end)}))
        return cls(root, n_b, rows, size, owned)

    def files(self, table: str, b: int) -> list[str]:
        return sorted(str(p) for p in (self.root / table / f"batch={b}").glob("*.parquet"))

    def source(self, b: int) -> BatchSource:
        """Batch b's rows under the log tables' names (a table the logs lack is empty, as in the `LogStore`)."""
        if not (self.root / "manifest.json").is_file():
            raise ReplayDataError(
                f"the window split by batch is not readable at {self.root} from this process: a Ray worker on "
                "another node sees only shared storage. Run the replay with the cache on (not --no-cache) from a "
                "working directory every node mounts at the same path, or with --engine local")
        con = duckdb.connect()
        for name in WINDOW_TABLES:
            schema = self.root / "_schema" / f"{name}.parquet"
            files = self.files(name, b) or [str(schema)]
            listed = ", ".join(_sql_path(Path(f)) for f in files)
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet([{listed}], hive_partitioning = false)")
        return BatchSource(con)

    def discard(self) -> None:
        """Remove a temporary partition (a cached one stays for `--resume` and later replays)."""
        if self.owned:
            shutil.rmtree(self.root.parent, ignore_errors=True)


class BatchSource:
    """One batch's log rows, queried like a `LogStore` (`query`, `table`, `tables`)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def query(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
        return self.con.sql(sql, params=params).to_arrow_table()

    def tables(self, names: Sequence[str] = HISTORY_TABLES) -> dict[str, pa.Table]:
        return {n: self.con.sql(f"SELECT * FROM {n}").to_arrow_table() for n in names}

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> BatchSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
