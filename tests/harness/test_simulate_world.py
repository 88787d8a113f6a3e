"""The synthetic world and its logged dataset: determinism, validity, structure, calibration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.logs.store import LogStore
from harness.simulate.config import WorldConfig
from harness.simulate.generate import simulate
from harness.simulate.vocab import FILLERS, TOPICS
from harness.simulate.world import ARRAYS_FILE, CONFIG_FILE, World

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
        # every shown video is one of the request's candidates
        missing = store.query("SELECT count(*) AS n FROM impressions i ANTI JOIN candidates c "
                              "USING (request_id, video_id)").to_pydict()["n"][0]
        assert missing == 0
        # comment watch time on the impression = sum of dwell of its comment impressions
        diff = store.query("""
            SELECT max(abs(i.comment_watch_time_s - coalesce(c.s, 0))) AS d FROM impressions i
            LEFT JOIN (SELECT request_id, video_id, sum(dwell_s) AS s FROM comment_impressions
                       GROUP BY ALL) c USING (request_id, video_id)""").to_pydict()["d"][0]
        assert diff == pytest.approx(0.0, abs=1e-9)


def test_random_exposure_has_exact_uniform_propensity(small: Path) -> None:
    with LogStore.open(small) as store:
        imp = store.df("impressions")
    rnd = imp[imp["is_random"]]
    assert len(rnd) > 0
    np.testing.assert_array_equal(rnd["propensity"].to_numpy(), 1.0 / SMALL.candidates)
    assert imp["is_random"].mean() == pytest.approx(SMALL.random_share, abs=0.02)


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
    """Open rate ~13% of impressions and ~6% interactions per open (KuaiComt), random share 5%."""
    _, summary = simulate(WorldConfig(users=800, videos=1200, days=6, seed=1), tmp_path / "c")
    r = summary.rates
    assert r["comment_open_rate"] == pytest.approx(0.13, abs=0.015)
    assert r["comment_interactions_per_open"] == pytest.approx(0.06, abs=0.015)
    assert r["random_share"] == pytest.approx(0.05, abs=0.01)
    assert 5.0 < r["mean_watch_time_s"] < 25.0


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
