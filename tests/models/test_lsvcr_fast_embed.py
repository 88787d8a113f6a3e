"""Stage 1's top-blocks-only re-embedding: exact against the full LM pass (tiny random BERT and the real
MiniLM), cached safely on disk, and falling back to the full pass wherever it does not apply."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from models.catalogue import Catalogue
from models.lsvcr import llm as llm_mod
from models.lsvcr import stage1 as stage1_mod
from models.lsvcr.config import SRConfig, Stage1Config
from models.lsvcr.llm import (
    FastEmbedUnavailable,
    embed_from_boundary,
    embed_texts,
    embed_texts_with_boundary,
    load_llm,
    setup_tuning,
    transformer_blocks,
)
from models.lsvcr.stage1 import run_stage1, stage1_boundary_layer
from models.lsvcr.text import (
    CatalogueBoundary,
    cached_catalogue_embedding_and_boundary,
    embed_catalogue,
    embed_catalogue_from_boundary,
    embed_catalogue_with_boundary,
)
from models.lsvcr.train import prepare_data
from tests.models.fixtures import cyclic_world
from tests.models.test_lsvcr_support import WORDS, one_thread, save_tiny_lm, tiny_tokenizer  # noqa: F401

N_LAYERS, TOP = 4, 2
MAX_TOK = 16


def save_bert(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised 4-layer BERT with the tiny word-level tokenizer (eager attention would do
    as well; the default sdpa is what load_llm gives MiniLM)."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    tok, V = tiny_tokenizer()
    model = BertModel(BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=N_LAYERS, num_attention_heads=4,
                                 intermediate_size=64, max_position_embeddings=64, pad_token_id=0))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def random_texts(n: int, seed: int = 0, max_words: int = 24) -> list[str]:
    """Word strings of 1..max_words words (some longer than MAX_TOK tokens), with duplicates."""
    r = random.Random(seed)
    texts = [" ".join(r.choice(WORDS) for _ in range(r.randint(1, max_words))) for _ in range(n)]
    return texts + texts[: n // 5]


def perturb(blocks, seed: int, scale: float = 0.05) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for b in blocks:
            for p in b.parameters():
                p.add_(scale * p.abs().mean() * torch.randn(p.shape, generator=g))


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a - ref).abs().max()) / float(ref.abs().max())


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return save_bert(tmp_path_factory.mktemp("fast") / "bert4")


@pytest.mark.usefixtures("one_thread")
def test_boundary_states_are_the_inputs_of_the_block(bert):
    from transformers import BertConfig, BertModel

    lm = load_llm(bert)
    texts = random_texts(60, seed=1)
    emb, b = embed_texts_with_boundary(lm, texts, TOP, max_tokens=MAX_TOK, batch_size=16, dtype=torch.float32)
    # same numbers as the plain pass
    assert torch.equal(emb, embed_texts(lm, texts, max_tokens=MAX_TOK, batch_size=16))
    assert b.layer == TOP and b.n_unique == len(set(texts)) and b.index.shape == (len(texts),)
    # independent reference: a BERT cut after TOP blocks, same weights, each text alone (no padding)
    cut = BertModel(BertConfig.from_pretrained(bert, num_hidden_layers=TOP)).eval()
    missing, _ = cut.load_state_dict(lm.model.state_dict(), strict=False)
    assert not missing
    for i in (0, 7, 33, 61, len(texts) - 1):  # includes duplicates (rows 60..71 repeat rows 0..11)
        enc = lm.tokenizer([texts[i]], truncation=True, max_length=MAX_TOK, return_tensors="pt")
        ref = cut(**enc).last_hidden_state[0]  # (T, hidden)
        j = int(b.index[i])
        got = b.states[b.offsets[j]:b.offsets[j + 1]]
        assert got.shape == ref.shape and ref.shape[0] <= MAX_TOK
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert int(b.index[60]) == int(b.index[0])


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(("dtype", "budget"), [(torch.float32, 1e-4), (torch.float16, 2e-3)])
def test_fast_reembed_matches_full_pass_tiny_bert(bert, dtype, budget):
    lm = load_llm(bert)
    texts = random_texts(150, seed=2)
    _, b = embed_texts_with_boundary(lm, texts, N_LAYERS - TOP, max_tokens=MAX_TOK, batch_size=32, dtype=dtype)
    setup_tuning(lm, "top", top_layers=TOP)
    perturb(transformer_blocks(lm.model)[-TOP:], seed=3)
    full = embed_texts(lm, texts, max_tokens=MAX_TOK, batch_size=32)
    fast = embed_from_boundary(lm, b, batch_size=40)  # other batches than the full pass: padding must not matter
    assert fast.shape == full.shape
    assert rel_err(fast, full) <= budget
    assert not torch.allclose(full, embed_texts(load_llm(bert), texts, max_tokens=MAX_TOK), atol=1e-3)  # really tuned


@pytest.mark.usefixtures("one_thread")
def test_fast_reembed_matches_full_pass_minilm():
    lm = load_llm()
    r = random.Random(5)
    vocab = ("the a cat dog video funny music live stream cooking recipe game goal highlights news today "
             "why how best worst amazing try this wow lol great song dance tutorial part two three").split()
    texts = [" ".join(r.choice(vocab) for _ in range(r.randint(1, 30))) for _ in range(100)] + ["", "wow!!"]
    layer = stage1_boundary_layer(lm, Stage1Config())
    assert layer == 4
    _, b32 = embed_texts_with_boundary(lm, texts, layer, dtype=torch.float32)
    b16 = type(b32)(layer, b32.states.half(), b32.offsets, b32.index)  # what dtype=float16 stores
    setup_tuning(lm, "top", top_layers=2)
    perturb(transformer_blocks(lm.model)[-2:], seed=6, scale=0.05)
    full = embed_texts(lm, texts)
    assert rel_err(embed_from_boundary(lm, b32, batch_size=50), full) <= 1e-4
    # float16 states: measured ~2.5e-4 of the largest value on MiniLM, hence float32 in the cache
    assert rel_err(embed_from_boundary(lm, b16, batch_size=50), full) <= 2e-3
    # a changed *bottom* block breaks the premise; the result is then visibly wrong (what the probe catches)
    perturb(transformer_blocks(lm.model)[:1], seed=7)
    assert rel_err(embed_from_boundary(lm, b32), embed_texts(lm, texts)) > 1e-2


def small_catalogue() -> Catalogue:
    texts = random_texts(40, seed=8)
    titles = [None] + [texts[i] for i in range(9)] + ["  ", None]  # V = 11, two without text
    comments = [None] + texts[9:48] + [None, texts[0]]  # C = 41, a duplicate of a title's text
    C = len(comments) - 1
    return Catalogue(video_ids=np.arange(1, 12), titles=titles, comment_ids=np.arange(1, C + 1),
                     comment_video=np.r_[0, np.arange(C) % 11 + 1], comment_texts=comments,
                     popular_comment=np.r_[0, np.arange(1, 12)])


def close_at_fp16(a: torch.Tensor, b: torch.Tensor) -> bool:
    """TextTables round to float16: allow one float16 step of the larger value plus 1e-4 of the scale."""
    return bool(((a - b).abs() <= 2**-10 * torch.maximum(a.abs(), b.abs()) + 1e-4 * b.abs().max()).all())


@pytest.mark.usefixtures("one_thread")
def test_catalogue_cache_round_trip_and_fast_tables(bert, tmp_path, monkeypatch):
    lm = load_llm(bert)
    cat = small_catalogue()
    cache = tmp_path / "cache"
    tables, b = cached_catalogue_embedding_and_boundary(lm, cat, cache, boundary_layer=2, max_tokens=MAX_TOK,
                                                        batch_size=8)
    ref = embed_catalogue(lm, cat, max_tokens=MAX_TOK, batch_size=8)
    assert torch.equal(tables.title_emb, ref.title_emb) and torch.equal(tables.comment_emb, ref.comment_emb)
    assert b is not None and b.layer == 2 and b.title.index.numel() == 9 and b.comment.index.numel() == 40
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 2 and files[0].startswith("pretrained-boundary-") and files[0].endswith("-L2.safetensors")
    assert all(f.endswith(".safetensors") and not f.startswith(".") for f in files)  # no temporary left over

    # warm: no LM pass at all
    def no_forward(*a, **k):
        raise AssertionError("the LM ran on a warm cache")

    monkeypatch.setattr(lm.model, "forward", no_forward)
    t2, b2 = cached_catalogue_embedding_and_boundary(lm, cat, cache, boundary_layer=2, max_tokens=MAX_TOK)
    assert torch.equal(t2.comment_emb, tables.comment_emb)
    assert b2 is not None and torch.equal(b2.comment.states, b.comment.states) and torch.equal(b2.title.index, b.title.index)
    monkeypatch.undo()

    # tuned top blocks: the fast tables are the full pass's tables
    setup_tuning(lm, "top", top_layers=TOP)
    perturb(transformer_blocks(lm.model)[-TOP:], seed=9)
    full = embed_catalogue(lm, cat, max_tokens=MAX_TOK, batch_size=8)
    fast = embed_catalogue_from_boundary(lm, cat, b2, batch_size=8)
    assert torch.equal(fast.title_has, full.title_has) and torch.equal(fast.comment_has, full.comment_has)
    assert close_at_fp16(fast.title_emb, full.title_emb) and close_at_fp16(fast.comment_emb, full.comment_emb)
    assert not close_at_fp16(fast.comment_emb, ref.comment_emb)


@pytest.mark.usefixtures("one_thread")
def test_bad_cache_files_are_reported_and_recomputed(bert, tmp_path):
    lm = load_llm(bert)
    cat = small_catalogue()
    cache = tmp_path / "cache"
    _, b = cached_catalogue_embedding_and_boundary(lm, cat, cache, boundary_layer=2, max_tokens=MAX_TOK)
    (path,) = cache.glob("pretrained-boundary-*")
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.warns(UserWarning, match="not a valid boundary-states file"):
        _, again = cached_catalogue_embedding_and_boundary(lm, cat, cache, boundary_layer=2, max_tokens=MAX_TOK)
    assert again is not None and torch.equal(again.comment.states, b.comment.states)
    assert torch.equal(CatalogueBoundary.load(path).title.states, b.title.states)  # rewritten, valid again
    # a file for another catalogue under this name: counts do not match
    n = int(b.comment.offsets[1])  # keep one distinct comment, used by 5 rows
    other = CatalogueBoundary(b.title, type(b.comment)(2, b.comment.states[:n], b.comment.offsets[:2],
                                                       torch.zeros(5, dtype=torch.long)), MAX_TOK)
    other.save(path)
    with pytest.warns(UserWarning, match="states for 5 comments, but the catalogue has 40"):
        cached_catalogue_embedding_and_boundary(lm, cat, cache, boundary_layer=2, max_tokens=MAX_TOK)
    with pytest.raises(ValueError, match="not a valid boundary-states file"):
        CatalogueBoundary.load(next(cache.glob("pretrained-text-*")))  # a tables file is not one
    empty_text = b.title.offsets.clone()
    empty_text[1] = 0
    with pytest.raises(ValueError, match="offsets must increase by >= 1 token"):
        type(b.title)(2, b.title.states, empty_text, b.title.index)


@pytest.mark.usefixtures("one_thread")
def test_where_the_fast_path_applies(bert, tmp_path, monkeypatch):
    lm = load_llm(bert)
    assert stage1_boundary_layer(lm, Stage1Config(top_layers=2)) == 2
    assert stage1_boundary_layer(lm, Stage1Config(top_layers=9)) == 0  # all blocks tuned: the embeddings' output
    for mode in ("lora", "full", "frozen"):
        assert stage1_boundary_layer(lm, Stage1Config(lm_tuning=mode)) is None
    dec = load_llm(save_tiny_lm(tmp_path / "dec", "decoder"))
    assert stage1_boundary_layer(dec, Stage1Config()) is None
    texts = random_texts(20, seed=10)
    _, b = embed_texts_with_boundary(lm, texts, 2, max_tokens=MAX_TOK)
    with pytest.raises(FastEmbedUnavailable, match="no directly callable"):
        embed_from_boundary(dec, b)
    lora = load_llm(bert)
    setup_tuning(lora, "lora")
    with pytest.raises(FastEmbedUnavailable):
        embed_from_boundary(lora, b)

    # a block signature that no longer fits: an exception becomes FastEmbedUnavailable ...
    def wrong_signature(model, blocks, h, mask):
        return blocks[0](h, attention_mask=mask, no_such_argument=1, other=2)[5]

    monkeypatch.setattr(llm_mod, "_run_top_blocks", wrong_signature)
    with pytest.raises(FastEmbedUnavailable, match="directly failed"):
        embed_from_boundary(lm, b)

    # ... and a silent misuse (padding mask ignored) is caught by the probe against the full pass
    def mask_ignored(model, blocks, h, mask):
        for blk in blocks:
            h = blk(h, None)
        return h

    monkeypatch.setattr(llm_mod, "_run_top_blocks", mask_ignored)
    cat = small_catalogue()
    _, cb = embed_catalogue_with_boundary(lm, cat, 2, max_tokens=MAX_TOK)
    with pytest.raises(FastEmbedUnavailable, match="differs from the full pass"):
        embed_catalogue_from_boundary(lm, cat, cb)


@pytest.fixture(scope="module")
def tiny_world():
    tables = cyclic_world(n_users=8, n_videos=12, n_requests=12, comments_per_video=3)
    return prepare_data(tables)


def _stage1(bert: Path, world, boundary_fn, monkeypatch, **cfg):
    catalogue, splits = world
    lm = load_llm(bert)
    pre, boundary = embed_catalogue_with_boundary(lm, catalogue, N_LAYERS - TOP, max_tokens=MAX_TOK, batch_size=16)
    calls = []
    real = stage1_mod.embed_catalogue
    monkeypatch.setattr(stage1_mod, "embed_catalogue", lambda *a, **k: calls.append(1) or real(*a, **k))
    sr = SRConfig(n_videos=catalogue.n_videos, n_comments=catalogue.n_comments, lm_dim=lm.hidden_size)
    s1 = Stage1Config(n_samples=24, batch_size=8, epochs=2, n_video_items=3, n_comment_items=2, lr_lm=1e-2,
                      text_max_tokens=MAX_TOK, embed_batch=16, **cfg)
    logs: list[str] = []
    res = run_stage1(splits.train, catalogue, lm, pre, sr, s1, seed=0, log=logs.append,
                     boundary=boundary_fn(boundary))
    return res, len(calls), [line for line in logs if "full language model" in line]


@pytest.mark.usefixtures("one_thread")
def test_run_stage1_fast_path_gives_the_full_path_result(bert, tiny_world, monkeypatch):
    full, n_full, _ = _stage1(bert, tiny_world, lambda b: None, monkeypatch)
    fast, n_fast, notes = _stage1(bert, tiny_world, lambda b: b, monkeypatch)
    assert n_full == 2 and n_fast == 0 and not notes  # refresh after epoch 1 + the final embedding
    assert close_at_fp16(fast.tables.comment_emb, full.tables.comment_emb)
    assert close_at_fp16(fast.tables.title_emb, full.tables.title_emb)
    for a, b in zip(fast.history, full.history, strict=True):
        assert a["total"] == pytest.approx(b["total"], rel=1e-3)
    # the LM really changed in stage 1, so the tables are not the pre-trained ones
    pre = embed_catalogue(load_llm(bert), tiny_world[0], max_tokens=MAX_TOK)
    assert not close_at_fp16(full.tables.comment_emb, pre.comment_emb)


@pytest.mark.usefixtures("one_thread")
def test_run_stage1_falls_back_when_the_states_do_not_apply(bert, tiny_world, monkeypatch):
    # LoRA: the boundary is ignored silently
    _, n, notes = _stage1(bert, tiny_world, lambda b: b, monkeypatch, lm_tuning="lora")
    assert n == 2 and not notes
    # states from other bottom weights: the probe rejects them once, then the full LM is used
    stale = lambda b: CatalogueBoundary(  # noqa: E731
        *(type(x)(x.layer, x.states + 0.5, x.offsets, x.index) for x in (b.title, b.comment)), b.max_tokens)
    _, n, notes = _stage1(bert, tiny_world, stale, monkeypatch)
    assert n == 2 and len(notes) == 1 and "differs from the full pass" in notes[0]
