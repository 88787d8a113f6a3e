"""What the page says when there is nothing (right) to show: a missing, empty, foreign, older- or newer-
schema database, a folder, an unknown run id. Always a clear message, never a traceback; and the
dashboard never writes to the file it shows."""

from __future__ import annotations

import hashlib

import duckdb
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.cli.dashboard_cmd import streamlit_command
from harness.cli.shared import EXIT_ERROR
from harness.store import ResultsStore
from tests.dashboards.helpers import all_text, no_exception, open_page, texts
from tests.dashboards.test_pages import PAGES

runner = CliRunner()


def _only_message(at, kind: str = "error") -> str:
    no_exception(at)
    shown = texts(at, kind)
    assert len(shown) == 1, all_text(at)
    return shown[0]


def test_missing_database(tmp_path, monkeypatch):
    at = open_page(monkeypatch, tmp_path / "nope.duckdb")
    message = _only_message(at)
    assert message.startswith(f"No results database at `{tmp_path / 'nope.duckdb'}`")
    assert "harness dashboard --db PATH" in message
    assert not (tmp_path / "nope.duckdb").exists()  # reading never creates it


def test_folder_instead_of_a_database(tmp_path, monkeypatch):
    assert "is a folder" in _only_message(open_page(monkeypatch, tmp_path))


@pytest.mark.parametrize("how", ["zero bytes", "no tables", "no runs"])
def test_empty_database(tmp_path, monkeypatch, how):
    db = tmp_path / "empty.duckdb"
    if how == "zero bytes":
        db.write_bytes(b"")
    else:
        duckdb.connect(str(db)).close()
        if how == "no runs":  # a results database whose only run was deleted
            store = ResultsStore(db)
            store.delete_run(store.create_run(kind="analyze", control="a", treatment="b", config={}, seed=0,
                                              data_fingerprint="x"))
    at = open_page(monkeypatch, db)
    message = _only_message(at, "info")
    assert "is empty" in message or "holds no runs yet" in message
    assert not at.main.get("error")


def test_unknown_run_id_in_the_link(results_db, monkeypatch):
    at = open_page(monkeypatch, results_db, page="Metrics", run="no-such-run")
    assert _only_message(at) == f"There is no run `no-such-run` in `{results_db}`. Pick a run in the sidebar, " \
                                "or on the Runs page."
    assert at.sidebar.selectbox(key="run").value is None
    at.sidebar.selectbox(key="run").set_value("ab-cuped").run()  # picking a run recovers
    no_exception(at)
    assert not at.main.get("error") and at.main.get("header")[0].value == "Metrics"


def test_unknown_page_in_the_link_opens_the_decision(results_db, monkeypatch):
    at = open_page(monkeypatch, results_db, page="Nope", run="ab-cuped")
    assert at.main.get("header")[0].value == "Decision"


def test_foreign_duckdb_file(tmp_path, monkeypatch):
    db = tmp_path / "logs.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE TABLE requests (request_id BIGINT)")
    assert "is not a harness results database" in _only_message(open_page(monkeypatch, db))


def test_corrupt_file(tmp_path, monkeypatch):
    db = tmp_path / "junk.duckdb"
    db.write_bytes(b"this is not a database" * 500)
    assert "cannot be opened" in _only_message(open_page(monkeypatch, db))


def test_newer_schema_is_refused_clearly(db_copy, monkeypatch):
    with duckdb.connect(str(db_copy)) as con:
        con.execute("UPDATE schema_version SET version = 99")
    assert "has results-schema version 99" in _only_message(open_page(monkeypatch, db_copy))


def test_older_schema_is_read_as_it_is(db_copy, monkeypatch):
    """A version-1 file (no daily lifts, no replay tables, fewer lift columns): every page still renders,
    says what is missing, and the file is not migrated."""
    with duckdb.connect(str(db_copy)) as con:  # the database as version 1 wrote it
        for t in ("daily_lifts", "replay_estimates", "replay_lifts", "replay_batches", "replay_test_plan"):
            con.execute(f"DROP TABLE IF EXISTS {t}")
        for c in ("bayes_prior", "bayes_chance_to_win", "bayes_risk_control", "bayes_risk_treatment", "bayes_ci_low",
                  "bayes_ci_high", "cuped_theta"):
            con.execute(f"ALTER TABLE lifts DROP COLUMN {c}")
        for c in ("protocol", "slice", "n_queries"):
            con.execute(f"ALTER TABLE ranking_metrics DROP COLUMN IF EXISTS {c}")
        con.execute("UPDATE schema_version SET version = 1")
    before = hashlib.sha256(db_copy.read_bytes()).hexdigest()
    for page in PAGES:
        for run in ("ab-cuped", "rep-1"):
            at = open_page(monkeypatch, db_copy, page=page, run=run)
            no_exception(at)
            assert not [t for t in texts(at, "error") if not t.startswith("### Launch decision")], (page, run)
            assert "older results schema v1" in at.sidebar.get("alert")[0].value if at.sidebar.get("alert") else \
                "older results schema v1" in " ".join(w.value for w in at.sidebar.get("warning"))
    at = open_page(monkeypatch, db_copy, page="Over time", run="ab-cuped")
    assert "schema predates daily lifts" in all_text(at)
    at = open_page(monkeypatch, db_copy, page="Truth", run="rep-1")
    assert "has no true lifts" in all_text(at)
    assert ResultsStore(db_copy).schema_version() == 1
    assert hashlib.sha256(db_copy.read_bytes()).hexdigest() == before


def test_rendering_every_page_never_writes_the_database(db_copy, monkeypatch):
    before = hashlib.sha256(db_copy.read_bytes()).hexdigest()
    mtime = db_copy.stat().st_mtime_ns
    for page in PAGES:
        no_exception(open_page(monkeypatch, db_copy, page=page, run="rep-1"))
    assert hashlib.sha256(db_copy.read_bytes()).hexdigest() == before and db_copy.stat().st_mtime_ns == mtime
    assert not db_copy.with_name(db_copy.name + ".wal").exists()


def test_a_bug_is_one_line_on_the_page_not_a_traceback(results_db, monkeypatch):
    from dashboards import navigation

    def broken(ctx):
        raise ValueError("an internal shape mismatch")

    monkeypatch.setitem(navigation.PAGES, "Metrics", broken)
    monkeypatch.delenv("HARNESS_DEBUG", raising=False)
    at = open_page(monkeypatch, results_db, page="Runs", run="ab-cuped")
    at.sidebar.radio(key="page").set_value("Metrics").run()
    assert "Unexpected ValueError: an internal shape mismatch. This is a bug" in _only_message(at)


# ------------------------------------------------------------------------------ the command's own errors
def test_dashboard_command_refuses_a_missing_database(tmp_path):
    r = runner.invoke(app, ["dashboard", "--db", str(tmp_path / "none.duckdb"), "--headless"])
    assert r.exit_code == EXIT_ERROR
    assert r.stderr.startswith("error: results database") and "does not exist" in r.stderr
    assert not (tmp_path / "none.duckdb").exists()


def test_dashboard_command_refuses_a_folder_and_a_busy_port(results_db, tmp_path):
    import socket

    r = runner.invoke(app, ["dashboard", "--db", str(tmp_path), "--headless"])
    assert r.exit_code == EXIT_ERROR and "is a folder" in r.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = runner.invoke(app, ["dashboard", "--db", str(results_db), "--port", str(port), "--headless"])
    assert r.exit_code == EXIT_ERROR and f"cannot serve on 127.0.0.1:{port}" in r.stderr


def test_the_streamlit_command_line(tmp_path):
    cmd = streamlit_command(tmp_path / "app.py", host="127.0.0.1", port=8600, headless=True)
    assert cmd[1:4] == ["-m", "streamlit", "run"]
    flags = dict(zip(cmd[5::2], cmd[6::2], strict=True))
    assert flags["--server.port"] == "8600" and flags["--server.headless"] == "true"
    assert flags["--browser.gatherUsageStats"] == "false"
