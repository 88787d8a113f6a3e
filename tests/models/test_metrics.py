"""Ranking metrics against hand-computed cases and scikit-learn's NDCG (an independent reference)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import ndcg_score

from models.metrics import mean_metrics, ranking_metrics


def L(k: int) -> float:
    return 1.0 / math.log2(k + 1)


def test_single_positive_hand_computed() -> None:
    # positive ranked 3rd of 5
    scores = np.array([[0.9, 0.8, 0.7, 0.1, 0.0]])
    labels = np.array([[0, 0, 1, 0, 0]])
    m = ranking_metrics(scores, labels)
    assert m["recall@1"][0] == 0.0
    assert m["recall@5"][0] == 1.0
    assert m["ndcg@5"][0] == pytest.approx(L(3))  # idcg = 1
    assert m["mrr@5"][0] == pytest.approx(1 / 3)
    assert m["mrr@10"][0] == pytest.approx(1 / 3)


def test_several_positives_hand_computed() -> None:
    # ranking: n, p, n, p, n, n, p (7 candidates, 3 positives at ranks 2, 4, 7)
    scores = np.array([[7, 6, 5, 4, 3, 2, 1]], float)
    labels = np.array([[0, 1, 0, 1, 0, 0, 1]])
    m = ranking_metrics(scores, labels)
    assert m["recall@1"][0] == 0.0
    assert m["recall@5"][0] == pytest.approx(2 / 3)
    assert m["recall@10"][0] == pytest.approx(1.0)
    assert m["ndcg@5"][0] == pytest.approx((L(2) + L(4)) / (L(1) + L(2) + L(3)))
    assert m["ndcg@10"][0] == pytest.approx((L(2) + L(4) + L(7)) / (L(1) + L(2) + L(3)))
    assert m["mrr@5"][0] == pytest.approx(0.5)


def test_ideal_dcg_uses_min_positives_k() -> None:
    # 6 positives, all ranked on top: NDCG@5 must be exactly 1 (IDCG over min(6, 5) = 5 slots)
    scores = np.arange(10, 0, -1, dtype=float)[None]
    labels = np.array([[1] * 6 + [0] * 4])
    m = ranking_metrics(scores, labels)
    assert m["ndcg@5"][0] == pytest.approx(1.0)
    assert m["recall@5"][0] == pytest.approx(5 / 6)  # hits / positives


def test_no_hits() -> None:
    scores = np.array([[5, 4, 3, 2, 1, 0, -1, -2, -3, -4, -5, -6]], float)
    labels = np.zeros((1, 12))
    labels[0, -1] = 1
    m = ranking_metrics(scores, labels)
    assert all(v[0] == 0.0 for v in m.values())


def test_ties_are_pessimistic() -> None:
    # positive tied with two negatives at the top: it ranks behind both (rank 3)
    scores = np.array([[1.0, 1.0, 1.0, 0.0]])
    labels = np.array([[1, 0, 0, 0]])
    m = ranking_metrics(scores, labels)
    assert m["recall@1"][0] == 0.0
    assert m["mrr@5"][0] == pytest.approx(1 / 3)
    assert m["ndcg@5"][0] == pytest.approx(L(3))
    # constant scores never look good: the positive is last
    m = ranking_metrics(np.zeros((1, 20)), np.eye(1, 20, 3))
    assert m["recall@10"][0] == 0.0
    # ties between two positives do not matter
    m = ranking_metrics(np.array([[2.0, 2.0, 1.0]]), np.array([[1, 1, 0]]))
    assert m["ndcg@5"][0] == pytest.approx(1.0)


def test_padding_ranks_last_and_never_counts() -> None:
    scores = np.array([[0.5, np.inf, -np.inf, 0.9]])
    labels = np.array([[1, 0, 0, 0]])
    mask = np.array([[True, False, False, True]])
    m = ranking_metrics(scores, labels, mask)
    assert m["mrr@5"][0] == pytest.approx(0.5)  # only the real negative ranks above the positive
    # a positive at a padded slot is not a positive
    with pytest.raises(ValueError, match="no positive"):
        ranking_metrics(scores, np.array([[0, 1, 0, 0]]), mask)


def test_nan_refused() -> None:
    with pytest.raises(ValueError, match="NaN"):
        ranking_metrics(np.array([[np.nan, 1.0]]), np.array([[1, 0]]))


def test_ndcg_matches_sklearn_without_ties() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(50, 30))
    labels = (rng.random((50, 30)) < 0.15).astype(int)
    labels[labels.sum(1) == 0, 0] = 1
    m = ranking_metrics(scores, labels)
    for k in (5, 10):
        ref = [ndcg_score(labels[i:i + 1], scores[i:i + 1], k=k) for i in range(50)]
        np.testing.assert_allclose(m[f"ndcg@{k}"], ref, rtol=1e-12)
    # recall@K against a direct count
    top = np.argsort(-scores, axis=1)[:, :10]
    ref_recall = np.take_along_axis(labels, top, 1).sum(1) / labels.sum(1)
    np.testing.assert_allclose(m["recall@10"], ref_recall)
    assert mean_metrics(m)["recall@10"] == pytest.approx(ref_recall.mean())
