"""The LSVCR serving export (models/lsvcr/export.py) against its source checkpoint as the reference.

The export stores the item vectors A t(e) (hidden-d, float16) instead of the LM embeddings e (lm_dim-d)
and serves them through an identity text MLP and adapter (`SRConfig.text_projected`). So its scores may
differ from the source's only by the float16 rounding of those vectors.

Tolerance. float16 has unit roundoff u = 2^-11 (about 4.9e-4): a vector x stored in float16 is x + delta
with |delta_i| <= u |x_i|, so |delta| <= u |x| and the stored vector's direction is off by an angle of at
most about u radians. Scores are cos(user, item) / tau (tau = 0.07), and cos(a, .) is 1-Lipschitz in the
angle, so rounding a candidate's vector alone moves its score by at most u / tau (about 7.0e-3). The user
vector also moves, because the history features read the same rounded vectors (through the fusion layer,
the encoders and the heads); that has no closed bound, so we measured it: over the four model variants
tested below x 3 weight seeds x 2 workloads (600 queries x 16 candidates each, for videos and comments),
with "trained-looking" weights (every linear layer at std 1/sqrt(fan_in) with non-zero biases, so that
the text really drives both items and users), the largest |export - source| was 1.9e-3 for videos and
2.3e-3 for comments (below u / tau: the per-component roundings do not line up). The pinned bound
SCORE_TOL = u / tau = 7.0e-3 is three times that, and tight enough that a real mistake fails (storing
bfloat16 instead of float16 does; dropping the text moves scores by three orders of magnitude more).
Top-1: at least 599 of 600 queries agreed in every run; the rare flips are genuine near-ties (the top two
source scores within 1e-3), so the test asks for >= 99%.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch import nn

from models.adapters import load_recommender
from models.batch import CommentQuery, UserHistories, VideoQuery
from models.catalogue import Catalogue
from models.checkpoint import CheckpointError, load_checkpoint, record_training_data
from models.lsvcr.adapter import LSVCRRecommender
from models.lsvcr.config import SRConfig
from models.lsvcr.export import export_serving
from models.lsvcr.sr_model import LSVCRSR
from models.lsvcr.text import TEXT_FILE, TextTables
from tests.models.test_lsvcr_support import one_thread, random_histories  # noqa: F401

V, C, M = 50, 160, 3
LM_DIM, HIDDEN = 384, 64  # MiniLM's width and the SR model's default hidden size
TAU = SRConfig().temperature
U16 = 2.0**-11  # float16 unit roundoff
SCORE_TOL = U16 / TAU  # 7.0e-3; measured max |export - source| 2.3e-3 (module docstring)
TRAINING_DATA = {"logs_fingerprint": "logs-abc", "until": "2024-01-05T00:00:00", "n_requests": 1234}
METRICS = {"best_epoch": 3, "valid_video_ndcg@10": 0.25, "stopped_by": "patience"}


def catalogue(title_prefix: str = "title") -> Catalogue:
    cv = np.concatenate([[0], (np.arange(C) % V) + 1])
    pop = np.zeros(V + 1, np.int64)
    pop[1:] = np.arange(1, V + 1)  # comment j (1..V) sits under video j
    likes = np.concatenate([[0], (np.arange(C) * 7919) % 300])
    return Catalogue(np.arange(V) * 10 + 5, [None] + [f"{title_prefix} {i}" for i in range(V)], np.arange(C) + 1000,
                     cv, [None] + [f"comment {j}" for j in range(C)], pop, comment_likes=likes)


def tables(seed: int = 0) -> TextTables:
    g = torch.Generator().manual_seed(seed)
    th = torch.ones(V + 1, dtype=torch.bool)
    th[0] = th[7] = th[31] = False  # videos 7 and 31 have no title
    ch = torch.ones(C + 1, dtype=torch.bool)
    ch[0] = ch[5] = False  # comment 5 has no text
    te, ce = torch.randn(V + 1, LM_DIM, generator=g), torch.randn(C + 1, LM_DIM, generator=g)
    te[~th], ce[~ch] = 0, 0
    return TextTables(te, th, ce, ch)


def source_model(seed: int = 0, **kw) -> LSVCRSR:
    """Random weights that look trained: every linear layer at std 1/sqrt(fan_in) (the default init's
    std 0.02 makes A t(e) ~100x smaller than the ID rows, and the text would hardly matter) with non-zero
    biases, ID rows, like-count prior and slope not zero."""
    torch.manual_seed(seed)
    model = LSVCRSR(SRConfig(**{"lm_dim": LM_DIM, "hidden": HIDDEN, "n_videos": V, "n_comments": C, "use_ids": True,
                                **kw}))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.normal_(0.0, 1.0 / math.sqrt(m.in_features))
                if m.bias is not None:  # non-zero biases: A t(0) != 0, so the has-text masks matter
                    m.bias.normal_(0.0, 0.1)
        if model.video_id is not None:
            model.video_id.weight.normal_(0.0, 0.2)
            model.gate.fill_(0.7)
        if model.like_prior is not None:
            model.like_prior.weight.normal_(0.0, 0.1)
            model.like_slope.fill_(0.05)
        model.reset_pad_rows()
    return model


def save_source(folder, **kw):
    rec = LSVCRRecommender(source_model(**kw), catalogue(), tables())
    rec.save(folder, data_fingerprint="fp-source-world", seed=7, metrics=METRICS)
    record_training_data(folder, TRAINING_DATA)
    return folder


def queries(hist: UserHistories, Q: int, Cn: int, seed: int = 1) -> tuple[VideoQuery, CommentQuery]:
    g = torch.Generator().manual_seed(seed)
    B = hist.batch_size
    lo, hi = 1e9 - 5, float(hist.video_time[torch.isfinite(hist.video_time)].max()) + 20
    t = lo + torch.rand(B, Q, generator=g, dtype=torch.float64) * (hi - lo)
    vc = torch.stack([torch.stack([torch.randperm(V, generator=g)[:Cn] + 1 for _ in range(Q)]) for _ in range(B)])
    vc[:, :, -1] = 0  # a padded candidate
    cc = torch.stack([torch.stack([torch.randperm(C, generator=g)[:Cn] + 1 for _ in range(Q)]) for _ in range(B)])
    cc[:, :, -2:] = 0
    return VideoQuery(t, vc), CommentQuery(t, torch.randint(1, V + 1, (B, Q), generator=g), cc)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    src = save_source(root / "source")
    dest = export_serving(src, root / "serving")
    return src, dest


@pytest.fixture(scope="module")
def workload():
    hist = random_histories(6, 90, 40, M, V, C, seed=11, lengths=[90, 70, 55, 30, 12, 0],
                            clengths=[40, 25, 10, 0, 3, 0])
    return hist, *queries(hist, 100, 16, seed=12)  # 600 queries per task


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert torch.equal(torch.isinf(a), torch.isinf(b))
    fin = torch.isfinite(a)
    return float((a[fin] - b[fin]).abs().max())


def _top1_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.argmax(-1) == b.argmax(-1)).double().mean())


# ----- (1) scores --------------------------------------------------------------------------------
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("kw", [{}, {"comment_prior": False}, {"use_comments": False}, {"use_ids": False}],
                         ids=["default", "no_prior", "no_comments", "no_ids"])
def test_export_scores_equal_the_source_up_to_float16(tmp_path, workload, kw):
    hist, vq, cq = workload
    src = save_source(tmp_path / "source", **kw)
    dest = export_serving(src, tmp_path / "serving")
    ref, exp = LSVCRRecommender.from_checkpoint(src), LSVCRRecommender.from_checkpoint(dest)
    # the source's model with its text tables zeroed (its own copy: set_text replaces the model's buffers)
    no_text = LSVCRRecommender(LSVCRRecommender.from_checkpoint(src).model, ref.catalogue,
                               TextTables.empty(ref.catalogue, LM_DIM))
    assert not ref.model.cfg.text_projected and exp.model.cfg.text_projected
    assert isinstance(exp.model.text_mlp, nn.Identity) and isinstance(exp.model.adapter, nn.Identity)
    for score in ("score_videos", "score_comments"):
        q = vq if score == "score_videos" else cq
        a, b = getattr(ref, score)(hist, q), getattr(exp, score)(hist, q)
        assert a.shape == b.shape == q.candidates.shape
        assert torch.equal(torch.isinf(b), q.candidates.eq(0))  # pads stay -inf, nothing else is
        diff = _max_diff(a, b)
        assert diff <= SCORE_TOL, f"{score}: max |export - source| = {diff:.2e} > {SCORE_TOL:.2e}"
        assert _top1_agreement(a, b) >= 0.99, score
        # the comparison is not vacuous: the scores spread over several units and the text drives them
        assert float(a[torch.isfinite(a)].std()) > 0.5
        assert _max_diff(a, getattr(no_text, score)(hist, q)) > 100 * SCORE_TOL


def test_exported_tables_hold_the_source_item_vectors(exported):
    """The stored vectors are the source's A t(e), rounded once to float16, zero rows where there is no text."""
    src, dest = exported
    ref = LSVCRRecommender.from_checkpoint(src).model
    with safe_open(str(dest / TEXT_FILE), "pt") as f:
        stored = {k: f.get_tensor(k) for k in f.keys()}
    with torch.no_grad():
        for name, has in (("title", ref.title_has), ("comment", ref.comment_has)):
            want = ref.adapter(ref.text_mlp(getattr(ref, f"{name}_emb"))) * has[:, None]
            got = stored[f"{name}_emb"]
            assert got.dtype == torch.float16
            torch.testing.assert_close(got.float(), want, rtol=U16, atol=1e-7)
            assert torch.equal(stored[f"{name}_has"].bool(), has)
            assert not got[~has].any() and got[has].abs().sum(-1).min() > 0


# ----- (2) size ----------------------------------------------------------------------------------
def test_export_is_much_smaller(exported):
    src, dest = exported

    def shapes(path):
        with safe_open(str(path), "pt") as f:
            return {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}

    s_text, d_text = shapes(src / TEXT_FILE), shapes(dest / TEXT_FILE)
    assert s_text["title_emb"] == ((V + 1, LM_DIM), "F16") and s_text["comment_emb"] == ((C + 1, LM_DIM), "F16")
    assert d_text["title_emb"] == ((V + 1, HIDDEN), "F16") and d_text["comment_emb"] == ((C + 1, HIDDEN), "F16")
    assert d_text["title_has"][0] == (V + 1,) and d_text["comment_has"][0] == (C + 1,)
    # (V+1 + C+1) x hidden float16 values, plus the masks and the header
    floats = (V + 1 + C + 1) * HIDDEN
    size = (dest / TEXT_FILE).stat().st_size
    assert 2 * floats < size < 2 * floats + (V + 1 + C + 1) + 1024
    assert size < (src / TEXT_FILE).stat().st_size / 5  # 384 -> 64 columns: 6x
    # the weights lose the text MLP and the adapter (lm_dim x text_dim + text_dim^2 + text_dim x hidden)
    s_w, d_w = shapes(src / "model.safetensors"), shapes(dest / "model.safetensors")
    dropped = sorted(k for k in s_w if k.startswith(("text_mlp.", "adapter.")))
    assert dropped and sorted(set(s_w) - set(d_w)) == dropped and set(d_w) <= set(s_w)
    assert all(d_w[k] == s_w[k] for k in d_w)
    assert (dest / "model.safetensors").stat().st_size < (src / "model.safetensors").stat().st_size


# ----- (3) config.json ---------------------------------------------------------------------------
def test_export_config_carries_the_source_provenance(exported):
    src, dest = exported
    s = json.loads((src / "config.json").read_text())
    d = json.loads((dest / "config.json").read_text())
    assert s["training_data"] == TRAINING_DATA and s["text_digest"] == catalogue().text_digest()
    for key in ("training_data", "training_metrics", "data_fingerprint", "seed", "text_digest", "catalogue_digest",
                "n_videos", "n_comments", "kind"):
        assert d[key] == s[key], key
    assert d["training_metrics"] == METRICS and d["seed"] == 7 and d["data_fingerprint"] == "fp-source-world"
    assert d["serving_export_of"]["weights_sha256"] == s["weights_sha256"]
    assert d["serving_export_of"]["code_version"] == s["code_version"]
    assert d["serving_export_of"]["environment"] == s["environment"] and d["environment"]["packages"]
    assert d["weights_sha256"] != s["weights_sha256"]
    assert load_checkpoint(dest).digest == d["weights_sha256"]  # the export's own digest checks out
    # hyperparameters: the same model but text-projected
    sh, dh = s["hyperparameters"], d["hyperparameters"]
    assert dh["sr"] == {**sh["sr"], "lm_dim": HIDDEN, "text_projected": True}
    assert {k: v for k, v in dh.items() if k != "sr"} == {k: v for k, v in sh.items() if k != "sr"}


def test_export_carries_training_provenance_keys(tmp_path):
    """train_lsvcr's provenance (ablation, llm_path, stage, eval_candidates_key, stage1) survives the export."""
    src = save_source(tmp_path / "source")
    cfg = json.loads((src / "config.json").read_text())
    prov = {"ablation": None, "llm_path": "/models/minilm", "stage": "all", "eval_candidates_key": "a28f0db8",
            "stage1": {"steps": 10, "truncated": False}}
    (src / "config.json").write_text(json.dumps({**cfg, **prov}))
    d = json.loads((export_serving(src, tmp_path / "serving") / "config.json").read_text())
    assert {k: d[k] for k in prov} == prov


# ----- (4) no export of an export ----------------------------------------------------------------
def test_exporting_an_export_is_refused(exported, tmp_path):
    _, dest = exported
    with pytest.raises(ValueError, match="already a serving export"):
        export_serving(dest, tmp_path / "again")
    assert not (tmp_path / "again").exists()


def test_cli(exported, tmp_path, capsys):
    from models.lsvcr.export import main

    src, _ = exported
    assert main(["only-one"]) == 3
    assert main([str(src), str(tmp_path / "cli")]) == 0
    assert "wrote the serving export" in capsys.readouterr().out
    assert json.loads((tmp_path / "cli" / "config.json").read_text())["hyperparameters"]["sr"]["text_projected"]


# ----- (5) loading ---------------------------------------------------------------------------------
@pytest.mark.usefixtures("one_thread")
def test_export_loads_through_load_recommender_and_checks_the_catalogue(exported, workload):
    src, dest = exported
    hist, vq, cq = workload
    rec = load_recommender(dest, catalogue=catalogue())
    assert isinstance(rec, LSVCRRecommender) and rec.model.cfg.text_projected
    direct = LSVCRRecommender.from_checkpoint(dest)
    assert torch.equal(rec.score_videos(hist, vq), direct.score_videos(hist, vq))
    assert torch.equal(rec.score_comments(hist, cq), direct.score_comments(hist, cq))
    # same ids, other texts (another world): refused by the export exactly as by the source
    other = catalogue(title_prefix="another title")
    assert other.digest() == catalogue().digest() and other.text_digest() != catalogue().text_digest()
    for folder in (src, dest):
        with pytest.raises(CheckpointError, match="same ids but different titles"):
            load_recommender(folder, catalogue=other)
    # other ids: refused too
    fewer = Catalogue(catalogue().video_ids[:-1], catalogue().titles[:-1], np.arange(C) + 1000,
                      np.minimum(catalogue().comment_video, V - 1), catalogue().comment_texts,
                      catalogue().popular_comment[:-1], comment_likes=catalogue().comment_likes)
    for folder in (src, dest):
        with pytest.raises(CheckpointError, match="different catalogue"):
            load_recommender(folder, catalogue=fewer)
