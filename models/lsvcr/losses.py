"""LSVCR's contrastive losses (docs/lsvcr-method.md, stages 1 and 2), all on cosine similarity / temperature.

- InfoNCE(a -> b) = mean_i -log softmax_j(cos(a_i, b_j) / tau)[i]: row i's positive is b_i, the other
  rows of the batch are negatives. Rows that share an item id with row i are removed from i's negatives
  (they are the same item, not negatives); a batch of one gives a loss of exactly 0 (softmax over the
  positive alone), never an error.
- L_SSC = 1/2 InfoNCE(s -> u) + 1/2 InfoNCE(u -> s)  (SR vector s vs LLM preference vector u).
- L_VCC = -log softmax([cos(u, s), cos(u, s')] / tau)[0]: the task-relevant history must explain u
  better than the other history.
- ID-text contrast (stage 2) = 1/2 InfoNCE(id -> text) + 1/2 InfoNCE(text -> id) over the distinct
  items of the batch (so an item is never its own negative; the public code's version crashes on small
  batches, this one returns 0 for one item).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def cosine_logits(a: Tensor, b: Tensor, temperature: float) -> Tensor:
    """(N, d), (M, d) -> (N, M) cos(a_i, b_j) / tau."""
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / temperature


def info_nce(a: Tensor, b: Tensor, temperature: float, ids: Tensor | None = None) -> Tensor:
    """InfoNCE(a -> b) with in-batch negatives; `ids` (N,) masks same-item negatives."""
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"info_nce needs two (N, d) tensors of the same shape, got {tuple(a.shape)}, {tuple(b.shape)}")
    if a.shape[0] == 0:
        return a.sum() * 0.0
    logits = cosine_logits(a, b, temperature)  # (N, N)
    if ids is not None:
        same = (ids[:, None] == ids[None, :]) & ~torch.eye(len(ids), dtype=torch.bool, device=ids.device)
        logits = logits.masked_fill(same, float("-inf"))
    return F.cross_entropy(logits, torch.arange(a.shape[0], device=a.device))


def ssc_loss(s: Tensor, u: Tensor, temperature: float, ids: Tensor | None = None) -> Tensor:
    """L_SSC = 1/2 InfoNCE(s -> u) + 1/2 InfoNCE(u -> s)."""
    return 0.5 * (info_nce(s, u, temperature, ids) + info_nce(u, s, temperature, ids))


def vcc_loss(u: Tensor, s: Tensor, s_alt: Tensor, temperature: float) -> Tensor:
    """L_VCC = CE over [cos(u, s), cos(u, s')] / tau with label 0."""
    un = F.normalize(u, dim=-1)
    logits = torch.stack([(un * F.normalize(s, dim=-1)).sum(-1), (un * F.normalize(s_alt, dim=-1)).sum(-1)], -1)
    return F.cross_entropy(logits / temperature, torch.zeros(u.shape[0], dtype=torch.long, device=u.device))


def id_text_loss(id_vec: Tensor, text_vec: Tensor, temperature: float, ids: Tensor | None = None) -> Tensor:
    """Symmetric InfoNCE between items' ID and text vectors; duplicates of an item are not negatives."""
    return 0.5 * (info_nce(id_vec, text_vec, temperature, ids) + info_nce(text_vec, id_vec, temperature, ids))
