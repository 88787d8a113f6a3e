"""Short-lived DuckDB connections that wait out another process's file lock.

Why not one long-lived connection: a DuckDB read-write connection locks the *file* against every other
process, even read-only ones (docs/results-store.md, "Concurrency"), so a replay holding it for an hour would
lock the dashboard out. The store therefore opens a connection per transaction (write) or per query
(read), closes it at once, and both sides retry on the lock error with capped exponential backoff and
jitter. A write holds the lock only for the time of one transaction (milliseconds to a few seconds).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import duckdb

from harness.store.errors import StoreError, StoreLockedError

_LOCK_MARKERS = ("could not set lock", "conflicting lock")
_SAME_PROCESS_MARKER = "with a different configuration"


def is_lock_error(exc: BaseException) -> bool:
    """True for the retryable 'file is busy' errors.

    Another process holds the file lock (IOException), or another thread of this process holds a
    connection opened read-only where we want read-write or the reverse (ConnectionException).
    """
    text = str(exc).lower()
    if isinstance(exc, duckdb.IOException):
        return any(m in text for m in _LOCK_MARKERS)
    return isinstance(exc, duckdb.ConnectionException) and _SAME_PROCESS_MARKER in text


@dataclass(frozen=True)
class RetryPolicy:
    """How long to wait for another process's lock: sleeps grow as initial * 2**k, capped at `max_sleep_s`.

    The jitter (uniform factor in [0.5, 1]) keeps two waiting processes from retrying in lock step.
    """

    timeout_s: float = 30.0
    initial_sleep_s: float = 0.005
    max_sleep_s: float = 0.1

    def __post_init__(self) -> None:
        if self.timeout_s < 0:
            raise ValueError(f"RetryPolicy.timeout_s must be >= 0, got {self.timeout_s}")
        if not 0 < self.initial_sleep_s <= self.max_sleep_s:
            raise ValueError(
                "RetryPolicy needs 0 < initial_sleep_s <= max_sleep_s, got "
                f"{self.initial_sleep_s} and {self.max_sleep_s}"
            )


def connect_with_retry(path: Path, *, read_only: bool, policy: RetryPolicy) -> duckdb.DuckDBPyConnection:
    """Open `path`, retrying while another process holds a conflicting lock; StoreLockedError on timeout."""
    deadline = time.monotonic() + policy.timeout_s
    sleep = policy.initial_sleep_s
    rng = random.Random()  # jitter only; never affects results
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only)
            con.execute("SET enable_progress_bar = false")  # no bars from inside library calls
            return con
        except (duckdb.IOException, duckdb.ConnectionException) as exc:
            if not is_lock_error(exc):
                raise _unusable(path, exc) from None
            now = time.monotonic()
            if now >= deadline:
                raise StoreLockedError(
                    f"results database {path} stayed locked by another process for {policy.timeout_s:g} s "
                    f"({exc}). Wait for the other harness process to finish, or raise the lock timeout."
                ) from exc
            time.sleep(min(sleep * rng.uniform(0.5, 1.0), deadline - now))
            sleep = min(sleep * 2, policy.max_sleep_s)


def _unusable(path: Path, exc: BaseException) -> StoreError:
    """A database file DuckDB cannot open (corrupt, truncated, a folder, read-only, not DuckDB)."""
    text = str(exc).split("\n")[0]
    if path.is_dir():
        hint = "it is a folder; pass a file path with --db"
    elif "not permitted" in text.lower() or "permission" in text.lower() or "read-only" in text.lower():
        hint = "it is not writable; fix its permissions or pass another --db path"
    else:
        hint = ("it may be corrupt, truncated or not a DuckDB file; move it aside (keep a copy) or pass "
                "another --db path")
    return StoreError(f"results database {path} cannot be opened ({text}): {hint}")


def _io_cause(exc: BaseException | None) -> BaseException | None:
    """The non-lock IOException behind `exc`, if any (DuckDB reports later statements as 'aborted')."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, duckdb.IOException) and not is_lock_error(exc):
            return exc
        exc, seen = exc.__context__, seen + 1
    return None


@contextmanager
def write_transaction(path: Path, policy: RetryPolicy) -> Iterator[duckdb.DuckDBPyConnection]:
    """One transaction on a fresh connection: COMMIT if the block returns, ROLLBACK if it raises.

    The connection is closed either way, releasing the file lock. A process killed inside the block
    never commits, and DuckDB's write-ahead log discards the uncommitted work on the next open.
    """
    con = connect_with_retry(path, read_only=False, policy=policy)
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            yield con
        except BaseException as exc:
            with suppress(duckdb.Error):
                con.execute("ROLLBACK")
            io = _io_cause(exc)
            if io is not None:
                raise _unusable(path, io) from None  # e.g. a truncated file that opened but cannot be read
            raise
        con.execute("COMMIT")
    finally:
        con.close()


@contextmanager
def read_connection(path: Path, policy: RetryPolicy) -> Iterator[duckdb.DuckDBPyConnection | None]:
    """A read-only connection for one query, or None when the database file does not exist yet."""
    if not path.exists():
        yield None
        return
    con = connect_with_retry(path, read_only=True, policy=policy)
    try:
        yield con
    except duckdb.IOException as exc:
        if is_lock_error(exc):
            raise
        raise _unusable(path, exc) from None
    finally:
        con.close()
