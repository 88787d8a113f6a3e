"""The synthetic world and its logged dataset: determinism, validity, structure, calibration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.logs.store import LogStore
from harness.simulate import plackett_luce as pl
from harness.simulate.config import WorldConfig
from harness.simulate.generate import generate, simulate
from harness.simulate.policy import Retrieval
from harness.simulate.vocab import FILLERS, TOPICS, topic_names
from harness.simulate.world import ARRAYS_FILE, CONFIG_FILE, SUBSET_MAX_COMMENTS, World, _Vocab
from tests.harness.test_simulate_pl import brute_force

SMALL = WorldConfig(users=250, videos=400, days=4, seed=7)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path, _ = simulate(SMALL, tmp_path_factory.mktemp("sim") / "w")
    return path


def test_same_seed_gives_byte_identical_parquet(small: Path, tmp_path: Path) -> None:
    again, _ = simulate(SMALL, tmp_path / "again")
    files = sorted(p.name for p in small.glob("*.parquet"))
    assert len(files) == 7
    for name in files:
        assert (small / name).read_bytes() == (again / name).read_bytes(), name
    for name in (CONFIG_FILE, ARRAYS_FILE):
        assert (small / name).read_bytes() == (again / name).read_bytes(), name


def test_different_seed_gives_different_data(small: Path, tmp_path: Path) -> None:
    other, _ = simulate(WorldConfig(users=250, videos=400, days=4, seed=8), tmp_path / "other")
    with LogStore.open(small) as a, LogStore.open(other) as b:
        assert a.df("videos")["title"].tolist() != b.df("videos")["title"].tolist()
        assert a.counts() != b.counts() or not a.df("impressions").equals(b.df("impressions"))


def test_dataset_passes_store_validation_and_has_every_table(small: Path) -> None:
    with LogStore.open(small) as store:  # validates
        counts = store.counts()
        assert all(counts[t] > 0 for t in ("users", "videos", "comments", "requests", "impressions",
                                           "candidates", "comment_impressions"))
        assert counts["impressions"] == SMALL.slate_size * counts["requests"]
        assert counts["candidates"] == SMALL.candidates * counts["requests"]
        # every shown video is one of the request's candidates, except random slots, which come from the
        # catalogue outside them (world v2, as KuaiRand's random exposure)
        missing = store.query("SELECT count(*) FILTER (WHERE NOT i.is_random) AS n, "
                              "count(*) FILTER (WHERE i.is_random) AS r FROM impressions i "
                              "ANTI JOIN candidates c USING (request_id, video_id)").to_pydict()
        assert missing["n"][0] == 0
        n_random = store.query("SELECT count(*) AS n FROM impressions WHERE is_random").to_pydict()["n"][0]
        assert missing["r"][0] == n_random
        # comment watch time on the impression = sum of dwell of its comment impressions
        diff = store.query("""
            SELECT max(abs(i.comment_watch_time_s - coalesce(c.s, 0))) AS d FROM impressions i
            LEFT JOIN (SELECT request_id, video_id, sum(dwell_s) AS s FROM comment_impressions
                       GROUP BY ALL) c USING (request_id, video_id)""").to_pydict()["d"][0]
        assert diff == pytest.approx(0.0, abs=1e-9)


def test_random_exposure_has_exact_uniform_propensity(small: Path, tmp_path: Path) -> None:
    # slot mode (default): single slots from the catalogue outside the candidates, 1 / (V - n) each
    cfg = WorldConfig(users=250, videos=400, days=4, seed=7, random_share=0.02)
    path, _ = simulate(cfg, tmp_path / "slot")
    with LogStore.open(path) as store:
        imp = store.df("impressions")
    rnd = imp[imp["is_random"]]
    assert len(rnd) > 0
    world = World.load(path)
    with LogStore.open(path) as store:
        day = store.query("SELECT i.request_id, (epoch_us(r.ts) - epoch_us(TIMESTAMP '2023-10-01')) // 86400000000 AS d "
                          "FROM impressions i JOIN requests r USING (request_id) WHERE i.is_random "
                          "ORDER BY i.request_id, i.position").to_pandas()["d"].to_numpy()
    pool = world.published_by(day) - cfg.candidates  # the catalogue published that day, minus candidates
    np.testing.assert_allclose(rnd.sort_values(["request_id", "position"])["propensity"].to_numpy(), 0.02 / pool,
                               rtol=1e-12)
    se = np.sqrt(0.02 * 0.98 / len(imp))
    assert imp["is_random"].mean() == pytest.approx(0.02, abs=4 * se)
    # whole-slate mode (world v1): a uniformly random top-k of the candidates, 1 / n each
    cfg = WorldConfig(users=250, videos=400, days=4, seed=7, random_mode="slate", random_share=0.05)
    path, _ = simulate(cfg, tmp_path / "slate")
    with LogStore.open(path) as store:
        imp = store.df("impressions")
    rnd = imp[imp["is_random"]]
    np.testing.assert_array_equal(rnd["propensity"].to_numpy(), 1.0 / cfg.candidates)
    assert imp["is_random"].mean() == pytest.approx(0.05, abs=0.02)


def test_seed_and_config_are_recorded_and_world_reloads(small: Path) -> None:
    meta = json.loads((small / CONFIG_FILE).read_text())
    assert meta["seed"] == 7
    assert meta["config"]["users"] == 250 and meta["pre_days"] == 2
    assert meta["experiment_start"].startswith("2023-10-03")
    loaded = World.load(small)
    assert loaded.config == SMALL
    rebuilt = World.build(SMALL)
    for name, arr in rebuilt.arrays.items():
        np.testing.assert_array_equal(loaded.arrays[name], arr, err_msg=name)
    with np.load(small / ARRAYS_FILE, allow_pickle=False) as z:  # no pickle needed to read it back
        assert "interest_base" in z.files


def test_titles_show_the_primary_topic_and_never_the_secondary(small: Path) -> None:
    world = World.load(small)
    names = world.topic_names
    with LogStore.open(small) as store:
        titles = store.df("videos").sort_values("video_id")["title"].tolist()
        comments = store.df("comments").sort_values("comment_id")
    fillers = set(FILLERS)
    for v in range(0, world.n_videos, 7):
        words = set(titles[v].split())
        primary, secondary = set(TOPICS[names[world.primary_topic[v]]]), set(TOPICS[names[world.secondary_topic[v]]])
        assert words - fillers <= primary and words & primary
        assert not words & secondary
    # the secondary topic does show in the comments (most comments discuss it)
    texts = comments["text"].tolist()
    on_secondary = [bool(set(texts[c].rstrip("?").split()) & set(TOPICS[names[world.secondary_topic[v]]]))
                    for c, v in enumerate(comments["video_id"].tolist())]
    assert np.mean(on_secondary) == pytest.approx(SMALL.behaviour.comment_secondary_share, abs=0.05)


def test_interests_drift_parametrically(small: Path) -> None:
    from harness.simulate.outcomes import interest_z

    world = World.load(small)
    users = np.arange(5)
    z0 = interest_z(world, users, np.zeros(5))
    z1 = interest_z(world, users, np.ones(5))
    # z(t) = log K + log softmax(a + t b): its differences across topics move by exactly b
    d = (z1 - z0) - (world.interest_drift[users])
    np.testing.assert_allclose(d - d[:, :1], 0.0, atol=1e-12)


def test_default_world_is_calibrated_to_kuaishou_rates(tmp_path: Path) -> None:
    """Open rate ~13% of impressions and ~6% interactions per open (KuaiComt), random slots ~0.37% of
    impressions (KuaiRand), comment share of time ~5.8% (Kuaishou)."""
    _, summary = simulate(WorldConfig(users=800, videos=1200, days=6, seed=1), tmp_path / "c")
    r = summary.rates
    assert r["comment_open_rate"] == pytest.approx(0.13, abs=0.015)
    assert r["comment_interactions_per_open"] == pytest.approx(0.06, abs=0.015)
    assert r["random_share"] == pytest.approx(0.0037, abs=0.001)  # KuaiRand: ~0.37% of impressions
    assert 5.0 < r["mean_watch_time_s"] < 25.0
    share = r["comment_watch_time_s_per_open"] * r["comment_open_rate"]
    assert share / (share + r["mean_watch_time_s"]) == pytest.approx(0.058, abs=0.012)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"users": 0}, "users must be a positive integer"),
    ({"pre_days": 14}, "pre_days must lie in"),
    ({"slate_size": 60}, "slate_size"),
    ({"random_share": 1.5}, "random_share"),
    ({"candidates": 80, "videos": 50}, "candidates"),
    ({"behaviour": {"exam_decay": 1.2}}, "exam_decay"),
])
def test_bad_config_names_the_problem(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        WorldConfig(**kwargs)


def test_existing_output_is_not_overwritten_by_default(small: Path) -> None:
    with pytest.raises(FileExistsError, match="overwrite"):
        simulate(SMALL, small)


def test_text_is_the_space_join_of_its_tokens() -> None:
    """Arrow texts built from token ids equal Python's join (single spaces, "?" glued on)."""
    vocab = _Vocab(topic_names(20))
    rng = np.random.default_rng(0)
    tok = rng.integers(0, vocab.question, size=(300, 9))
    tok[rng.random(tok.shape) < 0.3] = -1  # gaps anywhere, including the first column
    tok[::3, -1] = vocab.question
    got = vocab.join(tok).to_pylist()
    for row, text in zip(tok, got, strict=True):
        words = [vocab.words[t] for t in row if t >= 0]
        ref = " ".join(w for w in words if w != "?") + ("?" if words and words[-1] == "?" else "")
        if words == ["?"]:
            ref = "?"
        assert text == ref


def test_comment_marginals_of_both_exact_paths_are_distributions() -> None:
    """Small sections use the subset recursion, large ones the quadrature: every shown rank holds
    exactly one comment, no comment exceeds probability 1, and each path equals an independent
    method on a section it covers."""
    world = World.build(WorldConfig(users=20, videos=60, candidates=20, comments_per_video=14, days=2, seed=3))
    L = world.config.behaviour.comment_list_size
    off, counts = world.comment_offsets, np.diff(world.comment_offsets)
    marg = world.comment_marginals()
    assert counts.min() <= SUBSET_MAX_COMMENTS < counts.max()
    for v in np.flatnonzero(counts):
        block = marg[off[v]:off[v + 1]]
        k = min(int(counts[v]), L)
        np.testing.assert_allclose(block[:, :k].sum(axis=0), 1.0, atol=1e-9)
        assert np.all(block[:, k:] == 0) and np.all(block.sum(axis=1) <= 1 + 1e-9)
    w_all = np.exp(world.comment_log_weights())
    small = int(np.flatnonzero((counts >= 3) & (counts <= 6))[0])
    w = w_all[off[small]:off[small + 1]]
    np.testing.assert_allclose(marg[off[small]:off[small + 1], : len(w)], brute_force(w, len(w)), atol=1e-10)
    large = int(np.flatnonzero((counts > SUBSET_MAX_COMMENTS) & (counts <= pl.SUBSET_MAX_N))[0])
    w = w_all[off[large]:off[large + 1]]
    np.testing.assert_allclose(marg[off[large]:off[large + 1]], pl.subset_marginals(w[None, :], L)[0], atol=1e-9)
    decay = world.config.behaviour.comment_exam_decay ** np.arange(L)
    np.testing.assert_allclose(world.comment_exposure[:, 0], marg @ decay, rtol=1e-12)
    # the second personalised ranking (boosting the secondary topic's comments) has its own marginals
    np.testing.assert_allclose(world.comment_exposure[:, 1], world.comment_marginals(1) @ decay, rtol=1e-12)
    assert not np.allclose(world.comment_exposure[:, 0], world.comment_exposure[:, 1])


def test_topic_retrieval_is_the_popularity_inverse_cdf() -> None:
    """Per-topic searches equal one inverse-CDF search over the topic-sorted catalogue (an empty
    topic falls back to a uniform video)."""
    world = World.build(WorldConfig(users=10, videos=30, candidates=10, slate_size=3, days=1, seed=4))
    ret = Retrieval(world)
    assert np.any(ret.topic_start == ret.topic_end)  # 30 videos over 20 topics: some topic is empty
    rng = np.random.default_rng(1)
    topics = rng.integers(0, world.config.topics, size=5000)
    u = rng.random(5000)
    cum_topic, _ = ret._day_tables(0)  # the day's retrieval weights (world v2: uploads, ramp, freshness)
    published = int(ret.published[0])
    lo_idx, hi_idx = ret.topic_start[topics], ret.topic_end[topics]
    lo = np.where(lo_idx > 0, cum_topic[np.maximum(lo_idx - 1, 0)], 0.0)
    hi = cum_topic[np.maximum(hi_idx - 1, 0)]
    pos = np.clip(np.searchsorted(cum_topic, lo + u * (hi - lo), side="right"), lo_idx,
                  np.maximum(hi_idx - 1, lo_idx))
    ref = np.where((lo_idx == hi_idx) | (hi <= lo), (u * published).astype(np.int64),
                   ret.by_topic[np.minimum(pos, world.n_videos - 1)])
    np.testing.assert_array_equal(ret._pick_in_topic(topics, u, cum_topic, published), ref)
    # and the draws follow the day's retrieval weight within the topic
    weight = world.retrieval_weight(0)
    t = int(np.argmax(ret.topic_end - ret.topic_start))
    vids = ret.by_topic[ret.topic_start[t]:ret.topic_end[t]]
    draws = ret._pick_in_topic(np.full(200_000, t), rng.random(200_000), cum_topic, published)
    vids = vids[weight[vids] > 0]
    freq = np.bincount(draws, minlength=world.n_videos)[vids] / 200_000
    p = weight[vids] / weight[vids].sum()
    assert np.max(np.abs(freq - p) / np.sqrt(p * (1 - p) / 200_000)) < 5


def test_output_does_not_depend_on_threads() -> None:
    cfg = WorldConfig(users=120, videos=200, days=2, seed=11, comments_per_video=15)
    _, one, _ = generate(cfg, workers=1)
    _, two, _ = generate(cfg, workers=2)
    for name, table in one.items():
        assert table.equals(two[name]), name
