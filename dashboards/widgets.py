"""Page pieces shared by the views: a table with its CSV download, the decision banner, rule lines.

Every table on the dashboard goes through `table()`, so each one can be downloaded as CSV with the
stored numbers at full precision (the page shows them rounded).
"""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from dashboards.format import DECISION_ICONS, OUTCOME_COLOURS

PERCENT = "percent"


def table(frame: pd.DataFrame, name: str, *, key: str, percent: tuple[str, ...] = (),
          digits: dict[str, str] | None = None, caption: str | None = None, height: int | str = "auto") -> None:
    """`frame` as an interactive table plus a "Download CSV" button (file `<name>.csv`).

    `percent` columns hold fractions and are shown as percentages; `digits` maps columns to printf
    formats. The CSV carries the values unformatted.
    """
    config: dict[str, Any] = {c: st.column_config.NumberColumn(c, format=PERCENT) for c in percent if c in frame}
    for c, fmt in (digits or {}).items():
        if c in frame:
            config[c] = st.column_config.NumberColumn(c, format=fmt)
    st.dataframe(frame, hide_index=True, column_config=config, height=height)
    cols = st.columns([3, 1])
    if caption:
        cols[0].caption(caption)
    cols[1].download_button("Download CSV", frame.to_csv(index=False).encode(), file_name=f"{name}.csv",
                            mime="text/csv", key=f"csv-{key}", on_click="ignore", help=f"{name}.csv",
                            icon=":material/download:")


def chart(spec: alt.TopLevelMixin, *, key: str) -> None:
    st.altair_chart(spec, width="stretch", key=f"chart-{key}")


def decision_banner(decision: str | None, *, treatments_judged: str = "") -> None:
    """SHIP in green, NO_SHIP in red, INCONCLUSIVE in amber; no gate -> a note saying how to add one."""
    if not decision:
        st.info("No launch decision is stored for this run: `harness gate RUN_ID --config gate.toml` adds one.")
        return
    judged = f" for {treatments_judged}" if treatments_judged else ""
    text = f"### Launch decision{judged}: {decision}"
    icon = DECISION_ICONS.get(decision)
    if decision == "SHIP":
        st.success(text, icon=icon)
    elif decision == "NO_SHIP":
        st.error(text, icon=icon)
    else:
        st.warning(text, icon=icon)


def outcome_line(outcome: str, text: str) -> str:
    """A markdown line with the outcome in its colour: ':green[**pass**] text'."""
    colour = OUTCOME_COLOURS.get(outcome, "gray")
    return f":{colour}[**{outcome}**] {text}"


def no_data(message: str) -> None:
    st.info(message)
