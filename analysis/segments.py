"""Heterogeneity of a lift across segment levels: Cochran's Q and I^2.

Given per-level estimates D_i with variances v_i (independent levels, since units belong to one level),
weights w_i = 1/v_i, the fixed-effect mean D_w = sum w_i D_i / sum w_i and

    Q = sum_i w_i (D_i - D_w)^2  ~  chi^2(k - 1) under H0: equal lifts (Cochran 1954),
    I^2 = max(0, (Q - (k - 1)) / Q)  (Higgins and Thompson 2002): the share of variation beyond chance.

Levels with a non-finite or zero variance are left out (noted).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats


def cochran_q(estimates: Sequence[float], variances: Sequence[float]) -> tuple[float, int, float, float, int]:
    """(Q, df, p_value, I^2, levels used). NaN when fewer than two usable levels."""
    d = np.asarray(estimates, dtype=float)
    v = np.asarray(variances, dtype=float)
    ok = np.isfinite(d) & np.isfinite(v) & (v > 0)
    d, v = d[ok], v[ok]
    k = int(d.size)
    if k < 2:
        return float("nan"), max(k - 1, 0), float("nan"), float("nan"), k
    w = 1.0 / v
    dw = float((w * d).sum() / w.sum())
    q = float((w * (d - dw) ** 2).sum())
    df = k - 1
    p = float(stats.chi2.sf(q, df))
    i2 = max(0.0, (q - df) / q) if q > 0 else 0.0
    return q, df, p, i2, k
