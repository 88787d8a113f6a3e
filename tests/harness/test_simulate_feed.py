"""World v2's feed mechanics against their exact laws: the cascade (top-down viewing and leaving),
sessions a user leaves, loops, random slots from outside the candidates, duplicate items refused, and
world v1's position model kept as an option with its exact logging value."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from harness.logs.store import LogStore
from harness.simulate import outcomes as oc
from harness.simulate.config import Behaviour, WorldConfig
from harness.simulate.generate import _examine, simulate
from harness.simulate.oracle import METRICS, Oracle
from harness.simulate.policy import random_pool_draw
from harness.simulate.world import World

SMALL = WorldConfig(users=300, videos=500, days=3, seed=3)


@pytest.fixture(scope="module")
def world() -> World:
    return World.build(SMALL)


def test_cascade_reach_matches_simulated_viewing(world: World) -> None:
    """P(slot j examined) from the exact top-down product equals the frequency in simulated viewing."""
    rng = np.random.default_rng(0)
    s = rng.normal(0.0, 1.0, size=(1, 6)).repeat(100_000, axis=0)  # one slate, many viewings
    dur = np.full_like(s, 20.0)
    examined, watch, left = _examine(world, s, dur, rng)
    exact = oc.reach_probs(world, s[:1])[0]
    freq = examined.mean(axis=0)
    se = np.sqrt(exact * (1 - exact) / len(s)) + 1e-12
    assert np.all(np.abs(freq - exact) < 4 * se), (freq, exact)
    assert exact[0] == 1.0 and np.all(np.diff(exact) < 0)
    assert left.mean() == pytest.approx(1 - exact[-1], abs=4 * np.sqrt(exact[-1] * (1 - exact[-1]) / len(s)))
    # watching to the end makes going on likelier: continuation after slot 0 split by completion
    completed = watch[:, 0] >= dur[:, 0]
    assert examined[completed, 1].mean() > examined[~completed, 1].mean()


def test_slate_order_matters_under_the_cascade(tmp_path) -> None:
    path, _ = simulate(SMALL, tmp_path / "w")
    oracle = Oracle.from_dataset(path)
    rid = oracle.request_ids[:200]
    cands = oracle.candidates[:200]
    e = oracle.video_expectations(oracle.request_user[:200], oracle.request_ts_us[:200], cands)
    best = np.take_along_axis(cands, np.argsort(-e["watch_time_s"], axis=1)[:, :6], axis=1)
    forward = oracle.slate_value(rid, best)["watch_time_s"]
    backward = oracle.slate_value(rid, best[:, ::-1])["watch_time_s"]
    assert np.mean(forward) > np.mean(backward)  # the same six videos, best first, earn more
    with pytest.raises(ValueError, match="more than once"):
        oracle.slate_value(rid[:1], np.array([[best[0, 0]] * 6]))
    off = oracle.world.comment_offsets
    v = int(np.flatnonzero(np.diff(off) >= 3)[0])
    with pytest.raises(ValueError, match="more than once"):
        oracle.comment_expectations(np.array([0]), np.array([v]), np.array([[off[v], off[v], off[v] + 1]]))


def test_users_who_leave_early_end_sessions(tmp_path) -> None:
    stay = WorldConfig(users=300, videos=500, days=3, seed=3, behaviour=Behaviour(leave_session_p=0.0))
    leave = WorldConfig(users=300, videos=500, days=3, seed=3, behaviour=Behaviour(leave_session_p=0.9))
    counts = []
    for cfg, name in ((stay, "stay"), (leave, "leave")):
        path, _ = simulate(cfg, tmp_path / name)
        with LogStore.open(path) as store:
            counts.append(store.query("SELECT count(*) / count(DISTINCT session_id) AS n FROM requests"
                                      ).to_pydict()["n"][0])
    assert counts[1] < 0.85 * counts[0]  # sessions are shorter when leaving a request ends them


def test_loops_let_watch_time_exceed_the_duration(tmp_path) -> None:
    path, summary = simulate(SMALL, tmp_path / "w")
    with LogStore.open(path) as store:
        r = store.query("SELECT avg((i.watch_time_s > v.duration_s)::INT) FILTER (WHERE i.watch_time_s > 0) AS over, "
                        "max(i.watch_time_s / v.duration_s) AS most FROM impressions i JOIN videos v "
                        "USING (video_id)").to_pydict()
    assert 0.02 < r["over"][0] < 0.5 and r["most"][0] <= SMALL.behaviour.loop_max + 1e-9
    capped = WorldConfig(users=300, videos=500, days=3, seed=3, behaviour=Behaviour(loop_max=1.0))
    path, _ = simulate(capped, tmp_path / "capped")
    with LogStore.open(path) as store:
        most = store.query("SELECT max(i.watch_time_s / v.duration_s) AS m FROM impressions i JOIN videos v "
                           "USING (video_id)").to_pydict()["m"][0]
    assert most <= 1.0 + 1e-9


def test_random_pool_draw_is_uniform_over_the_videos_outside_the_candidates() -> None:
    rng = np.random.default_rng(1)
    V, n = 40, 10
    cands = np.tile(rng.choice(V, size=n, replace=False), (60_000, 1))
    got = random_pool_draw(cands, V, rng.integers(0, V - n, size=(60_000, 1)))[:, 0]
    assert not np.isin(got, cands[0]).any()
    freq = np.bincount(got, minlength=V)[np.setdiff1d(np.arange(V), cands[0])]
    assert stats.chisquare(freq).pvalue > 1e-3


def test_position_model_keeps_its_exact_logging_value(tmp_path) -> None:
    """World v1's mechanics as options: the logging value is exact (no Monte-Carlo error) and agrees
    with the logs; the Monte-Carlo path agrees with the exact one."""
    cfg = WorldConfig(users=400, videos=600, days=3, seed=4, random_mode="slate", random_share=0.05,
                      behaviour=Behaviour(examination="position"))
    path, _ = simulate(cfg, tmp_path / "v1")
    oracle = Oracle.from_dataset(path)
    rid = oracle.request_ids[:1500]
    exact = oracle.logging_policy_value(rid)
    assert "watch_time_s_se" not in exact
    rows = oracle._rows(rid)
    sampled = oracle._sampled_logging_value(rows, 400, np.random.default_rng(0))
    for m in METRICS:
        z = (sampled[m] - exact[m]).mean() / np.sqrt(np.mean(sampled[f"{m}_se"] ** 2) / len(rid))
        assert abs(z) < 4, (m, z)
    with LogStore.open(path) as store:
        obs = store.query("SELECT request_id, sum(watch_time_s) AS w FROM impressions GROUP BY 1 ORDER BY 1"
                          ).to_pandas().set_index("request_id").loc[rid, "w"].to_numpy()
    res = obs - exact["watch_time_s"]
    assert abs(res.mean() / (res.std(ddof=1) / np.sqrt(len(res)))) < 3


def test_uploads_appear_during_the_logs_and_are_never_shown_before_publication(tmp_path) -> None:
    path, _ = simulate(SMALL, tmp_path / "w")
    world = World.load(path)
    with LogStore.open(path) as store:
        never_early = store.query(
            "SELECT count(*) AS n FROM candidates c JOIN requests r USING (request_id) JOIN videos v USING (video_id) "
            "WHERE r.ts < v.published_at").to_pydict()["n"][0]
        shown_early = store.query(
            "SELECT count(*) AS n FROM impressions i JOIN requests r USING (request_id) JOIN videos v USING (video_id) "
            "WHERE r.ts < v.published_at").to_pydict()["n"][0]
        cold = store.query(
            "SELECT avg((v.published_at >= TIMESTAMP '2023-10-02')::INT) AS share FROM impressions i "
            "JOIN requests r USING (request_id) JOIN videos v USING (video_id) "
            "WHERE r.ts >= TIMESTAMP '2023-10-02'").to_pydict()["share"][0]
    assert never_early == 0 and shown_early == 0  # random slots too: the pool is what is published that day
    assert 0.05 < cold < 0.6  # the experiment window shows videos uploaded after the pre-period
    n_new = int(round(SMALL.behaviour.new_video_share * SMALL.videos))
    assert (world.publish_day >= 0).sum() == n_new and np.all(np.diff(world.publish_day[-n_new:]) >= 0)
    # published videos are a prefix of the ids on every day
    for d in range(SMALL.days):
        count = int(world.published_by(np.array([d]))[0])
        assert np.all(world.publish_day[:count] <= d) and np.all(world.publish_day[count:] > d)


def test_retrieval_weight_ramps_up_and_boosts_fresh_videos(world: World) -> None:
    b = world.config.behaviour
    v = int(np.flatnonzero(world.publish_day == world.publish_day.max())[0])
    d = int(world.publish_day[v])
    w = [world.retrieval_weight(day)[v] / world.popularity[v] for day in range(d - 1, d + 60)]
    assert w[0] == 0.0  # not yet published
    age = 0.5
    assert w[1] == pytest.approx((1 - np.exp(-age / b.popularity_ramp_days)) * (1 + b.fresh_boost * np.exp(-age / b.fresh_days)))
    assert w[-1] == pytest.approx(1.0, rel=1e-6)  # an old video: its plain popularity


def test_sessions_never_repeat_a_video_and_satiation_is_exact(tmp_path) -> None:
    cfg = WorldConfig(users=400, videos=400, candidates=40, days=5, seed=6)  # a small catalogue: many re-shows
    path, _ = simulate(cfg, tmp_path / "w")
    oracle = Oracle.from_dataset(path)
    with LogStore.open(path) as store:
        repeats = store.query(
            "SELECT count(*) AS n FROM (SELECT r.session_id, i.video_id, count(*) AS c FROM impressions i "
            "JOIN requests r USING (request_id) WHERE NOT i.is_random GROUP BY ALL HAVING count(*) > 1)"
        ).to_pydict()["n"][0]
        imp = store.query("SELECT i.request_id, i.position, i.video_id, i.watch_time_s, r.user_id, r.ts "
                          "FROM impressions i JOIN requests r USING (request_id) ORDER BY request_id, position"
                          ).to_pandas()
    assert repeats == 0  # production feeds do not repeat a video within a session
    # days since the last watch, against a direct scan of the logs
    watched = imp[imp.watch_time_s > 0]
    sample = imp.sample(300, random_state=0)
    got = oracle.days_since_watch(sample.user_id.to_numpy(), sample.ts.to_numpy(), sample.video_id.to_numpy())
    for (_, row), g in zip(sample.iterrows(), got, strict=True):
        prev = watched[(watched.user_id == row.user_id) & (watched.video_id == row.video_id) & (watched.ts < row.ts)]
        want = np.nan if prev.empty else (row.ts - prev.ts.max()).total_seconds() / 86400
        assert (np.isnan(g) and np.isnan(want)) or g == pytest.approx(want, abs=1e-9)
    # re-shown videos: the oracle (with satiation) agrees with what users did; without it, it would not
    k = cfg.slate_size
    reach = oracle.reach(imp.request_id.to_numpy()[::k], imp.video_id.to_numpy().reshape(-1, k)).ravel()
    e = oracle.video_expectations(imp.user_id.to_numpy(), imp.ts.to_numpy(), imp.video_id.to_numpy())
    since = oracle.days_since_watch(imp.user_id.to_numpy(), imp.ts.to_numpy(), imp.video_id.to_numpy())
    again = np.isfinite(since) & (since < 2)
    assert again.sum() > 200
    res = imp.watch_time_s.to_numpy()[again] - (reach * e["watch_time_s"])[again]
    assert abs(res.mean() / (res.std(ddof=1) / np.sqrt(again.sum()))) < 3
    fresh = oc.expected_watch(oracle.world, *oc.video_affinities(
        oracle.world, imp.user_id.to_numpy()[again], oracle.tfrac(imp.ts.to_numpy()[again]),
        imp.video_id.to_numpy()[again])[:1], oracle.world.duration_s[imp.video_id.to_numpy()[again]])
    assert e["watch_time_s"][again].mean() < 0.9 * fresh.mean()  # satiation lowers what a re-show earns


def test_segments_come_from_observable_pre_period_behaviour(tmp_path) -> None:
    path, _ = simulate(SMALL, tmp_path / "w")
    world = World.load(path)
    with LogStore.open(path) as store:
        users = store.df("users").set_index("user_id")
        pre = store.query(
            "SELECT r.user_id, count(DISTINCT r.request_id) AS n_req, avg(i.opened_comments::INT) AS open_rate "
            "FROM requests r JOIN impressions i USING (request_id) "
            f"WHERE r.ts < TIMESTAMP '{world.experiment_start}' GROUP BY 1").to_pandas().set_index("user_id")
    per_day = pre.n_req / SMALL.pre_days
    q1, q2 = np.quantile(per_day, [1 / 3, 2 / 3])
    want_act = np.where(per_day < q1, "low", np.where(per_day < q2, "medium", "high"))
    want_com = np.where(pre.open_rate < 0.02, "rare", np.where(pre.open_rate < 0.15, "occasional", "frequent"))
    assert (users.loc[pre.index, "activity_level"].to_numpy() == want_act).all()
    assert (users.loc[pre.index, "comment_level"].to_numpy() == want_com).all()
    silent = users.index.difference(pre.index)
    assert users.loc[silent, ["activity_level", "comment_level"]].isna().all().all()
    # not a threshold of a hidden parameter: hidden comment propensities overlap across the levels
    om = world.comment_propensity[pre.index.to_numpy()]
    rare, frequent = om[want_com == "rare"], om[want_com == "frequent"]
    assert rare.max() > frequent.min()


def test_comment_ranking_is_personalised_with_exact_per_user_propensities(tmp_path) -> None:
    path, _ = simulate(SMALL, tmp_path / "w")
    world = World.load(path)
    with LogStore.open(path) as store:
        ci = store.query("SELECT c.comment_id, c.position, c.propensity, c.video_id, r.user_id "
                         "FROM comment_impressions c JOIN requests r USING (request_id)").to_pandas()
    variant = world.comment_variant(ci.user_id.to_numpy(), ci.video_id.to_numpy())
    assert 0.2 < variant.mean() < 0.8  # both rankings are in use
    want = np.where(variant == 1, world.comment_marginals(1)[ci.comment_id, ci.position],
                    world.comment_marginals(0)[ci.comment_id, ci.position])
    np.testing.assert_allclose(ci.propensity.to_numpy(), want, rtol=1e-12)
    # the favoured topic's comments rank higher for the users who discuss it
    on_secondary = world.comment_topic[ci.comment_id] == world.secondary_topic[ci.video_id]
    top = ci.position.to_numpy() < 3
    assert on_secondary[top & (variant == 1)].mean() > on_secondary[top & (variant == 0)].mean()
    counts = np.diff(world.comment_offsets)
    assert counts.max() > 5 * counts.mean()  # heavy-tailed comment sections


def test_a_world_without_a_pre_period_has_no_segments() -> None:
    from harness.simulate.generate import generate

    _, tables, _ = generate(WorldConfig(users=120, videos=300, days=1, seed=2))  # pre_days = 0
    users = tables["users"].to_pandas()
    assert users.activity_level.isna().all() and users.comment_level.isna().all()
