"""bench/quality.py's comparisons: gap checks over seeds and paired per-query intervals, LSVCR minus each
model it is compared with."""

from __future__ import annotations

import numpy as np

from models.protocols import SLICES

ABLATION_NAMES = ("no_align", "no_comments", "no_text")
COMPARED = ("base", *ABLATION_NAMES, "lsvcr_no_prior", "lsvcr_per_task")  # what full LSVCR is paired against


def stats(v: list) -> dict:
    """Mean and std over seeds (None when the slice held no query)."""
    if any(x is None for x in v):
        return {"mean": None, "std": None, "n": len(v)}
    return {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, "n": len(v)}


def _gap(a: dict, b: dict, rel_min: float | None) -> dict:
    """a - b on one metric: difference, relative gain, and whether it exceeds 2 std of the difference."""
    diff = a["mean"] - b["mean"]
    sd = float(np.hypot(a["std"], b["std"]))
    out = {"diff": diff, "rel": diff / b["mean"] if b["mean"] else None, "std_diff": sd,
           "exceeds_2std": (diff > 2 * sd) if a["n"] > 1 and b["n"] > 1 else None}
    if rel_min is not None:
        out["rel_ok"] = out["rel"] is not None and out["rel"] >= rel_min
    return out


def gap_checks(results: dict, metric: str = "ndcg@10") -> dict:
    checks: dict = {}
    for task in ("video", "comment"):
        full = results.get("lsvcr", {}).get(task)
        if full is None:
            continue
        base = results.get("base", {}).get(task)
        if base is not None:
            checks[f"lsvcr_vs_base_{task}"] = _gap(full[metric], base[metric], 0.05)
        for other in (*ABLATION_NAMES, "lsvcr_no_prior", "lsvcr_per_task"):
            r = results.get(other, {}).get(task)
            if r is not None:
                checks[f"lsvcr_vs_{other}_{task}"] = _gap(full[metric], r[metric], None)
    return checks


def paired_intervals(per_query: dict[tuple[str, int], dict[str, np.ndarray]], users: dict[str, np.ndarray],
                     slices: dict[str, np.ndarray]) -> dict:
    """LSVCR minus each model of COMPARED on NDCG@10, per task and slice, on the same queries (bench/quality.py's
    docstring): `per_query[(model, seed)][task]` in the stored candidates' row order, `users` and `slices`
    per task in that order too."""
    from protocols import clustered  # bench/protocols.py; bench/ is on sys.path when this script runs

    out: dict = {}
    for other in COMPARED:
        seeds = sorted(s for m, s in per_query if m == "lsvcr" and (other, s) in per_query)
        if not seeds:
            continue
        block: dict = {"seeds": seeds}
        for task in users:
            if any(task not in per_query[(m, s)] for m in ("lsvcr", other) for s in seeds):
                continue
            a = np.mean([per_query[("lsvcr", s)][task] for s in seeds], axis=0)
            b = np.mean([per_query[(other, s)][task] for s in seeds], axis=0)
            for sl in sorted(set(slices[task]) | {"all"}, key=SLICES.index):
                keep = np.ones(a.shape[0], bool) if sl == "all" else slices[task] == sl
                if not keep.any():
                    continue
                d, se = clustered(a[keep] - b[keep], users[task][keep])
                ref = float(b[keep].mean())
                block[f"{task}_{sl}"] = {"diff": d, "lo": d - 1.96 * se, "hi": d + 1.96 * se,
                                         "rel": d / ref if ref else None, "queries": int(keep.sum()),
                                         "users": int(np.unique(users[task][keep]).size)}
        out[f"lsvcr_vs_{other}"] = block
    return out
