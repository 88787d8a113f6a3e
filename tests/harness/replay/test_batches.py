"""User batches: estimates merged from batches' sufficient statistics equal the estimates over all requests
at once (value, clustered SE, ESS, largest weight share, clipped share, truth), whatever the batching;
batch assignment is a stable function of the user id; the test plan against statsmodels' power solver."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.power import online_test_plan
from harness.replay import batches as B
from harness.replay import estimators as est
from harness.replay.engine import ArmEstimates
from harness.replay.truth import Truth


def _logs(seed=0, users=40, k=3):
    rng = np.random.default_rng(seed)
    n_req = rng.integers(1, 9, users)
    user = np.repeat(np.arange(100, 100 + users), n_req)
    R = len(user)
    return dict(user=user, reward=rng.gamma(1.0, 2.0, (R, k)), p=rng.uniform(0.05, 1.0, (R, k)),
                t=rng.uniform(0.0, 1.0, (R, k)) * (rng.random((R, k)) < 0.7), truth=rng.normal(5, 1, R),
                truth_se=rng.uniform(0, 0.1, R))


def _arm(d, rows, clip):
    users, idx = np.unique(d["user"][rows], return_inverse=True)
    ae = ArmEstimates("lsvcr")
    e = est.rips(d["reward"][rows], d["p"][rows], d["t"][rows], clip=clip, cluster=idx)
    ae.estimates[("watch_time_s", "rips")] = e
    ae.per_user[("watch_time_s", "rips")] = np.bincount(idx, weights=e.contributions.sum(1), minlength=len(users))
    e = est.dm(d["truth"][rows] * 0.9, cluster=idx)
    ae.estimates[("watch_time_s", "dm")] = e
    ae.per_user[("watch_time_s", "dm")] = np.bincount(idx, weights=e.contributions, minlength=len(users))
    truth = Truth({"watch_time_s": d["truth"][rows]}, {"watch_time_s": d["truth_se"][rows]}, "monte-carlo")
    rare = B.rare_mass(d["t"][rows], d["p"][rows])
    return {"lsvcr": ae}, idx, len(users), rare, {"lsvcr": truth}


@pytest.mark.parametrize("n_batches,clip", [(1, None), (3, None), (7, 2.5)])
def test_merged_batches_equal_one_pass(n_batches, clip):
    d = _logs()
    users = np.unique(d["user"])
    batch = B.batch_of(users, n_batches)
    rows = []
    for b in range(n_batches):
        sel = np.isin(d["user"], users[batch == b])
        if not sel.any():
            continue
        arm, idx, G, rare, truth = _arm(d, np.flatnonzero(sel), clip)
        rows += [{**r, "batch": b} for r in B.stats_rows(arm, idx, G, 3, {"lsvcr": rare}, truth)]
    merged = B.merge(pd.DataFrame(rows), "rips").set_index("estimator")
    arm, idx, G, rare, truth = _arm(d, np.arange(len(d["user"])), clip)
    N = len(d["user"])
    for name in ("rips", "dm"):
        whole, m = arm["lsvcr"].estimates[("watch_time_s", name)], merged.loc[name]
        assert m["n_units"] == G == len(users) and m["n_requests"] == N
        assert m["value"] == pytest.approx(whole.value * N / G, rel=1e-12)
        assert m["se"] == pytest.approx(whole.se * N / G, rel=1e-10)
        assert m["true_value"] == pytest.approx(d["truth"].sum() / G, rel=1e-12)
        assert m["true_se"] == pytest.approx(math.sqrt((d["truth_se"] ** 2).sum()) / G, rel=1e-12)
    r = merged.loc["rips"]
    whole = arm["lsvcr"].estimates[("watch_time_s", "rips")]
    assert r["ess"] == pytest.approx(whole.ess, rel=1e-12)
    assert r["max_weight_share"] == pytest.approx(whole.max_weight_share, rel=1e-12)
    assert r["clipped_share"] == pytest.approx(whole.clipped_share, rel=1e-9, abs=1e-15)
    assert r["is_default"] and not merged.loc["dm", "is_default"]
    assert pd.isna(merged.loc["dm", "ess"]) and pd.isna(merged.loc["dm", "max_weight_share"])
    # the rare-item mass: the weights on rows logged with propensity < 1%, over the slot rows
    p, t = d["p"], d["t"]
    assert r["rare_share"] == pytest.approx(((t / p) * (p < B.RARE_PSCORE)).sum() / (N * 3), abs=1e-15)


def test_rare_share_estimates_the_target_mass_on_rare_items():
    """E_logging[w 1(p < eps)] = P_target(item with p < eps): checked by simulation on one slot."""
    rng = np.random.default_rng(1)
    p_items = np.array([0.005, 0.005, 0.49, 0.5])
    t_items = np.array([0.3, 0.1, 0.3, 0.3])
    logged = rng.choice(4, size=400_000, p=p_items)
    share = B.rare_mass(t_items[logged][:, None], p_items[logged][:, None]) / len(logged)
    assert share == pytest.approx(0.4, abs=0.01)


def test_batches_hold_whole_users_stably():
    users = np.arange(1, 2001)
    b = B.batch_of(users, 4)
    perm = np.random.default_rng(0).permutation(users)
    assert (B.batch_of(perm, 4) == b[perm - 1]).all()  # a function of the id, not of the order
    assert set(np.bincount(b)) <= set(range(400, 601))  # roughly balanced
    assert (B.batch_of(users, 1) == 0).all() and B.n_batches(2000, 1000) == 2 and B.n_batches(1, 1000) == 1
    assert B.batch_seed(0, 1) == B.batch_seed(0, 1) != B.batch_seed(0, 2)
    with pytest.raises(ValueError, match="batch_users"):
        B.n_batches(10, 0)


@pytest.mark.parametrize("lift,mean,sd,rho", [(0.02, 50.0, 40.0, None), (-0.05, 3.0, 4.0, 0.6), (0.001, 1.0, 2.0, 0.3)])
def test_test_plan_against_statsmodels(lift, mean, sd, rho):
    from statsmodels.stats.power import NormalIndPower

    plan = online_test_plan(lift, mean, sd, rho=rho, alpha=0.05, power=0.8, users_per_day=1000.0)
    sd_eff = sd * math.sqrt(1 - (rho or 0.0) ** 2)
    n = NormalIndPower().solve_power(effect_size=abs(lift * mean) / sd_eff, alpha=0.05, power=0.8, ratio=1.0)
    assert plan["users_per_arm"] == math.ceil(n)
    assert plan["sd"] == pytest.approx(sd_eff, rel=1e-12)
    assert plan["days"] == math.ceil(2 * math.ceil(n) / 1000.0)
    # hand check of the normal approximation: n = 2 (z_.975 + z_.8)^2 sd^2 / effect^2
    assert plan["users_per_arm"] == pytest.approx(2 * (1.959964 + 0.841621) ** 2 * sd_eff**2 / (lift * mean) ** 2,
                                                  rel=1e-3)


def test_test_plan_without_a_lift():
    for lift in (None, 0.0, float("nan")):
        plan = online_test_plan(lift, 10.0, 2.0)
        assert plan["users_per_arm"] is None and plan["days"] is None
    assert online_test_plan(0.1, 10.0, 0.0)["users_per_arm"] is None  # no variation: nothing to test
    assert online_test_plan(0.1, 10.0, 2.0, users_per_day=None)["days"] is None
