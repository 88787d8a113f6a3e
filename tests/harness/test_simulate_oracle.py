"""The oracle against the logs it describes, against scipy, and against Monte Carlo."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

from harness.logs.store import LogStore
from harness.simulate import outcomes as oc
from harness.simulate import plackett_luce as pl
from harness.simulate.config import WorldConfig
from harness.simulate.generate import simulate
from harness.simulate.oracle import METRICS, Oracle
from harness.simulate.policy import logging_log_weights, request_keys

# world v2 (cascade, loops, random slots): over seeds 1-4 the 120 per-slot z-scores had rms 1.00 and the
# largest was 3.08; seed 1 (largest 2.19) is the test's. Rare comment interactions are skewed, so a
# single |z| near 4 happens now and then (seed 21 had one at slot 0): not a bias, it moves with the seed.
CONFIG = WorldConfig(users=700, videos=1000, days=4, seed=1)
OBSERVED = {"watch_time_s": "watch_time_s", "video_interactions": "liked", "opened_comments": "opened_comments",
            "comment_watch_time_s": "comment_watch_time_s", "comment_interactions": "comment_interactions"}


_PATHS: dict[int, object] = {}


def oracle_path(oracle: Oracle):
    return _PATHS[id(oracle)]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Oracle, pd.DataFrame]:
    path, _ = simulate(CONFIG, tmp_path_factory.mktemp("oracle") / "w")
    oracle = Oracle.from_dataset(path)
    _PATHS[id(oracle)] = path
    with LogStore.open(path) as store:
        imp = store.query("""
            SELECT i.*, r.user_id, r.ts, coalesce(c.n, 0) AS comment_interactions
            FROM impressions i JOIN requests r USING (request_id)
            LEFT JOIN (SELECT request_id, video_id, sum(liked::INT + replied::INT) AS n
                       FROM comment_impressions GROUP BY ALL) c USING (request_id, video_id)
            ORDER BY request_id, position""").to_pandas()
    return oracle, imp


def _expected_per_impression(oracle: Oracle, imp: pd.DataFrame) -> dict[str, np.ndarray]:
    """E[y | context] per impression: P(reach the slot | the slate above it, top-down) x E[y | examined].
    `imp` holds whole requests sorted by (request_id, position)."""
    k = CONFIG.slate_size
    e = oracle.video_expectations(imp["user_id"].to_numpy(), imp["ts"].to_numpy(), imp["video_id"].to_numpy())
    ex = oracle.reach(imp["request_id"].to_numpy()[::k], imp["video_id"].to_numpy().reshape(-1, k)).ravel()
    return {"watch_time_s": ex * e["watch_time_s"], "video_interactions": ex * e["p_like"],
            "opened_comments": ex * e["p_open"], "comment_watch_time_s": ex * e["comment_watch_time_s"],
            "comment_interactions": ex * e["comment_interactions"]}


def test_oracle_agrees_with_logs_per_impression_and_per_slot(data: tuple[Oracle, pd.DataFrame]) -> None:
    oracle, imp = data
    expect = _expected_per_impression(oracle, imp)
    pos = imp["position"].to_numpy()
    groups = [("all", np.ones(len(imp), dtype=bool))] + [(f"slot {j}", pos == j) for j in range(CONFIG.slate_size)]
    for metric, col in OBSERVED.items():
        y = imp[col].to_numpy(dtype=float)
        for label, m in groups:
            # residual y - E[y | context]: mean 0 if the oracle is right; SE from its sample spread
            res = y[m] - expect[metric][m]
            z = res.mean() / (res.std(ddof=1) / np.sqrt(m.sum()))
            assert abs(z) < 3.0, f"{metric} {label}: observed {y[m].mean():.5g} vs oracle " \
                                 f"{expect[metric][m].mean():.5g} (z = {z:.2f})"


def test_oracle_agrees_with_logs_per_user(data: tuple[Oracle, pd.DataFrame]) -> None:
    """Per-user totals (the replay's unit): observed minus expected, summed per user, is mean zero."""
    oracle, imp = data
    expect = _expected_per_impression(oracle, imp)
    for metric, col in OBSERVED.items():
        res = pd.Series(imp[col].to_numpy(dtype=float) - expect[metric]).groupby(imp["user_id"].to_numpy()).sum()
        z = res.mean() / (res.std(ddof=1) / np.sqrt(len(res)))
        assert abs(z) < 3.0, f"{metric}: per-user z = {z:.2f} over {len(res)} users"


def test_logging_policy_value_agrees_with_observed_request_totals(data: tuple[Oracle, pd.DataFrame]) -> None:
    oracle, imp = data
    rids = np.unique(imp["request_id"].to_numpy())[:3000]
    value = oracle.logging_policy_value(rids, samples=128)
    sub = imp[imp["request_id"].isin(rids)]
    obs = sub.groupby("request_id")[[OBSERVED[m] for m in METRICS]].sum().astype(float)
    for metric in METRICS:
        res = obs[OBSERVED[metric]].to_numpy() - value[metric]
        # the Monte-Carlo error of the oracle's value adds to the sampling error of the observations
        se = np.sqrt(res.var(ddof=1) / len(res) + np.mean(value[f"{metric}_se"] ** 2) / len(res))
        z = res.mean() / se
        assert abs(z) < 3.0, f"{metric}: z = {z:.2f}"
        assert np.mean(value[f"{metric}_se"]) < 0.05 * max(value[metric].mean(), 1e-9)  # precise per request


def test_logged_propensities_are_the_exact_marginals_of_the_logging_policy(
        data: tuple[Oracle, pd.DataFrame]) -> None:
    oracle, imp = data
    rows = np.flatnonzero(oracle.request_random)  # requests with a random slot, then 150 without
    rows = np.r_[rows, np.flatnonzero(~oracle.request_random)[:150]]
    rid = oracle.request_ids[rows]
    cands = oracle.candidates[rows]
    lw = logging_log_weights(oracle.world, oracle.request_user[rows], oracle.tfrac(oracle.request_ts_us[rows]),
                             request_keys(oracle.request_user[rows], oracle.request_ts_us[rows]), cands)
    M = pl.marginals(np.exp(lw - lw.max(axis=1, keepdims=True)), CONFIG.slate_size)
    k, rho = CONFIG.slate_size, CONFIG.random_share
    sub = imp.set_index("request_id").loc[rid].reset_index()  # rows in the order of rid
    shown = sub["video_id"].to_numpy().reshape(-1, k)
    logged = sub["propensity"].to_numpy().reshape(-1, k)
    random = sub["is_random"].to_numpy().reshape(-1, k)
    in_cands = (cands[:, None, :] == shown[:, :, None]).any(axis=2)
    assert (random == ~in_cands).all()  # random slots come from outside the candidate set, the rest from it
    col = np.argmax(cands[:, None, :] == shown[:, :, None], axis=2)  # candidate index of each shown video
    pool = oracle.world.published_by(oracle._day(rows)) - CONFIG.candidates  # published that day, not candidates
    expect = np.where(random, (rho / pool)[:, None],
                      (1 - rho) * M[np.arange(len(rows))[:, None], col, np.arange(k)[None, :]])
    np.testing.assert_allclose(logged, expect, atol=1e-9, rtol=0)
    # the candidates table logs the logging policy's scores (PL log weights)
    with LogStore.open(oracle_path(oracle)) as store:
        scores = store.query("SELECT request_id, video_id, logging_score FROM candidates "
                             f"WHERE request_id IN ({', '.join(map(str, rid[:20]))}) ORDER BY request_id, video_id"
                             ).to_pandas()
    got = scores["logging_score"].to_numpy().reshape(-1, CONFIG.candidates)
    order = np.argsort(rid[:20])
    np.testing.assert_allclose(got, np.take_along_axis(lw[:20][order], np.argsort(cands[:20][order], axis=1),
                                                       axis=1), rtol=1e-12)


def test_expected_watch_matches_numerical_integration() -> None:
    b = CONFIG.behaviour

    class _W:  # the closed form only reads the coefficients
        config = CONFIG

    for s, dur in [(-1.0, 12.0), (0.0, 20.0), (1.5, 45.0), (4.0, 30.0)]:
        mu = b.watch_mu + b.watch_beta * s
        dist = stats.lognorm(s=b.watch_sigma, scale=np.exp(mu))
        ref, _ = integrate.quad(lambda r, d=dur, dist=dist: d * min(b.loop_max, r) * dist.pdf(r), 0, np.inf,
                                limit=200)
        got = oc.expected_watch(_W(), np.array([s]), np.array([dur]))[0]  # type: ignore[arg-type]
        assert got == pytest.approx(ref, rel=1e-7)


def test_logging_comment_exposure_equals_average_over_drawn_rankings(data: tuple[Oracle, pd.DataFrame]) -> None:
    oracle, _ = data
    w = oracle.world
    off = w.comment_offsets
    v = int(np.argmax(np.diff(off) * (np.diff(off) > 12)))  # a video with more comments than shown
    m = int(off[v + 1] - off[v])
    user = np.array([3])
    cw, ci = oc.comment_section_under_logging(w, user, np.array([v]))
    rng = np.random.default_rng(0)
    N = 20000
    lw = np.broadcast_to(w.comment_log_weights()[off[v]:off[v + 1]], (N, m))
    ranks = off[v] + pl.sample_slates(lw, m, rng)
    got = oracle.comment_expectations(np.repeat(user, N), np.repeat(v, N), ranks)
    for metric, ref in (("comment_watch_time_s", cw[0]), ("comment_interactions", ci[0])):
        x = got[metric]
        assert abs(x.mean() - ref) < 4 * x.std() / np.sqrt(N) + 1e-12, metric


def test_comment_expectations_match_monte_carlo_of_the_outcome_laws(data: tuple[Oracle, pd.DataFrame]) -> None:
    oracle, _ = data
    w, b = oracle.world, CONFIG.behaviour
    off = w.comment_offsets
    v = int(np.flatnonzero(np.diff(off) >= 4)[0])
    ranking = np.array([[off[v] + 2, off[v], off[v] + 3, -1]])
    e = oracle.comment_expectations(np.array([5]), np.array([v]), ranking)
    rng = np.random.default_rng(1)
    N = 400_000
    cid = ranking[0, :3]
    a = oc.comment_affinity(w, np.repeat(5, 3), cid)
    laws = oc.comment_laws(w, a, cid)
    exam = rng.random((N, 3)) < b.comment_exam_decay ** np.arange(3)
    dwell = np.where(exam, np.exp(laws["dwell_mu"] + b.dwell_sigma * rng.normal(size=(N, 3))), 0).sum(axis=1)
    assert dwell.mean() == pytest.approx(e["comment_watch_time_s"][0], abs=4 * dwell.std() / np.sqrt(N))


def test_slate_value_of_logged_slates_sums_the_per_impression_expectations(
        data: tuple[Oracle, pd.DataFrame]) -> None:
    oracle, imp = data
    k = CONFIG.slate_size
    head = imp.iloc[: 600 * k]
    rids = head["request_id"].to_numpy()[::k]
    slates = head["video_id"].to_numpy().reshape(-1, k)
    val = oracle.slate_value(rids, slates)
    per = _expected_per_impression(oracle, head)
    for metric in METRICS:
        np.testing.assert_allclose(val[metric], per[metric].reshape(-1, k).sum(axis=1), rtol=1e-12)


def test_a_better_policy_has_a_higher_true_value(data: tuple[Oracle, pd.DataFrame]) -> None:
    """Ranking candidates by the true expected watch time beats the noisy logging policy."""
    oracle, _ = data
    rows = np.arange(400)
    rids = oracle.request_ids[rows]
    cands = oracle.candidates[rows]
    e = oracle.video_expectations(oracle.request_user[rows], oracle.request_ts_us[rows], cands)
    best = np.take_along_axis(cands, np.argsort(-e["watch_time_s"], axis=1)[:, : CONFIG.slate_size], axis=1)
    assert oracle.slate_value(rids, best)["watch_time_s"].mean() > \
        oracle.logging_policy_value(rids)["watch_time_s"].mean()


def test_unknown_ids_are_rejected(data: tuple[Oracle, pd.DataFrame]) -> None:
    oracle, _ = data
    with pytest.raises(KeyError, match="unknown request_id"):
        oracle.slate_value(np.array([10**12]), np.zeros((1, 6), dtype=int))
    with pytest.raises(KeyError, match="video_ids must lie in"):
        oracle.video_expectations(np.array([0]), oracle.request_ts_us[:1], np.array([10**9]))
