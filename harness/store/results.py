"""`ResultsStore`: the DuckDB results database of runs, unit metrics, lifts, checks, gates, rankings and
the replay's off-policy estimates and lifts. Its reads live in `ResultsReader` (harness/store/reads.py),
which it extends with the writes.

Guarantees (tested in tests/harness/test_store*.py):
- Every write is one transaction on a fresh connection (`connection.write_transaction`): a run that
  raises or is killed mid-write leaves the database exactly as before the write.
- Writing a run's results *replaces* that run's rows in every table it is given, so re-running never
  duplicates rows. `create_run(run_id=..., replace=True)` wipes a run and starts it afresh; without
  `replace`, an unfinished ('running' / 'failed') run with the same inputs is *resumed* (its unit-metric
  batches written by `append_unit_metrics` are kept), and a complete one is refused.
- No connection outlives a call, and both reads and writes retry while another process holds the file
  lock, so the dashboard can read while a replay writes (docs/results-store.md).
"""

from __future__ import annotations

import functools
import os
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from harness.store import rows as R
from harness.store.connection import write_transaction
from harness.store.errors import (
    InvalidResultsError,
    RunExistsError,
    StoreError,
)
from harness.store.reads import DB_ENV_VAR, DEFAULT_DB_NAME, ResultsReader, default_db_path
from harness.store.schema import (
    ALL_TABLES,
    CHECKS,
    DAILY_LIFTS,
    GATE_DECISIONS_TABLE,
    HETEROGENEITY,
    LIFTS,
    POWER,
    RANKING_METRICS,
    REPLAY_BATCHES,
    REPLAY_ESTIMATES,
    REPLAY_LIFTS,
    REPLAY_TEST_PLAN,
    RESULT_TABLES,
    RUN_KINDS,
    RUNS,
    SCHEMA_VERSION,
    UNIT_ATTRIBUTES,
    UNIT_METRICS,
    Table,
)

__all__ = ["DB_ENV_VAR", "DEFAULT_DB_NAME", "ResultsStore", "code_version", "default_db_path", "new_run_id",
           "validate_run_id"]

_RUN_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
_RESUME_FIELDS = ("kind", "control", "treatment", "data_fingerprint", "seed", "config", "checkpoint_digests")


def new_run_id(kind: str, now: datetime | None = None) -> str:
    """A short readable id: kind prefix, UTC time to the second, 4 random hex digits ('ana-20250301-142501-3fa2')."""
    now = now or datetime.now(UTC)
    return f"{kind[:3]}-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def validate_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not 1 <= len(run_id) <= 64 or not set(run_id) <= _RUN_ID_CHARS:
        raise InvalidResultsError(
            f"run id {run_id!r} is invalid: use 1-64 characters from letters, digits, '.', '_' and '-'"
        )
    return run_id


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """Installed package version plus the git commit of the source tree ('.dirty' with local changes).

    Cached per process: the code a process runs does not change under it, and `git` costs ~20 ms.
    """
    try:
        version = metadata.version("lsvcr-harness")
    except metadata.PackageNotFoundError:
        version = "unknown"
    src = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+g{sha}{'.dirty' if dirty else ''}"


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # TIMESTAMP columns hold naive UTC


def _insert(con: duckdb.DuckDBPyConnection, table: str, run_id: str, frame: pd.DataFrame) -> None:
    """Insert `frame` (without run_id) into `table` for `run_id`, matching columns by name."""
    if frame.empty:
        return
    frame = frame.copy()
    frame.insert(0, "run_id", run_id)
    con.register("_harness_rows", frame)
    try:
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _harness_rows")
    finally:
        con.unregister("_harness_rows")


class ResultsStore(ResultsReader):
    """Typed reads and transactional writes of one results database file; holds no connection between calls.

    `lock_timeout_s` bounds how long a call waits for another process's lock before StoreLockedError.
    """

    # ------------------------------------------------------------------ connections and schema
    @contextmanager
    def _write(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if not self.path.parent.exists():
            raise StoreError(f"folder {self.path.parent} for the results database does not exist; create it first")
        with write_transaction(self.path, self.retry) as con:
            self._ensure_schema(con)
            yield con

    def _ensure_schema(self, con: duckdb.DuckDBPyConnection) -> None:
        version = self._stored_version(con)
        if version == SCHEMA_VERSION:
            return
        # A new database (version None) gets every table; an older one the tables and columns added
        # since (version 2: daily_lifts, lifts.bayes_* and cuped_theta; version 3: replay_estimates and
        # replay_lifts), all in the caller's transaction. Added columns are nullable: rows written before
        # them have no value. A version-1 file goes to 3 in one step.
        for table in ALL_TABLES:
            con.execute(table.ddl())
        if version == 1:  # an undefined lift (zero denominator) has no absolute difference
            con.execute("ALTER TABLE lifts ALTER COLUMN abs_diff DROP NOT NULL")
        if version is not None:
            for table in ALL_TABLES:
                have = {r[0] for r in con.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table.name]).fetchall()}
                for c in table.columns:
                    if c.name not in have:
                        kind = c.sql_type.replace("NOT NULL", "").strip()
                        con.execute(f'ALTER TABLE {table.name} ADD COLUMN "{c.name}" {kind}')
        con.execute("INSERT INTO schema_version VALUES (?, ?)", [SCHEMA_VERSION, _utcnow()])

    # ------------------------------------------------------------------ writes
    def create_run(
        self,
        *,
        kind: str,
        control: str | None,
        treatment: str | None,
        config: dict[str, Any],
        seed: int,
        data_fingerprint: str,
        checkpoint_digests: dict[str, str] | None = None,
        run_id: str | None = None,
        replace: bool = False,
        notes: str | None = None,
    ) -> str:
        """Register a run with status 'running' and return its id (generated when not given).

        An existing id is replaced (`replace=True`: all its rows deleted in the same transaction),
        resumed (status 'running'/'failed' and identical kind, arms, data, seed, config and digests),
        or refused with RunExistsError.
        """
        record = self._run_record(kind=kind, control=control, treatment=treatment, config=config, seed=seed,
                                  data_fingerprint=data_fingerprint, checkpoint_digests=checkpoint_digests,
                                  run_id=run_id, notes=notes)
        with self._write() as con:
            self._register(con, record, replace)
        return record["run_id"]

    def _run_record(self, *, kind: str, control: str | None, treatment: str | None, config: dict[str, Any],
                    seed: int, data_fingerprint: str, checkpoint_digests: dict[str, str] | None,
                    run_id: str | None, notes: str | None) -> dict[str, Any]:
        """The validated `runs` row of a new run (status 'running')."""
        if kind not in RUN_KINDS:
            raise InvalidResultsError(f"run kind must be one of {', '.join(RUN_KINDS)}, got {kind!r}")
        if not isinstance(config, dict):
            raise InvalidResultsError(f"config must be a dict, got {type(config).__name__}")
        if isinstance(seed, bool) or not isinstance(R.plain(seed), int):
            raise InvalidResultsError(f"seed must be an integer, got {seed!r}")
        if not data_fingerprint:
            raise InvalidResultsError("data_fingerprint is required (e.g. the sha256 of the input file)")
        run_id = validate_run_id(run_id) if run_id is not None else new_run_id(kind)
        now = _utcnow()
        record = {
            "run_id": run_id,
            "created_at": now,
            "updated_at": now,
            "kind": kind,
            "control": control,
            "treatment": treatment,
            "checkpoint_digests": R.to_json(checkpoint_digests or {}),
            "data_fingerprint": data_fingerprint,
            "seed": int(R.plain(seed)),
            "config": R.to_json(config),
            "summary": None,
            "status": "running",
            "code_version": code_version(),
            "notes": notes,
            "error": None,
        }
        return record

    def _register(self, con: duckdb.DuckDBPyConnection, record: dict[str, Any], replace: bool) -> None:
        """Insert the run, replace it (`replace`), or mark a resumable one running again."""
        run_id = record["run_id"]
        existing = self._run_row(con, run_id)
        if existing is not None and not replace:
            self._check_resumable(existing, record)
            con.execute("UPDATE runs SET status = 'running', error = NULL, updated_at = ? WHERE run_id = ?",
                        [record["updated_at"], run_id])
            return
        if existing is not None:
            for table in (*RESULT_TABLES, RUNS):
                con.execute(f"DELETE FROM {table.name} WHERE run_id = ?", [run_id])
        _insert(con, "runs", run_id, pd.DataFrame([record]).drop(columns="run_id"))

    def check_writable(self) -> None:
        """Fail now, with a StoreError saying what to do, if results could not be written here later.

        Commands call this before long work, so an analysis is never computed and then lost to a
        read-only, corrupt or misplaced database. Opening a write transaction also checks the schema.
        """
        if self.path.is_dir():
            raise StoreError(f"results database {self.path} is a folder, not a file; pass a file path with --db")
        if not self.path.parent.exists():
            raise StoreError(f"folder {self.path.parent} for the results database does not exist; create it first")
        target = self.path if self.path.exists() else self.path.parent
        if not os.access(target, os.W_OK):
            raise StoreError(f"results database {self.path} is not writable ({'file' if target == self.path else 'folder'}"
                             " is read-only); fix its permissions or pass another --db path")
        if self.path.exists():  # a new file is created by the first real write, never left empty
            with self._write():
                pass

    def write_run(self, *, kind: str, control: str | None, treatment: str | None, config: dict[str, Any],
                  seed: int, data_fingerprint: str, checkpoint_digests: dict[str, str] | None = None,
                  run_id: str | None = None, replace: bool = False, notes: str | None = None,
                  **results: Any) -> str:
        """Register a run and write its results (the keyword arguments of `write_results`, e.g. lifts=...,
        replay_estimates=..., replay_lifts=...) in ONE transaction: a failure leaves neither a run nor rows
        behind. For results computed in memory (an analysis, a replay's estimates); long jobs use
        create_run, append_unit_metrics and write_results instead."""
        record = self._run_record(kind=kind, control=control, treatment=treatment, config=config, seed=seed,
                                  data_fingerprint=data_fingerprint, checkpoint_digests=checkpoint_digests,
                                  run_id=run_id, notes=notes)
        parsed = self._parse_results(**results)
        with self._write() as con:
            self._register(con, record, replace)
            self._write_parsed(con, record["run_id"], parsed)
        return record["run_id"]

    def _check_resumable(self, existing: dict[str, Any], record: dict[str, Any]) -> None:
        run_id = record["run_id"]
        if existing["status"] == "complete":
            raise RunExistsError(
                f"run {run_id!r} already exists and is complete; pass replace=True (CLI: --replace) to "
                "overwrite it, or choose another run id"
            )
        differ = [f for f in _RESUME_FIELDS if existing[f] != record[f]]
        if differ:
            raise RunExistsError(
                f"run {run_id!r} exists ({existing['status']}) with different {', '.join(differ)}; it cannot "
                "be resumed with these inputs. Pass replace=True (CLI: --replace) or choose another run id"
            )

    def append_unit_metrics(self, run_id: str, unit_metrics: pd.DataFrame) -> int:
        """Add (or overwrite) one batch of units of a running run, in one transaction; returns the unit count.

        Units already stored for this run are overwritten, so re-sending a batch after a crash
        never duplicates rows. Pair with `unit_ids(run_id)` to skip finished units when resuming.
        """
        metrics, attrs = R.split_unit_frame(unit_metrics)
        with self._write() as con:
            run = self._require_run(con, run_id)
            if run["status"] == "complete":
                raise RunExistsError(f"run {run_id!r} is complete; its unit metrics can no longer be appended")
            self._replace_units(con, run_id, metrics, attrs, only_these_units=True)
        return int(len(unit_metrics))

    def append_replay_batch(self, run_id: str, batch: int, unit_metrics: pd.DataFrame, stats: Any) -> None:
        """Store one finished replay batch: its units (overwriting any stored before) and its estimate
        statistics (`replay_batches` rows, `batch` filled in), in ONE transaction, so a batch is either
        wholly stored or absent after a crash. Pair with `replay_batch_ids` to resume."""
        units = R.split_unit_frame(unit_metrics) if len(unit_metrics) else None
        rows = R.replay_batch_rows([{**r, "batch": int(batch)} for r in R.to_records(stats, "replay_batches")])
        with self._write() as con:
            run = self._require_run(con, run_id)
            if run["status"] == "complete":
                raise RunExistsError(f"run {run_id!r} is complete; batches can no longer be appended")
            if units is not None:
                self._replace_units(con, run_id, *units, only_these_units=True)
            con.execute("DELETE FROM replay_batches WHERE run_id = ? AND batch = ?", [run_id, int(batch)])
            _insert(con, REPLAY_BATCHES.name, run_id, pd.DataFrame(rows, columns=REPLAY_BATCHES.column_names[1:]))

    def write_results(
        self,
        run_id: str,
        *,
        unit_metrics: pd.DataFrame | None = None,
        lifts: Any = None,
        checks: Any = None,
        heterogeneity: Any = None,
        power: Any = None,
        gate: Any = None,
        gate_digest: str | None = None,
        ranking_metrics: Any = None,
        summary: dict[str, Any] | None = None,
        status: str = "complete",
        daily_lifts: Any = None,
        replay_estimates: Any = None,
        replay_lifts: Any = None,
        test_plan: Any = None,
    ) -> None:
        """Write a run's results and its status in ONE transaction.

        Each argument that is not None replaces that table's rows for the run (None leaves them as they
        are, e.g. unit metrics appended batch by batch). All inputs are validated before the
        transaction starts; any failure inside it rolls everything back. `replay_estimates` and
        `replay_lifts` take a DataFrame or a list of dicts with the columns of the tables of the same
        names (required: arm / control and treatment, metric, estimator, is_default; see schema.py).
        """
        parsed = self._parse_results(unit_metrics=unit_metrics, lifts=lifts, checks=checks,
                                     heterogeneity=heterogeneity, power=power, gate=gate, gate_digest=gate_digest,
                                     ranking_metrics=ranking_metrics, daily_lifts=daily_lifts, summary=summary,
                                     status=status, replay_estimates=replay_estimates, replay_lifts=replay_lifts,
                                     test_plan=test_plan)
        with self._write() as con:
            self._require_run(con, run_id)
            self._write_parsed(con, run_id, parsed)

    def _parse_results(self, *, unit_metrics: pd.DataFrame | None = None, lifts: Any = None, checks: Any = None,
                       heterogeneity: Any = None, power: Any = None, gate: Any = None,
                       gate_digest: str | None = None, ranking_metrics: Any = None, daily_lifts: Any = None,
                       summary: dict[str, Any] | None = None, status: str = "complete",
                       replay_estimates: Any = None, replay_lifts: Any = None,
                       test_plan: Any = None) -> dict[str, Any]:
        """Validate `write_results`' inputs before any transaction starts."""
        if summary is not None and not isinstance(summary, dict):
            raise InvalidResultsError(f"summary must be a dict, got {type(summary).__name__}")
        if status not in ("running", "complete"):
            raise InvalidResultsError(f"status must be 'running' or 'complete' (use fail_run for failures), got {status!r}")
        units = R.split_unit_frame(unit_metrics) if unit_metrics is not None else None
        tables = [
            (table, parse(given))
            for table, parse, given in (
                (LIFTS, R.lift_rows, lifts),
                (CHECKS, R.check_rows, checks),
                (HETEROGENEITY, R.heterogeneity_rows, heterogeneity),
                (POWER, R.power_rows, power),
                (RANKING_METRICS, R.ranking_rows, ranking_metrics),
                (DAILY_LIFTS, R.daily_rows, daily_lifts),
                (REPLAY_ESTIMATES, R.replay_estimate_rows, replay_estimates),
                (REPLAY_LIFTS, R.replay_lift_rows, replay_lifts),
                (REPLAY_TEST_PLAN, R.test_plan_rows, test_plan),
            )
            if given is not None
        ]
        gate_parsed = R.gate_rows(gate) if gate is not None else None
        return {"units": units, "tables": tables, "gate": gate_parsed, "gate_digest": gate_digest,
                "summary": summary, "status": status}

    def _write_parsed(self, con: duckdb.DuckDBPyConnection, run_id: str, parsed: dict[str, Any]) -> None:
        units, tables, gate_parsed = parsed["units"], parsed["tables"], parsed["gate"]
        summary, status, gate_digest = parsed["summary"], parsed["status"], parsed["gate_digest"]
        if units is not None:
            self._replace_units(con, run_id, *units, only_these_units=False)
        for table, table_rows in tables:
            self._replace_rows(con, run_id, table, table_rows)
        if gate_parsed is not None:
            self._replace_gate(con, run_id, *gate_parsed, gate_digest=gate_digest)
        if summary is not None:
            con.execute("UPDATE runs SET summary = ? WHERE run_id = ?", [R.to_json(summary), run_id])
        con.execute(
            "UPDATE runs SET status = ?, error = NULL, updated_at = ? WHERE run_id = ?",
            [status, _utcnow(), run_id],
        )

    def set_gate(self, run_id: str, gate: Any, *, gate_digest: str | None = None) -> None:
        """Store (replacing any earlier) gate decision of a run, e.g. from `harness gate`."""
        decision, rules = R.gate_rows(gate)
        with self._write() as con:
            self._require_run(con, run_id)
            self._replace_gate(con, run_id, decision, rules, gate_digest=gate_digest)

    def fail_run(self, run_id: str, error: str) -> None:
        """Mark a run failed with the reason; its results (if any) are left as the last commit left them."""
        with self._write() as con:
            self._require_run(con, run_id)
            con.execute(
                "UPDATE runs SET status = 'failed', error = ?, updated_at = ? WHERE run_id = ?",
                [str(error), _utcnow(), run_id],
            )

    def delete_run(self, run_id: str) -> None:
        """Remove a run and all its rows."""
        with self._write() as con:
            self._require_run(con, run_id)
            for table in (*RESULT_TABLES, RUNS):
                con.execute(f"DELETE FROM {table.name} WHERE run_id = ?", [run_id])

    @contextmanager
    def recording(self, run_id: str) -> Iterator[str]:
        """Context manager: if the block raises (or is interrupted), mark the run failed, then re-raise."""
        try:
            yield run_id
        except BaseException as exc:
            with suppress(StoreError, duckdb.Error):
                self.fail_run(run_id, f"{type(exc).__name__}: {exc}")
            raise

    # The _replace_* steps are separate methods so tests can inject a failure between them.
    def _replace_units(
        self,
        con: duckdb.DuckDBPyConnection,
        run_id: str,
        metrics: pd.DataFrame,
        attrs: pd.DataFrame,
        *,
        only_these_units: bool,
    ) -> None:
        batch = pd.DataFrame({"unit_id": pd.concat([metrics["unit_id"], attrs["unit_id"]]).unique()})
        for table, frame in ((UNIT_METRICS, metrics), (UNIT_ATTRIBUTES, attrs)):
            if only_these_units:
                con.register("_harness_batch", batch)
                try:
                    con.execute(
                        f"DELETE FROM {table.name} WHERE run_id = ? AND unit_id IN (SELECT unit_id FROM _harness_batch)",
                        [run_id],
                    )
                finally:
                    con.unregister("_harness_batch")
            else:
                con.execute(f"DELETE FROM {table.name} WHERE run_id = ?", [run_id])
            _insert(con, table.name, run_id, frame)

    def _replace_rows(
        self, con: duckdb.DuckDBPyConnection, run_id: str, table: Table, rows: list[dict[str, Any]]
    ) -> None:
        con.execute(f"DELETE FROM {table.name} WHERE run_id = ?", [run_id])
        _insert(con, table.name, run_id, pd.DataFrame(rows, columns=table.column_names[1:]))

    def _replace_gate(
        self,
        con: duckdb.DuckDBPyConnection,
        run_id: str,
        decision: str,
        rules: list[dict[str, Any]],
        *,
        gate_digest: str | None,
    ) -> None:
        frame = pd.DataFrame(rules, columns=["treatment", *R.GATE_RULE_FIELDS]).astype({"passed": "boolean"})
        frame.insert(0, "decision", decision)
        frame["gate_digest"] = gate_digest
        frame["evaluated_at"] = _utcnow()
        con.execute("DELETE FROM gate_decisions WHERE run_id = ?", [run_id])
        _insert(con, GATE_DECISIONS_TABLE.name, run_id, frame)
