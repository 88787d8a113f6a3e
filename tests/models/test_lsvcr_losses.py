"""LSVCR losses against hand-computed numpy references on small tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.lsvcr.losses import id_text_loss, info_nce, ssc_loss, vcc_loss

TAU = 0.07


def np_cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


def np_info_nce(a: np.ndarray, b: np.ndarray, ids=None) -> float:
    logits = np_cos(a, b) / TAU
    total = 0.0
    for i in range(len(a)):
        keep = [j for j in range(len(a)) if j == i or ids is None or ids[j] != ids[i]]
        row = logits[i, keep]
        total += -(logits[i, i] - np.log(np.exp(row - row.max()).sum()) - row.max())
    return total / len(a)


@pytest.fixture
def vecs():
    rng = np.random.default_rng(0)
    return rng.normal(size=(4, 5)), rng.normal(size=(4, 5)), rng.normal(size=(4, 5))


def t(x):
    return torch.tensor(x, dtype=torch.float64)


def test_info_nce_matches_numpy(vecs):
    a, b, _ = vecs
    assert float(info_nce(t(a), t(b), TAU)) == pytest.approx(np_info_nce(a, b), rel=1e-9)
    ids = np.array([7, 3, 7, 1])  # rows 0 and 2 are the same item: not each other's negatives
    assert float(info_nce(t(a), t(b), TAU, torch.tensor(ids))) == pytest.approx(np_info_nce(a, b, ids), rel=1e-9)


def test_info_nce_hand_computed_two_rows():
    # a = b = e1, e2: cos matrix = I, logits = I / tau; loss = log(e^{1/tau} + 1) - 1/tau per row
    a = torch.eye(2, dtype=torch.float64)
    want = np.log(np.exp(1 / TAU) + 1) - 1 / TAU
    assert float(info_nce(a, a, TAU)) == pytest.approx(want, rel=1e-9)


def test_ssc_and_vcc_match_numpy(vecs):
    s, u, s_alt = vecs
    want_ssc = 0.5 * np_info_nce(s, u) + 0.5 * np_info_nce(u, s)
    assert float(ssc_loss(t(s), t(u), TAU)) == pytest.approx(want_ssc, rel=1e-9)
    pos = np.diag(np_cos(u, s)) / TAU
    neg = np.diag(np_cos(u, s_alt)) / TAU
    want_vcc = np.mean(np.log(np.exp(pos) + np.exp(neg)) - pos)
    assert float(vcc_loss(t(u), t(s), t(s_alt), TAU)) == pytest.approx(want_vcc, rel=1e-9)


def test_id_text_loss_batch_of_one_and_two():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
    one = id_text_loss(t(x[:1]).requires_grad_(), t(y[:1]), TAU)
    assert float(one.detach()) == 0.0  # softmax over the positive alone: log 1
    one.backward()  # and it does not crash the backward pass either
    want = 0.5 * np_info_nce(x, y) + 0.5 * np_info_nce(y, x)
    assert float(id_text_loss(t(x), t(y), TAU)) == pytest.approx(want, rel=1e-9)
    # the same item twice is not its own negative: both rows see only themselves -> 0
    assert float(id_text_loss(t(x), t(y), TAU, torch.tensor([4, 4]))) == pytest.approx(0.0, abs=1e-12)


def test_info_nce_rejects_bad_shapes():
    with pytest.raises(ValueError, match="same shape"):
        info_nce(torch.zeros(2, 3), torch.zeros(3, 3), TAU)
