"""Runs: every run in the database, filterable; pick one run, or two to compare."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboards.context import PageContext
from dashboards.format import data_source, design, estimator, treatments
from dashboards.widgets import table

COLUMNS = ["run_id", "created_at", "kind", "control", "treatments", "data", "design", "estimator", "status",
           "decision", "n_lifts", "seed", "notes"]


def runs_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run, newest first, with the columns an analyst filters on."""
    rows = []
    for r in runs.to_dict("records"):
        rows.append({
            "run_id": r["run_id"], "created_at": r["created_at"], "kind": r["kind"],
            "control": r["control"] if isinstance(r["control"], str) else "",
            "treatments": ", ".join(treatments(r)), "data": data_source(r), "design": design(r),
            "estimator": estimator(r), "status": r["status"],
            "decision": r["decision"] if isinstance(r["decision"], str) else "",
            "n_lifts": r["n_lifts"], "seed": r["seed"], "notes": r["notes"] if isinstance(r["notes"], str) else "",
        })
    out = pd.DataFrame(rows, columns=COLUMNS)
    return out.sort_values(["created_at", "run_id"], ascending=False, kind="stable").reset_index(drop=True)


def _filter(frame: pd.DataFrame) -> pd.DataFrame:
    cols = st.columns([1, 1, 1, 2])
    kinds = cols[0].multiselect("Kind", sorted(frame["kind"].unique()), key="f-kind", placeholder="all kinds")
    status = cols[1].multiselect("Status", sorted(frame["status"].unique()), key="f-status", placeholder="any status")
    decisions = cols[2].multiselect("Decision", sorted(d for d in frame["decision"].unique() if d),
                                    key="f-decision", placeholder="any decision")
    text = cols[3].text_input("Search (run id, arms, data, notes)", key="f-text").strip().lower()
    keep = pd.Series(True, index=frame.index)
    if kinds:
        keep &= frame["kind"].isin(kinds)
    if status:
        keep &= frame["status"].isin(status)
    if decisions:
        keep &= frame["decision"].isin(decisions)
    if text:
        hay = frame[["run_id", "control", "treatments", "data", "notes"]].astype(str).agg(" ".join, axis=1)
        keep &= hay.str.lower().str.contains(text, regex=False)
    return frame[keep].reset_index(drop=True)


def _pick() -> None:
    picked = st.session_state.get("pick") or []
    if picked:
        st.session_state["run"] = picked[0]
        st.session_state["bad_run"] = None
        st.session_state["compare"] = picked[1] if len(picked) > 1 else ""


def render(ctx: PageContext) -> None:
    st.header("Runs")
    frame = runs_table(ctx.runs)
    shown = _filter(frame)
    st.caption(f"{len(shown)} of {len(frame)} runs")
    table(shown, "runs", key="runs", digits={"n_lifts": "%d", "seed": "%d"})
    options = list(shown["run_id"])
    if "pick" in st.session_state:  # a filter may have hidden a picked run
        st.session_state["pick"] = [p for p in st.session_state["pick"] if p in options]
    st.multiselect("Pick one run to open, or two to compare (the first opens, the second is compared with it)",
                   options, key="pick", max_selections=2, on_change=_pick)
    picked = st.session_state.get("pick") or []
    if len(picked) == 2:
        st.success(f"Comparing `{picked[0]}` with `{picked[1]}`: open the Compare page.")
    elif picked:
        st.success(f"`{picked[0]}` chosen: open the Decision page.")
