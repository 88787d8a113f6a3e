"""Offline ranking quality of base, pop (and LSVCR + ablations) over seeds; prints one JSON line.

    python bench/quality.py                       # default synthetic world, base + pop, seeds 0,1,2
    python bench/quality.py --models base,pop,lsvcr,no_align,no_comments,no_text
    python bench/quality.py --movielens /tmp/recbole/recbole-1.2.1-py3-none-any.whl --seeds 0

Protocol: leave-one-out by time, 100 stored candidates for videos (target + 99 uniform negatives),
comment candidates per LSVCR.md; test split; mean and std (ddof=1 when >1 seed) over training seeds.
The evaluation candidates are the same for every model and seed (seed 0).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from models.evaluation import EvalConfig, evaluate, load_or_sample_candidates
from models.histories import prepare_data
from models.pop import PopRecommender
from models.train_sasrec import TrainConfig, train_sasrec

LSVCR_NAMES = {"lsvcr": None, "no_align": "no_align", "no_comments": "no_comments", "no_text": "no_text"}


def load_tables(args) -> tuple[dict, str]:
    if args.movielens:
        from models.movielens import load_ml100k

        return load_ml100k(args.movielens), "movielens-100k"
    if args.data:
        from harness.logs.store import LogStore

        with LogStore.open(Path(args.data)) as s:
            return {n: s.table(n) for n in ("videos", "comments", "requests", "impressions",
                                            "comment_impressions")}, str(args.data)
    from harness.simulate.config import WorldConfig
    from harness.simulate.generate import generate

    _, tables, _ = generate(WorldConfig())
    return tables, "synthetic-default"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="base,pop")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--movielens", help="RecBole ml-100k .inter file or the recbole wheel")
    ap.add_argument("--data", help="logs folder / .duckdb instead of the default synthetic world")
    ap.add_argument("--workdir", help="where checkpoints and candidates go (default: a temporary folder)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    tables, source = load_tables(args)
    prep = prepare_data(tables)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-quality-"))
    cands = load_or_sample_candidates(prep.splits, prep.catalogue, work, EvalConfig(seed=0))
    seeds = [int(s) for s in args.seeds.split(",")]
    per: dict[tuple[str, str], dict[str, list[float]]] = {}
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        for seed in seeds:
            if name == "pop":
                rec = PopRecommender.fit(prep.splits.train, prep.catalogue)
            elif name == "base":
                rec = train_sasrec(prep.splits, prep.catalogue, cands,
                                   config=TrainConfig(epochs=args.epochs, seed=seed, device=args.device,
                                                      progress=False), log=lambda s: None).recommender
            elif name in LSVCR_NAMES:
                from models.adapters import load_recommender
                from models.lsvcr.train import train_lsvcr

                folder = train_lsvcr(None, work / f"{name}-{seed}", ablation=LSVCR_NAMES[name], seed=seed,
                                     device=args.device, catalogue=prep.catalogue, splits=prep.splits,
                                     candidates_dir=work, progress=False, log=lambda s: None)
                rec = load_recommender(folder, catalogue=prep.catalogue, device=args.device)
            else:
                raise SystemExit(f"unknown model {name!r}")
            rec.name = name
            for r in evaluate(rec, prep.splits, cands, prep.catalogue, split="test"):
                if r.n_queries == 0:  # e.g. no comment data (MovieLens): no task to report
                    continue
                d = per.setdefault((name, r.task), {})
                for m, v in r.metrics.items():
                    d.setdefault(m, []).append(v)
    out = {"bench": "quality", "data": source, "seeds": seeds, "n_users": prep.splits.full.n_users,
           "n_videos": prep.catalogue.n_videos, "results": {}}
    for (name, task), d in per.items():
        out["results"].setdefault(name, {})[task] = {
            m: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0}
            for m, v in d.items()}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
