"""Serving videos and comments that were not in the training catalogue: the tuned LM embeds their texts.

A checkpoint speaks in the indices of its training catalogue; the data it serves may be a later snapshot
of the same logs, with videos published and comments written after the training cut. `LSVCRRecommender.
from_checkpoint(folder, catalogue=data)` accepts such a catalogue when it holds every trained id, under the
same video and with the same text (`models.checkpoint.check_data_catalogue`), and moves the model into the
data's index space (`CatalogueMap`):

- ID rows (video ID table; the comment ID table of `no_text`) are gathered: a trained item keeps its row,
  a new item gets the zero row, exactly like a video that was in the catalogue but never in the training
  histories (stage 2 holds those at zero), so a new video is scored by its title alone: gate * 0 + A t(e).
- Text rows of trained items are the stored ones; a new item's row is computed when a scoring call first
  reads it (`NewItems.fill`): e = the tuned LM's embedding of its text (`tuned_lm.TextEncoder`, cached on
  disk by text hash), then the model's text MLP and adapter (a source checkpoint) or the export's stored
  copy of them (`text_projection.safetensors`: a serving export stores A t(e) rows) — the same function
  of the text that produced the trained rows, so an item scores the same whether it was in the training
  catalogue or not (up to the float tolerance of stage 1's top-blocks re-embedding, tested).

A new item without text cannot be embedded, nor can any new item of a checkpoint without a saved tuned
LM (written before it was saved, or the text-less `no_text` ablation): scoring one raises
`ModelInputError` saying which id and what to do. Trained items score as before in all of these cases.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from models.catalogue import Catalogue
from models.errors import ModelInputError
from models.lsvcr.sr_model import LSVCRSR, TextProjection
from models.lsvcr.text import TextTables
from models.lsvcr.tuned_lm import TextEncoder


@dataclass
class CatalogueMap:
    """For each row of the data's catalogue, the training catalogue's row of the same item (0 = new)."""

    video: Tensor  # (V_data + 1,) long
    comment: Tensor  # (C_data + 1,) long

    @classmethod
    def between(cls, trained: Catalogue, data: Catalogue) -> CatalogueMap:
        known = data.superset_of(trained)
        if known is None:
            raise ValueError("the data's catalogue does not hold every trained video and comment under the same video")
        vi, ci = known
        v = np.zeros(data.n_videos + 1, np.int64)
        v[vi] = np.arange(1, trained.n_videos + 1)
        c = np.zeros(data.n_comments + 1, np.int64)
        c[ci] = np.arange(1, trained.n_comments + 1)
        return cls(torch.from_numpy(v), torch.from_numpy(c))

    @property
    def new_videos(self) -> Tensor:  # (V_data + 1,) bool, row 0 (padding) False
        return torch.cat([torch.zeros(1, dtype=torch.bool), self.video[1:] == 0])

    @property
    def new_comments(self) -> Tensor:
        return torch.cat([torch.zeros(1, dtype=torch.bool), self.comment[1:] == 0])

    def state(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """The SR model's weights with its ID tables in the data's rows (new items: zero rows)."""
        out = dict(state)
        for name, rows in (("video_id.weight", self.video), ("comment_id.weight", self.comment)):
            if name in out:
                out[name] = out[name][rows]  # row 0 of a trained table is the zero padding row
        return out

    def tables(self, tables: TextTables) -> TextTables:
        """The text tables in the data's rows; new items have no text yet (`NewItems` fills them)."""
        return TextTables(tables.title_emb[self.video], tables.title_has[self.video] & (self.video > 0),
                          tables.comment_emb[self.comment], tables.comment_has[self.comment] & (self.comment > 0))


@dataclass
class NewItems:
    """Rows of the data's catalogue whose text vector is still to be computed, and how to compute it.

    `encoder` is None when the checkpoint cannot embed texts; `unavailable` then says why and what to do.
    `projection`: e -> A t(e) for a serving export (its tables hold A t(e)); None when the model projects."""

    catalogue: Catalogue  # the data's (ids and texts)
    video_pending: Tensor  # (V + 1,) bool
    comment_pending: Tensor  # (C + 1,) bool
    encoder: TextEncoder | None
    projection: TextProjection | None = None
    unavailable: str = ""

    @property
    def n_pending(self) -> tuple[int, int]:
        return int(self.video_pending.sum()), int(self.comment_pending.sum())

    @torch.no_grad()
    def fill(self, model: LSVCRSR, videos: Tensor, comments: Tensor) -> None:
        """Compute the text rows of the new videos and comments among `videos` / `comments` (any shape,
        0 = padding) and install them in `model`'s tables. Raises `ModelInputError` for a new item that
        has no text, or when this checkpoint cannot embed texts."""
        jobs = []
        for what, rows, pending, texts in (("video", videos, self.video_pending, self.catalogue.titles),
                                           ("comment", comments, self.comment_pending, self.catalogue.comment_texts)):
            idx = torch.unique(rows.detach().cpu().reshape(-1))
            idx = idx[(idx > 0) & pending[idx.clamp(min=0)]]
            if idx.numel():
                jobs.append((what, idx, pending, texts))
        if not jobs:
            return
        if self.encoder is None:
            what, idx, _, _ = jobs[0]
            raise ModelInputError(f"{what} {self._ids(what, idx)} is not in the catalogue this LSVCR checkpoint was "
                                  f"trained on, and {self.unavailable}")
        for what, idx, pending, texts in jobs:
            rows_text = [texts[int(i)] for i in idx]
            blank = [int(i) for i, t in zip(idx, rows_text, strict=True) if not (isinstance(t, str) and t.strip())]
            if blank:
                raise ModelInputError(f"{what} {self._ids(what, torch.tensor(blank))} is not in the catalogue this LSVCR "
                                      f"checkpoint was trained on and has no text ({'title' if what == 'video' else 'text'})"
                                      ": LSVCR scores new items by their text. Give it one in the logs' "
                                      f"{what}s table, or leave it out of the candidates and histories")
            e = self.encoder.embed(rows_text)  # (n, lm_dim), float16-exact
            if self.projection is not None:  # a serving export stores A t(e), rounded as the export rounds it
                e = self.projection(e).half().float()
            emb, has = (model.title_emb, model.title_has) if what == "video" else (model.comment_emb, model.comment_has)
            dev = emb.device
            emb[idx.to(dev)] = e.to(dev, emb.dtype)
            has[idx.to(dev)] = True
            pending[idx] = False

    def _ids(self, what: str, idx: Tensor) -> str:
        ids = (self.catalogue.video_ids if what == "video" else self.catalogue.comment_ids)[idx.numpy() - 1]
        shown = ", ".join(str(int(i)) for i in ids[:3])
        return f"id {shown}" + (f" (and {len(ids) - 3} more)" if len(ids) > 3 else "")


def unavailable_reason(folder: str, *, has_text: bool, is_export: bool, has_projection: bool) -> str:
    """Why a checkpoint without a usable tuned LM cannot embed new texts, and what to do about it."""
    if not has_text:
        return "the no_text ablation reads IDs only: it can score only the items it was trained on"
    if is_export and not has_projection:
        return (f"{folder} predates the saved tuned language model (its config.json has no 'tuned_lm' and no text "
                "projection), so it can score only the items it was exported with. Re-export it from a source "
                "checkpoint that has a 'tuned_lm' (`python -m models.lsvcr.export SOURCE DEST`), or retrain "
                "(`harness train --model lsvcr --data LOGS --until ...`, which saves the tuned LM) and export that")
    return (f"{folder} predates the saved tuned language model (its config.json has no 'tuned_lm'), so it can score "
            "only the items it was trained on. Retrain it (`harness train --model lsvcr ...` saves the tuned LM with "
            "the checkpoint), then re-export it for serving if needed (`python -m models.lsvcr.export SOURCE DEST`)")
