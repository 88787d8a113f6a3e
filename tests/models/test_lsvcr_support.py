"""Shared helpers for the LSVCR tests: tiny offline language models and random histories.

The tiny LMs are randomly initialised 2-layer models (BERT encoder, GPT-2 decoder) with a word-level
tokenizer built in memory, saved to a temporary folder, so the "any local Hugging Face checkpoint"
path is exercised without a download and in well under a second per step.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.batch import UserHistories

WORDS = ("video comment history task predict the next user watches engages with a none of to".split()
         + [str(i) for i in range(400)])


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "[EOS]": 2, "[CLS]": 3, "[SEP]": 4}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]",
                                   cls_token="[CLS]", sep_token="[SEP]"), len(vocab)


def save_tiny_lm(folder: Path, kind: str, seed: int = 0) -> Path:
    from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    tok, V = tiny_tokenizer()
    if kind == "decoder":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=V, n_positions=256, n_embd=32, n_layer=2, n_head=2,
                                           bos_token_id=2, eos_token_id=2, pad_token_id=0))
    else:
        model = BertModel(BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=256, pad_token_id=0))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture
def one_thread():
    """Small models run faster on one thread on a busy shared machine; restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def random_histories(B: int, L: int, Lc: int, M: int, V: int, C: int, seed: int = 0,
                     lengths: list[int] | None = None, clengths: list[int] | None = None) -> UserHistories:
    """Sorted random event times with ties, padding at the end (ids 0, time +inf)."""
    g = torch.Generator().manual_seed(seed)
    lengths = lengths or [L] * B
    clengths = clengths or [Lc] * B
    vid = torch.zeros(B, L, dtype=torch.long)
    vt = torch.full((B, L), float("inf"), dtype=torch.float64)
    cv = torch.zeros(B, Lc, dtype=torch.long)
    cc = torch.zeros(B, Lc, M, dtype=torch.long)
    ct = torch.full((B, Lc), float("inf"), dtype=torch.float64)
    for b in range(B):
        n, nc = lengths[b], clengths[b]
        vid[b, :n] = torch.randint(1, V + 1, (n,), generator=g)
        # integer times with ties (several events per request)
        vt[b, :n] = torch.sort(torch.randint(0, 3 * max(n, 1) // 2 + 1, (n,), generator=g).double() * 10)[0] + 1e9
        cv[b, :nc] = torch.randint(1, V + 1, (nc,), generator=g)
        k = torch.randint(1, M + 1, (nc,), generator=g)
        for j in range(nc):
            cc[b, j, :k[j]] = torch.randint(1, C + 1, (int(k[j]),), generator=g)
        ct[b, :nc] = torch.sort(torch.randint(0, 3 * max(n, 1) // 2 + 1, (nc,), generator=g).double() * 10)[0] + 1e9
    return UserHistories(vid, vt, cv, cc, ct)
