"""One thread against every core for the models' steps, beside the probe `--threads auto` times; one JSON line.

    python bench/threads.py [--repeat 5] [--users 64]

In one process, alternating the thread counts so both see the same load: the probe of `models/threads.py`;
a `base` (SASRec) training step (forward, full-softmax loss over the catalogue, backward, Adam) on a batch
of windows; `base` and LSVCR one-pass scoring of a synthetic batch (bench/scoring.py's workload: users with
200 events, 20 requests of 100 candidates each; LSVCR randomly initialised with random text tables, since
the cost does not depend on the weights). Best of `--repeat` per case and thread count. The JSON gives the
milliseconds, the speed-up of every core over one per case, whether the probe's choice is each case's
faster count, and the load average at the start and the end: the figure `--threads auto` relies on is
that the probe and the real steps agree.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# bench/analysis.py would shadow the `analysis` package when this script runs as `python bench/...`
sys.path[:] = [x for x in sys.path if Path(x or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
import torch  # noqa: E402


def _cases(users: int) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from scoring import batch, lsvcr_adapter

    from models.adapters import SASRecRecommender
    from models.catalogue import Catalogue
    from models.sasrec import SASRec, SASRecConfig
    from models.threads import _probe

    V = 3000
    cfg = SASRecConfig(n_items=V)
    model = SASRec(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    seq = torch.randint(1, V + 1, (64, cfg.max_len), generator=g)
    target = torch.randint(1, V + 1, (64, cfg.max_len), generator=g)

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        h = model.encode(seq)  # (B, T, d)
        logits = h @ model.item_emb.weight.T
        torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1)).backward()
        opt.step()

    cat = Catalogue(np.arange(1, V + 1), [None] * (V + 1), np.zeros(0), np.zeros(1), [None], np.zeros(V + 1))
    base = SASRecRecommender(SASRec(cfg), cat)
    hist, query = batch(users, 200, 20, V, 100)
    lsvcr = lsvcr_adapter(V, "cpu")
    lhist, lquery = batch(users, 200, 20, V, 100, comments=True)
    return {"probe": _probe(64, 50, 256, seed=0), "base_train_step": train_step,
            "base_scoring": lambda: base.score_videos(hist, query),
            "lsvcr_scoring": lambda: lsvcr.score_videos(lhist, lquery)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--users", type=int, default=64, help="users of the scoring batches")
    a = ap.parse_args()
    load0 = os.getloadavg()
    cores = os.cpu_count() or 1
    counts = (1, cores)
    cases = _cases(a.users)
    best = {c: dict.fromkeys(counts, float("inf")) for c in cases}
    for name, fn in cases.items():
        for t in counts:  # warm-up at each count
            torch.set_num_threads(t)
            with torch.set_grad_enabled(name in ("probe", "base_train_step")):
                fn()
        for _ in range(a.repeat):
            for t in counts:
                torch.set_num_threads(t)
                with torch.set_grad_enabled(name in ("probe", "base_train_step")):
                    t0 = time.perf_counter()
                    fn()
                    best[name][t] = min(best[name][t], time.perf_counter() - t0)
    probe_pick = min(counts, key=lambda t: best["probe"][t])
    out = {"bench": "threads", "cores": cores, "repeat": a.repeat, "load_avg_start": [round(x, 2) for x in load0],
           "ms": {c: {str(t): round(1000 * v, 2) for t, v in b.items()} for c, b in best.items()},
           "every_core_over_one": {c: round(b[1] / b[cores], 2) for c, b in best.items()},
           "probe_picks": probe_pick,
           "probe_agrees": {c: min(counts, key=lambda t, b=b: b[t]) == probe_pick for c, b in best.items()},
           "load_avg_end": [round(x, 2) for x in os.getloadavg()]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
