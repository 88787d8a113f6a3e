"""Segments: the lift per segment level with its CI, the heterogeneity test (Cochran's Q, I^2), and a
warning when many segment lifts are read without a multiple-testing correction."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboards import charts
from dashboards.context import PageContext
from dashboards.format import is_number, lift_axis, metric_label, metric_order, pvalue
from dashboards.widgets import chart, table

MANY = 5  # segment lifts read at once without a correction before the page warns
COLUMNS = ["segment", "segment_value", "treatment", "n_control", "n_treatment", "control_mean", "treatment_mean",
           "abs_diff", "abs_ci_low", "abs_ci_high", "rel_diff", "rel_ci_low", "rel_ci_high", "p_value",
           "p_value_adjusted", "significant", "correction", "correction_scope"]


def uncorrected_segment_lifts(lifts: pd.DataFrame) -> int:
    """How many segment-level lifts of the run carry no multiple-testing correction."""
    seg = lifts[lifts["segment"] != "all"]
    return int(seg["correction"].fillna("none").isin(["none", ""]).sum())


def _alpha(lifts: pd.DataFrame) -> float:
    """The run's significance level, as stored with its lifts (0.05 when none is stored)."""
    alpha = lifts["alpha"].dropna() if "alpha" in lifts else pd.Series(dtype=float)
    return float(alpha.iloc[0]) if len(alpha) and is_number(alpha.iloc[0]) else 0.05


def render(ctx: PageContext) -> None:
    run = ctx.run()
    st.header("Segments")
    lifts = ctx.table("lifts")
    seg = lifts[lifts["segment"] != "all"] if not lifts.empty else lifts
    if seg.empty:
        st.info(f"Run `{run['run_id']}` has no segment lifts: `harness analyze --segment COLUMN` stores them.")
        return
    n_raw = uncorrected_segment_lifts(lifts)
    if n_raw >= MANY:
        a = _alpha(lifts)
        st.warning(f"{n_raw} segment lifts are read without a multiple-testing correction: at alpha = {a:g}, "
                   f"about {n_raw * a:.1f} of them would look significant by chance alone. Read them as "
                   "exploration, or rerun with `--correction holm`.", icon=":material/warning:")
    cols = st.columns(2)
    metric = cols[0].selectbox("Metric", metric_order(seg["metric"]), key="seg-metric", format_func=metric_label)
    treatment = cols[1].selectbox("Treatment", list(dict.fromkeys(seg["treatment"])), key="seg-treatment")
    pick = lifts[(lifts["metric"] == metric) & (lifts["treatment"] == treatment)]
    rows = pick.reindex(columns=COLUMNS)
    p = "rel" if ctx.relative else "abs"
    data = pd.DataFrame({
        "label": [("overall" if s == "all" else f"{s} = {v}") for s, v in zip(rows["segment"], rows["segment_value"],
                                                                               strict=True)],
        "group": rows["segment"].where(rows["segment"] != "all", "overall"),
        "estimate": rows[f"{p}_diff"], "low": rows[f"{p}_ci_low"], "high": rows[f"{p}_ci_high"],
        "n_treatment": rows["n_treatment"], "p_value_adjusted": rows["p_value_adjusted"],
    }).dropna(subset=["estimate"])
    if not data.empty:
        data = data.assign(group="lift")
        chart(charts.forest(data, x_title=lift_axis(ctx.scale, metric), y_title="segment level", percent=ctx.relative),
              key="segments")
    undefined = rows[f"{p}_diff"].isna().sum()
    if undefined:
        st.caption(f"{undefined} level(s) have no {ctx.scale} lift (undefined: control mean at or near zero).")
    table(rows, f"{run['run_id']}-segments-{metric}", key="segments", percent=("rel_diff", "rel_ci_low", "rel_ci_high"),
          digits={c: "%.4g" for c in ("control_mean", "treatment_mean", "abs_diff", "abs_ci_low", "abs_ci_high",
                                      "p_value", "p_value_adjusted")})
    st.subheader("Does the lift differ between levels?")
    het = ctx.table("heterogeneity")
    het = het[(het["metric"] == metric) & (het["treatment"] == treatment)] if not het.empty else het
    if het.empty:
        st.caption("No heterogeneity test is stored for this metric.")
        return
    a = _alpha(lifts)
    for r in het.to_dict("records"):
        verdict = "differs between levels" if is_number(r["p_value"]) and r["p_value"] < a else \
            "no evidence that it differs"
        st.markdown(f"**{r['segment']}** ({r['n_levels']} levels): Cochran's Q = {r['q_stat']:.3g} on {r['df']} df, "
                    f"p = {pvalue(r['p_value'])}, I² = {r['i2']:.0%}: {verdict} at alpha = {a:g}.")
    table(het, f"{run['run_id']}-heterogeneity-{metric}", key="heterogeneity", percent=("i2",))
