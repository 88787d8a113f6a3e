"""Scoring throughput of the adapters: one causal pass per user vs one forward pass per request.

    python bench/scoring.py [--users 256] [--events 200] [--requests 20] [--device cpu] [--models base,lsvcr]
    python bench/scoring.py --world WORLD [--users 256] ...   # the world's own histories and requests

Synthetic workload (default): uniform random videos, V=3000 with 10 comments each; LSVCR also gets a
comment history of events/4 records and random 384-d text embeddings. World workload (`--world`): the
replay workload of a stored world: `--users` users sampled uniformly, each with their full engaged
history (video and comment records) and one query at each of their logged requests, so requests per
history event are the world's (the default world: ~31 requests over ~112 events per user, against
20 over 200 in the synthetic case; a heavy user has hundreds). Users are scored in batches of 32 of
similar request counts, as a replay would. Either way 100 random candidates per request. Prints one
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
from pathlib import Path

import numpy as np
import torch

from models.adapters import SASRecRecommender
from models.batch import UserHistories, VideoQuery, visible_count
from models.catalogue import Catalogue
from models.sasrec import SASRec, SASRecConfig, reading_window


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


def flops(cfg: SASRecConfig, n_windows_total: int, n_read: int, n_req: int, C: int) -> float:
    """Matmul FLOPs of base's one pass: every layer but the last over whole windows; the last layer's
    keys and values over whole windows, the rest of it at the n_read distinct positions read."""
    T, d, f = cfg.max_len, cfg.hidden, cfg.ffn
    full = n_windows_total * (2 * T * d * 4 * d + 2 * T * d * f * 2 + 2 * 2 * T * T * d)
    last = n_windows_total * 2 * T * d * 2 * d + n_read * (2 * d * 2 * d + 2 * d * f * 2 + 2 * 2 * T * d)
    return (cfg.n_layers - 1) * full + last + 2 * n_req * C * d


def timed(fn, repeat: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def lsvcr_adapter(V: int, device: str, cat: Catalogue | None = None):
    """A randomly initialised LSVCR SR model with random text tables: scoring cost does not depend on weights."""
    from models.lsvcr.adapter import LSVCRRecommender
    from models.lsvcr.config import SRConfig
    from models.lsvcr.sr_model import LSVCRSR
    from models.lsvcr.text import TextTables

    if cat is None:
        C = 10 * V
        cat = Catalogue(np.arange(1, V + 1), [None] + ["t"] * V, np.arange(1, C + 1),
                        np.concatenate([[0], np.repeat(np.arange(1, V + 1), 10)]), [None] + ["c"] * C,
                        np.concatenate([[0], np.arange(1, C + 1, 10)]))
    V, C = cat.n_videos, cat.n_comments
    cfg = SRConfig(n_videos=V, n_comments=C, use_ids=True)
    g = torch.Generator().manual_seed(0)
    tables = TextTables(torch.randn(V + 1, cfg.lm_dim, generator=g), torch.ones(V + 1, dtype=torch.bool),
                        torch.randn(C + 1, cfg.lm_dim, generator=g), torch.ones(C + 1, dtype=torch.bool))
    return LSVCRRecommender(LSVCRSR(cfg), cat, tables, device=device)


def world_requests(path: str):
    """(catalogue, full event log, each request's user row and time) of a stored world."""
    from harness.logs.store import LogStore
    from models.histories import _seconds, prepare_data

    with LogStore.open(Path(path)) as store:
        tables = store.tables()
    prep = prepare_data(tables)
    log = prep.splits.full
    req = tables["requests"].select(["user_id", "ts"]).to_pandas()
    rows, times = log.user_rows(req["user_id"].to_numpy()), _seconds(req["ts"])
    ok = rows >= 0
    return prep.catalogue, log, rows[ok], times[ok]


def world_workload(world, users: int, C: int, seed: int = 0) -> list[tuple[UserHistories, VideoQuery]]:
    """Batches of 32 sampled users of `world_requests`: full histories, one query per logged request
    (padded queries have time -inf and no candidates)."""
    cat, log, rows, times = world
    rng = np.random.default_rng(seed)
    pick = rng.choice(np.unique(rows), size=min(users, len(np.unique(rows))), replace=False)
    per_user = {int(u): np.sort(times[rows == u]) for u in pick}
    order = sorted(per_user, key=lambda u: len(per_user[u]))
    g = torch.Generator().manual_seed(seed)
    batches = []
    for i in range(0, len(order), 32):
        chunk = order[i:i + 32]
        Q = max(len(per_user[u]) for u in chunk)
        qt = torch.full((len(chunk), Q), float("-inf"), dtype=torch.float64)
        cands = torch.randint(1, cat.n_videos + 1, (len(chunk), Q, C), generator=g)
        for b, u in enumerate(chunk):
            n = len(per_user[u])
            qt[b, :n] = torch.from_numpy(per_user[u])
            cands[b, n:] = 0
        batches.append((log.histories(chunk), VideoQuery(qt, cands)))
    return batches


def n_requests(q: VideoQuery) -> int:
    return int((q.candidates[..., 0] > 0).sum())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=256)
    ap.add_argument("--events", type=int, default=200)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--naive-users", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", default="base,lsvcr")
    ap.add_argument("--world", default=None, help="a stored world (harness simulate --out): score its own "
                    "histories and logged requests instead of the synthetic workload")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    V = 3000
    torch.manual_seed(0)
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    out: dict = {"bench": "scoring", "device": a.device, "threads": torch.get_num_threads(), "users": a.users,
                 "candidates": a.candidates}
    if a.world:
        world = world_requests(a.world)
        wcat = world[0]
        V = wcat.n_videos
        work = world_workload(world, a.users, a.candidates)
        naive_work = world_workload(world, a.naive_users, a.candidates, seed=1)
        n_req = sum(n_requests(q) for _, q in work)
        n_ev = sum(int((h.video_ids > 0).sum()) for h, _ in work)
        out.update(workload=f"world {a.world}", requests=n_req, requests_per_user=round(n_req / a.users, 1),
                   events_per_user=round(n_ev / a.users, 1))
    else:
        wcat = None
        out.update(workload="synthetic", events_per_user=a.events, requests_per_user=a.requests)
        n_req = a.users * a.requests
    x = torch.randn(2048, 2048, device=a.device)
    t_mm = timed(lambda: (x @ x, sync()))
    peak = 2 * 2048 ** 3 / t_mm
    out["matmul_fp32_gflops"] = round(peak / 1e9, 2)
    for name in a.models.split(","):
        if name == "base":
            cat = wcat or Catalogue(np.arange(1, V + 1), [None] * (V + 1), np.zeros(0), np.zeros(1), [None],
                                    np.zeros(V + 1))
            cfg = SASRecConfig(V)
            rec = SASRecRecommender(SASRec(cfg), cat, device=a.device)
        elif name == "lsvcr":
            rec = lsvcr_adapter(V, a.device, wcat)
        else:
            raise SystemExit(f"unknown model {name!r}: use base and/or lsvcr")
        comments = name == "lsvcr"
        if wcat is None:
            work = [batch(a.users, a.events, a.requests, V, a.candidates, comments=comments)]
            naive_work = [batch(a.naive_users, a.events, a.requests, V, a.candidates, comments=comments)]

        def fast(rec=rec, work=work):
            with torch.no_grad():
                for hist, q in work:
                    rec.score_videos(hist, q)
            sync()

        t_fast = timed(fast, repeat=5)
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
        with torch.no_grad():
            t_naive = timed(lambda rec=rec, nw=naive_work: ([rec.score_videos_naive(nh, nq) for nh, nq in nw], sync()),
                            repeat=3)
            for nh, nq in naive_work:
                torch.testing.assert_close(rec.score_videos(nh, nq), rec.score_videos_naive(nh, nq),
                                           rtol=1e-4, atol=1e-4)
        fast_rps = n_req / t_fast
        naive_rps = sum(n_requests(nq) for _, nq in naive_work) / t_naive
        res = {"one_pass_requests_per_s": round(fast_rps, 1), "naive_requests_per_s": round(naive_rps, 1),
               "speedup": round(fast_rps / naive_rps, 1),
               "counted_gflop": round(counted / 1e9, 3), "achieved_gflops": round(counted / t_fast / 1e9, 2),
               "fraction_of_matmul": round(counted / t_fast / peak, 4)}
        if name == "base":
            # windows actually encoded by the one-pass path: the distinct reading windows of the queries
            n_win = n_read = 0
            for hist, q in work:
                last = (visible_count(hist.video_time, q.time) - 1).clamp(min=0)
                last = torch.minimum(last, hist.lengths()[:, None] - 1).clamp(min=0)
                w = reading_window(last, cfg.max_len)
                for b in range(w.shape[0]):
                    live = q.candidates[b, :, 0] > 0
                    n_win += len(torch.unique(w[b][live]))
                    n_read += len(torch.unique(last[b][live]))  # a distinct event is read from one window
            achieved = flops(cfg, n_win, n_read, n_req, a.candidates) / t_fast
            res.update(windows_per_user=round(n_win / a.users, 1), read_positions_per_user=round(n_read / a.users, 1),
                       analytic_gflop=round(flops(cfg, n_win, n_read, n_req, a.candidates) / 1e9, 3),
                       analytic_achieved_gflops=round(achieved / 1e9, 2))
        out[name] = res
    print(json.dumps(out))


if __name__ == "__main__":
    main()
