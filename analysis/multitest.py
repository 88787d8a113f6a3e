"""Multiple-testing adjustments with an explicit scope.

Holm (1979) step-down controls the family-wise error rate; Benjamini-Hochberg (1995) the false
discovery rate under independence or positive dependence. Both equal statsmodels' `multipletests`
(tested); this module also decides the families:

* scope "metric": one family per (metric, treatment) holding its segment-level lifts; the overall lift
  of each metric is its own family (unadjusted), as the metrics are pre-registered separately.
* scope "all": one family holding every lift of the analysis (all metrics, segments, treatments).

NaN p-values (degenerate lifts) are left out of their family and stay NaN.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np


def _holm(p: np.ndarray) -> np.ndarray:
    """Holm step-down: p_(i) * (m - i + 1), running maximum, capped at 1 (sorted ascending)."""
    m = p.size
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out = np.empty(m)
    out[order] = adj
    return out


def _bh(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg step-up: p_(i) * m / i, running minimum from the largest, capped at 1."""
    m = p.size
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1.0, np.minimum.accumulate((p[order] * m / np.arange(1, m + 1))[::-1])[::-1])
    out = np.empty(m)
    out[order] = adj
    return out


# Written out rather than calling statsmodels' multipletests, which runs gc.collect() on every call
# (about 0.3 s each on a loaded machine; one call per family). Tests pin both to multipletests.
_METHOD = {"holm": _holm, "bh": _bh}


def adjust(p_values: Sequence[float], method: str) -> list[float]:
    """Adjusted p-values of one family (NaN stays NaN)."""
    p = np.asarray(p_values, dtype=float)
    out = p.copy()
    if method == "none" or p.size == 0:
        return out.tolist()
    if method not in _METHOD:
        raise ValueError(f"unknown correction {method!r}; use none, holm or bh")
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = _METHOD[method](p[ok])
    return out.tolist()


def adjust_families(p_values: Sequence[float], families: Sequence[Hashable], method: str) -> list[float]:
    """Adjust each family (rows with equal family keys) separately; returns values in input order."""
    out = [float("nan")] * len(p_values)
    groups: dict[Hashable, list[int]] = {}
    for i, f in enumerate(families):
        groups.setdefault(f, []).append(i)
    for idx in groups.values():
        adj = adjust([p_values[i] for i in idx], method)
        for i, v in zip(idx, adj, strict=True):
            out[i] = v
    return out
