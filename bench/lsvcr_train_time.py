"""Wall-clock time of the full LSVCR pipeline (pre-embedding, stage 1, stage 2) on the default world.

    python bench/lsvcr_train_time.py                         # simulate the default world (in memory)
    python bench/lsvcr_train_time.py --data /tmp/world0 --threads 1 --budget 600
    python bench/lsvcr_train_time.py --data /tmp/world0 --cache /tmp/lm-cache   # reuse the LM embedding

Prints one JSON line: seconds per phase (pre-trained embedding of the catalogue, stage 1, stage 2,
total), stage-2 epochs run and the best one, validation NDCG@5 of both tasks, torch threads, and the
machine's 1-minute load average at start and end (the machine may be shared: a load above the core
count means the figures are slower than on free cores). Without `--cache` the pre-trained embedding
is computed from scratch (a fresh temporary cache), as on a new world.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="logs folder of a world (default: simulate the default world, seed 0)")
    ap.add_argument("--seed", type=int, default=0, help="training seed")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: fastest when contended)")
    ap.add_argument("--budget", type=float, default=540.0, help="time_budget_s of train_lsvcr (whole pipeline)")
    ap.add_argument("--cache", help="LM embedding cache folder (default: a fresh one, i.e. a cold start)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (checkpoint) instead of deleting it")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="bench-lsvcr-time-"))
    from models.histories import prepare_data
    from models.lsvcr.train import train_lsvcr

    t0 = time.perf_counter()
    if args.data:
        from harness.logs.store import LogStore

        with LogStore.open(Path(args.data)) as s:
            tables = s.tables()
    else:  # the default world (`harness simulate` defaults, seed 0), generated in memory
        from harness.simulate.config import WorldConfig
        from harness.simulate.generate import generate

        _, tables, _ = generate(WorldConfig())
    prep = prepare_data(tables)
    prep_s = time.perf_counter() - t0
    logs: list[str] = []
    folder = train_lsvcr(None, tmp / "lsvcr", seed=args.seed, device=args.device, catalogue=prep.catalogue,
                         splits=prep.splits, cache_dir=Path(args.cache) if args.cache else tmp / "cache",
                         time_budget_s=args.budget, progress=False,
                         log=lambda m: (logs.append(m), print(m, file=sys.stderr, flush=True)))
    m = json.loads((folder / "config.json").read_text())["training_metrics"]
    out = {"bench": "lsvcr_train_time", "data": str(args.data or "synthetic-default (simulated)"),
           "threads": args.threads, "budget_s": args.budget, "cache": "warm" if args.cache else "cold",
           "load_and_prepare_s": round(prep_s, 1),
           **{k: round(float(m.get(k, 0.0)), 1) for k in ("pretrained_embedding_s", "stage1_s", "stage2_s", "total_s")},
           "stage2_epochs_run": len(m.get("epochs", [])), "best_epoch": m.get("best_epoch"),
           "stage2_epoch_s": [round(e.get("seconds", float("nan")), 1) for e in m.get("epochs", [])],
           "valid_video_ndcg@5": m.get("valid_video_ndcg@5"), "valid_comment_ndcg@5": m.get("valid_comment_ndcg@5"),
           "load_avg_start": round(load0[0], 2), "load_avg_end": round(os.getloadavg()[0], 2),
           "cpu_count": os.cpu_count()}
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
