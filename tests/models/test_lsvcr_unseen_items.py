"""LSVCR scores videos and comments it was not trained on, by their text, as the paper's tuned LLM does.

The checkpoint keeps the LM part stage 1 tuned (tuned_lm.safetensors + config.json `tuned_lm`); given the
data's catalogue (a later snapshot with new uploads and comments), the adapter embeds the new texts with
base LM + tuned blocks, projects them like the trained rows, and caches them by text hash. References:
the training-time text path (stage 1's top-blocks re-embedding, and the stored tables), the in-memory
tuned LM, and the model scored on the training catalogue.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from models.batch import CommentQuery, UserHistories, VideoQuery
from models.catalogue import Catalogue
from models.checkpoint import CheckpointError, file_sha256
from models.errors import ModelInputError
from models.lsvcr.adapter import PROJECTION_FILE, LSVCRRecommender
from models.lsvcr.config import LSVCRConfig, SRConfig, Stage1Config, Stage2Config
from models.lsvcr.export import export_serving
from models.lsvcr.llm import embed_from_boundary, embed_texts, embed_texts_with_boundary, load_llm
from models.lsvcr.sr_model import LSVCRSR
from models.lsvcr.stage1 import run_stage1
from models.lsvcr.text import TextTables, embed_catalogue, embed_catalogue_with_boundary
from models.lsvcr.train import prepare_data, train_lsvcr
from models.lsvcr.tuned_lm import TUNED_LM_FILE, TextEncoder, TunedLM, tensor_digest
from tests.models.fixtures import cyclic_world
from tests.models.test_lsvcr_support import one_thread, save_tiny_lm  # noqa: F401

MAX_TOK = 16
NEW_VIDEOS = {15: "video 3", 305: "video 301 comment the next"}  # id -> title; 15 repeats video 3's title (id 30)
NEW_COMMENTS = {1000: (15, "comment 7"), 2000: (305, "next user comment 350"), 2001: (20, "comment 399 video")}
SCORE_TOL = 2.0**-11 / 0.07  # float16 rounding of an export's stored vectors (test_lsvcr_export.py)


def small_config() -> LSVCRConfig:
    return LSVCRConfig(stage1=Stage1Config(n_samples=32, batch_size=8, epochs=1, n_video_items=3, n_comment_items=2,
                                           lr_lm=1e-2, top_layers=1, text_max_tokens=MAX_TOK, embed_batch=64),
                       stage2=Stage2Config(epochs=1, batch_users=8, patience=1))


def later_tables(tables: dict, videos: dict = NEW_VIDEOS, comments: dict = NEW_COMMENTS) -> dict:
    """The logs' videos and comments tables plus new uploads and comments (ids between the old ones too)."""
    v = tables["videos"].to_pandas()
    v = pd.concat([v, pd.DataFrame({"video_id": list(videos), "title": list(videos.values()),
                                    "duration_s": 15.0, "author_id": 0})], ignore_index=True)
    c = tables["comments"].to_pandas()
    c = pd.concat([c, pd.DataFrame({"comment_id": list(comments), "video_id": [x[0] for x in comments.values()],
                                    "text": [x[1] for x in comments.values()], "like_count": 3})], ignore_index=True)
    return {"videos": v, "comments": c}


def later_catalogue(tables: dict, **kw) -> Catalogue:
    t = later_tables(tables, **kw)
    return Catalogue.from_tables(t["videos"], t["comments"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("unseen")
    tables = cyclic_world(n_users=10, n_videos=30, n_requests=15, comments_per_video=3)
    catalogue, splits = prepare_data(tables)
    lm = save_tiny_lm(root / "tiny-encoder", "encoder")
    out = train_lsvcr(None, root / "ck" / "lsvcr", catalogue=catalogue, splits=splits, llm_path=str(lm),
                      config=small_config(), time_budget_s=None, progress=False, log=lambda m: None)
    return {"root": root, "tables": tables, "catalogue": catalogue, "lm": lm, "out": out,
            "later": later_catalogue(tables)}


def workload(cat: Catalogue, videos: list[list[int]], comments: list[list[int]], cand_v: list[int],
             cand_c: list[int], watched: int) -> tuple[UserHistories, VideoQuery, CommentQuery]:
    """Histories, video and comment queries written in external ids, in `cat`'s index space."""
    B = len(videos)
    L = max(len(x) for x in videos)
    vid = torch.zeros(B, L, dtype=torch.long)
    vt = torch.full((B, L), float("inf"), dtype=torch.float64)
    cv = torch.zeros(B, 2, dtype=torch.long)
    cc = torch.zeros(B, 2, 2, dtype=torch.long)
    ct = torch.full((B, 2), float("inf"), dtype=torch.float64)
    for b, seq in enumerate(videos):
        vid[b, :len(seq)] = torch.from_numpy(cat.video_index(seq))
        vt[b, :len(seq)] = 1e9 + 10 * torch.arange(len(seq), dtype=torch.float64)
        ci = torch.from_numpy(cat.comment_index(comments[b]))
        cv[b, 0] = int(cat.comment_video[int(ci[0])])
        cc[b, 0, :len(ci)] = ci
        ct[b, 0] = 1e9 + 5
    assert (vid[vt.isfinite()] > 0).all() and (cc[:, 0, 0] > 0).all()
    t = torch.full((B, 1), 2e9, dtype=torch.float64)
    vq = VideoQuery(t, torch.from_numpy(cat.video_index(cand_v)).expand(B, 1, -1).clone())
    cq = CommentQuery(t, torch.from_numpy(cat.video_index([watched])).expand(B, 1).clone(),
                      torch.from_numpy(cat.comment_index(cand_c)).expand(B, 1, -1).clone())
    assert (vq.candidates > 0).all() and (cq.candidates > 0).all()
    return UserHistories(vid, vt, cv, cc, ct), vq, cq


KNOWN = ([[10, 20, 30, 40], [200, 210, 220]], [[1001, 1002], [1070]], [50, 60, 70, 300], [1004, 1005, 1006], 20)
WITH_NEW = ([[10, 15, 30, 305], [200, 305]], [[1001, 1000], [2000]], [50, 15, 305, 300], [2001, 1004, 1005], 20)


def scores(rec: LSVCRRecommender, cat: Catalogue, case=KNOWN) -> tuple[torch.Tensor, torch.Tensor]:
    hist, vq, cq = workload(cat, *case)
    return rec.score_videos(hist, vq), rec.score_comments(hist, cq)


# ----- the checkpoint keeps the tuned LM part --------------------------------------------------------
def test_checkpoint_saves_only_the_tuned_blocks_with_their_spec(trained):
    out = trained["out"]
    cfg = json.loads((out / "config.json").read_text())
    spec = cfg["tuned_lm"]
    assert spec["base_lm"] == str(trained["lm"]) and spec["tuning"] == "top" and spec["kind"] == "encoder"
    assert spec["blocks"] == [1] and spec["n_blocks"] == 2 and spec["max_tokens"] == MAX_TOK
    assert spec["pooling"] == "mean" and spec["file"] == TUNED_LM_FILE
    tensors = load_file(str(out / TUNED_LM_FILE))
    lm = load_llm(trained["lm"])
    top = {n for n, _ in lm.model.named_parameters() if n.startswith("encoder.layer.1.")}
    assert set(tensors) == top  # the tuned block and nothing else
    assert spec["digest"] == tensor_digest(tensors)
    assert cfg["files"][TUNED_LM_FILE] == file_sha256(out / TUNED_LM_FILE)
    # the tuned block differs from the pre-trained one (stage 1 trained it)
    assert any(not torch.equal(v, dict(lm.model.named_parameters())[k].detach()) for k, v in tensors.items())
    # safetensors and JSON only
    assert sorted(p.suffix for p in out.iterdir()) == [".json"] + [".safetensors"] * 4


def test_loading_checks_the_tuned_part(trained, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(trained["out"], bad)
    raw = bytearray((bad / TUNED_LM_FILE).read_bytes())
    raw[-1] ^= 0xFF
    (bad / TUNED_LM_FILE).write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="tuned_lm.safetensors is missing or corrupted"):
        LSVCRRecommender.from_checkpoint(bad)
    shutil.copy(trained["out"] / TUNED_LM_FILE, bad / TUNED_LM_FILE)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["tuned_lm"]["digest"] = "0" * 64  # a spec that does not describe the stored tensors
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="tuned language model part is unusable"):
        LSVCRRecommender.from_checkpoint(bad)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(("kind", "tuning"), [("encoder", "top"), ("encoder", "lora"), ("decoder", "top")])
def test_saved_and_reloaded_tuned_part_embeds_like_the_training_path(tmp_path, kind, tuning):
    """Stage 1 in memory: the reloaded tuned part embeds new texts bit-identically to the in-memory tuned
    LM and, for the top-blocks path, like the training-time computation (the pre-trained states entering
    the tuned block, then the tuned block)."""
    tables = cyclic_world(n_users=8, n_videos=12, n_requests=12, comments_per_video=3)
    catalogue, splits = prepare_data(tables)
    path = save_tiny_lm(tmp_path / "tiny", kind)
    lm = load_llm(path)
    fast = kind == "encoder" and tuning == "top"
    pre, boundary = embed_catalogue_with_boundary(lm, catalogue, 1, max_tokens=MAX_TOK, batch_size=16) if fast else (
        embed_catalogue(lm, catalogue, max_tokens=MAX_TOK), None)
    s1 = replace(small_config().stage1, lm_tuning=tuning)
    sr = SRConfig(n_videos=catalogue.n_videos, n_comments=catalogue.n_comments, lm_dim=lm.hidden_size)
    res = run_stage1(splits.train, catalogue, lm, pre, sr, s1, seed=0, log=lambda m: None, boundary=boundary)
    lora = {"r": s1.lora_r, "alpha": s1.lora_alpha, "dropout": s1.lora_dropout}
    tuned = TunedLM.from_model(lm, res.lm_state, tuning=tuning, llm_path=str(path), max_tokens=MAX_TOK, lora=lora)
    assert tuned.spec.blocks == ((0, 1) if tuning == "lora" else (1,)) and tuned.spec.kind == kind
    if tuning == "lora":
        assert tuned.tensors and all("lora_" in k for k in tuned.tensors)
    tuned.save(tmp_path)
    again = TunedLM.load(tmp_path, json.loads(json.dumps(tuned.spec.to_dict())))
    rebuilt = again.build()
    new = ["video 301 comment the next", "comment 77", "user engages with video 5 and video 6 and video 7 the next"]
    served = embed_texts(rebuilt, new, max_tokens=MAX_TOK)
    assert torch.equal(served, embed_texts(lm, new, max_tokens=MAX_TOK))
    if fast:
        _, b = embed_texts_with_boundary(load_llm(path), new, 1, max_tokens=MAX_TOK, dtype=torch.float32)
        training_path = embed_from_boundary(lm, b)
        assert float((served - training_path).abs().max()) <= 1e-4 * float(training_path.abs().max())
    # the stored tables are that path too; and stage 1 moved the embeddings away from the pre-trained LM's
    titles = list(catalogue.titles[1:])
    torch.testing.assert_close(res.tables.title_emb[1:], embed_texts(rebuilt, titles, max_tokens=MAX_TOK),
                               rtol=2e-3, atol=2e-3 * float(res.tables.title_emb.abs().max()))
    pre_new = embed_texts(load_llm(path), new, max_tokens=MAX_TOK)
    assert float((pre_new - served).abs().max()) > 1e-3 * float(served.abs().max())


# ----- new items are embedded, projected and scored ---------------------------------------------------
@pytest.mark.usefixtures("one_thread")
def test_new_videos_and_comments_are_scored_by_their_text(trained, tmp_path):
    cat, later = trained["catalogue"], trained["later"]
    ref = LSVCRRecommender.from_checkpoint(trained["out"], catalogue=cat)
    rec = LSVCRRecommender.from_checkpoint(trained["out"], catalogue=later, text_cache=tmp_path / "cache")
    assert ref.new_items is None and rec.new_items is not None
    assert rec.new_items.n_pending == (len(NEW_VIDEOS), len(NEW_COMMENTS))
    # the new ids interleave with the old ones, so every known index moved: scores of known items are unchanged
    assert later.video_index([30])[0] != cat.video_index([30])[0]
    for a, b in zip(scores(ref, cat), scores(rec, later), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert rec.new_items.n_pending == (len(NEW_VIDEOS), len(NEW_COMMENTS))  # nothing new was read, nothing embedded
    sv, sc = scores(rec, later, WITH_NEW)
    assert rec.new_items.n_pending == (0, 0) and rec.new_items.encoder.embedded == 5
    assert torch.isfinite(sv).all() and torch.isfinite(sc).all()
    m = rec.model
    v15, v30, v305 = (int(later.video_index([x])[0]) for x in (15, 30, 305))
    # video 15 repeats video 30's title: its text row is the one stage 1 stored for video 30
    assert later.titles[v30] == NEW_VIDEOS[15]
    scale = float(m.title_emb.abs().max())
    torch.testing.assert_close(m.title_emb[v15], m.title_emb[v30], rtol=2e-3, atol=2e-3 * scale)
    c1000, c1008 = (int(later.comment_index([x])[0]) for x in (1000, 1008))  # 1000 repeats 1008's "comment 7"
    assert later.comment_texts[c1008] == NEW_COMMENTS[1000][1]
    torch.testing.assert_close(m.comment_emb[c1000], m.comment_emb[c1008], rtol=2e-3, atol=2e-3 * scale)
    # a new video has no ID row: its item vector is its text vector, non-zero, and it scores non-trivially
    with torch.no_grad():
        assert float(m.video_id.weight[v305].abs().max()) == 0.0
        item = m.video_item(torch.tensor([v305]))
        assert float(item.norm()) > 1e-3
        torch.testing.assert_close(item, m.title_vec(torch.tensor([v305])))
    col = WITH_NEW[2].index(305)
    assert float(sv[:, 0, col].abs().min()) > 1e-3


@pytest.mark.usefixtures("one_thread")
def test_a_second_run_embeds_nothing(trained, tmp_path):
    later = trained["later"]
    first = LSVCRRecommender.from_checkpoint(trained["out"], catalogue=later, text_cache=tmp_path / "cache")
    a = scores(first, later, WITH_NEW)
    second = LSVCRRecommender.from_checkpoint(trained["out"], catalogue=later, text_cache=tmp_path / "cache")
    b = scores(second, later, WITH_NEW)
    enc = second.new_items.encoder
    assert first.new_items.encoder.embedded == 5
    assert enc.embedded == 0 and enc.from_cache == 5 and enc._lm is None  # the LM was not even loaded
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    # keyed by text: the same texts under other ids are cache hits too
    other = later_catalogue(trained["tables"], videos={306: NEW_VIDEOS[305]},
                            comments={2002: (306, NEW_COMMENTS[2000][1])})
    third = LSVCRRecommender.from_checkpoint(trained["out"], catalogue=other, text_cache=tmp_path / "cache")
    scores(third, other, ([[10, 306]], [[2002]], [306, 50], [2002, 1004], 306))
    assert third.new_items.encoder.embedded == 0 and third.new_items.encoder.from_cache == 2


@pytest.mark.usefixtures("one_thread")
def test_the_serving_export_scores_new_items_like_its_source(trained, tmp_path):
    later = trained["later"]
    dest = export_serving(trained["out"], tmp_path / "serving")
    assert (dest / PROJECTION_FILE).exists() and (dest / TUNED_LM_FILE).exists()
    d = json.loads((dest / "config.json").read_text())
    assert d["tuned_lm"] == json.loads((trained["out"] / "config.json").read_text())["tuned_lm"]
    src = LSVCRRecommender.from_checkpoint(trained["out"], catalogue=later, text_cache=tmp_path / "cache")
    exp = LSVCRRecommender.from_checkpoint(dest, catalogue=later, text_cache=tmp_path / "cache")
    for a, b in zip(scores(src, later, WITH_NEW), scores(exp, later, WITH_NEW), strict=True):
        assert float((a - b).abs().max()) <= SCORE_TOL
    assert exp.new_items.encoder.embedded == 0  # the same LM part and texts: the source's run filled the cache


# ----- what cannot be embedded says so ----------------------------------------------------------------
def test_a_new_item_without_text_is_a_clear_error(trained, tmp_path):
    later = later_catalogue(trained["tables"], videos={**NEW_VIDEOS, 500: None}, comments=NEW_COMMENTS)
    rec = LSVCRRecommender.from_checkpoint(trained["out"], catalogue=later, text_cache=tmp_path / "cache")
    scores(rec, later, WITH_NEW)  # new items with text are fine
    with pytest.raises(ModelInputError, match=r"video id 500 is not in the catalogue .* has no text"):
        scores(rec, later, ([[10, 20]], [[1001]], [50, 500], [1004], 20))


def test_a_checkpoint_without_the_tuned_lm_scores_known_items_and_explains_new_ones(trained, tmp_path):
    """As shipped/lsvcr, written before the tuned LM was saved: it loads and serves what it was trained on."""
    old = tmp_path / "old"
    shutil.copytree(trained["out"], old)
    cfg = json.loads((old / "config.json").read_text())
    del cfg["tuned_lm"], cfg["files"][TUNED_LM_FILE]
    (old / "config.json").write_text(json.dumps(cfg))
    (old / TUNED_LM_FILE).unlink()
    cat, later = trained["catalogue"], trained["later"]
    for folder in (old, export_serving(old, tmp_path / "old-serving")):
        rec = LSVCRRecommender.from_checkpoint(folder, catalogue=later, text_cache=tmp_path / "cache")
        assert rec.tuned_lm is None
        ref = LSVCRRecommender.from_checkpoint(folder, catalogue=cat)
        for a, b in zip(scores(ref, cat), scores(rec, later), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
        with pytest.raises(ModelInputError, match=r"predates the saved tuned language model.*(Retrain|Re-export)"):
            scores(rec, later, WITH_NEW)


def test_the_no_text_ablation_cannot_embed_new_items(trained, tmp_path):
    cat, later = trained["catalogue"], trained["later"]
    model = LSVCRSR(SRConfig(lm_dim=8, n_videos=cat.n_videos, n_comments=cat.n_comments, use_ids=True,
                             use_text=False))
    LSVCRRecommender(model, cat, TextTables.empty(cat, 8)).save(tmp_path / "no_text", data_fingerprint="fp", seed=0)
    rec = LSVCRRecommender.from_checkpoint(tmp_path / "no_text", catalogue=later)
    scores(rec, later)
    with pytest.raises(ModelInputError, match="no_text ablation reads IDs only"):
        scores(rec, later, WITH_NEW)


def test_catalogues_that_are_not_a_later_snapshot_are_refused(trained):
    t = later_tables(trained["tables"])
    changed = t["videos"].copy()
    changed.loc[changed["video_id"] == 30, "title"] = "video 299"  # a trained video's title changed
    with pytest.raises(CheckpointError, match="different titles"):
        LSVCRRecommender.from_checkpoint(trained["out"], catalogue=Catalogue.from_tables(changed, t["comments"]))
    fewer = t["videos"][t["videos"]["video_id"] != 300]  # a trained video is gone
    with pytest.raises(CheckpointError, match="different catalogue"):
        LSVCRRecommender.from_checkpoint(trained["out"], catalogue=Catalogue.from_tables(
            fewer, t["comments"][t["comments"]["video_id"] != 300]))


def test_text_encoder_cache_is_keyed_by_lm_tuned_part_and_text(trained, tmp_path):
    lm = load_llm(trained["lm"])
    frozen = TunedLM.from_model(lm, {}, tuning="frozen", llm_path=str(trained["lm"]), max_tokens=MAX_TOK)
    tuned = TunedLM.load(trained["out"], json.loads((trained["out"] / "config.json").read_text())["tuned_lm"])
    texts = ["video 1", "comment 2 video", "video 1"]
    a = TextEncoder(frozen, tmp_path)
    ea = a.embed(texts)
    assert a.embedded == 2 and torch.equal(ea[0], ea[2])
    torch.testing.assert_close(ea, embed_texts(lm, texts, max_tokens=MAX_TOK).half().float())
    b = TextEncoder(frozen, tmp_path)
    assert torch.equal(b.embed(texts[1::-1]), ea[[1, 0]]) and b.embedded == 0 and b._lm is None
    c = TextEncoder(tuned, tmp_path)  # another tuned part: other keys, embedded anew
    assert not torch.equal(c.embed(texts), ea) and c.embedded == 2
    assert len(list(tmp_path.glob("*/part-*.safetensors"))) == 2  # one folder per (LM, tuned part), one part each
    np.testing.assert_array_equal(load_file(str(next(tmp_path.glob("*/part-*.safetensors"))))["keys"].shape, (2, 32))
