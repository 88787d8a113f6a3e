"""Models: the offline ranking table (Recall, NDCG, MRR; video and comment tasks) of the run's checkpoints,
with a bar chart that has error bars where several seeds were evaluated.

Which rows: `harness evaluate` runs store ranking metrics with the digests of the checkpoints they
ranked. A run's models are those evaluate runs on the same data whose checkpoint digests match the
run's own (an evaluate run matches itself and its reruns with other seeds), so a replay shows the
offline quality of exactly the checkpoints it replayed.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboards import charts
from dashboards.context import PageContext
from dashboards.format import parse_json
from dashboards.widgets import chart, table

KEY = ["model", "task", "split", "protocol", "slice", "metric"]


def matching_evaluations(runs: pd.DataFrame, run: dict[str, Any]) -> dict[str, set[str]]:
    """Evaluate run id -> the model names in it whose checkpoint is one of `run`'s (same data)."""
    mine = {d for d in (run.get("checkpoint_digests") or {}).values() if d}
    out: dict[str, set[str]] = {}
    if not mine:
        return out
    same = runs[(runs["kind"] == "evaluate") & (runs["data_fingerprint"] == run["data_fingerprint"])]
    for r in same.to_dict("records"):
        names = {m for m, d in parse_json(r["checkpoint_digests"]).items() if d in mine}
        if names:
            out[str(r["run_id"])] = names
    return out


def ranking_rows(ctx: PageContext, run: dict[str, Any]) -> pd.DataFrame:
    """Every stored ranking value of the run's checkpoints, one row per (evaluate run, model, task, split,
    metric, seed)."""
    matches = matching_evaluations(ctx.runs, run)
    if not matches:
        return pd.DataFrame(columns=["run_id", *KEY, "value", "seed"])
    rows = ctx.reader.all_ranking_metrics()
    keep = pd.Series(False, index=rows.index)
    for rid, names in matches.items():
        keep |= (rows["run_id"] == rid) & rows["model"].isin(names)
    return rows[keep].reset_index(drop=True)


def over_seeds(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (model, task, split, metric): the mean of the stored values over seeds, their lowest and highest
    value (the error bar) and the number of seeds."""
    g = rows.groupby([k for k in KEY if k in rows], sort=False, dropna=False)["value"]
    return g.agg(value="mean", low="min", high="max", seeds="count").reset_index()


def render(ctx: PageContext) -> None:
    run = ctx.run()
    st.header("Models")
    rows = ranking_rows(ctx, run)
    if rows.empty:
        why = ("it names no checkpoints" if not run.get("checkpoint_digests") else
               "no `harness evaluate` run on the same data ranked its checkpoints")
        st.info(f"No offline ranking metrics for run `{run['run_id']}`: {why}. "
                "`harness evaluate --models ... --data ...` stores them.")
        return
    rows = rows.assign(**{c: rows[c] if c in rows else v for c, v in (("protocol", "leave-one-out"), ("slice", "all"))})
    setups = list(dict.fromkeys(f"{s} split · {p}" for s, p in zip(rows["split"], rows["protocol"], strict=True)))
    setup = st.radio("Evaluation", setups, horizontal=True, key="models-setup") if len(setups) > 1 else setups[0]
    rows = rows[[f"{s} split · {p}" == setup for s, p in zip(rows["split"], rows["protocol"], strict=True)]]
    st.caption(f"Evaluation: {setup}")
    summary = over_seeds(rows)
    summary["model"] = [m if sl == "all" else f"{m} ({sl})" for m, sl in zip(summary["model"], summary["slice"],
                                                                              strict=True)]
    many = bool((summary["seeds"] > 1).any())
    chart(charts.ranking_bars(summary, with_range=many), key="models")
    st.caption("Offline ranking on stored candidates (higher is better). "
               + ("Bars: mean over seeds; error bars: lowest to highest seed." if many else
                  "One seed per model: no error bars (evaluate again with `--seed` for more)."))
    wide = summary.pivot_table(index=["model", "task"], columns="metric", values="value", sort=False).reset_index()
    table(wide, f"{run['run_id']}-ranking", key="ranking", digits={c: "%.4f" for c in wide.columns[2:]})
    with st.expander(f"Every stored value ({len(rows)} rows, every seed)"):
        table(rows, f"{run['run_id']}-ranking-by-seed", key="ranking-seeds", digits={"value": "%.4f"})
