"""Compare: two things side by side: two runs (e.g. two checkpoints or two designs), two estimators of a
replay, or two treatments of an A/B/n run; their lifts per metric in one forest plot and two tables."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboards import charts
from dashboards.context import PageContext
from dashboards.format import (
    data_source,
    design,
    estimator,
    lift_axis,
    metric_label,
    short,
    sort_by_metric,
    treatments,
)
from dashboards.widgets import chart, table

SIDE_COLUMNS = ["metric", "treatment", "control_mean", "treatment_mean", "abs_diff", "abs_ci_low", "abs_ci_high",
                "rel_diff", "rel_ci_low", "rel_ci_high", "p_value"]
MODES = ("two runs", "two estimators", "two treatments")


def run_side(ctx: PageContext, run_id: str) -> pd.DataFrame:
    """A run's overall lifts, in the columns both sides share."""
    lifts = ctx.table("lifts", run_id)
    if lifts.empty:
        return pd.DataFrame(columns=SIDE_COLUMNS)
    return sort_by_metric(lifts[lifts["segment"] == "all"].reindex(columns=SIDE_COLUMNS))


def estimator_side(lifts: pd.DataFrame, name: str, treatment: str) -> pd.DataFrame:
    """One estimator's replay lifts of one treatment, in the shared columns."""
    rows = lifts[(lifts["estimator"] == name) & (lifts["treatment"] == treatment)].rename(
        columns={"control_value": "control_mean", "treatment_value": "treatment_mean"})
    return sort_by_metric(rows.reindex(columns=SIDE_COLUMNS))


def differences(a: dict[str, Any], b: dict[str, Any]) -> pd.DataFrame:
    """What two runs were made of, field by field, and whether it differs."""
    fields = {
        "kind": lambda r: r["kind"], "control": lambda r: r.get("control") or "",
        "treatments": lambda r: ", ".join(treatments(r)), "data": data_source,
        "design": design, "estimator": estimator, "seed": lambda r: str(r["seed"]),
        "checkpoints": lambda r: ", ".join(f"{k} {short(v, 10)}" for k, v in (r.get("checkpoint_digests") or {}).items()),
        "decision": lambda r: r.get("decision") or "", "status": lambda r: r["status"],
        "code_version": lambda r: r.get("code_version") or "",
    }
    rows = [{"field": f, a["run_id"]: get(a), b["run_id"]: get(b)} for f, get in fields.items()]
    out = pd.DataFrame(rows)
    out["differs"] = out[a["run_id"]] != out[b["run_id"]]
    return out


def _sides(ctx: PageContext, mode: str) -> tuple[str, pd.DataFrame, str, pd.DataFrame] | None:
    if mode == "two runs":
        if ctx.compare_id is None:
            st.info("Pick a second run in the sidebar (Compare with), or two runs on the Runs page.")
            return None
        a, b = ctx.run(), ctx.run(ctx.compare_id)
        table(differences(a, b), f"compare-{a['run_id']}-{b['run_id']}-fields", key="compare-fields")
        return a["run_id"], run_side(ctx, a["run_id"]), b["run_id"], run_side(ctx, b["run_id"])
    if mode == "two estimators":
        lifts = ctx.table("replay_lifts")
        names = list(dict.fromkeys(lifts["estimator"])) if not lifts.empty else []
        if len(names) < 2:
            st.info("Two estimators are compared on a replay run, which stores every estimator's lifts.")
            return None
        arms = list(dict.fromkeys(lifts["treatment"]))
        cols = st.columns(3)
        default = [n for n in names if lifts[lifts["estimator"] == n]["is_default"].any()] or names
        first = cols[0].selectbox("Estimator A", names, index=names.index(default[0]), key="cmp-est-a")
        second = cols[1].selectbox("Estimator B", [n for n in names if n != first], key="cmp-est-b")
        arm = cols[2].selectbox("Treatment", arms, key="cmp-est-arm")
        return first, estimator_side(lifts, first, arm), second, estimator_side(lifts, second, arm)
    lifts = ctx.table("lifts")
    arms = list(dict.fromkeys(lifts["treatment"])) if not lifts.empty else []
    if len(arms) < 2:
        st.info("Two treatments are compared on an A/B/n run (one with several `--treatment` arms).")
        return None
    cols = st.columns(2)
    first = cols[0].selectbox("Treatment A", arms, key="cmp-arm-a")
    second = cols[1].selectbox("Treatment B", [t for t in arms if t != first], key="cmp-arm-b")
    overall = run_side(ctx, ctx.run_id or "")
    return first, overall[overall["treatment"] == first], second, overall[overall["treatment"] == second]


def render(ctx: PageContext) -> None:
    st.header("Compare")
    default = 0 if ctx.compare_id is not None else (1 if ctx.run()["kind"] == "replay" else 0)
    mode = st.radio("Compare", MODES, index=default, horizontal=True, key="compare-mode")
    sides = _sides(ctx, mode)
    if sides is None:
        return
    name_a, a, name_b, b = sides
    if a.empty and b.empty:
        st.info("Neither side stores lifts (an evaluate run compares on the Models page).")
        return
    p = "rel" if ctx.relative else "abs"
    both = []
    for name, side in ((name_a, a), (name_b, b)):
        both.append(pd.DataFrame({"label": side["metric"].map(metric_label), "group": name,
                                  "estimate": side[f"{p}_diff"], "low": side[f"{p}_ci_low"],
                                  "high": side[f"{p}_ci_high"], "metric": side["metric"]}))
    rows = pd.concat(both, ignore_index=True).dropna(subset=["estimate"])
    if ctx.relative and not rows.empty:
        chart(charts.forest(rows.drop(columns="metric"), x_title=lift_axis("relative"), y_title="metric",
                            percent=True, group_title="side"), key="compare")
    elif not rows.empty:
        for metric in dict.fromkeys(rows["metric"]):
            st.markdown(f"**{metric_label(metric)}**")
            chart(charts.forest(rows[rows["metric"] == metric].drop(columns="metric"),
                                x_title=lift_axis("absolute", metric), y_title="metric", percent=False,
                                group_title="side"), key=f"compare-{metric}")
    cols = st.columns(2)
    for col, name, side in ((cols[0], name_a, a), (cols[1], name_b, b)):
        with col:
            st.markdown(f"**{name}**")
            table(side, f"compare-{name}", key=f"compare-{name}", percent=("rel_diff", "rel_ci_low", "rel_ci_high"),
                  digits={c: "%.4g" for c in ("control_mean", "treatment_mean", "abs_diff", "abs_ci_low",
                                              "abs_ci_high", "p_value")})
