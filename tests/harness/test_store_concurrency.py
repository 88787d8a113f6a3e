"""The results store under failure and concurrency: atomic writes, a killed writer, two processes.

Subprocesses are real (DuckDB's file lock is per process); every wait is bounded.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

from harness.store import ResultsStore, StoreLockedError
from harness.store.results import ResultsStore as _Store

RUN = dict(kind="replay", control="base", treatment="lsvcr", config={"k": 1}, seed=3, data_fingerprint="abc")


def _units(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(n)
    return pd.DataFrame({"unit_id": np.arange(n), "arm": np.where(np.arange(n) % 2, "lsvcr", "base"),
                         "watch_time_s": rng.exponential(5.0, n), "requests": rng.integers(1, 9, n)})


def _snapshot(store: ResultsStore, run_id: str) -> tuple:
    return (store.run(run_id)["status"], store.lifts(run_id)["abs_diff"].tolist(),
            store.unit_metrics(run_id, wide=False).shape[0], store.checks(run_id).shape[0],
            store.gate_decisions(run_id)["decision"].tolist())


def _python(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_failure_mid_write_rolls_back_everything(tmp_path, monkeypatch):
    store = ResultsStore(tmp_path / "r.duckdb", lock_timeout_s=5)
    run_id = store.create_run(**RUN)
    store.write_results(run_id, unit_metrics=_units(10), lifts=[{"metric": "m", "abs_diff": 1.0}],
                        checks=[{"check": "srm", "passed": True}], gate={"decision": "SHIP"})
    before = _snapshot(store, run_id)
    assert before == ("complete", [1.0], 20, 1, ["SHIP"])

    real = _Store._replace_rows

    def failing(self, con, rid, table, rows):  # lifts go in first, then this raises on checks
        if table.name == "checks":
            raise RuntimeError("injected failure")
        return real(self, con, rid, table, rows)

    monkeypatch.setattr(_Store, "_replace_rows", failing)
    with pytest.raises(RuntimeError, match="injected failure"):
        store.write_results(run_id, unit_metrics=_units(30), lifts=[{"metric": "m", "abs_diff": 2.0}],
                            checks=[], gate={"decision": "NO_SHIP"})
    assert _snapshot(store, run_id) == before


def test_killed_writer_leaves_no_half_written_results(tmp_path):
    db = tmp_path / "r.duckdb"
    store = ResultsStore(db, lock_timeout_s=5)
    run_id = store.create_run(**RUN)
    proc = _python(
        """
        import os, sys
        import numpy as np, pandas as pd
        from harness.store.results import ResultsStore
        real = ResultsStore._replace_rows
        def die(self, con, rid, table, rows):
            if table.name == "checks":  # unit metrics and lifts are already inserted in this transaction
                os._exit(17)
            return real(self, con, rid, table, rows)
        ResultsStore._replace_rows = die
        units = pd.DataFrame({"unit_id": np.arange(5000), "arm": "base", "y": np.ones(5000)})
        ResultsStore(sys.argv[1]).write_results(sys.argv[2], unit_metrics=units,
            lifts=[{"metric": "y", "abs_diff": 1.0}], checks=[{"check": "srm", "passed": True}])
        """,
        str(db), run_id,
    )
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 17, err
    assert _snapshot(store, run_id) == ("running", [], 0, 0, [])
    store.write_results(run_id, lifts=[{"metric": "y", "abs_diff": 1.0}])  # the database still works
    assert store.run(run_id)["status"] == "complete"


def test_reader_and_writer_processes_interleave(tmp_path):
    """A writer process commits runs while this process reads: no read fails, none sees a partial run."""
    db = tmp_path / "r.duckdb"
    n_runs, n_lifts = 6, 5
    writer = _python(
        """
        import sys
        import numpy as np, pandas as pd
        from harness.store import ResultsStore
        store = ResultsStore(sys.argv[1], lock_timeout_s=20)
        n_runs, n_lifts = int(sys.argv[2]), int(sys.argv[3])
        units = pd.DataFrame({"unit_id": np.arange(500), "arm": "base", "y": np.arange(500.0)})
        for i in range(n_runs):
            rid = store.create_run(kind="replay", control="a", treatment="b", config={}, seed=i,
                                   data_fingerprint="x", run_id=f"run-{i:02d}")
            store.write_results(rid, unit_metrics=units,
                                lifts=[{"metric": f"m{j}", "abs_diff": float(i)} for j in range(n_lifts)])
        print("done", flush=True)
        """,
        str(db), str(n_runs), str(n_lifts),
    )
    store = ResultsStore(db, lock_timeout_s=20)
    reads, seen_complete = 0, set()
    deadline = time.monotonic() + 90
    while writer.poll() is None and time.monotonic() < deadline:
        runs = store.runs()
        reads += 1
        for _, run in runs.iterrows():
            # a committed run is either 'running' with no lifts or 'complete' with all of them
            expected = n_lifts if run["status"] == "complete" else 0
            assert run["n_lifts"] == expected, run.to_dict()
            if run["status"] == "complete":
                seen_complete.add(run["run_id"])
        time.sleep(0.05)  # a dashboard polls every few seconds; this is far more aggressive
    out, err = writer.communicate(timeout=30)
    assert writer.returncode == 0 and out.strip() == "done", err
    assert reads >= 3 and seen_complete  # the reads really interleaved with the writes
    final = store.runs()
    assert final["run_id"].tolist() == [f"run-{i:02d}" for i in range(n_runs)]
    assert (final["status"] == "complete").all() and (final["n_lifts"] == n_lifts).all()
    assert len(store.unit_metrics("run-05")) == 500


def test_lock_held_too_long_is_a_clear_error_and_writer_waits(tmp_path):
    """Orderings, not wall-clock bounds: a writer cannot finish while another process holds the file,
    times out with a clear error when its timeout is short, and finishes once the holder lets go."""
    import threading

    db = tmp_path / "r.duckdb"
    ResultsStore(db).create_run(**RUN, run_id="r1")
    holder = _python(
        """
        import sys, duckdb
        con = duckdb.connect(sys.argv[1], read_only=True)
        print("held", flush=True)
        sys.stdin.readline()  # hold until told to let go
        con.close()
        print("released", flush=True)
        """,
        str(db),
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(StoreLockedError, match="stayed locked by another process"):
        ResultsStore(db, lock_timeout_s=0.2).fail_run("r1", "x")
    errors: list[BaseException] = []

    def write() -> None:
        try:
            ResultsStore(db, lock_timeout_s=60).fail_run("r1", "after wait")  # retries until the reader lets go
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    writer.join(timeout=0.5)
    assert writer.is_alive()  # still waiting: the holder has the file
    holder.stdin.write("go\n")
    holder.stdin.flush()
    assert holder.stdout.readline().strip() == "released"
    writer.join(timeout=60)
    assert not writer.is_alive() and not errors, errors
    holder.communicate(timeout=30)
    assert ResultsStore(db).run("r1")["error"] == "after wait"


def test_same_process_connection_with_other_mode_is_waited_for(tmp_path):
    import duckdb

    db = tmp_path / "r.duckdb"
    ResultsStore(db).create_run(**RUN, run_id="r1")
    held = duckdb.connect(str(db), read_only=True)
    try:
        with pytest.raises(StoreLockedError, match="stayed locked"):
            ResultsStore(db, lock_timeout_s=0.1).fail_run("r1", "x")
    finally:
        held.close()
    ResultsStore(db, lock_timeout_s=1).fail_run("r1", "x")
    assert ResultsStore(db).run("r1")["status"] == "failed"
