"""Plackett-Luce slates: sampling and *exact* position-marginal propensities.

A Plackett-Luce (PL) policy with positive weights w_1..w_n fills slot 0, 1, ... by drawing without
replacement with probability proportional to w. Two exact routes to the marginals P(item i at m):

1. Subsets (small n; `subset_marginals`). With f(S) = P(the first |S| picks are the set S),
       f(∅) = 1,   f(S) = sum_{i in S} f(S - {i}) w_i / w(complement of S - {i}),
       P(i at m) = w_i sum_{|S| = m, i not in S} f(S) / w(complement of S).
   Every term is positive (no cancellation), so it is exact to rounding; cost n · #{S : |S| < k} per
   row, used for n <= SUBSET_MAX_N (comment sections with at most ~a dozen comments).

2. The exponential race (any n; `marginals`, `slate_marginals`). Give each item an arrival time
   T_i ~ Exp(w_i), independent, and rank by arrival:
       P(v at m) = ∫_0^∞ w_v e^{-w_v t} · P(exactly m of the others have T_j < t) dt,
   where the inner probability is a Poisson-binomial in q_j(t) = 1 - e^{-w_j t}, computed by the usual
   O(n·k) dynamic programme over counts truncated at k (only m < k is ever needed).

Quadrature (why hand-written: scipy has no vectorised Poisson-binomial-in-an-integral and per-row
adaptive quadrature would be far too slow for ~10^6 requests): weights are normalised to sum 1; the
integral is split into [0, 1] (an 8-point Gauss-Legendre rule; there at most ~1 arrival is expected,
so the integrand is a low-degree smooth function) and [1, t_hi] in log-time y = ln t, cut into
ceil(ln t_hi / 1.5) equal panels (per row, at most 40) with 10 Gauss-Legendre nodes each. The tail
beyond t_hi = 40 / (w_min + sum of the n-k smallest weights) is below e^{-40} times a combinatorial
factor: for slots m < k, fewer than k of the others have arrived, so at least n-k of them (with total
rate at least that sum) have not. Rows are grouped by their panel count, so each row gets exactly its
own nodes whatever the batch (results do not depend on how rows are batched or on `workers`, the
threads that share the batches). Measured max abs error against an 80-panel x 20-node reference:
<= 3e-11 for n=50, k=6 with log-weights N(0, s^2), s <= 4, and <= 2e-10 for the top 10 of 13-40
items (tests/harness/test_simulate_pl.py pins 1e-8 against enumeration and 1e-9 against the subset
recursion).

Costs: one vectorised pass per DP step over a (rows x nodes) plane; np.exp (scalar libm for float64
on AVX2 machines, ~6 ns per value vs ~0.4 ns for a multiply) is about half of `slate_marginals`.

Sequential ("slot") propensity of the realised slate v_0..v_{k-1}: w_{v_j} / (S - sum_{i<j} w_{v_i}).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

FIRST_NODES = 8
PANEL_WIDTH = 1.5
MAX_PANELS = 40
DEFAULT_PER_PANEL = 10
TAIL = 40.0
PLANE_ELEMS = 1 << 15  # rows x nodes per vectorised pass: planes stay in cache
BLOCK_ELEMS = 1 << 22  # bound on the elements of one temporary array of `marginals` (32 MB)
SUBSET_MAX_N = 14


def _check_weights(weights: np.ndarray, k: int) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"weights must be a 2-d array (rows, items), got shape {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite and >= 0 (0 marks padding)")
    n_pos = (w > 0).sum(axis=1)
    if np.any(n_pos < 1):
        raise ValueError("every row needs at least one positive weight")
    if not 1 <= k <= w.shape[1]:
        raise ValueError(f"k must be in [1, n={w.shape[1]}], got {k}")
    return w / w.sum(axis=1, keepdims=True)


@functools.lru_cache(maxsize=8)
def _leggauss(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on [-1, 1] (memoised: recomputing them cost seconds)."""
    x, g = np.polynomial.legendre.leggauss(n)
    x.flags.writeable = False
    g.flags.writeable = False
    return x, g


def _log_t_hi(w: np.ndarray, k: int) -> np.ndarray:
    """ln t_hi per row, t_hi = 40 / (w_min + sum of the n-k smallest positive weights), >= ~0."""
    n = w.shape[1]
    big = np.where(w > 0, w, np.inf)
    w_min = big.min(axis=1)
    # sum of the n-k smallest positive weights (padding counts as "never arrives", rate 0)
    ws = np.sort(np.where(w > 0, w, 0.0), axis=1)
    n_pad = (w <= 0).sum(axis=1)
    csum = np.concatenate([np.zeros((w.shape[0], 1)), np.cumsum(ws, axis=1)], axis=1)
    # positive weights occupy sorted slots n_pad .. n-1; the (n_pos - k) smallest of them end at n - k
    rows = np.arange(w.shape[0])
    r = csum[rows, np.maximum(n - k, n_pad)] - csum[rows, n_pad]
    return np.log(np.maximum(TAIL / (w_min + r), 1.0 + 1e-9))


def row_panels(w: np.ndarray, k: int, log_t_hi: np.ndarray | None = None, max_panels: int = MAX_PANELS) -> np.ndarray:
    """Log-time panels each row needs: ceil(ln t_hi / 1.5), in [1, max_panels], (R,) (w rows sum to 1)."""
    log_hi = _log_t_hi(w, k) if log_t_hi is None else log_t_hi
    return np.clip(np.ceil(log_hi / PANEL_WIDTH), 1, max_panels).astype(np.int64)


def quadrature_nodes(
    w: np.ndarray, k: int, panels: int | None = None, per_panel: int = DEFAULT_PER_PANEL,
    log_t_hi: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row nodes t (R, G) and weights dt (R, G) for ∫_0^∞ on rows of weights summing to 1.

    Zero weights (padding) are ignored for t_hi. G = 8 + panels * per_panel; `panels` defaults to the
    largest `row_panels` of the rows (k = n needs many more: the last slot's integrand decays only at
    the smallest weight's rate). `log_t_hi` (R,) may be passed when already known.
    """
    x0, g0 = _leggauss(FIRST_NODES)
    log_hi = _log_t_hi(w, k) if log_t_hi is None else log_t_hi
    if panels is None:
        panels = int(np.clip(np.ceil(log_hi.max() / PANEL_WIDTH), 1, MAX_PANELS))
    x, g = _leggauss(per_panel)
    ylen = log_hi / panels  # (R,) panel width in log-time
    u = (np.arange(panels)[:, None] + (x[None, :] + 1.0) / 2.0).ravel()  # (panels * per_panel,)
    t = np.exp(ylen[:, None] * u[None, :])
    dt = np.tile(g / 2.0, panels)[None, :] * ylen[:, None] * t
    R = w.shape[0]
    t = np.concatenate([np.broadcast_to((x0 + 1.0) / 2.0, (R, FIRST_NODES)), t], axis=1)
    dt = np.concatenate([np.broadcast_to(g0 / 2.0, (R, FIRST_NODES)), dt], axis=1)
    return t, dt


def _batches(panels: np.ndarray, per_panel: int, elems_per_node_row: int, budget: int
             ) -> Iterator[tuple[np.ndarray, int]]:
    """Rows grouped by panel count (stable order), in batches of at most `budget` elements."""
    order = np.argsort(panels, kind="stable")
    p_sorted = panels[order]
    cuts = np.flatnonzero(np.diff(p_sorted)) + 1
    for grp in np.split(order, cuts):
        if not len(grp):
            continue
        p = int(panels[grp[0]])
        G = FIRST_NODES + p * per_panel
        step = max(1, budget // (G * elems_per_node_row))
        for s in range(0, len(grp), step):
            yield grp[s:s + step], p


def default_workers() -> int:
    """Threads for the quadrature blocks: up to 2 (the target machine's cores)."""
    return max(1, min(2, os.cpu_count() or 1))


def _run_blocks(blocks: Iterator[tuple[np.ndarray, int]], fn: Callable[[np.ndarray, int], np.ndarray],
                out: np.ndarray, workers: int) -> None:
    """out[rows] = fn(rows, panels) for every block; blocks are independent, so `workers` threads
    (numpy releases the GIL inside its loops) give the same bytes as one."""
    if workers <= 1:
        for rows, p in blocks:
            out[rows] = fn(rows, p)
        return
    with ThreadPoolExecutor(max_workers=workers) as ex:
        futures = [(rows, ex.submit(fn, rows, p)) for rows, p in blocks]
        for rows, fut in futures:
            out[rows] = fut.result()


def marginals(
    weights: np.ndarray, k: int, panels: int | None = None, per_panel: int = DEFAULT_PER_PANEL,
    workers: int = 1, max_panels: int = MAX_PANELS,
) -> np.ndarray:
    """Full marginal matrix M[r, i, m] = P(item i at position m) for a PL top-k slate, (R, n, k).

    Exponential-race quadrature (see the module docstring); leave-one-out Poisson-binomials by
    prefix/suffix products (numerically stable, unlike dividing an item back out of the full
    product). Zero weights are padding: their rows are 0. `panels` fixes the panel count of every row
    (default: each row's own, `row_panels`). `workers` threads share the row blocks (same result).
    `max_panels` caps a row's panels: the default (40) keeps ln t_hi <= 60, enough for log-weight spreads
    of the world's logging policy; a very peaked row (a target with a log-weight spread of 60 or more, e.g.
    a model's scores at a low temperature) needs ln t_hi / 1.5 panels or its marginals err (measured:
    1e-6 at spread ~60, 0.1 at ~200 with the cap of 40), so the replay raises the cap.
    """
    w = _check_weights(weights, k)
    R, n = w.shape
    out = np.empty((R, n, k))
    log_hi = _log_t_hi(w, k)
    pr = row_panels(w, k, log_hi, max_panels) if panels is None else np.full(R, int(panels))
    _run_blocks(_batches(pr, per_panel, (2 * k + 3) * (n + 1), BLOCK_ELEMS),
                lambda rows, p: _marginals_block(w[rows], k, p, per_panel, log_hi[rows]), out, workers)
    return out


def _marginals_block(wc: np.ndarray, k: int, panels: int, per_panel: int, log_hi: np.ndarray
                     ) -> np.ndarray:
    t, dt = quadrature_nodes(wc, k, panels, per_panel, log_hi)  # (r, G)
    r_, G = t.shape
    n = wc.shape[1]
    e = np.exp(-wc.T[:, :, None] * t[None, :, :])  # (n, r, G): 1 - q
    # counts-first layouts (k, n+1, r, G): F[:, i] = count law of items < i, B[:, i] = of items >= i
    F = np.empty((k, n + 1, r_, G))
    F[:, 0] = 0.0
    F[0, 0] = 1.0
    for i in range(n):
        _pb_step_into(F[:, i + 1], F[:, i], e[i])
    B = np.empty((k, n + 1, r_, G))
    B[:, n] = 0.0
    B[0, n] = 1.0
    for i in range(n - 1, -1, -1):
        _pb_step_into(B[:, i], B[:, i + 1], e[i])
    # leave-one-out count law of item i: F[:, i] (items < i) convolved with B[:, i+1] (items > i);
    # P(i at m) = sum_g dens_i sum_{a+b=m} F[a, i] B[b, i+1]: fold dens into F, then one fused
    # multiply-and-sum over the nodes per (a, b) pair
    X = F[:, :n]
    X *= (wc.T[:, :, None] * e * dt[None, :, :])[None]  # (k, n, r, G)
    Bs = B[:, 1:]
    out = np.zeros((n, r_, k))
    for a in range(k):
        for b in range(k - a):
            out[:, :, a + b] += np.einsum("irg,irg->ir", X[a], Bs[b])
    return out.transpose(1, 0, 2)


def item_marginals(
    weights: np.ndarray, items: np.ndarray, k: int, per_panel: int = DEFAULT_PER_PANEL, workers: int = 1,
    max_panels: int = MAX_PANELS,
) -> np.ndarray:
    """P(items[r, s] at position m) for a few items of each row at every position m < k, (R, S, k): the rows
    of `marginals(weights, k)` at those items, on the same nodes, without the other n - S items' rows.

    The other items enter once, as one shared count law (O((n-S) k) per node); the S items' leave-one-out
    laws come from prefix and suffix chains over them alone (O(S k) each way) and their densities meet
    those chains in O(S k^2). For the replay's logged slates (S = k = 10 of n = 50) that is about a third of
    `marginals`' work. `items` holds column indices into `weights`, distinct within a row.
    """
    items = np.asarray(items, dtype=np.int64)
    w = _check_weights(weights, k)
    R, n = w.shape
    if items.ndim != 2 or items.shape[0] != R:
        raise ValueError(f"items must be (R={R}, S) column indices, got shape {items.shape}")
    S = items.shape[1]
    if S and (items.min() < 0 or items.max() >= n):
        raise ValueError(f"items must be column indices in [0, {n})")
    rows = np.arange(R)[:, None]
    mask = np.zeros((R, n), dtype=bool)
    mask[rows, items] = True
    if np.any(mask.sum(axis=1) != S):
        raise ValueError("items must be distinct within a row")
    others = np.argsort(mask, axis=1, kind="stable")[:, : n - S]
    w_un = np.take_along_axis(w, others, axis=1)
    w_it = np.take_along_axis(w, items, axis=1)
    out = np.empty((R, S, k))
    log_hi = _log_t_hi(w, k)
    pr = row_panels(w, k, log_hi, max_panels)
    _run_blocks(_batches(pr, per_panel, (2 * S + 2) * k + S, BLOCK_ELEMS),
                lambda sl, p: _items_block(w_un[sl], w_it[sl], k, p, per_panel, log_hi[sl], w[sl]), out, workers)
    return out


def _items_block(w_un: np.ndarray, w_it: np.ndarray, k: int, panels: int, per_panel: int, log_hi: np.ndarray,
                 w: np.ndarray) -> np.ndarray:
    t, dt = quadrature_nodes(w, k, panels, per_panel, log_hi)  # (r, G): the same nodes as `marginals`
    r_, G = t.shape
    S = w_it.shape[1]
    P = np.zeros((k, r_, G))  # count law of the other items
    P[0] = 1.0
    tmp = np.empty((r_, G))
    for i in range(w_un.shape[1]):
        _pb_step_inplace(P, np.exp(-w_un[:, i, None] * t), tmp)
    e = np.exp(-w_it.T[:, :, None] * t[None, :, :])  # (S, r, G)
    F = np.empty((S, k, r_, G))  # F[j]: the other items and the chosen items before j
    F[0] = P
    for j in range(S - 1):
        _pb_step_into(F[j + 1], F[j], e[j])
    Bk = np.empty((S, k, r_, G))  # Bk[j]: the chosen items after j
    Bk[S - 1] = 0.0
    Bk[S - 1, 0] = 1.0
    for j in range(S - 1, 0, -1):
        _pb_step_into(Bk[j - 1], Bk[j], e[j])
    F *= (w_it.T[:, :, None] * e * dt[None, :, :])[:, None]  # fold each item's arrival density into its F
    out = np.zeros((S, r_, k))
    for a in range(k):
        for b in range(k - a):
            out[:, :, a + b] += np.einsum("srg,srg->sr", F[:, a], Bk[:, b])
    return out.transpose(1, 0, 2)


def slate_marginals(
    weights: np.ndarray, slates: np.ndarray, panels: int | None = None,
    per_panel: int = DEFAULT_PER_PANEL, workers: int = 1,
) -> np.ndarray:
    """P(slates[r, j] at position j) for each row and slot, (R, k): only the realised slate.

    Cheaper than `marginals` when n >> k: one shared DP over the n-k unshown items, then prefix
    chains over the shown ones (forward: unshown + shown before j; backward: shown after j as a
    polynomial of degree k-1-j) joined at count j: O((n-k)k + k^2) per node instead of O(n k^2).
    `slates` holds column indices into `weights` (distinct within a row). Same nodes per row as
    `marginals`, so the two agree to rounding.
    """
    slates = np.asarray(slates, dtype=np.int64)
    R, k = slates.shape
    w = _check_weights(weights, k)
    n = w.shape[1]
    if w.shape[0] != R:
        raise ValueError(f"weights has {w.shape[0]} rows but slates has {R}")
    rows = np.arange(R)[:, None]
    shown_mask = np.zeros((R, n), dtype=bool)
    shown_mask[rows, slates] = True
    if np.any(shown_mask.sum(axis=1) != k):
        raise ValueError("slates must hold k distinct item indices per row")
    # order each row: unshown items first (any order), then the shown ones in slot order
    unshown = np.argsort(shown_mask, axis=1, kind="stable")[:, : n - k]
    w_un = np.take_along_axis(w, unshown, axis=1)  # (R, n-k)
    w_sh = np.take_along_axis(w, slates, axis=1)  # (R, k)
    out = np.empty((R, k))
    log_hi = _log_t_hi(w, k)
    pr = row_panels(w, k, log_hi) if panels is None else np.full(R, int(panels))
    _run_blocks(_batches(pr, per_panel, 1, PLANE_ELEMS),
                lambda sl, p: _slate_block(w[sl], w_un[sl], w_sh[sl], k, p, per_panel, log_hi[sl]),
                out, workers)
    return out


def _slate_block(w: np.ndarray, w_un: np.ndarray, w_sh: np.ndarray, k: int, panels: int,
                 per_panel: int, log_hi: np.ndarray) -> np.ndarray:
    t, dt = quadrature_nodes(w, k, panels, per_panel, log_hi)
    r_, G = t.shape
    # counts-first layout (k, r, G): each DP step is a few contiguous in-place array ops
    P = np.zeros((k, r_, G))
    P[0] = 1.0
    tmp = np.empty((r_, G))
    for i in range(w_un.shape[1]):
        _pb_step_inplace(P, np.exp(-w_un[:, i, None] * t), tmp)
    e_sh = np.exp(-t[None, :, :] * w_sh.T[:, :, None])  # (k, r, G)
    # backward: law of the shown items after j, degree k-1-j: back[j] (k-j, r, G)
    back: list[np.ndarray] = [np.empty(0)] * k
    back[k - 1] = np.ones((1, r_, G))
    for j in range(k - 2, -1, -1):
        prev, e = back[j + 1], e_sh[j + 1]
        cur = np.empty((prev.shape[0] + 1, r_, G))
        np.multiply(prev, e, out=cur[:-1])
        cur[-1] = 0.0
        cur[1:] += prev * (1.0 - e)
        back[j] = cur
    out = np.empty((r_, k))
    for j in range(k):  # P = law of the unshown items and the shown ones before j
        lo = max(0, 2 * j - (k - 1))  # back[j] has degree k-1-j
        loo = np.zeros((r_, G))
        for a in range(lo, j + 1):
            loo += P[a] * back[j][j - a]
        wj = w_sh[:, j : j + 1]
        out[:, j] = (wj * e_sh[j] * dt * loo).sum(axis=1)
        if j < k - 1:
            _pb_step_inplace(P, e_sh[j], tmp)
    return out


def _pb_step_inplace(P: np.ndarray, e: np.ndarray, tmp: np.ndarray) -> None:
    """P (c, ...) <- P with one more Bernoulli(1 - e) added, counts truncated at c.

    P'[m] = e P[m] + (1 - e) P[m-1] = P[m-1] + e (P[m] - P[m-1]): three in-place ops, no 1 - e array.
    """
    for m in range(P.shape[0] - 1, 0, -1):
        np.subtract(P[m], P[m - 1], out=tmp)
        tmp *= e
        np.add(P[m - 1], tmp, out=P[m])
    P[0] *= e


def subset_marginals(weights: np.ndarray, k: int) -> np.ndarray:
    """Exact marginal matrix M[r, i, m] (R, n, k) by the subset recursion (module docstring, 1).

    For small n only (n <= SUBSET_MAX_N: the subsets of size < k are enumerated); no quadrature.
    Zero weights are padding: their rows are 0 (as are slots beyond the number of positive weights).
    """
    w = _check_weights(weights, k)
    R, n = w.shape
    if n > SUBSET_MAX_N:
        raise ValueError(f"subset_marginals enumerates subsets: n must be <= {SUBSET_MAX_N}, got {n}; "
                         "use marginals() for larger n")
    masks = np.arange(1 << n, dtype=np.int64)
    bits = ((masks[:, None] >> np.arange(n)[None, :]) & 1).astype(bool)  # (2^n, n)
    pop = bits.sum(axis=1)
    pos = np.zeros(1 << n, dtype=np.int64)
    levels = []
    for s in range(k):
        lv = np.flatnonzero(pop == s)
        pos[lv] = np.arange(len(lv))
        levels.append(lv)
    out = np.empty((R, n, k))
    out[:, :, 0] = w
    widest = max(len(lv) for lv in levels)
    step = max(1, BLOCK_ELEMS // (4 * widest))
    structure = []
    for s in range(1, k):
        lv = levels[s]
        members = np.nonzero(bits[lv])[1].reshape(len(lv), s)  # (C_s, s), ascending
        parents = pos[lv[:, None] ^ (np.int64(1) << members)]  # S - {i}, indices into level s-1
        structure.append((members.T.copy(), parents.T.copy(), (~bits[lv]).astype(np.float64)))
    for s0 in range(0, R, step):
        wt = np.ascontiguousarray(w[s0:s0 + step].T)  # (n, r): subsets-first layouts, contiguous gathers
        g = np.ones((1, wt.shape[1]))  # g(S) = f(S) / w(complement of S); f(∅) = 1, w(all) = 1
        for s, (members, parents, notin) in enumerate(structure, start=1):
            f = g[parents[0]] * wt[members[0]]
            for c in range(1, s):
                f += g[parents[c]] * wt[members[c]]
            # w(complement of S) (C_s, r): positive sums, no cancellation. einsum, not BLAS: OpenBLAS
            # threads on these small products cost more than they save on a shared machine
            rest = np.einsum("cn,nr->cr", notin, wt)
            g = np.divide(f, rest, out=np.zeros_like(f), where=rest > 0)
            out[s0:s0 + step, :, s] = np.einsum("cn,cr->rn", notin, g) * wt.T
    return out


def _pb_step_into(dst: np.ndarray, src: np.ndarray, e: np.ndarray) -> None:
    """dst (c, ...) <- src with one more Bernoulli(1 - e) added, truncated at c (as `_pb_step_inplace`,
    written straight into a new slot: no copy)."""
    for m in range(dst.shape[0] - 1, 0, -1):
        np.subtract(src[m], src[m - 1], out=dst[m])
        dst[m] *= e
        dst[m] += src[m - 1]
    np.multiply(src[0], e, out=dst[0])


def slot_propensities(weights: np.ndarray, slates: np.ndarray) -> np.ndarray:
    """Sequential PL probability of each realised pick given the earlier picks, (R, k)."""
    w = np.asarray(weights, dtype=np.float64)
    w_sh = np.take_along_axis(w, np.asarray(slates, dtype=np.int64), axis=1)
    before = np.cumsum(w_sh, axis=1) - w_sh
    return w_sh / (w.sum(axis=1, keepdims=True) - before)


def sample_slates(log_weights: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Draw PL top-k slates by the Gumbel-top-k trick: argsort of log w + Gumbel noise, (R, k).

    -inf log-weights (padding) are never drawn while enough finite items remain.
    """
    keys = log_weights + rng.gumbel(size=log_weights.shape)
    if k >= keys.shape[1]:
        return np.argsort(-keys, axis=1, kind="stable")[:, :k]
    part = np.argpartition(-keys, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(keys, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)
