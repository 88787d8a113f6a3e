"""The dashboard's frame: the sidebar (run pickers, page, lift scale), the link state, and the one place
where every failure becomes a message on the page instead of a traceback.

A link carries the run and the page (`?run=rep-1&page=Metrics`), so a page can be shared. An unknown
run id in the link, a missing, empty, foreign or newer database, and a database that stays busy are
each a clear message; an unexpected error is reported as a bug in one line (HARNESS_DEBUG=1 adds the
traceback).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboards.context import PageContext
from dashboards.data import DatabaseBusy, Reader, db_path
from dashboards.format import SCALES, run_label
from dashboards.views import compare, decision, metrics, models, over_time, runs, segments, test_plan, truth
from harness.store import SCHEMA_VERSION, StoreError

PAGES: dict[str, Callable[[PageContext], None]] = {
    "Runs": runs.render,
    "Decision": decision.render,
    "Metrics": metrics.render,
    "Over time": over_time.render,
    "Segments": segments.render,
    "Test plan": test_plan.render,
    "Models": models.render,
    "Truth": truth.render,
    "Compare": compare.render,
}
FIRST_PAGE = "Decision"  # a run's first screen
NO_RUN = ""


def main() -> None:
    st.set_page_config(page_title="LSVCR launch dashboard", page_icon=":material/traffic:", layout="wide")
    path = db_path()
    st.sidebar.markdown("## LSVCR launch dashboard")
    st.sidebar.caption(f"Results database (read-only): `{path}`")
    slot = st.empty()  # the "database busy" state
    try:
        _page(path, slot)
    except DatabaseBusy as exc:
        st.error(f"Database busy: {exc}", icon=":material/hourglass_top:")
    except StoreError as exc:
        st.error(str(exc).split("\n")[0], icon=":material/error:")
    except Exception as exc:  # a bug: one line on the page, never a traceback unless asked for
        st.error(f"Unexpected {type(exc).__name__}: {exc}. This is a bug in the dashboard; rerun with "
                 "HARNESS_DEBUG=1 to see the traceback and report it.", icon=":material/bug_report:")
        if os.environ.get("HARNESS_DEBUG"):
            st.exception(exc)


def _page(path: Path, slot: object) -> None:
    if not path.exists():
        st.error(f"No results database at `{path}`. Create one with `harness analyze`, `harness replay` or "
                 "`harness evaluate` (they write `./harness.duckdb` unless `--db` says otherwise), or start the "
                 "dashboard on another file: `harness dashboard --db PATH`.", icon=":material/error:")
        return
    if path.is_dir():
        st.error(f"`{path}` is a folder, not a results database file; pass a file with `--db`.", icon=":material/error:")
        return
    reader = Reader(path, slot)
    version = None if path.stat().st_size == 0 else reader.schema_version()  # a 0-byte file: nothing written yet
    if version is None:
        st.info(f"The results database `{path}` is empty: nothing has been written to it yet. Runs appear here "
                "once `harness analyze`, `harness replay` or `harness evaluate` store one; then reload.")
        return
    table = reader.runs()
    if table.empty:
        st.info(f"The results database `{path}` holds no runs yet. Runs appear here once `harness analyze`, "
                "`harness replay` or `harness evaluate` store one; then reload.")
        return
    if version < SCHEMA_VERSION:
        st.sidebar.warning(f"This database has the older results schema v{version} (this harness writes "
                           f"v{SCHEMA_VERSION}): tables and columns added since read as empty (e.g. daily lifts: v2; "
                           "the replay's estimates and lifts: v3; test plans: v4). The dashboard never migrates it.")
    ctx = _sidebar(reader, table, version)
    st.session_state.setdefault("bad_run", None)
    page = st.session_state["page"]
    if ctx.run_id is None and page != "Runs":
        bad = st.session_state.get("bad_run")
        what = f"There is no run `{bad}` in `{path}`." if bad else "No run is chosen."
        st.error(f"{what} Pick a run in the sidebar, or on the Runs page.", icon=":material/search:")
        return
    PAGES[page](ctx)


def _newest_first(table: pd.DataFrame) -> list[str]:
    return list(table.sort_values(["created_at", "run_id"], ascending=False)["run_id"])


def _init_state(ids: list[str]) -> None:
    """First render of a session: the run and page from the link, else the newest run's decision."""
    if "run" not in st.session_state:
        requested = st.query_params.get("run")
        if requested and requested not in ids:
            st.session_state["bad_run"] = requested
            st.session_state["run"] = None
        else:
            st.session_state["run"] = requested or ids[0]
    elif st.session_state["run"] is not None and st.session_state["run"] not in ids:
        st.session_state["run"] = ids[0]  # the run was deleted meanwhile
    if "page" not in st.session_state:
        page = st.query_params.get("page")
        st.session_state["page"] = page if page in PAGES else FIRST_PAGE
    st.session_state.setdefault("scale", SCALES[0])


def _picked() -> None:
    st.session_state["bad_run"] = None


def _sidebar(reader: Reader, table: pd.DataFrame, version: int) -> PageContext:
    ids = _newest_first(table)
    labels = {r["run_id"]: run_label(r) for r in table.to_dict("records")}
    _init_state(ids)
    run_id = st.sidebar.selectbox("Run", ids, key="run", format_func=labels.get, placeholder="pick a run",
                                  on_change=_picked)
    others = [NO_RUN, *(i for i in ids if i != run_id)]
    if st.session_state.get("compare") not in others:
        st.session_state["compare"] = NO_RUN
    compare_id = st.sidebar.selectbox("Compare with", others, key="compare",
                                      format_func=lambda i: labels.get(i, "(no second run)"))
    page = st.sidebar.radio("Page", list(PAGES), key="page")
    scale = st.sidebar.radio("Lifts as", SCALES, key="scale", horizontal=True,
                             help="relative: treatment / control - 1, in %; absolute: treatment - control, "
                                  "in the metric's units")
    if run_id is not None:
        st.query_params["run"] = run_id
    st.query_params["page"] = page
    return PageContext(reader=reader, runs=table, run_id=run_id, compare_id=compare_id or None, scale=scale,
                       schema_version=version)
