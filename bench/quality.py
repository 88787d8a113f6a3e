"""Offline ranking quality of base, pop, LSVCR and its ablations over seeds; prints one JSON line.

    python bench/quality.py                                   # default world, base + pop, seeds 0,1,2
    python bench/quality.py --models base,pop,lsvcr,no_align,no_comments,no_text --seeds 0
    python bench/quality.py --data /tmp/world0 --lsvcr-budget 900 --threads 1
    python bench/quality.py --movielens /tmp/recbole/recbole-1.2.1-py3-none-any.whl --seeds 0

Protocol: leave-one-out by time, 100 stored candidates for videos (target + 99 uniform negatives),
comment candidates per docs/lsvcr-method.md; test split; mean and std (ddof=1 when >1 seed) over training seeds.
The evaluation candidates are the same for every model and seed (seed 0). `base` and `pop` rank
comments by like count (the production rule; neither has a comment model).

Budgets: `base` trains up to `--epochs` epochs with early stopping (`--patience`, 5) and, when given,
`--base-budget` seconds; each LSVCR model gets `--lsvcr-budget` seconds for the whole pipeline
(`train_lsvcr(time_budget_s=...)`: stage 1 a share, stage 2 the rest, both stopped at step granularity,
the best validated epoch kept; 0 = no budget, early stopping alone decides). The pre-trained LM's
embedding of the catalogue is cached in the work folder and shared by every LSVCR run.

Gap checks (issue 4): LSVCR beats base on NDCG@10 by >= 5% relative on both tasks, and every ablation
sits below full LSVCR; a gap "exceeds 2 std" when mean difference > 2 sqrt(s_a^2 + s_b^2) (the std of
the difference of two independent runs); with one seed the std test is reported as null (unknown).
A per-run log (one line per trained model, with timings and validation figures) goes to stderr.
Every trained model is saved as `<workdir>/<model>-<seed>/`; `--resume` evaluates those that exist
instead of training them again (an interrupted run, or runs trained separately with the same settings).
With `--jobs 2` two runs train at once, one process (and one torch thread) each. When `--data` is a
synthetic world, the output also holds the oracle rankers' NDCG@10 (bench/oracle_ceiling.py): the
headroom the world leaves above the production rules. `--train-users 0.2` trains every model on a
random fifth of the users (the same users for every model and seed) and still evaluates every user:
how the gaps depend on the interactions per video that ID embeddings get.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from models.adapters import load_recommender
from models.evaluation import EvalConfig, evaluate, load_or_sample_candidates
from models.histories import prepare_data
from models.pop import PopRecommender
from models.train_sasrec import TrainConfig, train_sasrec

LSVCR_NAMES = {"lsvcr": None, "no_align": "no_align", "no_comments": "no_comments", "no_text": "no_text"}
ABLATION_NAMES = ("no_align", "no_comments", "no_text")


def err(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load_tables(args) -> tuple[dict, str]:
    if args.movielens:
        from models.movielens import load_ml100k

        return load_ml100k(args.movielens), "movielens-100k"
    if args.data:
        from harness.logs.store import LogStore

        with LogStore.open(Path(args.data)) as s:
            return s.tables(), str(args.data)
    from harness.simulate.config import WorldConfig
    from harness.simulate.generate import generate

    _, tables, _ = generate(WorldConfig())
    return tables, "synthetic-default"


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
        for abl in ABLATION_NAMES:
            r = results.get(abl, {}).get(task)
            if r is not None:
                checks[f"lsvcr_vs_{abl}_{task}"] = _gap(full[metric], r[metric], None)
    return checks


_WORKER: dict = {}


def _setup(args: argparse.Namespace) -> tuple:
    """Tables, prepared data and stored candidates, once per process."""
    if "prep" not in _WORKER:
        torch.set_num_threads(args.threads)
        tables, source = load_tables(args)
        prep = prepare_data(tables)
        if args.train_users < 1.0:
            prep = _subsample_training_users(prep, args.train_users)
        work = Path(args.workdir)
        _WORKER.update(prep=prep, source=source, work=work,
                       cands=load_or_sample_candidates(prep.splits, prep.catalogue, work, EvalConfig(seed=0)))
    return _WORKER["prep"], _WORKER["cands"], _WORKER["work"]


def _subsample_training_users(prep, fraction: float):
    """Train on the events of a random `fraction` of users only (seed 0, the same for every model):
    fewer interactions per video, so ID embeddings learn less and text has more to add. Validation and
    test targets, and the histories read at evaluation, stay those of every user."""
    import dataclasses

    train = prep.splits.train
    keep = np.random.default_rng(0).random(train.n_users) < fraction
    train = train.head(np.where(keep, train.n_video_events(), 0), np.where(keep, train.n_comment_records(), 0))
    return dataclasses.replace(prep, splits=dataclasses.replace(prep.splits, train=train))


def run_one(args: argparse.Namespace, name: str, seed: int) -> tuple[dict, dict]:
    """Train (or fit) one model with one seed and evaluate it on the test split."""
    prep, cands, work = _setup(args)
    t = time.perf_counter()
    info: dict = {"model": name, "seed": seed}
    folder = work / f"{name}-{seed}"
    if name == "pop":
        rec = PopRecommender.fit(prep.splits.train, prep.catalogue)
    elif args.resume and (folder / "config.json").exists():  # a finished run of an interrupted bench
        rec = load_recommender(folder, catalogue=prep.catalogue, device=args.device)
        info |= _run_info(json.loads((folder / "config.json").read_text())["training_metrics"]) | {"resumed": True}
    elif name == "base":
        res = train_sasrec(prep.splits, prep.catalogue, cands,
                           config=TrainConfig(epochs=args.epochs, seed=seed, device=args.device,
                                              patience=args.patience, progress=False,
                                              max_seconds=args.base_budget),
                           log=lambda s, sd=seed: err(f"  base/{sd}: {s}"))
        rec = res.recommender
        rec.save(folder, data_fingerprint=prep.splits.full.fingerprint(), seed=seed, metrics=res.metrics())
        info |= _run_info(res.metrics())
    else:
        from models.lsvcr.config import LSVCRConfig
        from models.lsvcr.train import train_lsvcr

        cfg = LSVCRConfig()
        cfg.stage2.patience = args.patience
        folder = train_lsvcr(None, folder, ablation=LSVCR_NAMES[name], seed=seed, config=cfg,
                             device=args.device, catalogue=prep.catalogue, splits=prep.splits,
                             epochs=args.epochs, candidates_dir=work, cache_dir=work / ".lsvcr-cache",
                             time_budget_s=args.lsvcr_budget or None, progress=False,
                             log=lambda s, n=name, sd=seed: err(f"  {n}/{sd}: {s}"))
        rec = load_recommender(folder, catalogue=prep.catalogue, device=args.device)
        info |= _run_info(json.loads((folder / "config.json").read_text())["training_metrics"])
    rec.name = name
    metrics: dict = {}
    for r in evaluate(rec, prep.splits, cands, prep.catalogue, split="test"):
        if r.n_queries == 0:  # e.g. no comment data (MovieLens): no task to report
            continue
        metrics[r.task] = r.metrics
        info[f"test_{r.task}_ndcg@10"] = r.metrics["ndcg@10"]
    info["seconds"] = round(time.perf_counter() - t, 1)
    err("run " + json.dumps(info, default=lambda x: round(x, 4) if isinstance(x, float) else str(x)))
    return info, metrics


def _run_info(m: dict) -> dict:
    """The per-run log fields of a checkpoint's training metrics (base or LSVCR)."""
    keys = ("best_epoch", "pretrained_embedding_s", "stage1_s", "stage2_s", "total_s", "valid_video_ndcg@5",
            "valid_comment_ndcg@5")
    out = {k: m[k] for k in keys if k in m}
    if "best_valid_ndcg@5" in m:  # base
        out["valid_video_ndcg@5"] = m["best_valid_ndcg@5"]
    out["epochs_run"] = len(m.get("epochs", []))
    return out


def _warm_text_cache(args: argparse.Namespace) -> None:
    """Embed the catalogue with the pre-trained LM once, before parallel LSVCR jobs would each do it."""
    from models.lsvcr.config import LSVCRConfig
    from models.lsvcr.llm import load_llm
    from models.lsvcr.stage1 import stage1_boundary_layer
    from models.lsvcr.text import cached_catalogue_embedding_and_boundary

    prep, _, work = _setup(args)
    t = time.perf_counter()
    lm, cfg = load_llm(None, device=args.device), LSVCRConfig().stage1
    # the same key as train_lsvcr's: final embeddings plus the states entering the tuned top blocks
    cached_catalogue_embedding_and_boundary(lm, prep.catalogue, work / ".lsvcr-cache",
                                            boundary_layer=stage1_boundary_layer(lm, cfg),
                                            max_tokens=cfg.text_max_tokens, batch_size=cfg.embed_batch)
    err(f"pre-trained text cache ready in {time.perf_counter() - t:.1f} s")


def _watch_parent(parent: int) -> None:
    """Worker initializer: exit when the main process is gone (killed), instead of training on as an orphan."""
    import os
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def oracle_ceiling(args: argparse.Namespace) -> dict | None:
    """The oracle rankers of bench/oracle_ceiling.py on the same candidates, when --data is a world."""
    if not args.data:
        return None
    import contextlib
    import io

    from oracle_ceiling import main as ceiling_main  # bench/ is on sys.path when this script runs

    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            ceiling_main(["--data", args.data, "--workdir", str(args.workdir)])
    except (FileNotFoundError, ValueError, KeyError) as e:  # not a synthetic world: no oracle
        err(f"no oracle ceiling: {e}")
        return None
    res = json.loads(buf.getvalue())
    return {task: {name: v["ndcg@10"] for name, v in res[task].items() if isinstance(v, dict)}
            for task in ("video", "comment")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="base,pop", help="comma list of base, pop, lsvcr, no_align, no_comments, no_text")
    ap.add_argument("--seeds", default="0,1,2", help="comma list of training seeds")
    ap.add_argument("--epochs", type=int, default=50, help="max epochs (base and LSVCR stage 2)")
    ap.add_argument("--patience", type=int, default=5,
                    help="early stopping: epochs without a better validation NDCG@5 (base and LSVCR stage 2)")
    ap.add_argument("--base-budget", type=float, default=None, help="seconds for base's training (default: none)")
    ap.add_argument("--lsvcr-budget", type=float, default=540.0,
                    help="seconds for each LSVCR pipeline (0 = none: early stopping alone decides)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads per job (1 is fastest on a contended 2-core machine: 2 ran 4x slower)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="runs trained at once, one process each (2 on 2 cores: wall-clock budgets then "
                         "hold per run, each on its own core)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--train-users", type=float, default=1.0,
                    help="train on this fraction of users' events (0-1], evaluate on every user: how the "
                    "gaps depend on interactions per video")
    ap.add_argument("--movielens", help="RecBole ml-100k .inter file or the recbole wheel")
    ap.add_argument("--data", help="logs folder / .duckdb instead of the default synthetic world")
    ap.add_argument("--workdir", help="where checkpoints, candidates and the LM cache go (default: a temp folder)")
    ap.add_argument("--resume", action="store_true", help="evaluate the checkpoints already in --workdir "
                    "(`<model>-<seed>/`, e.g. of an interrupted run) instead of training them again")
    args = ap.parse_args()
    t0 = time.perf_counter()
    args.workdir = str(Path(args.workdir or tempfile.mkdtemp(prefix="bench-quality-")))
    if not 0.0 < args.train_users <= 1.0:
        raise SystemExit(f"--train-users must be in (0, 1], got {args.train_users}")
    seeds = [int(s) for s in args.seeds.split(",")]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in ("base", "pop", *LSVCR_NAMES)]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; known: base, pop, {', '.join(LSVCR_NAMES)}")
    prep, _, work = _setup(args)
    # checkpoints record the full log's fingerprint, which subsampling does not change: a marker keeps
    # --resume from mixing models trained on different fractions of the users in one work folder
    marker = work / "train_users.json"
    held = json.loads(marker.read_text())["train_users"] if marker.exists() else args.train_users
    if held != args.train_users:
        raise SystemExit(f"{work} holds models trained with --train-users {held}, not {args.train_users}: "
                         "use another --workdir")
    marker.write_text(json.dumps({"train_users": args.train_users}))
    source = _WORKER["source"]
    err(f"data {source}: {prep.splits.full.n_users} users, {prep.catalogue.n_videos} videos; work {work}")
    if any(m in LSVCR_NAMES and m != "no_text" for m in models):
        _warm_text_cache(args)
    # longest runs first, so parallel jobs finish together
    cost = {"lsvcr": 0, "no_comments": 1, "no_align": 2, "no_text": 3, "base": 4, "pop": 5}
    jobs = sorted(((m, s) for m in models for s in seeds), key=lambda j: (cost[j[0]], j[1]))
    if args.jobs > 1:
        import multiprocessing as mp
        import os
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn"), initializer=_watch_parent,
                                 initargs=(os.getpid(),)) as ex:
            done = list(ex.map(run_one, [args] * len(jobs), [m for m, _ in jobs], [s for _, s in jobs]))
    else:
        done = [run_one(args, m, s) for m, s in jobs]
    per: dict[tuple[str, str], dict[str, list[float]]] = {}
    runs: list[dict] = []
    for info, metrics in done:
        runs.append(info)
        for task, mt in metrics.items():
            d = per.setdefault((info["model"], task), {})
            for k, v in mt.items():
                d.setdefault(k, []).append(v)
    out: dict = {"bench": "quality", "data": source, "seeds": seeds, "threads": args.threads, "jobs": args.jobs,
                 "lsvcr_budget_s": args.lsvcr_budget, "base_budget_s": args.base_budget,
                 "train_users": args.train_users, "train_video_events": int(prep.splits.train.n_video_events().sum()),
                 "n_users": prep.splits.full.n_users, "n_videos": prep.catalogue.n_videos, "results": {}}
    for (name, task), d in per.items():
        out["results"].setdefault(name, {})[task] = {
            k: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, "n": len(v)}
            for k, v in d.items()}
    out["checks"] = gap_checks(out["results"])
    out["oracle_ndcg@10"] = oracle_ceiling(args)
    out["runs"] = runs
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
