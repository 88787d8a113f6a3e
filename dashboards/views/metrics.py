"""Metrics: per metric the control and treatment values, the absolute and relative lift with its CI, the
raw counts, p and adjusted p (with the correction's scope), CUPED beside the unadjusted lift, and a
forest plot of the lifts with the guardrail margins drawn. The four online metrics come first."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboards import charts
from dashboards.context import PageContext
from dashboards.format import (
    correction_text,
    guardrail_margins,
    lift_axis,
    metric_label,
    parse_json,
    sort_by_metric,
)
from dashboards.widgets import chart, table

COLUMNS = ["metric", "treatment", "control_mean", "treatment_mean", "abs_diff", "abs_ci_low", "abs_ci_high",
           "rel_diff", "rel_ci_low", "rel_ci_high", "n_control", "n_treatment", "p_value", "p_value_adjusted",
           "significant", "correction", "correction_scope", "cuped", "covariates", "variance_reduction",
           "cuped_theta", "method", "notes"]
PERCENT = ("rel_diff", "rel_ci_low", "rel_ci_high", "variance_reduction", "unadjusted_rel_diff",
           "unadjusted_rel_ci_low", "unadjusted_rel_ci_high")


UNADJUSTED = ("abs_diff", "abs_ci_low", "abs_ci_high", "rel_diff", "rel_ci_low", "rel_ci_high")


def overall(lifts: pd.DataFrame) -> pd.DataFrame:
    """The overall (segment 'all') lift rows, four online metrics first; columns an older file lacks are empty.
    A CUPED row's comparison without CUPED (`lifts.unadjusted_*`, schema v6) comes out as the `unadjusted_*`
    columns."""
    if lifts.empty:
        return pd.DataFrame(columns=COLUMNS)
    all_rows = lifts[lifts["segment"] == "all"]
    rows = all_rows.reindex(columns=COLUMNS)
    if "unadjusted_abs_diff" in all_rows and all_rows["unadjusted_abs_diff"].notna().any():
        for c in UNADJUSTED:
            rows[f"unadjusted_{c}"] = all_rows[f"unadjusted_{c}"]
    return sort_by_metric(rows)


def has_stored_unadjusted(rows: pd.DataFrame) -> bool:
    return "unadjusted_abs_diff" in rows and rows["unadjusted_abs_diff"].notna().any()


def unadjusted_sibling(ctx: PageContext, run: dict[str, Any]) -> str | None:
    """Another stored analysis of the same data without CUPED, whose lifts are this run's unadjusted ones.

    The lifts table holds one lift per metric: CUPED-adjusted when CUPED ran. The unadjusted lift is
    stored only by a run of the same table with `--cuped none`; the newest such run is used.
    """
    runs = ctx.runs
    same = runs[(runs["data_fingerprint"] == run["data_fingerprint"]) & (runs["run_id"] != run["run_id"])
                & (runs["kind"] == run["kind"]) & (runs["status"] == "complete")]
    for r in same.sort_values("created_at", ascending=False).to_dict("records"):
        analysis = parse_json(r["summary"]).get("config") or {}
        if analysis.get("cuped") == "none" and parse_json(r["config"]).get("metrics") == run["config"].get("metrics"):
            return str(r["run_id"])
    return None


def with_unadjusted(rows: pd.DataFrame, sibling: pd.DataFrame) -> pd.DataFrame:
    """`rows` with the sibling run's stored lift beside each metric (unadjusted_* columns)."""
    keep = ["metric", "treatment", "abs_diff", "abs_ci_low", "abs_ci_high", "rel_diff", "rel_ci_low", "rel_ci_high"]
    other = sibling[sibling["segment"] == "all"][keep].rename(
        columns={c: f"unadjusted_{c}" for c in keep[2:]})
    return rows.merge(other, on=["metric", "treatment"], how="left")


def forest_rows(rows: pd.DataFrame, relative: bool) -> pd.DataFrame:
    p = "rel" if relative else "abs"
    return pd.DataFrame({
        "label": rows["metric"].map(metric_label), "group": rows["treatment"],
        "estimate": rows[f"{p}_diff"], "low": rows[f"{p}_ci_low"], "high": rows[f"{p}_ci_high"],
        "p_value": rows["p_value"], "p_value_adjusted": rows["p_value_adjusted"],
    }).dropna(subset=["estimate"])


def margin_marks(margins: pd.DataFrame, scale: str) -> pd.DataFrame:
    m = margins[margins["scale"] == scale]
    return pd.DataFrame({"label": m["metric"].map(metric_label), "group": m["treatment"], "value": m["margin"]})


def _forest(ctx: PageContext, rows: pd.DataFrame, margins: pd.DataFrame, run_id: str) -> None:
    if ctx.relative:
        data = forest_rows(rows, True)
        if data.empty:
            st.info("No relative lift is defined for this run (control means at or near zero).")
            return
        chart(charts.forest(data, x_title=lift_axis("relative"), y_title="metric", percent=True,
                            group_title="treatment", marks=margin_marks(margins, "relative"),
                            mark_title="guardrail margin"), key="forest-rel")
        note = " Red ticks: guardrail margins (non-inferiority limits) of the stored gate." if not \
            margin_marks(margins, "relative").empty else ""
        st.caption("Points: relative lifts; bars: their confidence intervals; dashed line: no change." + note)
        return
    for metric in dict.fromkeys(rows["metric"]):
        data = forest_rows(rows[rows["metric"] == metric], False)
        marks = margin_marks(margins[margins["metric"] == metric], "absolute")
        st.markdown(f"**{metric_label(metric)}**")
        chart(charts.forest(data, x_title=lift_axis("absolute", metric), y_title="metric", percent=False,
                            group_title="treatment", marks=marks, mark_title="guardrail margin"),
              key=f"forest-abs-{metric}")
    st.caption("Absolute lifts, one chart per metric (each in its own units); red ticks: absolute guardrail margins.")


def render(ctx: PageContext) -> None:
    run = ctx.run()
    st.header("Metrics")
    lifts = ctx.table("lifts")
    rows = overall(lifts)
    if rows.empty:
        st.info(f"Run `{run['run_id']}` stores no lifts ({run['kind']} run).")
        return
    stored = has_stored_unadjusted(rows)
    sibling = unadjusted_sibling(ctx, run) if (rows["cuped"].fillna("none") != "none").any() and not stored \
        else None
    if sibling is not None:
        rows = with_unadjusted(rows, ctx.table("lifts", sibling))
    gate = ctx.table("gate_decisions")
    margins = guardrail_margins(gate)
    _forest(ctx, rows, margins, run["run_id"])
    st.subheader("Lifts per metric")
    table(rows, f"{run['run_id']}-lifts", key="lifts", percent=PERCENT,
          digits={c: "%.4g" for c in ("control_mean", "treatment_mean", "abs_diff", "abs_ci_low", "abs_ci_high",
                                      "unadjusted_abs_diff", "unadjusted_abs_ci_low", "unadjusted_abs_ci_high",
                                      "p_value", "p_value_adjusted")})
    st.caption(f"Adjusted p: {correction_text(rows)}. Counts are units per arm; means are per unit "
               "(CUPED-adjusted where CUPED ran).")
    cuped = rows[rows["cuped"].fillna("none") != "none"]
    if cuped.empty:
        st.caption("CUPED: not used by this run (no pre-period covariate, or a paired design where it adds nothing).")
    elif stored:
        st.caption("CUPED beside unadjusted: the `unadjusted_*` columns are the same comparison without CUPED, "
                   "stored with the run.")
    elif sibling is not None:
        st.caption(f"CUPED beside unadjusted: the `unadjusted_*` columns are the stored lifts of run `{sibling}`, "
                   "the same data analysed with `--cuped none`.")
    else:
        st.caption("CUPED: the lifts above are CUPED-adjusted (variance_reduction: share of the variance removed). "
                   "The unadjusted lift is not stored with them; `harness analyze` on the same table with "
                   "`--cuped none` stores it as a run of its own, which this page then shows beside.")
