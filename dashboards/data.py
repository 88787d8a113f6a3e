"""Reading the results database for the dashboard: read-only, cached per run, patient with writers.

- **Read-only, parameterised.** Every read goes through `harness.store.ResultsReader`, the store's read
  side, which opens a read-only DuckDB connection for one query, binds the run id as a parameter and
  closes the connection at once. It has no write methods, so the dashboard cannot write by mistake.
- **Writers.** DuckDB locks the whole file while another process (a replay, an analysis) holds a
  read-write connection, and a reader's open fails with the lock error. The store's writers hold the
  lock for one short transaction at a time, so the pattern is: retry on the lock error with a short
  backoff. Each store call waits up to `ATTEMPT_S` (the store's own capped exponential backoff); when
  that is not enough, the page shows "database busy, retrying" and tries again, up to `busy_budget_s()`
  seconds per page render in all (`$HARNESS_DASHBOARD_BUSY_S`, default 30 s), then says that the
  database stayed busy.
  After a wait the page notes how long it waited. (The other pattern in the notes, Parquet parts read
  lock-free, would cost the store its one-transaction-per-run guarantee: docs/results-store.md.)
- **Cache.** `st.cache_data` keys every read by the database path, its *version* (modification time and
  size of the file and of its write-ahead log) and the run id, so a page rerun costs nothing until a
  writer commits, and a commit is seen on the next rerun.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from harness.store import ResultsReader, StoreLockedError, default_db_path

BUSY_ENV_VAR = "HARNESS_DASHBOARD_BUSY_S"
DEFAULT_BUSY_S = 30.0
ATTEMPT_S = 0.5  # one store call's own wait for the lock before the page says "busy"
_PAUSE_S = (0.1, 0.2, 0.4, 0.8)  # between attempts, then 0.8 s each

# The store's read methods the pages use; `test_plan` may not exist in this version of the store.
RUN_READS = frozenset({
    "run", "lifts", "checks", "heterogeneity", "power", "daily_lifts", "replay_estimates", "replay_lifts",
    "gate_decisions", "ranking_metrics", "test_plan",
})
DB_READS = frozenset({"runs", "ranking_metrics", "schema_version"})

Version = tuple[int, int, int, int]


class DatabaseBusy(Exception):
    """The database stayed locked by a writer for the whole busy budget."""


def db_path() -> Path:
    """The database the dashboard shows: `$HARNESS_DB` (set by `harness dashboard --db`), else
    ./harness.duckdb, as for every harness command."""
    return default_db_path()


def busy_budget_s() -> float:
    try:
        return max(0.0, float(os.environ.get(BUSY_ENV_VAR, DEFAULT_BUSY_S)))
    except ValueError:
        return DEFAULT_BUSY_S


def db_version(path: Path) -> Version:
    """Changes whenever a writer commits: (mtime ns, size) of the file and of its write-ahead log."""
    out = []
    for p in (path, path.with_name(path.name + ".wal")):
        try:
            s = p.stat()
            out += [s.st_mtime_ns, s.st_size]
        except OSError:
            out += [0, 0]
    return (out[0], out[1], out[2], out[3])


def has_test_plan() -> bool:
    """Whether this store knows stored test plans yet (`ResultsReader.test_plan`)."""
    return callable(getattr(ResultsReader, "test_plan", None))


@st.cache_data(show_spinner=False, max_entries=512)
def _cached_read(db: str, version: Version, method: str, run_id: str | None) -> Any:
    """One read of the store, cached by (database, its version, method, run id)."""
    del version  # part of the cache key only
    store = ResultsReader(db, lock_timeout_s=ATTEMPT_S)
    fn = getattr(store, method, None)
    if fn is None:
        return None
    return fn() if run_id is None else fn(run_id)


@dataclass
class Reader:
    """Cached, lock-patient reads of one database for one page render.

    `slot` is the place on the page for the "database busy" state (an `st.empty()`); `waited_s` adds up
    the time spent waiting for writers during this render.
    """

    path: Path
    slot: Any
    budget_s: float = field(default_factory=busy_budget_s)
    version: Version = (0, 0, 0, 0)
    waited_s: float = 0.0
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        self.version = db_version(self.path)

    def runs(self) -> pd.DataFrame:
        return self._get("runs", None)

    def all_ranking_metrics(self) -> pd.DataFrame:
        return self._get("ranking_metrics", None)

    def schema_version(self) -> int | None:
        return self._get("schema_version", None)

    def run(self, run_id: str) -> dict[str, Any]:
        return self._get("run", run_id)

    def table(self, method: str, run_id: str) -> pd.DataFrame:
        """A per-run table of the store (`lifts`, `checks`, ..., `test_plan`); an empty frame for a method
        this store lacks."""
        if method not in RUN_READS or method == "run":
            raise ValueError(f"not a per-run table read: {method!r}")
        out = self._get(method, run_id)
        return pd.DataFrame() if out is None else out

    def _get(self, method: str, run_id: str | None) -> Any:
        start = time.monotonic()
        attempt = 0
        while True:
            try:
                out = _cached_read(str(self.path), self.version, method, run_id)
            except StoreLockedError:
                waited = time.monotonic() - start
                if self.waited_s + waited >= self.budget_s:  # the budget is for the whole render
                    self.waited_s += waited
                    raise DatabaseBusy(
                        f"the results database {self.path} stayed locked by another process for "
                        f"{self.waited_s:.0f} s (a long write); reload the page when it has finished"
                    ) from None
                attempt += 1
                self.version = db_version(self.path)  # a writer is committing: read what it leaves
                self.slot.warning(f"Database busy, retrying: another harness process is writing to "
                                  f"{self.path.name} (attempt {attempt}, {waited:.1f} s so far)", icon=":material/hourglass_top:")
                self.sleep(_PAUSE_S[min(attempt - 1, len(_PAUSE_S) - 1)])
                continue
            if attempt:
                self.waited_s += time.monotonic() - start
                self.slot.caption(f"The database was busy for {self.waited_s:.1f} s (another process was "
                                  "writing); the figures below were read after that write.")
            return out


def clear_cache() -> None:
    """Forget every cached read (tests; the cache key already changes with each commit)."""
    _cached_read.clear()
