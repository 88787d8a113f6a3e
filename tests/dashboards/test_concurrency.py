"""The dashboard keeps working while other processes write to its database (DuckDB locks the whole file
while a writer holds it): with a writer committing runs in a loop, while a writer holds the lock for
a while ("database busy, retrying", then the figures), and when the lock outlasts the page's patience."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from harness.store import ResultsStore
from tests.dashboards.helpers import all_text, frames, no_exception, open_page, texts
from tests.dashboards.test_pages import PAGES

ROOT = Path(__file__).resolve().parents[2]

WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np, pandas as pd
    from harness.store import ResultsStore
    store = ResultsStore(sys.argv[1], lock_timeout_s=60)
    rng = np.random.default_rng(0)
    end = time.monotonic() + float(sys.argv[2])
    i = 0
    print("started", flush=True)
    while time.monotonic() < end:
        rid = store.create_run(kind="analyze", control="a", treatment="b", config={"i": i}, seed=i,
                               data_fingerprint=f"w{i}", run_id=f"w-{i}")
        units = pd.DataFrame({"unit_id": np.arange(400), "arm": np.repeat(["a", "b"], 200),
                              "y": rng.normal(size=400)})
        store.write_results(rid, unit_metrics=units, lifts=[{"metric": "y", "control": "a", "treatment": "b",
                                                             "abs_diff": 0.1, "rel_diff": 0.01}])
        i += 1
    print(i, flush=True)
""")

HOLDER = textwrap.dedent("""
    import sys, time, duckdb
    con = duckdb.connect(sys.argv[1])  # a read-write connection locks the file against every other process
    con.execute("CREATE TABLE IF NOT EXISTS _held (x INTEGER)")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    con.execute("DROP TABLE _held")
    con.close()
""")


def _start(code: str, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() in ("started", "locked")
    return proc


def test_pages_render_while_another_process_writes(db_copy, monkeypatch):
    store = ResultsStore(db_copy)
    lifts = store.lifts("ab-cuped")
    writer = _start(WRITER, str(db_copy), "12")
    try:
        rounds = 0
        while writer.poll() is None and rounds < 3:
            for page in PAGES:
                at = open_page(monkeypatch, db_copy, page=page, run="ab-cuped")
                no_exception(at)
                assert not [t for t in texts(at, "error") if not t.startswith("### Launch decision")], page
                if page == "Metrics":  # the values are the stored ones, write or no write
                    shown = frames(at)[0]
                    overall = lifts[lifts["segment"] == "all"]
                    assert sorted(shown["rel_diff"]) == sorted(overall["rel_diff"])
                if page == "Runs":  # a newer commit is seen on the next render
                    assert {"ab-cuped", "rep-1"} <= set(frames(at)[0]["run_id"])
            rounds += 1
    finally:
        out, _ = writer.communicate(timeout=120)
    assert writer.returncode == 0
    written = int(out.strip().splitlines()[-1])
    assert rounds >= 1 and written >= 3, (rounds, written)  # both sides made progress
    at = open_page(monkeypatch, db_copy, page="Runs")
    assert len(frames(at)[0]) == 5 + written  # every committed run, none half-written


def test_busy_database_waits_then_shows_the_figures(db_copy, monkeypatch):
    holder = _start(HOLDER, str(db_copy), "2.5")
    try:
        t0 = time.monotonic()
        at = open_page(monkeypatch, db_copy, page="Decision", run="ab-cuped")
        waited = time.monotonic() - t0
    finally:
        holder.wait(timeout=30)
    no_exception(at)
    assert waited > 1.0
    assert any(t.startswith("The database was busy for ") for t in texts(at, "caption")), all_text(at)
    assert "### Launch decision for lsvcr, lsvcr_b: NO_SHIP" in texts(at, "error")


def test_database_busy_too_long_is_a_clear_message(db_copy, monkeypatch):
    holder = _start(HOLDER, str(db_copy), "6")
    try:
        at = open_page(monkeypatch, db_copy, page="Decision", run="ab-cuped", env={"HARNESS_DASHBOARD_BUSY_S": "1.5"})
    finally:
        holder.wait(timeout=30)
    no_exception(at)
    errors = texts(at, "error")
    assert len(errors) == 1 and errors[0].startswith("Database busy: the results database") \
        and "stayed locked by another process" in errors[0]
    at.run()  # the writer is gone: a rerun shows the page
    assert "### Launch decision for lsvcr, lsvcr_b: NO_SHIP" in texts(at, "error")
