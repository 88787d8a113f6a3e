"""Plackett-Luce marginals against brute-force enumeration and Monte Carlo."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest

from harness.simulate import plackett_luce as pl


def brute_force(w: np.ndarray, k: int) -> np.ndarray:
    """P(item i at position j) by enumerating every ordered top-k sequence (independent reference)."""
    n = len(w)
    out = np.zeros((n, k))
    for seq in itertools.permutations(range(n), k):
        p, rest = 1.0, w.sum()
        for i in seq:
            p *= w[i] / rest
            rest -= w[i]
        for j, i in enumerate(seq):
            out[i, j] += p
    return out


@pytest.mark.parametrize(("n", "k", "scale"), [(5, 5, 1.0), (6, 2, 2.0), (7, 3, 0.5), (7, 7, 2.0),
                                               (8, 4, 3.0), (4, 1, 1.0)])
def test_marginals_equal_enumeration(n: int, k: int, scale: float) -> None:
    rng = np.random.default_rng(n * 10 + k)
    W = np.exp(scale * rng.normal(size=(3, n)))
    M = pl.marginals(W, k)
    for r in range(3):
        np.testing.assert_allclose(M[r], brute_force(W[r], k), atol=1e-8, rtol=0)


def test_full_permutation_rows_and_columns_sum_to_one() -> None:
    rng = np.random.default_rng(1)
    W = np.exp(2.0 * rng.normal(size=(20, 9)))
    M = pl.marginals(W, 9)
    np.testing.assert_allclose(M.sum(axis=2), 1.0, atol=1e-9)  # each item lands somewhere
    np.testing.assert_allclose(M.sum(axis=1), 1.0, atol=1e-9)  # each position holds one item


def test_top_k_columns_sum_to_one_and_first_slot_is_softmax() -> None:
    rng = np.random.default_rng(2)
    W = np.exp(1.5 * rng.normal(size=(10, 50)))
    M = pl.marginals(W, 6)
    np.testing.assert_allclose(M.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(M[:, :, 0], W / W.sum(axis=1, keepdims=True), atol=1e-12)


def test_slate_marginals_equal_full_matrix_entries() -> None:
    rng = np.random.default_rng(3)
    W = np.exp(1.5 * rng.normal(size=(40, 30)))
    slates = pl.sample_slates(np.log(W), 5, rng)
    M = pl.marginals(W, 5)
    S = pl.slate_marginals(W, slates)
    expect = np.take_along_axis(M, slates[:, :, None], axis=1)[:, np.arange(5), np.arange(5)]
    np.testing.assert_allclose(S, expect, atol=1e-12)


def test_marginals_match_monte_carlo_on_larger_n() -> None:
    rng = np.random.default_rng(4)
    n, k, N = 30, 5, 200_000
    w = np.exp(1.2 * rng.normal(size=n))
    M = pl.marginals(w[None, :], k)[0]
    draws = pl.sample_slates(np.broadcast_to(np.log(w), (N, n)), k, rng)
    freq = np.stack([np.bincount(draws[:, j], minlength=n) / N for j in range(k)], axis=1)
    se = np.sqrt(M * (1 - M) / N) + 1e-12
    assert np.max(np.abs(freq - M) / se) < 5.0  # 150 cells: max |z| under 5


def test_padding_weights_are_ignored() -> None:
    rng = np.random.default_rng(5)
    W = np.exp(rng.normal(size=(4, 6)))
    padded = np.concatenate([W, np.zeros((4, 3))], axis=1)
    M = pl.marginals(padded, 4)
    np.testing.assert_allclose(M[:, :6], brute_force_rows(W, 4), atol=1e-8)
    assert np.all(M[:, 6:] == 0)


def brute_force_rows(W: np.ndarray, k: int) -> np.ndarray:
    return np.stack([brute_force(w, k) for w in W])


def test_slot_propensities_are_the_sequential_choice_probabilities() -> None:
    w = np.array([[1.0, 2.0, 3.0, 4.0]])
    slate = np.array([[3, 0, 2]])
    # hand-computed: 4/10, then 1/6, then 3/5
    np.testing.assert_allclose(pl.slot_propensities(w, slate), [[0.4, 1 / 6, 0.6]])
    # and the sequential probabilities multiply to the enumeration's probability of that sequence
    assert np.prod(pl.slot_propensities(w, slate)) == pytest.approx(0.4 * (1 / 6) * 0.6)


def test_bad_input_is_rejected_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="k must be in"):
        pl.marginals(np.ones((2, 3)), 4)
    with pytest.raises(ValueError, match="finite and >= 0"):
        pl.marginals(np.array([[1.0, -1.0]]), 1)
    with pytest.raises(ValueError, match="distinct"):
        pl.slate_marginals(np.ones((1, 4)), np.array([[0, 0]]))


def exact_enumeration(w: np.ndarray, k: int) -> np.ndarray:
    """As `brute_force`, in exact rational arithmetic (the float version loses ~1e-11 to
    cancellation in `rest -= w[i]` when weights span many orders of magnitude)."""
    n = len(w)
    wf = [Fraction(float(x)) for x in w]
    out = [[Fraction(0)] * k for _ in range(n)]
    for seq in itertools.permutations(range(n), k):
        p, rest = Fraction(1), sum(wf)
        for i in seq:
            p *= wf[i] / rest
            rest -= wf[i]
        for j, i in enumerate(seq):
            out[i][j] += p
    return np.array([[float(x) for x in row] for row in out])


@pytest.mark.parametrize(("n", "k", "scale"), [(5, 5, 1.0), (6, 6, 4.0), (7, 3, 3.0), (6, 1, 1.0), (7, 5, 2.0)])
def test_subset_marginals_equal_exact_enumeration(n: int, k: int, scale: float) -> None:
    rng = np.random.default_rng(100 + n * 10 + k)
    W = np.exp(scale * rng.normal(size=(2, n)))
    M = pl.subset_marginals(W, k)
    for r in range(2):
        np.testing.assert_allclose(M[r], exact_enumeration(W[r], k), atol=1e-14, rtol=0)


def test_subset_marginals_padding_and_size_limit() -> None:
    rng = np.random.default_rng(6)
    W = np.exp(rng.normal(size=(3, 5)))
    padded = np.concatenate([W, np.zeros((3, 2))], axis=1)
    M = pl.subset_marginals(padded, 5)
    np.testing.assert_allclose(M[:, :5], brute_force_rows(W, 5), atol=1e-12)
    assert np.all(M[:, 5:] == 0)
    with pytest.raises(ValueError, match="use marginals"):
        pl.subset_marginals(np.ones((1, pl.SUBSET_MAX_N + 1)), 3)


def test_quadrature_top10_of_13_equals_the_exact_subset_recursion() -> None:
    """The comment-section regime (k < n, beyond enumeration): two independent exact methods agree."""
    rng = np.random.default_rng(7)
    W = np.exp(2.0 * rng.normal(size=(12, 13)))
    np.testing.assert_allclose(pl.marginals(W, 10), pl.subset_marginals(W, 10), atol=1e-9, rtol=0)


def test_rows_get_their_own_nodes_whatever_the_batch_or_threads() -> None:
    """Rows with very different weight spreads need different panel counts; a row's result must not
    depend on its batch-mates or on the number of threads (byte-identical)."""
    rng = np.random.default_rng(8)
    W = np.exp(rng.normal(size=(30, 40)) * np.linspace(0.3, 4.0, 30)[:, None])
    assert len(np.unique(pl.row_panels(W / W.sum(axis=1, keepdims=True), 6))) > 2
    slates = pl.sample_slates(np.log(W), 6, rng)
    S = pl.slate_marginals(W, slates)
    assert np.array_equal(S, pl.slate_marginals(W, slates, workers=2))
    assert np.array_equal(S[7:8], pl.slate_marginals(W[7:8], slates[7:8]))
    M = pl.marginals(W, 6)
    assert np.array_equal(M, pl.marginals(W, 6, workers=2))
    assert np.array_equal(M[[3, 29]], pl.marginals(W[[3, 29]], 6))
    expect = np.take_along_axis(M, slates[:, :, None], axis=1)[:, np.arange(6), np.arange(6)]
    np.testing.assert_allclose(S, expect, atol=1e-12)


def test_slate_marginals_equal_enumeration_with_mixed_panels() -> None:
    rng = np.random.default_rng(9)
    W = np.exp(rng.normal(size=(6, 8)) * np.array([0.5, 1.0, 2.0, 3.0, 4.0, 5.0])[:, None])
    slates = pl.sample_slates(np.log(W), 4, rng)
    ref = brute_force_rows(W, 4)
    expect = np.take_along_axis(ref, slates[:, :, None], axis=1)[:, np.arange(4), np.arange(4)]
    np.testing.assert_allclose(pl.slate_marginals(W, slates), expect, atol=1e-10, rtol=0)


@pytest.mark.parametrize(("n", "k", "scale"), [(7, 3, 1.0), (6, 6, 2.0), (8, 4, 3.0)])
def test_item_marginals_equal_enumeration(n: int, k: int, scale: float) -> None:
    """A few items' rows at every position against brute force, in any order the items are asked for."""
    rng = np.random.default_rng(n * 10 + k)
    w = np.exp(rng.normal(0, scale, size=(4, n)))
    items = np.argsort(rng.random((4, n)), axis=1)[:, :k]
    got = pl.item_marginals(w, items, k)
    for r in range(4):
        np.testing.assert_allclose(got[r], brute_force(w[r], k)[items[r]], atol=1e-8)


def test_item_marginals_equal_the_full_matrix_rows_on_the_same_nodes() -> None:
    """n = 50, k = 10, peaked and flat rows mixed (several panel counts), 2 threads: the full matrix's rows."""
    rng = np.random.default_rng(3)
    lw = rng.normal(0, 1, size=(60, 50)) * rng.choice([0.3, 1.0, 4.0], size=(60, 1))
    w = np.exp(lw - lw.max(axis=1, keepdims=True))
    items = np.argsort(rng.random((60, 50)), axis=1)[:, :10]
    ref = np.take_along_axis(pl.marginals(w, 10), items[:, :, None], axis=1)
    np.testing.assert_allclose(pl.item_marginals(w, items, 10, workers=2), ref, rtol=0, atol=1e-13)
    with pytest.raises(ValueError, match="distinct"):
        pl.item_marginals(w, np.zeros((60, 2), np.int64), 10)
