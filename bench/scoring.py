"""Scoring throughput of the adapters: one causal pass per user vs one forward pass per request.

    python bench/scoring.py [--users 256] [--events 200] [--requests 20] [--device cpu] [--models base,lsvcr]

Synthetic histories (uniform random videos, V=3000 with 10 comments each; LSVCR also gets a comment
history of events/4 records and random 384-d text embeddings), 100 candidates per request. Prints one
JSON line: per adapter, scored requests/s for the one-pass path and for naive per-request scoring
(measured on a subset of users), their ratio; and the achieved FLOP/s of the one-pass path against a
2048^3 fp32 matmul measured in the same run. FLOPs are counted by torch's FlopCounterMode over the
one-pass call itself (matmuls and attention; element-wise work is not counted, so this is a lower
bound); for base an analytic count of its matmuls is printed next to it as a cross-check.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from models.adapters import SASRecRecommender
from models.batch import UserHistories, VideoQuery
from models.catalogue import Catalogue
from models.sasrec import SASRec, SASRecConfig, n_windows


def batch(users: int, events: int, requests: int, V: int, C: int, seed: int = 0, comments: bool = False):
    g = torch.Generator().manual_seed(seed)
    vid = torch.randint(1, V + 1, (users, events), generator=g)
    t = torch.arange(events, dtype=torch.float64).repeat(users, 1)
    if comments:  # one comment record every 4 events, each with up to 3 of that video's 10 comments
        lc = max(events // 4, 1)
        cv = torch.randint(1, V + 1, (users, lc), generator=g)
        cids = (cv - 1).unsqueeze(-1) * 10 + torch.randint(1, 11, (users, lc, 3), generator=g)
        ct = torch.arange(lc, dtype=torch.float64).repeat(users, 1) * 4 + 0.5
        hist = UserHistories(vid, t, cv, cids, ct)
    else:
        hist = UserHistories(vid, t, torch.zeros(users, 1, dtype=torch.long), torch.zeros(users, 1, 3, dtype=torch.long),
                             torch.full((users, 1), float("inf"), dtype=torch.float64))
    qt = torch.linspace(1, events, requests, dtype=torch.float64).repeat(users, 1)
    return hist, VideoQuery(qt, torch.randint(1, V + 1, (users, requests, C), generator=g))


def flops(cfg: SASRecConfig, n_windows_total: int, n_req: int, C: int) -> float:
    T, d, f = cfg.max_len, cfg.hidden, cfg.ffn
    per_layer = n_windows_total * (2 * T * d * 4 * d + 2 * T * d * f * 2 + 2 * 2 * T * T * d)
    return cfg.n_layers * per_layer + 2 * n_req * C * d


def timed(fn, repeat: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def lsvcr_adapter(V: int, device: str):
    """A randomly initialised LSVCR SR model with random text tables: scoring cost does not depend on weights."""
    from models.lsvcr.adapter import LSVCRRecommender
    from models.lsvcr.config import SRConfig
    from models.lsvcr.sr_model import LSVCRSR
    from models.lsvcr.text import TextTables

    C = 10 * V
    cat = Catalogue(np.arange(1, V + 1), [None] + ["t"] * V, np.arange(1, C + 1),
                    np.concatenate([[0], np.repeat(np.arange(1, V + 1), 10)]), [None] + ["c"] * C,
                    np.concatenate([[0], np.arange(1, C + 1, 10)]))
    cfg = SRConfig(n_videos=V, n_comments=C, use_ids=True)
    g = torch.Generator().manual_seed(0)
    tables = TextTables(torch.randn(V + 1, cfg.lm_dim, generator=g), torch.ones(V + 1, dtype=torch.bool),
                        torch.randn(C + 1, cfg.lm_dim, generator=g), torch.ones(C + 1, dtype=torch.bool))
    return LSVCRRecommender(LSVCRSR(cfg), cat, tables, device=device)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=256)
    ap.add_argument("--events", type=int, default=200)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--naive-users", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", default="base,lsvcr")
    a = ap.parse_args()
    V = 3000
    torch.manual_seed(0)
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    n_req = a.users * a.requests
    out: dict = {"bench": "scoring", "device": a.device, "threads": torch.get_num_threads(), "users": a.users,
                 "events_per_user": a.events, "requests_per_user": a.requests, "candidates": a.candidates}
    x = torch.randn(2048, 2048, device=a.device)
    t_mm = timed(lambda: (x @ x, sync()))
    peak = 2 * 2048 ** 3 / t_mm
    out["matmul_fp32_gflops"] = round(peak / 1e9, 2)
    for name in a.models.split(","):
        if name == "base":
            cat = Catalogue(np.arange(1, V + 1), [None] * (V + 1), np.zeros(0), np.zeros(1), [None], np.zeros(V + 1))
            cfg = SASRecConfig(V)
            rec = SASRecRecommender(SASRec(cfg), cat, device=a.device)
        elif name == "lsvcr":
            rec = lsvcr_adapter(V, a.device)
        else:
            raise SystemExit(f"unknown model {name!r}: use base and/or lsvcr")
        comments = name == "lsvcr"
        hist, q = batch(a.users, a.events, a.requests, V, a.candidates, comments=comments)

        def fast(rec=rec, hist=hist, q=q):
            with torch.no_grad():
                rec.score_videos(hist, q)
            sync()

        t_fast = timed(fast)
        from torch.utils.flop_counter import FlopCounterMode

        # the fused Transformer fast path (eval, no grad) is invisible to the counter: count the same
        # computation on the unfused path
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            with FlopCounterMode(display=False) as counter:
                fast()
        finally:
            torch.backends.mha.set_fastpath_enabled(True)
        counted = counter.get_total_flops()
        nh, nq = batch(a.naive_users, a.events, a.requests, V, a.candidates, comments=comments)
        with torch.no_grad():
            t_naive = timed(lambda rec=rec, nh=nh, nq=nq: (rec.score_videos_naive(nh, nq), sync()), repeat=1)
            torch.testing.assert_close(rec.score_videos(nh, nq), rec.score_videos_naive(nh, nq), rtol=1e-4, atol=1e-4)
        fast_rps = n_req / t_fast
        naive_rps = a.naive_users * a.requests / t_naive
        res = {"one_pass_requests_per_s": round(fast_rps, 1), "naive_requests_per_s": round(naive_rps, 1),
               "speedup": round(fast_rps / naive_rps, 1),
               "counted_gflop": round(counted / 1e9, 3), "achieved_gflops": round(counted / t_fast / 1e9, 2),
               "fraction_of_matmul": round(counted / t_fast / peak, 4)}
        if name == "base":
            # windows actually encoded by the one-pass path: the distinct reading windows of the queries
            last = (torch.searchsorted(hist.video_time, q.time) - 1).clamp(min=0)
            w = torch.where(last < cfg.max_len, 0, last // cfg.stride - 1)
            n_win = sum(len(torch.unique(w[b])) for b in range(a.users))
            achieved = flops(cfg, n_win, n_req, a.candidates) / t_fast
            res.update(windows_per_user=int(n_windows(a.events, cfg.max_len)),
                       analytic_gflop=round(flops(cfg, n_win, n_req, a.candidates) / 1e9, 3),
                       analytic_achieved_gflops=round(achieved / 1e9, 2))
        out[name] = res
    print(json.dumps(out))


if __name__ == "__main__":
    main()
