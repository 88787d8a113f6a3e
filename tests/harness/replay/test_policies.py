"""harness.replay.policies against independent references: every ordered Plackett-Luce slate enumerated
(itertools.permutations) for the marginals, the prefix probabilities and the logging policy's per-slot
propensities; sorted() with an explicit tie rule for top-k; comment rankings worked out by hand."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from harness.replay import policies as pol

OUTSIDE = 999  # a logged video that is no candidate (a random-exposure slot)


# ----------------------------------------------------------------------------------------- references


def pl_slates(w: np.ndarray, k: int) -> dict[tuple[int, ...], float]:
    """P(slate) for every ordered slate of k distinct columns under Plackett-Luce with weights w."""
    total = float(sum(w))
    out = {}
    for perm in itertools.permutations(range(len(w)), k):
        p, left = 1.0, total
        for c in perm:
            p *= w[c] / left
            left -= w[c]
        out[perm] = p
    return out


def pl_weights(scores: np.ndarray, temperature: float) -> np.ndarray:
    """exp(score / T) as Python floats (shifted by the max: the PL law is invariant to a common factor)."""
    m = max(scores)
    return np.array([math.exp((s - m) / temperature) for s in scores])


def columns_by_hand(cand_row: np.ndarray, logged_row: np.ndarray) -> list[int]:
    ids = cand_row.tolist()
    return [ids.index(v) if v in ids else -1 for v in logged_row.tolist()]


def enumerate_policy(scores, candidates, logged, temperature):
    """(by_slot (R, k, k), prefix (R, k)) by enumerating every ordered slate of each request."""
    R, k = logged.shape
    by_slot = np.zeros((R, k, k))
    prefix = np.zeros((R, k))
    for r in range(R):
        slates = pl_slates(pl_weights(scores[r], temperature), k)
        assert sum(slates.values()) == pytest.approx(1.0, abs=1e-12)
        cols = columns_by_hand(candidates[r], logged[r])
        for perm, p in slates.items():
            for j, c in enumerate(cols):
                for slot in range(k):
                    if c >= 0 and perm[slot] == c:
                        by_slot[r, j, slot] += p
            for j in range(k):
                if all(c >= 0 for c in cols[: j + 1]) and list(perm[: j + 1]) == cols[: j + 1]:
                    prefix[r, j] += p
    return by_slot, prefix


def small_case(seed: int = 0, n: int = 5, k: int = 3, scale: float = 1.5, shift: float = 0.0):
    """Requests with random candidate ids (ascending, as `load_window` gives them) and logged slates that
    cover: a random order, the best-scored prefix, and an outside item at slots 0, 1 and 2."""
    rng = np.random.default_rng(seed)
    R = 6
    candidates = np.sort(np.stack([rng.choice(100, size=n, replace=False) for _ in range(R)]), axis=1)
    scores = shift + scale * rng.normal(size=(R, n))
    logged = np.stack([rng.permutation(candidates[r])[:k] for r in range(R)])
    best = [sorted(range(n), key=lambda c, r=r: (-scores[r, c], c))[:k] for r in range(R)]
    logged[1] = candidates[1, best[1]]  # the target's most likely slate
    logged[2] = candidates[2, best[2]]
    logged[2, 2] = OUTSIDE  # outside at the last slot
    logged[3, 0] = OUTSIDE
    logged[4, 1] = OUTSIDE
    return scores, candidates, logged


# ------------------------------------------------------------------------------------------ Plackett-Luce


@pytest.mark.parametrize("temperature", [0.4, 1.0, 3.0])
def test_plackett_luce_marginals_and_prefixes_match_enumeration(temperature):
    scores, candidates, logged = small_case(seed=1)
    p = pol.slate_policy(scores, candidates, logged, temperature)
    by_slot, prefix = enumerate_policy(scores, candidates, logged, temperature)
    R, k = logged.shape
    assert p.by_slot.shape == (R, k, k) and p.target_prob.shape == (R, k) and p.slot_target.shape == (R, k)
    assert not p.deterministic
    np.testing.assert_allclose(p.by_slot, by_slot, rtol=0, atol=1e-8)
    np.testing.assert_allclose(p.target_prob, by_slot[:, np.arange(k), np.arange(k)], rtol=0, atol=1e-8)
    np.testing.assert_allclose(np.cumprod(p.slot_target, axis=1), prefix, rtol=0, atol=1e-12)
    # the outside item: 0 at every slot, and every prefix through it has probability 0
    for r, j in [(2, 2), (3, 0), (4, 1)]:
        assert np.all(p.by_slot[r, j] == 0.0) and p.target_prob[r, j] == 0.0
        assert np.all(np.cumprod(p.slot_target[r])[j:] == 0.0)
    assert np.all(prefix[[0, 1, 5]] > 0)  # the other rows' prefixes are all possible under PL
    # the slate field is the deterministic top-k, whatever the temperature; log_weights are scores / T
    # up to a per-row constant
    np.testing.assert_array_equal(p.slate, [sorted(range(5), key=lambda c, r=r: (-scores[r, c], c))[:k]
                                            for r in range(R)])
    d = p.log_weights - scores / temperature
    np.testing.assert_allclose(d - d[:, :1], 0.0, atol=1e-12)


def test_plackett_luce_marginals_hand_case():
    """Two candidates with weights 3 and 1 (T = 1, scores ln 3 and 0), two slots: P(A first) = 3/4."""
    scores = np.array([[math.log(3.0), 0.0]])
    p = pol.slate_policy(scores, np.array([[10, 20]]), np.array([[20, 10]]), 1.0)
    np.testing.assert_allclose(p.by_slot[0], [[0.25, 0.75], [0.75, 0.25]], atol=1e-10)
    np.testing.assert_allclose(p.target_prob[0], [0.25, 0.25], atol=1e-10)
    np.testing.assert_allclose(p.slot_target[0], [0.25, 1.0], atol=1e-12)


def test_plackett_luce_is_invariant_to_a_per_row_shift_of_scores():
    """Scores around 800 (exp overflows without the shift) give the same policy as scores around 0."""
    scores, candidates, logged = small_case(seed=2, scale=2.0)
    base = pol.slate_policy(scores, candidates, logged, 0.7)
    shift = np.array([[800.0], [-700.0], [0.0], [1e3], [-1e3], [5.0]])
    moved = pol.slate_policy(scores + shift, candidates, logged, 0.7)
    by_slot, prefix = enumerate_policy(scores, candidates, logged, 0.7)
    for p in (base, moved):
        assert np.all(np.isfinite(p.by_slot)) and np.all(np.isfinite(p.slot_target))
        np.testing.assert_allclose(p.by_slot, by_slot, atol=1e-8)
        np.testing.assert_allclose(np.cumprod(p.slot_target, axis=1), prefix, atol=1e-10)


def test_plackett_luce_larger_slate_matches_enumeration():
    """n = 7, k = 4 (840 ordered slates per request)."""
    scores, candidates, logged = small_case(seed=3, n=7, k=4, scale=1.0)
    p = pol.slate_policy(scores, candidates, logged, 1.3)
    by_slot, prefix = enumerate_policy(scores, candidates, logged, 1.3)
    np.testing.assert_allclose(p.by_slot, by_slot, atol=1e-8)
    np.testing.assert_allclose(np.cumprod(p.slot_target, axis=1), prefix, atol=1e-12)


# ------------------------------------------------------------------------------------------ deterministic


def test_top_k_sorts_descending_with_ties_to_the_lower_column():
    scores = np.array([[1.0, 3.0, 3.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0], [-1.0, 5.0, -2.0, 5.0, 4.0]])
    np.testing.assert_array_equal(pol.top_k(scores, 3), [[1, 2, 4], [0, 1, 2], [1, 3, 4]])
    np.testing.assert_array_equal(pol.top_k(scores, 5)[0], [1, 2, 4, 3, 0])


def test_deterministic_policy_against_sorted_reference():
    rng = np.random.default_rng(4)
    R, n, k = 40, 6, 3
    candidates = np.sort(np.stack([rng.choice(50, size=n, replace=False) for _ in range(R)]), axis=1)
    scores = rng.integers(0, 3, size=(R, n)).astype(float)  # many ties
    ref_slate = np.array([sorted(range(n), key=lambda c, r=r: (-scores[r, c], c))[:k] for r in range(R)])
    top = np.take_along_axis(candidates, ref_slate, axis=1)
    logged = np.stack([rng.permutation(candidates[r])[:k] for r in range(R)])
    # rows that agree with the top-k on a prefix of every length, and outside items
    logged[0] = top[0]
    logged[1] = top[1][[0, 2, 1]]  # first slot right, then swapped
    logged[2] = top[2][[1, 0, 2]]  # first slot wrong, the third right
    logged[3] = top[3]
    logged[3, 1] = OUTSIDE
    logged[4] = top[4]
    logged[4, 2] = OUTSIDE
    logged[5, 0] = OUTSIDE
    rest = [c for c in candidates[6].tolist() if c not in top[6].tolist()]
    logged[6] = [top[6, 0], top[6, 1], rest[0]]
    p = pol.slate_policy(scores, candidates, logged, None)
    assert p.deterministic and p.log_weights is None
    np.testing.assert_array_equal(p.slate, ref_slate)
    for r in range(R):
        for j in range(k):
            assert p.target_prob[r, j] == (1.0 if logged[r, j] == top[r, j] else 0.0)
            want_prefix = 1.0 if logged[r, : j + 1].tolist() == top[r, : j + 1].tolist() else 0.0
            assert np.prod(p.slot_target[r, : j + 1]) == want_prefix
            for slot in range(k):
                assert p.by_slot[r, j, slot] == (1.0 if logged[r, j] == top[r, slot] else 0.0)
    assert p.by_slot.dtype == np.float64 and p.slot_target.dtype == np.float64
    np.testing.assert_array_equal(np.cumprod(p.slot_target[:7], axis=1),
                                  [[1, 1, 1], [1, 0, 0], [0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 1, 0]])
    # by_slot is one-hot over slots for the logged items the target shows, all zero for the others
    shown = np.array([[v in top[r] for v in logged[r]] for r in range(R)])
    np.testing.assert_array_equal(p.by_slot.sum(axis=2), shown.astype(float))


def test_logged_columns_by_hand():
    candidates = np.array([[3, 7, 9, 12], [1, 2, 4, 8]])
    logged = np.array([[12, 3, 999], [8, 5, 1]])
    np.testing.assert_array_equal(pol.logged_columns(candidates, logged), [[3, 0, -1], [3, -1, 0]])


# ------------------------------------------------------------------------------------------ logging by slot


def test_logging_by_slot_matches_enumerated_marginals():
    rng = np.random.default_rng(5)
    R, n, k, rho = 6, 5, 3, 0.1
    candidates = np.sort(np.stack([rng.choice(100, size=n, replace=False) for _ in range(R)]), axis=1)
    logging_score = rng.normal(0.0, 1.5, size=(R, n))
    logged = np.stack([rng.permutation(candidates[r])[:k] for r in range(R)])
    logged[1, 0] = OUTSIDE
    logged[2, 2] = OUTSIDE
    logged[3, 1] = OUTSIDE
    marg = np.zeros((R, n, k))  # enumerated P_logging(column c at slot l)
    for r in range(R):
        for perm, p in pl_slates(pl_weights(logging_score[r], 1.0), k).items():
            for slot, c in enumerate(perm):
                marg[r, c, slot] += p
    outside_p = rho / 50.0  # uniform over a pool of 50
    pscore = np.zeros((R, k))
    cols = [columns_by_hand(candidates[r], logged[r]) for r in range(R)]
    for r in range(R):
        for j, c in enumerate(cols[r]):
            pscore[r, j] = (1 - rho) * marg[r, c, j] if c >= 0 else outside_p
    got = pol.logging_by_slot(pscore, logging_score, candidates, logged)
    assert got.shape == (R, k, k)
    for r in range(R):
        for j, c in enumerate(cols[r]):
            want = (1 - rho) * marg[r, c] if c >= 0 else np.full(k, outside_p)
            np.testing.assert_allclose(got[r, j], want, rtol=1e-7, atol=1e-10)
    # the logged slot's entry is the logged propensity itself
    np.testing.assert_allclose(got[:, np.arange(k), np.arange(k)], pscore, rtol=1e-12)


# ---------------------------------------------------------------------------------------- comment ranking


def test_comment_ranking_by_hand_with_padding():
    scores = np.array([[0.5, 2.0, -np.inf, 1.0],
                       [1.0, 1.0, 3.0, -1.0],
                       [-np.inf, -np.inf, -np.inf, -np.inf],
                       [4.0, 0.0, 9.0, 2.0]])
    comments = np.array([[11, 12, -1, 14],
                         [21, 22, 23, 24],
                         [-1, -1, -1, -1],
                         [31, -1, -1, 34]])  # id -1 is padding even with a finite score
    np.testing.assert_array_equal(pol.comment_ranking(scores, comments, 3),
                                  [[12, 14, 11], [23, 21, 22], [-1, -1, -1], [31, 34, -1]])
    np.testing.assert_array_equal(pol.comment_ranking(scores, comments, 4),
                                  [[12, 14, 11, -1], [23, 21, 22, 24], [-1, -1, -1, -1], [31, 34, -1, -1]])
    np.testing.assert_array_equal(pol.comment_ranking(scores, comments, 1), [[12], [23], [-1], [31]])


def test_comment_ranking_pads_to_size_beyond_the_input_width():
    got = pol.comment_ranking(np.array([[1.0, 2.0]]), np.array([[5, 6]]), 4)
    np.testing.assert_array_equal(got, [[6, 5, -1, -1]])


# ----------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("temperature", [None, 1.0])
def test_non_finite_scores_are_refused(bad, temperature):
    scores, candidates, logged = small_case(seed=6)
    scores[2, 3] = bad
    with pytest.raises(ValueError, match=r"scores must be finite.*request row 2"):
        pol.slate_policy(scores, candidates, logged, temperature)


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan")])
def test_non_positive_temperature_is_refused(temperature):
    scores, candidates, logged = small_case(seed=7)
    with pytest.raises(ValueError, match=r"temperature must be > 0 \(or None for deterministic top-k\)"):
        pol.slate_policy(scores, candidates, logged, temperature)


@pytest.mark.parametrize("temperature", [None, 1.0])
def test_more_slots_than_candidates_is_refused(temperature):
    scores = np.zeros((2, 3))
    candidates = np.array([[1, 2, 3], [4, 5, 6]])
    logged = np.array([[1, 2, 3, 999], [4, 5, 6, 999]])
    with pytest.raises(ValueError, match="slates of 4 slots need at least 4 candidates, got 3"):
        pol.slate_policy(scores, candidates, logged, temperature)


def test_peaked_plackett_luce_marginals_stay_probabilities():
    """Very peaked targets (a model's scores at a low temperature: log-weight spreads of hundreds): the exact
    marginals need more quadrature panels than the world's logging policy (found by the coverage study: a
    target probability of 1 + 2e-9 stopped a world; with 40 panels the marginals erred by 0.1 at spread 200).
    They stay probabilities, each slot's marginals sum to 1, and they match Monte Carlo draws."""
    from harness.replay.policies import slate_policy
    from harness.simulate import plackett_luce as pl

    rng = np.random.default_rng(4)
    R, n, k = 40, 50, 6
    cand = np.sort(rng.choice(10_000, size=(R, n), replace=False), axis=1)
    for spread in (60.0, 200.0, 2000.0):
        scores = rng.normal(0, spread, (R, n))
        logged = np.take_along_axis(cand, rng.permuted(np.tile(np.arange(n), (R, 1)), axis=1)[:, :k], 1)
        pol = slate_policy(scores, cand, logged, temperature=1.0)
        for a in (pol.target_prob, pol.slot_target, pol.by_slot):
            assert np.isfinite(a).all() and a.max() <= 1.0 and a.min() >= 0.0
        marg = pl.marginals(np.exp(pol.log_weights), k, max_panels=400)
        assert np.abs(marg.sum(axis=1) - 1).max() < 1e-9  # each slot holds one item
        draws = 3000
        hits = np.zeros((R, n, k))
        for _ in range(draws):
            sl = pl.sample_slates(pol.log_weights, k, rng)
            hits[np.arange(R)[:, None], sl, np.arange(k)[None, :]] += 1
        assert np.abs(hits / draws - marg).max() < 0.04  # 4.4 binomial SE at p = 0.5
