"""`ResultsReader`: the read side of the results database, for the dashboard and `harness runs`.

`ResultsStore` (harness/store/results.py) extends it with the writes. The dashboard holds a
`ResultsReader`, so it cannot write by construction rather than by discipline. Every read opens a
read-only connection for one query, binds run ids as parameters, closes the connection at once and
retries while a writer holds the file lock (docs/results-store.md).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from harness.store import rows as R
from harness.store.connection import RetryPolicy, read_connection
from harness.store.errors import SchemaVersionError, UnknownRunError
from harness.store.schema import (
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
    RUNS,
    SCHEMA_VERSION,
    UNIT_ATTRIBUTES,
    UNIT_METRICS,
    Table,
)

DEFAULT_DB_NAME = "harness.duckdb"
DB_ENV_VAR = "HARNESS_DB"


def default_db_path() -> Path:
    """`$HARNESS_DB` if set, else `harness.duckdb` in the working directory."""
    env = os.environ.get(DB_ENV_VAR)
    return Path(env) if env else Path.cwd() / DEFAULT_DB_NAME


class ResultsReader:
    """Typed reads of one results database file; holds no connection between calls.

    `lock_timeout_s` bounds how long a call waits for another process's lock before StoreLockedError.
    """

    def __init__(self, path: Path | str | None = None, *, lock_timeout_s: float = 30.0) -> None:
        self.path = Path(path) if path is not None else default_db_path()
        self.retry = RetryPolicy(timeout_s=lock_timeout_s)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    # ------------------------------------------------------------------ connections and schema
    @contextmanager
    def _read(self) -> Iterator[duckdb.DuckDBPyConnection | None]:
        with read_connection(self.path, self.retry) as con:
            if con is not None and self._stored_version(con) is None:
                yield None  # an empty file: nothing written yet
                return
            yield con

    def _stored_version(self, con: duckdb.DuckDBPyConnection) -> int | None:
        tables = {
            r[0]
            for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
            ).fetchall()
        }
        if "schema_version" not in tables:
            if tables:
                raise SchemaVersionError(
                    f"{self.path} is not a harness results database (it has tables {sorted(tables)} but no "
                    "schema_version); pass another --db path"
                )
            return None
        version = con.execute("SELECT max(version) FROM schema_version").fetchall()[0][0]
        if version is None or version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{self.path} has results-schema version {version}, but this harness knows versions up to "
                f"{SCHEMA_VERSION}; upgrade the harness or use another --db path"
            )
        return int(version)

    def schema_version(self) -> int | None:
        """The database's schema version, or None when it does not exist yet."""
        with self._read() as con:
            return None if con is None else self._stored_version(con)

    @staticmethod
    def _run_row(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, Any] | None:
        cur = con.execute("SELECT * FROM runs WHERE run_id = ?", [run_id])
        rows = cur.fetchall()  # fetch to the end: DuckDB 2 refuses new work on a half-read result
        if not rows:
            return None
        return dict(zip([d[0] for d in cur.description], rows[0], strict=True))

    def _require_run(self, con: duckdb.DuckDBPyConnection | None, run_id: str) -> dict[str, Any]:
        row = None if con is None else self._run_row(con, run_id)
        if row is None:
            raise UnknownRunError(
                f"no run {run_id!r} in {self.path}; list the runs with `harness runs list --db {self.path}`"
            )
        return row

    # ------------------------------------------------------------------ reads
    def _query(self, sql: str, params: list[Any], columns: list[str], run_id: str | None = None) -> pd.DataFrame:
        with self._read() as con:
            if run_id is not None:
                self._require_run(con, run_id)
            if con is None:
                return pd.DataFrame(columns=columns)
            return con.execute(sql, params).df()

    def runs(self) -> pd.DataFrame:
        """All runs, oldest first, with their gate decision (null when none) and number of lift rows."""
        sql = (
            "SELECT r.*, g.decision, coalesce(l.n, 0) AS n_lifts FROM runs r "
            "LEFT JOIN (SELECT run_id, any_value(decision) AS decision FROM gate_decisions GROUP BY run_id) g "
            "USING (run_id) "
            "LEFT JOIN (SELECT run_id, count(*) AS n FROM lifts GROUP BY run_id) l USING (run_id) "
            "ORDER BY r.created_at, r.run_id"
        )
        return self._query(sql, [], [*RUNS.column_names, "decision", "n_lifts"])

    def run(self, run_id: str) -> dict[str, Any]:
        """One run as a dict, with `config`, `summary` and `checkpoint_digests` parsed from JSON."""
        with self._read() as con:
            row = self._require_run(con, run_id)
        row["config"] = json.loads(row["config"])
        row["checkpoint_digests"] = json.loads(row["checkpoint_digests"] or "{}")
        row["summary"] = json.loads(row["summary"]) if row["summary"] else {}
        return row

    def _table(self, table: Table, run_id: str, order_by: tuple[str, ...] = ()) -> pd.DataFrame:
        """The run's rows of `table` (without run_id); none from a file older than the table (`Table.since`),
        which gets the table on its next write."""
        columns = table.column_names[1:]
        order = f" ORDER BY {', '.join(order_by)}" if order_by else ""
        with self._read() as con:
            self._require_run(con, run_id)
            assert con is not None  # _require_run raised otherwise
            version = self._stored_version(con)
            if version is not None and version < table.since:
                return pd.DataFrame(columns=columns)
            return con.execute(f"SELECT * EXCLUDE (run_id) FROM {table.name} WHERE run_id = ?{order}", [run_id]).df()

    def lifts(self, run_id: str) -> pd.DataFrame:
        """The run's lift rows in the order they were written (LiftResult fields; `extra` is JSON text)."""
        return self._table(LIFTS, run_id)

    def checks(self, run_id: str) -> pd.DataFrame:
        """The run's trust checks (CheckResult fields plus `status`)."""
        return self._table(CHECKS, run_id)

    def heterogeneity(self, run_id: str) -> pd.DataFrame:
        return self._table(HETEROGENEITY, run_id)

    def power(self, run_id: str) -> pd.DataFrame:
        return self._table(POWER, run_id)

    def daily_lifts(self, run_id: str) -> pd.DataFrame:
        """Cumulative lifts per day (DailyLift fields), by metric, treatment and look; empty without --by-day."""
        frame = self._table(DAILY_LIFTS, run_id)
        return frame.sort_values(["metric", "treatment", "look"], kind="stable").reset_index(drop=True)

    def replay_estimates(self, run_id: str) -> pd.DataFrame:
        """The replay's off-policy value of each arm (policy) per metric and estimator, ordered by arm,
        metric and estimator; `is_default` marks the estimator the run's lifts and gate use. Empty for a
        run without them (any non-replay run, or a file written before schema version 3)."""
        return self._table(REPLAY_ESTIMATES, run_id, ("arm", "metric", "estimator"))

    def replay_lifts(self, run_id: str) -> pd.DataFrame:
        """The replay's paired lift of each treatment over the control per metric and estimator, ordered by
        treatment, metric and estimator, with the oracle's true lift and coverage where known."""
        return self._table(REPLAY_LIFTS, run_id, ("treatment", "metric", "estimator"))

    def replay_batches(self, run_id: str) -> pd.DataFrame:
        """A replay's per-batch estimate statistics, ordered by batch, arm, metric and estimator."""
        return self._table(REPLAY_BATCHES, run_id, ("batch", "arm", "metric", "estimator"))

    def replay_batch_ids(self, run_id: str) -> set[int]:
        """Batches of a replay already stored (to skip when resuming)."""
        return {int(b) for b in self.replay_batches(run_id)["batch"].unique()}

    def test_plan(self, run_id: str) -> pd.DataFrame:
        """The users and days an online test needs to detect a replay's estimated lift, per treatment,
        metric and with/without CUPED (empty for other runs and files before schema version 4)."""
        return self._table(REPLAY_TEST_PLAN, run_id, ("treatment", "metric", "cuped"))

    def gate_decisions(self, run_id: str) -> pd.DataFrame:
        """One row per gate rule (all carry the decision); empty when the run has no gate decision."""
        return self._table(GATE_DECISIONS_TABLE, run_id)

    def ranking_metrics(self, run_id: str | None = None) -> pd.DataFrame:
        """Offline ranking metrics of one run, or of all runs (with run_id) when run_id is None. Rows written
        before schema version 5 (or read from such a file) carry protocol 'leave-one-out' and slice 'all'."""
        if run_id is None:
            frame = self._query("SELECT * FROM ranking_metrics", [], RANKING_METRICS.column_names)
        else:
            frame = self._table(RANKING_METRICS, run_id)
        for column, value in R.RANKING_DEFAULTS.items():
            frame[column] = frame[column].fillna(value) if column in frame.columns else value
        if "n_queries" not in frame.columns:
            frame["n_queries"] = None
        return frame

    def unit_ids(self, run_id: str) -> set[str]:
        """Ids (as text) of the units stored for a run, e.g. to skip them when resuming a replay."""
        frame = self._query(
            "SELECT DISTINCT unit_id FROM unit_metrics WHERE run_id = ? "
            "UNION SELECT DISTINCT unit_id FROM unit_attributes WHERE run_id = ?",
            [run_id, run_id], ["unit_id"], run_id,
        )
        return set(frame["unit_id"])

    def unit_metrics(self, run_id: str, *, wide: bool = True) -> pd.DataFrame:
        """The run's per-unit values: wide (unit_id, arm, metric columns..., attribute columns...) or long.

        Unit ids come back as text; units and columns keep the order they were written in. The pivot
        runs inside DuckDB (one `max(value) FILTER (WHERE metric = ...)` per column), about ten times
        faster than pandas' pivot on a million values.
        """
        with self._read() as con:
            self._require_run(con, run_id)
            assert con is not None  # _require_run raised otherwise
            if not wide:
                return con.execute(
                    "SELECT unit_id, arm, metric, value FROM unit_metrics WHERE run_id = ? ORDER BY rowid",
                    [run_id],
                ).df()
            parts: list[str] = []
            params: list[Any] = []
            names: list[str] = []
            for table, key in ((UNIT_METRICS, "metric"), (UNIT_ATTRIBUTES, "attribute")):
                cols = [r[0] for r in con.execute(
                    f"SELECT {key} FROM {table.name} WHERE run_id = ? GROUP BY {key} ORDER BY min(rowid)", [run_id]
                ).fetchall()]
                if not cols:
                    continue
                select = ", ".join(f"max(value) FILTER (WHERE {key} = ?) AS c{len(names) + i}" for i in range(len(cols)))
                parts.append(f"(SELECT unit_id, arm, min(rowid) AS pos, {select} FROM {table.name} "
                             "WHERE run_id = ? GROUP BY unit_id, arm)")
                params += [*cols, run_id]
                names += cols
            if not parts:
                return pd.DataFrame(columns=["unit_id", "arm"])
            source = parts[0] if len(parts) == 1 else f"{parts[0]} AS m FULL JOIN {parts[1]} AS a USING (unit_id, arm)"
            pos = "pos" if len(parts) == 1 else "coalesce(m.pos, a.pos)"
            value_cols = ", ".join(f"c{i}" for i in range(len(names)))
            frame = con.execute(
                f"SELECT unit_id, arm, {value_cols} FROM {source} ORDER BY {pos}", params
            ).df()
        frame.columns = ["unit_id", "arm", *names]
        return frame
