"""Stage 1's in-graph text embeddings of the items a batch reads (docs/lsvcr-method.md, "Stage 1").

The SR side's text inputs are the language model's embeddings e(x) of titles and comments. Stage 1
keeps a table of them for the whole catalogue (no gradient; refreshed once per epoch), and for the
items a batch's losses read it computes e(x) again inside the graph with the current LM weights, so the
recommendation and alignment losses reach the LM through the item texts too, as in the authors' code:

    rows(batch) = targets (rec loss and its in-batch negatives), watched videos,
                  history titles and shown comments (most recent first)
    e_in_graph(x) = mean_t f_top(h_k(x))_t       lm_tuning="top" with the cached states h_k entering
                                                 the tuned blocks (`CatalogueBoundary`): top blocks only
                  = mean_t LM(x)_t               otherwise (LoRA, full, decoders, no cached states)

Both run the LM in eval mode (no dropout, like the table's pass), so an in-graph row has exactly the
value a re-embedding with the current weights would write into the table (tested); it only adds the
gradient. The table's rows are read for the items beyond `max_texts` distinct texts a step (the cost
bound; the priority order above decides which are in the graph) and outside the batch.

Cost (bench/stage1_step.py, BENCHMARKS.md "LSVCR stage-1 step"): the top-blocks path forwards and
backpropagates top_layers / n_blocks of the LM over the batch's distinct texts, about 3-4 ms a short
text on one loaded CPU thread: +20-35% a step at the default cap of 256 on world-like texts, where an
uncapped default-world batch (~1,630 texts) would roughly triple it. The full path (LoRA) costs a full
forward and backward over them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from models.catalogue import Catalogue
from models.lsvcr.llm import (
    FastEmbedUnavailable,
    LanguageModel,
    embed_from_boundary_with_grad,
    embed_texts_with_grad,
)
from models.lsvcr.prompts import Stage1Samples
from models.lsvcr.text import CatalogueBoundary, has_text

TITLE, COMMENT = 0, 1


def batch_rows(s: Stage1Samples, title_has: np.ndarray, comment_has: np.ndarray,
               max_texts: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(title rows, comment rows), each sorted and distinct: the rows with text that the SR side of
    batch `s` reads, at most `max_texts` in all (None = no limit), first in priority order: the
    targets, the watched videos, then the history items by recency (every sample's last item, then its
    second-to-last, ...; a history video with the comment shown with it, a comment record with its
    title and the user's comments as the SR model sees them)."""
    video_task = s.task == 0
    kinds: list[np.ndarray] = []
    rows: list[np.ndarray] = []
    keys: list[np.ndarray] = []

    def add(kind: int, r: np.ndarray, key: np.ndarray | int) -> None:
        kinds.append(np.full(r.size, kind))
        rows.append(r.ravel())
        keys.append(np.broadcast_to(key, r.shape).ravel())

    add(TITLE, s.target[video_task], -1)
    add(COMMENT, s.target[~video_task], -1)
    add(TITLE, s.watched[~video_task], -1)
    recency_v = (s.hv > 0).sum(1, keepdims=True) - 1 - np.arange(s.hv.shape[1])  # 0 = the sample's last item
    add(TITLE, s.hv, recency_v)
    add(COMMENT, s.hv_shown_sr, recency_v)
    recency_c = (s.hc > 0).sum(1, keepdims=True) - 1 - np.arange(s.hc.shape[1])
    add(TITLE, s.hc, recency_c)
    add(COMMENT, s.hc_comments_sr, recency_c[..., None])
    kind, row, key = np.concatenate(kinds), np.concatenate(rows).astype(np.int64), np.concatenate(keys)
    ok = row > 0  # pads out, then rows without text
    ok[kind == TITLE] &= title_has[row[kind == TITLE]]
    ok[kind == COMMENT] &= comment_has[row[kind == COMMENT]]
    kind, row, key = kind[ok], row[ok], key[ok]
    order = np.argsort(key, kind="stable")
    _, first = np.unique((row * 2 + kind)[order], return_index=True)  # distinct (kind, row), first occurrence
    pick = order[np.sort(first)][:max_texts]
    return np.unique(row[pick][kind[pick] == TITLE]), np.unique(row[pick][kind[pick] == COMMENT])


@dataclass
class BatchText:
    """In-graph LM embeddings of a batch's rows, for `LSVCRSR.text_rows(titles=..., comments=...)`."""

    titles: tuple[Tensor, Tensor]  # (sorted rows (R,), embeddings (R, D))
    comments: tuple[Tensor, Tensor]

    @property
    def n_texts(self) -> int:
        return int(self.titles[0].numel() + self.comments[0].numel())

    def to(self, device: torch.device | str) -> BatchText:
        return BatchText(*(tuple(x.to(device) for x in pair) for pair in (self.titles, self.comments)))  # type: ignore[arg-type]


class BatchTextEmbedder:
    """Embeds a batch's items inside the graph (module docstring). `boundary`: the pre-trained LM's
    states entering the tuned top blocks, or None for the full LM. If calling the blocks directly
    fails, it says so through `log` once and uses the full LM from then on."""

    def __init__(self, lm: LanguageModel, catalogue: Catalogue, *, max_tokens: int, batch_size: int,
                 max_texts: int | None, boundary: CatalogueBoundary | None = None,
                 log: Callable[[str], None] = print) -> None:
        self.lm, self.max_tokens, self.batch_size, self.max_texts, self.log = lm, max_tokens, batch_size, max_texts, log
        self.texts = (list(catalogue.titles), list(catalogue.comment_texts))
        self.has = tuple(has_text(t).numpy() for t in self.texts)
        self.boundary = boundary
        self.distinct: tuple[np.ndarray, np.ndarray] | None = None
        if boundary is not None:  # catalogue row -> index of its distinct text among the stored states
            boundary.check_catalogue(catalogue, "BatchTextEmbedder(boundary=...)")
            maps = []
            for has, b in zip(self.has, (boundary.title, boundary.comment), strict=True):
                m = np.full(has.shape[0], -1, np.int64)
                m[has] = b.index.numpy()
                maps.append(m)
            self.distinct = (maps[0], maps[1])

    @property
    def fast(self) -> bool:
        """Whether only the tuned top blocks run (on the cached states)."""
        return self.boundary is not None

    def __call__(self, s: Stage1Samples) -> BatchText:
        rows = batch_rows(s, self.has[TITLE], self.has[COMMENT], self.max_texts)
        dev = self.lm.device
        return BatchText(*((torch.as_tensor(r, device=dev), self._embed(kind, r)) for kind, r in enumerate(rows)))

    def _embed(self, kind: int, rows: np.ndarray) -> Tensor:
        if self.boundary is not None and self.distinct is not None:
            b = (self.boundary.title, self.boundary.comment)[kind]
            try:
                return embed_from_boundary_with_grad(self.lm, b, torch.from_numpy(self.distinct[kind][rows]),
                                                     batch_size=self.batch_size)
            except FastEmbedUnavailable as e:
                self.log(f"stage 1: {e}; item texts are embedded with the full language model from now on")
                self.boundary, self.distinct = None, None
        texts = self.texts[kind]
        return embed_texts_with_grad(self.lm, [texts[int(r)] for r in rows], max_tokens=self.max_tokens,
                                     batch_size=self.batch_size)
