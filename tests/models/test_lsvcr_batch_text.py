"""Stage 1's in-graph item texts (models/lsvcr/batch_text.py): which rows a batch embeds, values equal to a
re-embedding with the current weights, and the gradient they carry from the SR side's losses into the
tuned language-model weights (zero before: the SR side read fixed tables)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.lsvcr.batch_text import BatchTextEmbedder, batch_rows
from models.lsvcr.config import SRConfig, Stage1Config
from models.lsvcr.llm import PreferenceHead, load_llm, setup_tuning, transformer_blocks
from models.lsvcr.prompts import build_samples
from models.lsvcr.sr_model import LSVCRSR
from models.lsvcr.stage1 import install_text, stage1_batch_losses
from models.lsvcr.text import embed_catalogue, embed_catalogue_with_boundary, has_text
from models.lsvcr.train import prepare_data
from tests.models.fixtures import cyclic_world
from tests.models.test_lsvcr_fast_embed import MAX_TOK, N_LAYERS, TOP, perturb, rel_err, save_bert
from tests.models.test_lsvcr_prompts import hand_catalogue, hand_sample
from tests.models.test_lsvcr_support import one_thread  # noqa: F401


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return save_bert(tmp_path_factory.mktemp("batch-text") / "bert4")


@pytest.fixture(scope="module")
def world():
    return prepare_data(cyclic_world(n_users=8, n_videos=12, n_requests=30, comments_per_video=3))


def has(cat) -> tuple[np.ndarray, np.ndarray]:
    return has_text(list(cat.titles)).numpy(), has_text(list(cat.comment_texts)).numpy()


# ----- which rows ---------------------------------------------------------------------------------------
def test_batch_rows_are_every_item_read_and_the_cap_keeps_the_most_useful():
    cat, s = hand_catalogue(), hand_sample()  # video task: target v26; 25 videos; 22 records of 2 comments
    titles, comments = batch_rows(s, *has(cat))
    np.testing.assert_array_equal(titles, np.arange(1, 31))  # v1..v25, the target v26, records' videos v9..v30
    want_c = np.union1d(3 * np.arange(1, 26) - 2, np.r_[3 * np.arange(9, 31) - 1, 3 * np.arange(9, 31)])
    np.testing.assert_array_equal(comments, want_c)
    # the cap: the target first, then each history's most recent item (video v25 with its shown comment c73,
    # record v9 with the user's comments c26, c27), then the items before them
    for cap, want in ((1, ([26], [])), (3, ([25, 26], [73])), (6, ([9, 25, 26], [26, 27, 73])),
                      (8, ([9, 24, 25, 26], [26, 27, 70, 73]))):
        t, c = batch_rows(s, *has(cat), max_texts=cap)
        assert (t.tolist(), c.tolist()) == want, cap
    # rows without text are not embedded, and do not count against the cap
    cat.titles[25] = None
    t, c = batch_rows(s, *has(cat), max_texts=3)
    assert (t.tolist(), c.tolist()) == ([9, 26], [73])  # v25 skipped; its shown comment c73 still counts
    # comment task: the target comment and the watched video come first
    t, c = batch_rows(hand_sample(task=1), *has(hand_catalogue()), max_texts=2)
    assert (t.tolist(), c.tolist()) == ([27], [81])


# ----- values -------------------------------------------------------------------------------------------
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("fast", [True, False])
def test_in_graph_rows_equal_a_reembedding_with_the_current_weights(bert, world, fast):
    cat, splits = world
    lm = load_llm(bert)
    _, boundary = embed_catalogue_with_boundary(lm, cat, N_LAYERS - TOP, max_tokens=MAX_TOK)
    setup_tuning(lm, "top", top_layers=TOP)
    perturb(transformer_blocks(lm.model)[-TOP:], seed=1)  # as if stage 1 had trained them
    lm.model.train()  # in-graph rows are computed without dropout all the same
    emb = BatchTextEmbedder(lm, cat, max_tokens=MAX_TOK, batch_size=7, max_texts=None,
                            boundary=boundary if fast else None)
    assert emb.fast == fast
    s = build_samples(splits.train, cat, 16, n_video_items=6, n_comment_items=4, seed=0)
    rows = emb(s)
    assert rows.n_texts > 20 and rows.titles[1].requires_grad and rows.comments[1].requires_grad
    ref = embed_catalogue(lm, cat, max_tokens=MAX_TOK)  # float16-rounded, as every table
    for (r, e), table in ((rows.titles, ref.title_emb), (rows.comments, ref.comment_emb)):
        assert rel_err(e.detach(), table[r]) <= 2e-3  # the fp16 rounding of the table
    assert lm.model.training


# ----- gradient -----------------------------------------------------------------------------------------
def _one_step(bert, world, *, tuning: str, fast: bool, item_grad: bool, task: int):
    """Gradients of the tuned LM weights after one stage-1 step whose only loss is the SR side's rec loss
    (LM and alignment losses weighted 0)."""
    cat, splits = world
    lm = load_llm(bert)
    pre, boundary = embed_catalogue_with_boundary(lm, cat, N_LAYERS - TOP, max_tokens=MAX_TOK)
    torch.manual_seed(0)
    params = setup_tuning(lm, tuning, top_layers=TOP)
    sr = LSVCRSR(SRConfig(lm_dim=lm.hidden_size))
    install_text(sr, pre, cat)
    pref = PreferenceHead(lm.hidden_size, sr.cfg.hidden)
    cfg = Stage1Config(w_lm=0.0, w_align=0.0, n_video_items=6, n_comment_items=4, max_prompt_tokens=64,
                       text_max_tokens=MAX_TOK, lm_tuning=tuning, item_grad=item_grad)
    s = build_samples(splits.train, cat, 40, n_video_items=6, n_comment_items=4, seed=0)
    s = s.take(np.flatnonzero(s.task == task)[:8])
    items = (BatchTextEmbedder(lm, cat, max_tokens=MAX_TOK, batch_size=16, max_texts=cfg.item_grad_max_texts,
                               boundary=boundary if fast else None) if item_grad else None)
    for m in (sr, pref, lm.model):
        m.train()
    losses = stage1_batch_losses(sr, pref, lm, s, cat, cfg, np.random.default_rng(0), items)
    losses["total"].backward()
    assert losses["total"].item() == pytest.approx(losses["rec"].item())
    return losses, max(float(p.grad.abs().max()) if p.grad is not None else 0.0 for p in params)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(("tuning", "fast"), [("top", True), ("top", False), ("lora", False)])
@pytest.mark.parametrize("task", [0, 1])
def test_the_sr_side_loss_alone_reaches_the_tuned_lm_through_item_texts(bert, world, tuning, fast, task):
    with_items, grad = _one_step(bert, world, tuning=tuning, fast=fast, item_grad=True, task=task)
    tables_only, grad_before = _one_step(bert, world, tuning=tuning, fast=fast, item_grad=False, task=task)
    assert grad_before == 0.0  # the tables carry no gradient: the behaviour before in-graph item texts
    assert grad > 1e-6
    # the values are those of the tables (up to their float16 rounding): only the gradient is new
    assert with_items["rec"].item() == pytest.approx(tables_only["rec"].item(), rel=1e-2)


@pytest.mark.usefixtures("one_thread")
def test_the_embedder_falls_back_to_the_full_lm_once_when_blocks_cannot_be_called(bert, world):
    cat, splits = world
    lm = load_llm(bert)
    _, boundary = embed_catalogue_with_boundary(lm, cat, N_LAYERS - TOP, max_tokens=MAX_TOK)
    setup_tuning(lm, "lora")  # LoRA in every block: the cached states no longer apply
    logs: list[str] = []
    emb = BatchTextEmbedder(lm, cat, max_tokens=MAX_TOK, batch_size=16, max_texts=None, boundary=boundary,
                            log=logs.append)
    s = build_samples(splits.train, cat, 8, n_video_items=4, n_comment_items=2, seed=0)
    first, again = emb(s), emb(s)
    assert not emb.fast and len(logs) == 1 and "full language model" in logs[0]
    ref = embed_catalogue(lm, cat, max_tokens=MAX_TOK)
    assert rel_err(first.titles[1].detach(), ref.title_emb[first.titles[0]]) <= 2e-3
    torch.testing.assert_close(first.comments[1], again.comments[1])


def test_text_rows_replace_only_the_given_rows(world):
    cat, _ = world
    sr = LSVCRSR(SRConfig(lm_dim=8))
    g = torch.Generator().manual_seed(0)
    V, C = cat.n_videos, cat.n_comments
    sr.set_text(torch.randn(V + 1, 8, generator=g), torch.ones(V + 1, dtype=torch.bool),
                torch.randn(C + 1, 8, generator=g), torch.ones(C + 1, dtype=torch.bool),
                torch.from_numpy(cat.popular_comment))
    v = torch.tensor([[1, 2, 3, 2]])
    before = sr.title_vec(v)
    new = torch.randn(2, 8, generator=g, requires_grad=True)
    with sr.text_rows(titles=(torch.tensor([2, 7]), new), comments=(torch.zeros(0, dtype=torch.long), new[:0])):
        inside = sr.title_vec(v)
        torch.testing.assert_close(sr.comment_vec(torch.tensor([1, 2])), sr._text(sr.comment_emb, sr.comment_has,
                                                                                 torch.tensor([1, 2])))
    torch.testing.assert_close(inside[0, [0, 2]], before[0, [0, 2]])  # rows 1 and 3: the table
    torch.testing.assert_close(inside[0, 1], sr.adapter(sr.text_mlp(new[0])))  # row 2: the given embedding
    torch.testing.assert_close(inside[0, 1], inside[0, 3])
    inside.sum().backward()
    assert new.grad is not None and new.grad[0].abs().sum() > 0 and new.grad[1].abs().sum() == 0
    torch.testing.assert_close(sr.title_vec(v), before)  # restored on exit
    with sr.text_cache(), pytest.raises(RuntimeError, match="text_cache"), sr.text_rows():
        pass
