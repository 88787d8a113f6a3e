"""Test plan: for a replay, the users and days an online test needs to detect the estimated lift, with a
slider for the daily traffic; and the minimum detectable effects stored with any run.

The plan is read from `ResultsReader.test_plan(run_id)` (columns treatment, metric, estimator, cuped,
lift_abs, lift_rel, sd, users_per_arm, alpha, power, users_per_day, days). A store without that method,
or a run without rows, shows "this run has no test plan". The slider only redoes the plan's arithmetic
for another traffic: days = ceil(2 x users_per_arm / users per day); the sizes themselves are stored.
"""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from dashboards.context import PageContext
from dashboards.data import has_test_plan
from dashboards.format import is_number, metric_label, sort_by_metric
from dashboards.widgets import table

NO_PLAN = "This run has no test plan."


def days_at(users_per_arm: object, traffic: int) -> float:
    """Days an online test with two arms needs at `traffic` users a day: ceil(2 x users_per_arm / traffic);
    inf when the stored size is infinite or missing (the lift is zero or undefined)."""
    if not is_number(users_per_arm) or traffic <= 0:
        return math.inf
    return float(math.ceil(2 * float(users_per_arm) / traffic))


def _default_traffic(plan: pd.DataFrame) -> int:
    stored = plan["users_per_day"].dropna() if "users_per_day" in plan else pd.Series(dtype=float)
    stored = stored[stored.map(is_number)]
    return int(stored.iloc[0]) if len(stored) else 10_000


def plan_section(ctx: PageContext, run_id: str) -> None:
    plan = ctx.table("test_plan") if has_test_plan() else pd.DataFrame()
    if plan.empty:
        st.info(f"{NO_PLAN} A test plan sizes the online A/B test that would confirm a replay's estimated lift "
                "(users per arm and days at a given traffic); the replay stores it with the run.")
        return
    plan = sort_by_metric(plan)
    default = _default_traffic(plan)
    top = max(1_000, default * 10)
    traffic = st.slider("Daily traffic entering the test (users per day, both arms together)", min_value=1,
                        max_value=top, value=min(max(default, 1), top), step=1, key="traffic")
    shown = plan.assign(days_at_traffic=[days_at(u, traffic) for u in plan["users_per_arm"]])
    st.caption(f"days_at_traffic = ceil(2 x users_per_arm / {traffic:,}); the stored `days` are at the stored "
               "users_per_day. Sizes assume the stored lift, sd, alpha and power.")
    for r in shown.to_dict("records"):
        d = r["days_at_traffic"]
        when = "never (no lift to detect)" if not math.isfinite(d) else f"{int(d):,} days"
        users = f"{float(r['users_per_arm']):,.0f}" if is_number(r["users_per_arm"]) else "-"
        cuped = "" if "cuped" not in r else (", with CUPED" if r["cuped"] is True or r["cuped"] == 1 else ", no CUPED")
        st.markdown(f"**{metric_label(r['metric'])}** ({r['treatment']}, {r['estimator']}{cuped}): {users} users per "
                    f"arm → {when} at {traffic:,} users/day")
    notes = [n for n in dict.fromkeys(plan["note"]) if isinstance(n, str) and n] if "note" in plan else []
    for note in notes:
        st.caption(f"Note stored with the plan: {note}")
    table(shown, f"{run_id}-test-plan", key="test-plan", percent=("lift_rel",),
          digits={"lift_abs": "%.4g", "sd": "%.4g", "users_per_arm": "%d", "users_per_day": "%d",
                  "days": "%d", "days_at_traffic": "%d"})


def render(ctx: PageContext) -> None:
    run = ctx.run()
    st.header("Test plan")
    if run["kind"] == "replay":
        plan_section(ctx, run["run_id"])
    else:
        st.info(f"{NO_PLAN} Test plans belong to replay runs (this is a {run['kind']} run).")
    power = ctx.table("power")
    if not power.empty:
        st.subheader("Minimum detectable effects at this run's sample")
        table(sort_by_metric(power), f"{run['run_id']}-power", key="power", percent=("mde_rel", "variance_reduction"),
              digits={"sd": "%.4g", "mde_abs": "%.4g"})
        st.caption("As stored by the analysis: the smallest lift this run's sample detects with the stated "
                   "power at the stated alpha.")
