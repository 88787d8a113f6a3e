"""Truth (synthetic data): each estimator's lift beside the true lift the synthetic world knows, per
metric, with whether the interval holds the truth (coverage)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboards import charts
from dashboards.context import PageContext
from dashboards.format import lift_axis, metric_label, metric_order, sort_by_metric
from dashboards.widgets import chart, table


def coverage(lifts: pd.DataFrame, relative: bool) -> pd.DataFrame:
    """Per estimator: how many of its stored intervals hold the true lift, of those with a truth."""
    col = "covers_rel" if relative else "covers_abs"
    known = lifts[lifts[col].notna()]
    if known.empty:
        return pd.DataFrame(columns=["estimator", "default", "covered", "with_truth", "share"])
    g = known.groupby("estimator", sort=False)
    out = pd.DataFrame({
        "estimator": list(g.groups),
        "default": g["is_default"].any().astype(bool).to_numpy(),
        "covered": g[col].apply(lambda s: int(s.astype(bool).sum())).to_numpy(),
        "with_truth": g[col].size().to_numpy(),
    })
    out["share"] = out["covered"] / out["with_truth"]
    return out


def render(ctx: PageContext) -> None:
    run = ctx.run()
    st.header("Truth")
    lifts = ctx.table("replay_lifts")
    has_truth = not lifts.empty and lifts["true_abs_diff"].notna().any()
    if not has_truth:
        what = "a replay run" if run["kind"] != "replay" else "a replay of synthetic logs with the truth computed"
        st.info(f"Run `{run['run_id']}` has no true lifts: they exist for {what} (`harness replay` on a world from "
                "`harness simulate`, without `--no-truth`).")
        return
    lifts = sort_by_metric(lifts)
    p = "rel" if ctx.relative else "abs"
    treatments = list(dict.fromkeys(lifts["treatment"]))
    treatment = st.selectbox("Treatment", treatments, key="truth-treatment") if len(treatments) > 1 else treatments[0]
    lifts = lifts[lifts["treatment"] == treatment]
    cov = coverage(lifts, ctx.relative)
    st.markdown("**Coverage** (intervals holding the true lift): " + ", ".join(
        f"{r['estimator']}{' (default)' if r['default'] else ''} {r['covered']} of {r['with_truth']}"
        for r in cov.to_dict("records")))
    for metric in metric_order(lifts["metric"]):
        m = lifts[lifts["metric"] == metric]
        data = pd.DataFrame({"label": m["estimator"] + m["is_default"].map({True: " (default)", False: ""}),
                             "group": "estimate", "estimate": m[f"{p}_diff"], "low": m[f"{p}_ci_low"],
                             "high": m[f"{p}_ci_high"], "covers": m[f"covers_{p}"]}).dropna(subset=["estimate"])
        truth = pd.DataFrame({"label": data["label"], "group": "estimate",
                              "value": m.loc[data.index, f"true_{p}_diff"]}).dropna()
        st.markdown(f"**{metric_label(metric)}** · true {ctx.scale} lift "
                    + (f"{truth['value'].iloc[0]:+.2%}" if ctx.relative and len(truth) else
                       f"{truth['value'].iloc[0]:+.4g}" if len(truth) else "-"))
        if data.empty:
            st.caption(f"No estimator has a defined {ctx.scale} lift for this metric.")
            continue
        chart(charts.forest(data, x_title=lift_axis(ctx.scale, metric), y_title="estimator", percent=ctx.relative,
                            marks=truth, mark_title="true lift", mark_colour="#2ca02c"), key=f"truth-{metric}")
    st.caption("Points and bars: each estimator's lift with its CI; green ticks: the true lift from the world's "
               "oracle on the same requests.")
    cols = ["metric", "estimator", "is_default", "control_value", "treatment_value", f"{p}_diff", f"{p}_ci_low",
            f"{p}_ci_high", f"true_{p}_diff", f"covers_{p}", "true_control", "true_treatment", "p_value", "n_units"]
    pct = tuple(c for c in cols if c.startswith(("rel_", "true_rel")))
    table(lifts[cols], f"{run['run_id']}-truth-lifts", key="truth-lifts", percent=pct,
          digits={c: "%.4g" for c in cols if c not in pct and c not in ("metric", "estimator", "is_default",
                                                                         f"covers_{p}", "n_units")})
    table(cov, f"{run['run_id']}-coverage", key="coverage", percent=("share",))
    est = sort_by_metric(ctx.table("replay_estimates"))
    with st.expander("Estimated vs true value of every policy"):
        table(est[["arm", "metric", "estimator", "is_default", "value", "se", "true_value", "true_se", "n_units"]],
              f"{run['run_id']}-truth-values", key="truth-values",
              digits={c: "%.4g" for c in ("value", "se", "true_value", "true_se")})
