"""Altair charts of stored values: forest plots of lifts with their intervals (and guardrail margins or
true values beside them), cumulative lifts per day with the always-valid band, and offline ranking bars.

Each function takes the rows to draw (already the stored numbers) and axis titles with units; none
computes a statistic. Relative values are fractions drawn on a percent axis.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

HEIGHT_PER_ROW = 34


PERCENT_FORMAT = ".2~%"  # 0.0004 -> "0.04%", 0.05 -> "5%"
LABEL_LIMIT = 340  # pixels of a row label before it is cut


def _x(column: str, title: str, percent: bool) -> alt.X:
    return alt.X(f"{column}:Q", title=title, axis=alt.Axis(format=PERCENT_FORMAT if percent else "~g"))


def forest(rows: pd.DataFrame, *, x_title: str, y_title: str, percent: bool, group_title: str = "",
           marks: pd.DataFrame | None = None, mark_title: str = "", mark_colour: str = "#d62728") -> alt.LayerChart:
    """Point estimates with interval bars, one row per `label` (order kept), coloured by `group`.

    rows: label, group, estimate, low, high (+ any tooltip columns). marks: label, group, value: a vertical
    tick per row (a guardrail margin, a true value), drawn in `mark_colour`. A rule at zero.
    """
    order = list(dict.fromkeys(rows["label"]))
    groups = list(dict.fromkeys(rows["group"]))
    y = alt.Y("label:N", title=y_title, sort=order, axis=alt.Axis(labelLimit=LABEL_LIMIT))
    offset = alt.YOffset("group:N", sort=groups) if len(groups) > 1 else alt.YOffset()
    colour = alt.Color("group:N", title=group_title or None, sort=groups,
                       legend=alt.Legend(orient="bottom") if len(groups) > 1 else None)
    tips = [alt.Tooltip(c) for c in rows.columns if c not in ("label", "group")]
    base = alt.Chart(rows).encode(y=y, yOffset=offset, color=colour, tooltip=[alt.Tooltip("label:N", title=y_title),
                                                                               alt.Tooltip("group:N"), *tips])
    bars = base.mark_rule(strokeWidth=2).encode(x=_x("low", x_title, percent), x2="high:Q")
    points = base.mark_point(filled=True, size=70).encode(x=_x("estimate", x_title, percent))
    zero = alt.Chart(pd.DataFrame({"zero": [0.0]})).mark_rule(color="#888", strokeDash=[4, 3]).encode(x="zero:Q")
    layers: list[alt.Chart] = [zero, bars, points]
    if marks is not None and not marks.empty:
        tick = alt.Chart(marks).mark_tick(color=mark_colour, thickness=3, size=HEIGHT_PER_ROW - 6).encode(
            x=alt.X("value:Q"), y=alt.Y("label:N", sort=order),
            yOffset=alt.YOffset("group:N", sort=groups) if len(groups) > 1 else alt.YOffset(),
            tooltip=[alt.Tooltip("label:N", title=y_title), alt.Tooltip("group:N"),
                     alt.Tooltip("value:Q", title=mark_title or "mark", format=".4~g")])
        layers.append(tick)
    height = max(80, HEIGHT_PER_ROW * len(order) * max(1, len(groups)))
    return alt.layer(*layers).properties(height=height)


def over_time(rows: pd.DataFrame, *, y_title: str, percent: bool, band: bool) -> alt.LayerChart:
    """Cumulative lift per day: the estimate as a line; with `band`, the always-valid band (seq_low,
    seq_high) shaded and the fixed-horizon interval (ci_low, ci_high) as dashed lines."""
    x = alt.X("day:N", title="day (data up to and including it)", sort=list(dict.fromkeys(rows["day"])),
              axis=alt.Axis(labelAngle=0))
    base = alt.Chart(rows).encode(x=x)
    tips = [alt.Tooltip(c) for c in rows.columns]
    layers: list[alt.Chart] = []
    if band:
        layers.append(base.mark_area(opacity=0.25, color="#1f77b4").encode(
            y=alt.Y("seq_low:Q", title=y_title, axis=alt.Axis(format=PERCENT_FORMAT if percent else "~g")), y2="seq_high:Q",
            tooltip=tips))
        for edge in ("ci_low", "ci_high"):
            layers.append(base.mark_line(strokeDash=[4, 3], color="#555").encode(y=f"{edge}:Q"))
    layers.append(base.mark_line(point=True, color="#1f77b4").encode(
        y=alt.Y("estimate:Q", title=y_title, axis=alt.Axis(format=PERCENT_FORMAT if percent else "~g")), tooltip=tips))
    zero = alt.Chart(pd.DataFrame({"zero": [0.0]})).mark_rule(color="#888", strokeDash=[2, 2]).encode(y="zero:Q")
    return alt.layer(zero, *layers).properties(height=320)


def ranking_bars(rows: pd.DataFrame, *, with_range: bool) -> alt.FacetChart:
    """Offline ranking metrics: a bar per (metric, model), one panel per task; with `with_range`, an error
    bar from the lowest to the highest value over seeds (rows: task, metric, model, value, low, high)."""
    x = alt.X("metric:N", title="ranking metric (cutoff @k)", sort=list(dict.fromkeys(rows["metric"])))
    colour = alt.Color("model:N", title="model")
    base = alt.Chart().encode(x=x, xOffset="model:N", color=colour)
    bars = base.mark_bar().encode(
        y=alt.Y("value:Q", title="value (fraction, 0-1; mean over seeds)"),
        tooltip=[alt.Tooltip(c) for c in rows.columns if c != "task"])
    layers: list[alt.Chart] = [bars]
    if with_range:
        layers.append(base.mark_rule(color="black").encode(y="low:Q", y2="high:Q"))
    return alt.layer(*layers, data=rows).properties(height=260, width=380).facet(
        column=alt.Column("task:N", title="task"))
