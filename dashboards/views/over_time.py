"""Over time: the cumulative lift per day with the always-valid band (`daily_lifts`, from
`harness analyze --by-day`)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboards import charts
from dashboards.context import PageContext
from dashboards.format import lift_axis, metric_label, metric_order
from dashboards.widgets import chart, table


def series(daily: pd.DataFrame, metric: str, treatment: str, relative: bool) -> pd.DataFrame:
    """The chart's rows for one metric and treatment, in look order."""
    d = daily[(daily["metric"] == metric) & (daily["treatment"] == treatment)].sort_values("look")
    if relative:
        return pd.DataFrame({"day": d["day"], "look": d["look"], "estimate": d["rel_diff"]})
    return pd.DataFrame({"day": d["day"], "look": d["look"], "estimate": d["abs_diff"],
                         "seq_low": d["seq_ci_low"], "seq_high": d["seq_ci_high"],
                         "ci_low": d["abs_ci_low"], "ci_high": d["abs_ci_high"], "seq_p_value": d["seq_p_value"]})


def render(ctx: PageContext) -> None:
    run = ctx.run()
    st.header("Over time")
    daily = ctx.table("daily_lifts")
    if daily.empty:
        older = " (this database's schema predates daily lifts)" if ctx.schema_version < 2 else ""
        st.info(f"Run `{run['run_id']}` has no daily lifts{older}: `harness analyze --by-day COLUMN` stores the "
                "cumulative lift per day with its always-valid band.")
        return
    cols = st.columns(2)
    metric = cols[0].selectbox("Metric", metric_order(daily["metric"]), key="ot-metric", format_func=metric_label)
    treatment = cols[1].selectbox("Treatment", list(dict.fromkeys(daily["treatment"])), key="ot-treatment")
    rows = series(daily, metric, treatment, ctx.relative)
    chart(charts.over_time(rows, y_title=lift_axis(ctx.scale, metric), percent=ctx.relative,
                           band=not ctx.relative), key="over-time")
    if ctx.relative:
        st.caption("Cumulative relative lift per day. The always-valid band is stored in the metric's units: "
                   "switch the sidebar to absolute to see it.")
    else:
        st.caption("Line: cumulative absolute lift with the data up to each day. Shaded: the always-valid "
                   "(confidence-sequence) band, safe to read at every look; dashed: the fixed-horizon 95% CI, "
                   "valid at the planned last look only.")
    table(daily[(daily["metric"] == metric) & (daily["treatment"] == treatment)].sort_values("look"),
          f"{run['run_id']}-daily-{metric}", key="daily", percent=("rel_diff",),
          digits={c: "%.4g" for c in ("control_mean", "treatment_mean", "abs_diff", "abs_ci_low", "abs_ci_high",
                                      "seq_ci_low", "seq_ci_high", "p_value", "seq_p_value")})
