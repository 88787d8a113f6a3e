"""Checkpoints: round trip gives identical scores; corrupted or mismatched checkpoints are refused clearly."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from models.adapters import Recommender, SASRecRecommender, load_recommender, resolve_checkpoint
from models.batch import CommentQuery
from models.catalogue import Catalogue
from models.checkpoint import CheckpointError, load_checkpoint
from models.histories import prepare_data
from models.pop import PopRecommender
from models.sasrec import SASRec, SASRecConfig
from tests.models.fixtures import cyclic_world
from tests.models.test_sasrec import _hist, _query


@pytest.fixture()
def world():
    prep = prepare_data(cyclic_world(n_users=6, n_videos=40, n_requests=10))
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(prep.catalogue.n_videos, hidden=16, ffn=32, max_len=8))
    return prep, SASRecRecommender(model, prep.catalogue)


def test_round_trip_identical_scores(tmp_path, world) -> None:
    prep, rec = world
    folder = rec.save(tmp_path / "base", data_fingerprint=prep.fingerprint, seed=3, metrics={"best_epoch": 1})
    assert sorted(p.name for p in folder.iterdir()) == ["catalogue.safetensors", "config.json", "model.safetensors"]
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["kind"] == "sasrec" and cfg["seed"] == 3 and cfg["data_fingerprint"] == prep.fingerprint
    assert cfg["catalogue_digest"] == prep.catalogue.digest() and cfg["code_version"]
    env = cfg["environment"]  # what a retrained model's last bits depend on
    assert env["packages"]["torch"] == torch.__version__
    assert env["packages"]["numpy"] == np.__version__ and env["python"].count(".") == 2
    assert set(env["cpu_simd"]) <= {"AVX2", "FMA3", "AVX512F", "AVX512_SKX"}
    loaded = load_recommender("base", tmp_path, catalogue=prep.catalogue)
    assert isinstance(loaded, SASRecRecommender) and isinstance(loaded, Recommender)
    hist, q = _hist(), _query()
    torch.testing.assert_close(loaded.score_videos(hist, q), rec.score_videos(hist, q), rtol=0, atol=0)
    assert loaded.digest == cfg["weights_sha256"]
    # a path works as well as a name
    assert resolve_checkpoint(str(folder)) == folder
    # saving again replaces atomically, leaving no temporary folders behind
    rec.save(tmp_path / "base", data_fingerprint="x", seed=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base"]


def test_pop_round_trip_and_comment_rule(tmp_path, world) -> None:
    prep, _ = world
    pop = PopRecommender.fit(prep.splits.train, prep.catalogue)
    pop.save(tmp_path / "pop", data_fingerprint="f", seed=0)
    loaded = load_recommender("pop", tmp_path)
    torch.testing.assert_close(loaded.counts, pop.counts)
    # counts = training events per video, checked against a direct count
    direct = np.bincount(prep.splits.train.video, minlength=prep.catalogue.n_videos + 1)
    assert loaded.counts.numpy().tolist() == direct.astype(float).tolist()
    # comments ranked by like count, -inf at pads
    cands = torch.tensor([[[1, 2, 3, 0]]])
    s = loaded.score_comments(None, CommentQuery(torch.zeros(1, 1, dtype=torch.float64), torch.ones(1, 1).long(),
                                                 cands))
    likes = prep.catalogue.comment_likes
    assert s[0, 0, :3].tolist() == [float(likes[1]), float(likes[2]), float(likes[3])]
    assert torch.isneginf(s[0, 0, 3])


def test_corrupted_weights_refused(tmp_path, world) -> None:
    prep, rec = world
    folder = rec.save(tmp_path / "base", data_fingerprint="f", seed=0)
    raw = bytearray((folder / "model.safetensors").read_bytes())
    raw[-10] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupted or was replaced"):
        load_recommender(folder)


def test_wrong_shapes_refused(tmp_path, world) -> None:
    prep, rec = world
    folder = rec.save(tmp_path / "base", data_fingerprint="f", seed=0)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["hyperparameters"]["hidden"] = 32
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"shape mismatch item_emb.weight: file \(41, 16\) vs model \(41, 32\)"):
        load_recommender(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_recommender(folder)


def test_mismatched_catalogue_refused(tmp_path, world) -> None:
    prep, rec = world
    folder = rec.save(tmp_path / "base", data_fingerprint="f", seed=0)
    other = Catalogue.from_tables(pd.DataFrame({"video_id": np.arange(1, 42) * 10}), cyclic_world(n_videos=40)["comments"])
    with pytest.raises(CheckpointError, match=r"different catalogue.*videos: 40 vs 41; 0 only in the first, "
                                              r"1 only in the second \(e.g. \[410\]\)"):
        load_checkpoint(folder, catalogue=other)


def test_unknown_names_and_kinds(tmp_path, world) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint for 'lsvcr'.*harness train --model lsvcr"):
        load_recommender("lsvcr", tmp_path)
    prep, rec = world
    folder = rec.save(tmp_path / "weird", data_fingerprint="f", seed=0)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["kind"] = "mystery"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="unknown model kind 'mystery'"):
        load_recommender("weird", tmp_path)


def test_same_ids_different_text_refused(tmp_path, world) -> None:
    """Worlds that share every id but not their titles (other seeds of the synthetic world) were once
    accepted: ids would mean other videos. The checkpoint now records the catalogue's text digest."""
    prep, rec = world
    folder = rec.save(tmp_path / "base", data_fingerprint="f", seed=0)
    cat = prep.catalogue
    assert load_checkpoint(folder, catalogue=cat)  # the same catalogue loads
    retitled = Catalogue(cat.video_ids, [None] + [f"another title {i}" for i in range(cat.n_videos)], cat.comment_ids,
                         cat.comment_video, list(cat.comment_texts), cat.popular_comment,
                         comment_likes=cat.comment_likes)
    assert retitled.digest() == cat.digest() and retitled.text_digest() != cat.text_digest()
    with pytest.raises(CheckpointError, match="same ids but different titles"):
        load_checkpoint(folder, catalogue=retitled)
