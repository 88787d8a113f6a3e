"""Stage-2 step internals: vectorised comment negatives, the per-step text cache, bucketed batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from models.batch import UserHistories
from models.lsvcr.config import SRConfig, Stage2Config
from models.lsvcr.prompts import _comments_by_video
from models.lsvcr.sr_model import LSVCRSR
from models.lsvcr.stage2 import Segments, bucketed_batches, comment_candidates, stage2_batch_losses
from tests.models.test_lsvcr_model import C, D, V, catalogue, tables
from tests.models.test_lsvcr_support import one_thread, random_histories  # noqa: F401


def _one_record(video: int, mine: list[int]) -> UserHistories:
    cc = torch.zeros(1, 1, 3, dtype=torch.long)
    cc[0, 0, :len(mine)] = torch.tensor(mine)
    return UserHistories(torch.ones(1, 1, dtype=torch.long), torch.zeros(1, 1, dtype=torch.float64),
                         torch.tensor([[video]]), cc, torch.zeros(1, 1, dtype=torch.float64))


def test_comment_candidates_structure():
    cat = catalogue()  # comment j sits under video ((j - 1) % V) + 1: 3 comments per video
    off, by_video = _comments_by_video(cat)
    hist = random_histories(4, 6, 5, 3, V, C, seed=3)
    # give every record comments of its own video, some records none
    cv = hist.comment_video_ids
    hist.comment_ids[:] = 0
    for b, j in zip(*torch.nonzero(cv, as_tuple=True), strict=True):
        pool = by_video[off[int(cv[b, j])]:off[int(cv[b, j]) + 1]]
        hist.comment_ids[b, j, 0] = int(pool[(b + j) % len(pool)])
    hist.comment_ids[0, 0] = 0
    out = comment_candidates(hist, off, by_video, 19, np.random.default_rng(0))
    assert out.shape == (4, 5, 20)
    assert not out[0, 0].any()  # no positive -> all padding
    for b, j in zip(*torch.nonzero(cv, as_tuple=True), strict=True):
        if b == 0 and j == 0:
            continue
        pool = set(by_video[off[int(cv[b, j])]:off[int(cv[b, j]) + 1]].tolist())
        mine = set(hist.comment_ids[b, j][hist.comment_ids[b, j] > 0].tolist())
        row = out[b, j].tolist()
        assert row[0] in mine
        negs = [c for c in row[1:] if c > 0]
        assert set(negs) == pool - mine and len(negs) == len(set(negs))  # all others, no repeats
        assert all(c == 0 for c in row[1 + len(negs):])  # padding after the negatives


def test_comment_negatives_are_uniform_without_replacement():
    """A video with 12 comments, the user engaged with 2 of them; 3 negatives per draw over 2500 draws:
    each of the 10 others appears with probability 3/10 (chi-square), never the user's own, no repeats;
    the positive is each of the user's 2 comments half the time."""
    off = np.array([0, 0, 12, 15])  # video 1: comments 1..12, video 2: 13..15
    by_video = np.arange(1, 16)
    hist = _one_record(1, [4, 9])
    rng = np.random.default_rng(5)
    n = 2500
    counts = np.zeros(16)
    pos = np.zeros(16)
    for _ in range(n):
        row = comment_candidates(hist, off, by_video, 3, rng)[0, 0].numpy()
        assert len(set(row[1:])) == 3 and not {4, 9} & set(row[1:].tolist())
        counts[row[1:]] += 1
        pos[row[0]] += 1
    others = [c for c in range(1, 13) if c not in (4, 9)]
    assert stats.chisquare(counts[others]).pvalue > 1e-3
    assert counts[others].sum() == 3 * n
    assert stats.binomtest(int(pos[4]), n, 0.5).pvalue > 1e-3 and pos[4] + pos[9] == n


def stage2_batch():
    """A small LSVCR SR model with texts, 3 users' random histories, their comment candidates and every video
    known: the inputs of one stage-2 step."""
    torch.manual_seed(0)
    cat, tab = catalogue(), tables()
    model = LSVCRSR(SRConfig(lm_dim=D, text_dim=32, n_videos=V, n_comments=C, use_ids=True, dropout=0.0))
    model.set_text(tab.title_emb, tab.title_has, tab.comment_emb, tab.comment_has, torch.from_numpy(cat.popular_comment))
    hist = random_histories(3, 12, 6, 3, V, C, seed=1)
    off, by_video = _comments_by_video(cat)
    cands = comment_candidates(hist, off, by_video, 2, np.random.default_rng(0))
    known = torch.ones(V + 1, dtype=torch.bool)
    known[0] = False
    return model, hist, cands, known


@pytest.mark.usefixtures("one_thread")
def test_text_cache_gives_identical_losses_and_gradients():
    model, hist, cands, known = stage2_batch()
    cfg = Stage2Config()

    def run(cached: bool):
        model.zero_grad()
        if cached:
            out = stage2_batch_losses(model, hist, cands, cfg, np.random.default_rng(1), known)
        else:  # the per-use path (no cache), as before the cache existed
            from models.lsvcr.stage2 import _batch_losses
            out = _batch_losses(model, hist, cands, cfg, np.random.default_rng(1), known, None, None)
        out["total"].backward()
        return {k: float(v.detach()) for k, v in out.items()}, {n: p.grad.clone() for n, p in model.named_parameters()
                                                       if p.grad is not None}

    (l0, g0), (l1, g1) = run(False), run(True)
    assert l0["comment"] > 0 and l0["video"] > 0 and l0["idtext"] > 0
    for k in l0:
        assert l1[k] == pytest.approx(l0[k], rel=1e-5, abs=1e-6)
    assert set(g0) == set(g1)
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], rtol=1e-4, atol=1e-6)
    assert model._title_cache is None and model._comment_cache is None  # cleared after the step


def test_bucketed_batches_cover_every_segment_once_and_cut_padding():
    rng = np.random.default_rng(0)
    n = 1000
    lv = rng.integers(2, 150, n)
    lc = rng.integers(0, 150, n)
    z = np.zeros(n, np.int64)
    seg = Segments(np.arange(n), z, z, lv, z, z, lc)
    rows = np.arange(n)
    batches = bucketed_batches(rows, seg, 32, np.random.default_rng(1))
    assert np.array_equal(np.sort(np.concatenate(batches)), rows)
    padded = sum(len(b) * lv[b].max() for b in batches)
    plain = sum(len(c) * lv[c].max() for c in np.array_split(rng.permutation(n), len(batches)))
    assert padded < 0.8 * plain
    again = bucketed_batches(rows, seg, 32, np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))  # deterministic by seed


@pytest.mark.usefixtures("one_thread")
def test_zero_item_vectors_give_no_gradient_blowup():
    """Regression (the `no_text` collapse): without text, a video never seen in training has a zero
    item vector; with F.normalize its softmax gradient was ~1e9, so clipping erased every other
    gradient. Zero vectors must score 0 with zero gradient, and the step must reduce the loss."""
    torch.manual_seed(0)
    m = LSVCRSR(SRConfig(lm_dim=8, n_videos=V, n_comments=C, use_ids=True, use_text=False))
    m.set_text(torch.zeros(V + 1, 8), torch.zeros(V + 1, dtype=torch.bool), torch.zeros(C + 1, 8),
               torch.zeros(C + 1, dtype=torch.bool), torch.from_numpy(catalogue().popular_comment))
    hist = random_histories(4, 30, 5, 3, V, C, seed=1)
    for ids in (hist.video_ids, hist.comment_video_ids):  # videos V-4..V never occur in training
        ids[ids > V - 5] = 1
    known = torch.zeros(V + 1, dtype=torch.bool)
    known[torch.unique(torch.cat([hist.video_ids.flatten(), hist.comment_video_ids.flatten()]))] = True
    known[0] = False
    with torch.no_grad():
        m.video_id.weight[~known] = 0.0  # as stage 2 keeps unseen videos
    assert (~known[1:]).any()
    cands = torch.zeros(4, 5, 20, dtype=torch.long)
    losses = stage2_batch_losses(m, hist, cands, Stage2Config(), np.random.default_rng(0), known)
    losses["total"].backward()
    grads = torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None])
    assert torch.isfinite(grads).all() and grads.norm() < 100
    assert m.video_id.weight.grad[~known].abs().max() == 0
    u = torch.randn(3, 64)
    s = m.score_all_videos(u)
    assert (s[:, 1:][:, ~known[1:]] == 0).all()


def test_recbole_initialisation_keeps_ids_on_the_scale_of_text():
    """ID and position tables and Linear weights start ~ N(0, 0.02) (RecBole), pad row zero: the ID term
    must not swamp the text term of an item vector at the start of stage 2."""
    torch.manual_seed(0)
    m = LSVCRSR(SRConfig(lm_dim=D, text_dim=32, n_videos=2000, n_comments=C, use_ids=True))
    w = m.video_id.weight[1:].detach().numpy().ravel()
    assert w.std() == pytest.approx(0.02, rel=0.03) and abs(w.mean()) < 1e-3
    assert not m.video_id.weight[0].any()
    assert m.pos_video.weight.std().item() == pytest.approx(0.02, rel=0.15)
    assert m.text_mlp[0].weight.std().item() == pytest.approx(0.02, rel=0.15) and not m.text_mlp[0].bias.any()


@pytest.mark.usefixtures("one_thread")
def test_sasrec_time_budget_stops_at_step_granularity(tmp_path):
    """bench/quality.py gives base the same wall-clock budget as LSVCR: with a budget shorter than one
    step, exactly one step runs and is validated; without one, early stopping alone decides."""
    from models.evaluation import load_or_sample_candidates
    from models.histories import prepare_data
    from models.train_sasrec import TrainConfig, train_sasrec
    from tests.models.fixtures import cyclic_world

    prep = prepare_data(cyclic_world(n_users=12, n_videos=20, n_requests=12, comments_per_video=2))
    cands = load_or_sample_candidates(prep.splits, prep.catalogue, tmp_path)
    logs: list[str] = []
    res = train_sasrec(prep.splits, prep.catalogue, cands, log=logs.append,
                       config=TrainConfig(epochs=6, patience=6, progress=False, max_seconds=1e-6,
                                          batch_windows=2))
    assert len(res.history) == 1 and any(s.startswith("time budget") for s in logs)
    assert res.history[0]["steps"] == 1 and res.history[0]["partial"]  # a partial epoch, validated
    assert res.best_epoch == 1 and res.stopped_by == "time_budget"
    res = train_sasrec(prep.splits, prep.catalogue, cands, log=lambda s: None,
                       config=TrainConfig(epochs=3, patience=6, progress=False))
    assert len(res.history) == 3 and res.stopped_by == "max_epochs"
    with pytest.raises(ValueError, match="max_seconds"):
        TrainConfig(max_seconds=0)


def test_one_model_per_task_leaves_the_other_task_out():
    """Stage2Config.task: the joint loss is the sum of the terms; "video" / "comment" drop the other task's
    term (its value and its gradient), keep the ID-text term, and the joint terms are unchanged."""
    model, hist, cands, known = stage2_batch()

    def run(task: str):
        cfg = Stage2Config(task=task, w_comment=0.7)
        model.zero_grad()
        out = stage2_batch_losses(model, hist, cands, cfg, np.random.default_rng(1), known)
        out["total"].backward()
        return ({k: float(v.detach()) for k, v in out.items()},
                {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})

    (both, _), (video, gv), (comment, gc) = run("both"), run("video"), run("comment")
    assert both["video"] > 0 and both["comment"] > 0 and both["idtext"] > 0
    assert both["total"] == pytest.approx(both["video"] + 0.7 * both["comment"] + 0.1 * both["idtext"], rel=1e-6)
    assert video["comment"] == 0.0 and video["video"] == pytest.approx(both["video"], rel=1e-6)
    assert video["total"] == pytest.approx(video["video"] + 0.1 * video["idtext"], rel=1e-6)
    assert comment["video"] == 0.0 and comment["comment"] == pytest.approx(both["comment"], rel=1e-6)
    assert comment["total"] == pytest.approx(0.7 * comment["comment"] + 0.1 * comment["idtext"], rel=1e-6)
    # the comment tower's own head and like prior learn from the comment model only, the video head from
    # the video model only
    def moved(grads: dict, prefix: str) -> bool:
        return any(bool(g.abs().any()) for n, g in grads.items() if n.startswith(prefix))

    assert moved(gc, "comment_head.") and moved(gc, "like_") and not moved(gc, "video_head.")
    assert moved(gv, "video_head.") and not moved(gv, "comment_head.") and not moved(gv, "like_")
    with pytest.raises(ValueError, match="Stage2Config.task"):
        Stage2Config(task="videos")
