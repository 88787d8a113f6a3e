"""The online test a replay's estimate calls for: users and days to detect the estimated lift at 80% power.

An offline estimate is a forecast; the launch decision still rests on an online A/B test, and the analyst
must book its traffic. Per treatment and metric, the lift to detect is the replay's relative point estimate
(default estimator), applied to the metric's per-user mean over the window as the logs saw it; the per-user
standard deviation is that of the window's logged per-user totals (an online arm has the outcome variance
of real traffic, not the importance-weighted variance of the replay); CUPED shrinks the variance by rho^2,
rho the correlation of each user's window total with its pre-period total. Days: users entering the test
per day (both arms) at `users_per_day`, by default the logs' own rate (distinct users of the window over
its length).

Limits, stated in each row's `note`: the per-user mean and spread are those of a test as long as the
window; a test that must run longer accumulates larger per-user totals (the plan is then approximate), and
an estimated lift near zero asks for a test no one can run, which is itself the answer.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.power import online_test_plan
from harness.replay.data import user_totals


def test_plan_rows(logs, start: np.datetime64, end: np.datetime64 | None, lifts: pd.DataFrame, *,
                   alpha: float, power: float, users_per_day: float | None) -> pd.DataFrame:
    """`replay_test_plan` rows for the default estimator's lifts (with and without CUPED)."""
    window = user_totals(logs, start, end)
    pre = user_totals(logs, None, start).reindex(window.index).fillna(0.0)
    days = _window_days(logs, start, end)
    rate = users_per_day if users_per_day is not None else (len(window) / days if days > 0 else None)
    rows = []
    for r in lifts[lifts["is_default"]].itertuples():
        m = r.metric
        x = window[m].to_numpy(np.float64) if m in window else np.zeros(0)
        mean, sd = (float(x.mean()), float(x.std(ddof=1))) if len(x) > 1 else (math.nan, math.nan)
        rho = _corr(x, pre[m].to_numpy(np.float64)) if m in pre else None
        lift = None if r.rel_diff is None or pd.isna(r.rel_diff) else float(r.rel_diff)
        for cuped in (False, True):
            plan = online_test_plan(lift, mean, sd, rho=rho if cuped else None, alpha=alpha, power=power,
                                    users_per_day=rate)
            rows.append({"treatment": r.treatment, "metric": m, "estimator": r.estimator, "cuped": cuped,
                         "lift_abs": plan["effect"], "lift_rel": lift, "control_mean": mean, "sd": plan["sd"],
                         "rho": rho if cuped else None, "users_per_arm": plan["users_per_arm"], "alpha": alpha,
                         "power": power, "users_per_day": rate, "days": plan["days"], "window_days": days,
                         "note": _note(plan, days, r.rel_ci_low, r.rel_ci_high)})
    return pd.DataFrame(rows)


def _corr(x: np.ndarray, y: np.ndarray) -> float | None:
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def _window_days(logs, start: np.datetime64, end: np.datetime64 | None) -> float:
    if end is None:
        last = logs.query("SELECT max(ts) AS t FROM requests").to_pylist()[0]["t"]
        end = np.datetime64(last, "us") + np.timedelta64(1, "us")
    return float((end - start) / np.timedelta64(1, "D"))


def _note(plan: dict, window_days: float, low, high) -> str | None:
    notes = []
    if plan["users_per_arm"] is None:
        return "no lift to detect (estimated lift 0 or undefined, or no variation)"
    if low is not None and high is not None and pd.notna(low) and pd.notna(high) and low <= 0 <= high:
        notes.append("the replay's interval of this lift holds 0: the plan sizes a test for the point estimate, "
                     "an effect the replay has not shown to exist")
    if plan["days"] is not None and plan["days"] > window_days:
        notes.append(f"longer than the replayed window ({window_days:.1f} days): per-user totals grow with the "
                     "test's length, so the plan is an approximation")
    return "; ".join(notes) or None
