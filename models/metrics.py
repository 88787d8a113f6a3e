"""Top-K ranking metrics: Recall@K, NDCG@K, MRR@K over candidate lists with several positives.

For one query with candidate scores s_1..s_C (padding excluded), binary relevance r_i, P = sum r_i
positives, and the ranking pi (rank 1 = best):

    Recall@K = (sum_{rank<=K} r) / P                      (hits / positives, as LSVCR's paper)
    DCG@K    = sum_{rank k<=K} r_(k) / log2(k + 1)
    IDCG@K   = sum_{k=1}^{min(P, K)} 1 / log2(k + 1)       NDCG@K = DCG@K / IDCG@K
    MRR@K    = 1 / (rank of the first positive) if that rank <= K else 0

Ties are broken **pessimistically** and deterministically: among equal scores, negatives rank above
positives. A model that gives every candidate the same score therefore gets 0 rather than the
chance level, so constant or degenerate scores can never look good (the expected-rank alternative
would credit them). Padded candidates (mask False) always rank last and never count. Queries with
no positive are an error. Averages are plain means over queries (one query per user per task).
NaN scores are refused: they would make the ranking undefined.
"""

from __future__ import annotations

import numpy as np

METRICS: tuple[str, ...] = ("recall@1", "recall@5", "recall@10", "ndcg@5", "ndcg@10", "mrr@5", "mrr@10")


def _parse(name: str) -> tuple[str, int]:
    kind, _, k = name.partition("@")
    if kind not in ("recall", "ndcg", "mrr") or not k.isdigit() or int(k) < 1:
        raise ValueError(f"unknown metric {name!r}; use recall@K, ndcg@K or mrr@K")
    return kind, int(k)


def sorted_relevance(scores: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """(N, C) relevance in ranked order (pessimistic ties, padding last, padding relevance 0)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    if scores.shape != labels.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must both be (N, C)")
    mask = np.ones(scores.shape, bool) if mask is None else np.asarray(mask, bool)
    if np.isnan(scores[mask]).any():
        raise ValueError("scores contain NaN at non-padded candidates; the ranking is undefined")
    labels = labels & mask
    # lexsort: last key is primary. Order: real before pad, higher score first, negatives first.
    s = np.where(mask, scores, 0.0)
    order = np.lexsort((labels.astype(np.int8), -s, ~mask), axis=-1)
    return np.take_along_axis(labels, order, axis=1)


def ranking_metrics(
    scores: np.ndarray,
    labels: np.ndarray,
    mask: np.ndarray | None = None,
    metrics: tuple[str, ...] = METRICS,
) -> dict[str, np.ndarray]:
    """Per-query metric values, {name: (N,)} (see the module docstring for definitions)."""
    rel = sorted_relevance(scores, labels, mask).astype(np.float64)  # (N, C)
    n_pos = rel.sum(1)
    if (n_pos == 0).any():
        raise ValueError(f"{int((n_pos == 0).sum())} query(ies) have no positive candidate; drop them first")
    C = rel.shape[1]
    disc = 1.0 / np.log2(np.arange(2, C + 2))  # 1/log2(k+1), k = 1..C
    first = np.argmax(rel > 0, axis=1) + 1  # rank of the first positive
    out: dict[str, np.ndarray] = {}
    for name in metrics:
        kind, k = _parse(name)
        kk = min(k, C)
        if kind == "recall":
            out[name] = rel[:, :kk].sum(1) / n_pos
        elif kind == "ndcg":
            dcg = (rel[:, :kk] * disc[:kk]).sum(1)
            cdisc = np.concatenate([[0.0], np.cumsum(disc)])
            idcg = cdisc[np.minimum(n_pos, k).astype(int).clip(max=C)]
            out[name] = dcg / idcg
        else:
            out[name] = np.where(first <= k, 1.0 / first, 0.0)
    return out


def mean_metrics(per_query: dict[str, np.ndarray]) -> dict[str, float]:
    return {k: float(np.mean(v)) if len(v) else float("nan") for k, v in per_query.items()}
