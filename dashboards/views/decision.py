"""Decision: the run's launch decision as a banner, one line per gate rule saying why, and a health strip
(sample-ratio check, units per arm, the replay's weight diagnostics, trust checks that failed)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboards.context import PageContext
from dashboards.format import count, is_number, md, parse_json, pvalue, share, short, treatments
from dashboards.widgets import decision_banner, outcome_line, table


def run_header(run: dict[str, Any]) -> None:
    """Run id, kind, arms, status and provenance in two lines; a failed or unfinished run says so."""
    arms = ""
    if isinstance(run.get("control"), str):
        arms = f" · control **{md(run['control'])}** vs **{md(', '.join(treatments(run)))}**"
    st.markdown(f"#### `{run['run_id']}` · {run['kind']}{arms}")
    digests = ", ".join(f"{k} {short(v, 10)}" for k, v in (run.get("checkpoint_digests") or {}).items())
    st.caption(f"created {run['created_at']:%Y-%m-%d %H:%M:%S} UTC · status {run['status']} · seed {run['seed']} · "
               f"data {short(run.get('data_fingerprint'))} · code {run.get('code_version') or '-'}"
               + (f" · checkpoints {digests}" if digests else ""))
    if run["status"] == "failed":
        st.error(f"This run failed: {run.get('error') or 'no reason stored'}. What it stored before failing "
                 "is shown.", icon=":material/error:")
    elif run["status"] == "running":
        st.info("This run is still running: the figures are those committed so far; reload for more.", icon=":material/hourglass_top:")


def gate_lines(gate: pd.DataFrame) -> list[str]:
    """One markdown line per stored gate rule: outcome (coloured), rule, metric, arm, and the reason."""
    lines = []
    for r in gate.to_dict("records"):
        if not isinstance(r.get("rule"), str):
            continue  # a gate that reported no rules
        metric = f" {md(r['metric'])}" if r.get("metric") else ""
        arm = f" ({md(r['treatment'])})" if isinstance(r.get("treatment"), str) else ""
        lines.append(outcome_line(str(r.get("outcome") or ""), f"**{md(r['rule'])}**{metric}{arm}: {md(r['reason'])}"))
    return lines


def _srm(checks: pd.DataFrame, summary: dict[str, Any]) -> tuple[str, str]:
    """(value, help) of the SRM card: the stored check's status and p, else the summary's flag."""
    rows = checks[checks["check"] == "srm"] if not checks.empty else checks
    if not rows.empty:
        r = rows.iloc[0]
        return ("pass" if r["status"] == "pass" else str(r["status"]).upper()), f"p = {pvalue(r['p_value'])}: {r['message']}"
    if "srm_passed" in summary:
        return ("pass" if summary["srm_passed"] else "FAIL"), "from the run's summary"
    return "-", "no sample-ratio check stored (a paired design has no split to check)"


def _weights(ctx: PageContext, run: dict[str, Any]) -> pd.DataFrame:
    """The replay's weight diagnostics of the default estimator, one row per arm: the smallest ESS and
    the largest weight share over its metrics (stored per arm, metric and estimator)."""
    est = ctx.table("replay_estimates")
    if est.empty:
        return est
    default = est[est["is_default"].astype(bool)]
    rows = []
    for arm, g in default.groupby("arm", sort=False):
        rows.append({"arm": arm, "estimator": ", ".join(dict.fromkeys(g["estimator"])),
                     "ess": g["ess"].min(), "max_weight_share": g["max_weight_share"].max(),
                     "clipped_share": g["clipped_share"].max(), "n_requests": g["n_requests"].max()})
    return pd.DataFrame(rows)


def health(ctx: PageContext, run: dict[str, Any]) -> None:
    st.subheader("Health")
    checks = ctx.table("checks")
    summary = run.get("summary") or {}
    counts = summary.get("arm_counts") or {}
    if not counts:  # a run written without a summary: the overall lifts carry the arm sizes
        lifts = ctx.table("lifts")
        overall = lifts[lifts["segment"] == "all"] if not lifts.empty else lifts
        for r in overall.to_dict("records"):
            counts.setdefault(r["control"], r["n_control"])
            counts.setdefault(r["treatment"], r["n_treatment"])
    weights = _weights(ctx, run)
    cards = [("SRM", *_srm(checks, summary))]
    cards += [(f"units · {arm}", count(n), "units (users) in this arm, as stored") for arm, n in counts.items()]
    for w in weights.to_dict("records"):
        if w["arm"] == run.get("control") and run.get("control") == "logging":
            continue  # the logging policy's own weights are all 1
        if is_number(w["ess"]):
            cards.append((f"weight ESS · {w['arm']}", count(round(w["ess"])),
                          f"effective sample size of {w['estimator']}'s importance weights (smallest over metrics)"))
            cards.append((f"largest weight · {w['arm']}", share(w["max_weight_share"]),
                          "largest single weight's share of the weight total (largest over metrics)"))
    cols = st.columns(min(6, max(1, len(cards))))
    for i, (label, value, help_text) in enumerate(cards):
        cols[i % len(cols)].metric(label, value, help=help_text)
    bad = checks[checks["status"] != "pass"] if not checks.empty else checks
    for r in bad.to_dict("records"):
        where = " · ".join(md(x) for x in (r.get("metric"), r.get("segment")) if isinstance(x, str) and x and x != "all")
        colour = "red" if r["status"] == "fail" else "orange"
        st.markdown(f":{colour}[**{r['status']}** · {md(r['check'])}{' · ' + where if where else ''}: "
                    f"{md(r['message'])}]")
    if checks.empty:
        st.caption("No trust checks are stored for this run.")
    elif bad.empty:
        st.caption(f"All {len(checks)} trust checks pass.")
    with st.expander(f"Trust checks ({len(checks)})"):
        table(checks, f"{run['run_id']}-checks", key="checks")
    if not weights.empty:
        with st.expander("Replay weight diagnostics (every arm, metric and estimator)"):
            est = ctx.table("replay_estimates")
            cols_ = ["arm", "metric", "estimator", "is_default", "n_units", "n_requests", "ess", "max_weight_share",
                     "clipped_share"]
            table(est[cols_], f"{run['run_id']}-weights", key="weights", percent=("max_weight_share", "clipped_share"),
                  digits={"ess": "%.1f"})


def render(ctx: PageContext) -> None:
    run = ctx.run()
    st.header("Decision")
    run_header(run)
    if run["kind"] == "evaluate":
        st.info("An evaluate run ranks models offline and carries no launch decision: see the Models page.")
        return
    gate = ctx.table("gate_decisions")
    decision = str(gate["decision"].iloc[0]) if not gate.empty else None
    judged = ", ".join(dict.fromkeys(t for t in gate["treatment"] if isinstance(t, str))) if not gate.empty else ""
    decision_banner(decision, treatments_judged=judged)
    for line in gate_lines(gate):
        st.markdown(line)
    config = parse_json(run.get("config"))
    for note in config.get("warnings") or []:
        st.warning(md(note))
    health(ctx, run)
    if not gate.empty:
        with st.expander(f"Gate rules ({len(gate)})"):
            table(gate, f"{run['run_id']}-gate", key="gate")
