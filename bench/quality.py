"""Offline ranking quality of base, pop, LSVCR and its ablations over seeds; prints one JSON line.

    python bench/quality.py                                   # default world, base + pop, seeds 0,1,2
    python bench/quality.py --models base,pop,lsvcr,no_align,no_comments,no_text --seeds 0
    python bench/quality.py --data /tmp/world0 --lsvcr-budget 900 --threads 1
    python bench/quality.py --data data/world --protocol temporal --until experiment-start \
        --models base,pop,lsvcr,lsvcr_no_prior,lsvcr_video,lsvcr_comment,no_align,no_comments,no_text
    python bench/quality.py --movielens /tmp/recbole/recbole-1.2.1-py3-none-any.whl --seeds 0

Protocols (docs/models.md "Evaluation protocols"), the test split; mean and std (ddof=1 when >1 seed)
over training seeds; the evaluation candidates are the same for every model and seed (seed 0):
- `leave_one_out` (default): each user's last events, 100 stored candidates for videos (target + 99
  uniform negatives), comment candidates per docs/lsvcr-method.md.
- `temporal` (`--until CUT`, needs `--data`): what `harness train --until CUT` and `harness evaluate
  --protocol temporal --until CUT` do, through the same calls: every model trains on the requests before
  the cut only (the tables `harness.cli.models_cmd._read_logs` cuts, its validation split inside them;
  each checkpoint records that `training_data` and is refused at evaluation without it), and is scored
  on up to `--queries-per-user` events per user and task after the cut (`models.protocols`: negatives
  among the videos published by the query time, like counts as of it), on all queries and on the warm
  and cold slices (cold: the target, or the watched video, published after the cut).
`base` and `pop` rank comments by like count (the production rule; neither has a comment model).
`lsvcr_no_prior` is LSVCR without the like-count prior on comment scores (the paper's comment tower).
`lsvcr_video` and `lsvcr_comment` are one stage-2 model per task (the paper's choice; `Stage2Config.task`),
fine-tuned from the joint model's stage 1 of the same seed when it is in the work folder, each evaluated
on its own task; together they are reported as `lsvcr_per_task`, which the joint `lsvcr` must at least
match on both tasks to be kept.

Budgets: `base` trains up to `--epochs` epochs with early stopping (`--base-patience`, else `--patience`,
5) and, when given, `--base-budget` seconds; each LSVCR model gets `--lsvcr-budget` seconds for the whole pipeline
(`train_lsvcr(time_budget_s=...)`: stage 1 a share, stage 2 the rest, both stopped at step granularity,
the best validated epoch kept; 0 = no budget, early stopping alone decides). The pre-trained LM's
embedding of the catalogue is cached in the work folder and shared by every LSVCR run and protocol.

Gap checks (issue 4): LSVCR beats base on NDCG@10 by >= 5% relative on both tasks, and every ablation
(and lsvcr_no_prior) sits below full LSVCR; a gap "exceeds 2 std" when mean difference > 2 sqrt(s_a^2 +
s_b^2) (the std of the difference of two independent runs); with one seed the std test is null (unknown).
Paired intervals (`paired`, issue 14): LSVCR against base, each ablation and lsvcr_no_prior, per task and
slice, on the same queries: each query's NDCG@10 difference averaged over the seeds both models ran, then
its mean with a normal 95% interval, the standard error clustered by user (bench/protocols.py's
`clustered`: a user's temporal queries are not independent; under leave-one-out, one query per user and
task, it is the plain paired standard error). It reflects which queries were drawn and the seed noise left
after averaging, not a between-seed variance component: the std test above covers seeds.

A per-run log (one line per trained model, with timings and validation figures) goes to stderr.
Every trained model is saved as `<workdir>/<protocol folder>/<model>-<seed>/` (`leave_one_out/`, or
`temporal-<cut>/`), the stored candidates beside them; `--resume` evaluates those that exist instead of
training them again (an interrupted run, or runs trained separately with the same settings), never a
checkpoint of the other protocol or cut; an LSVCR run killed after its stage 1 fine-tunes from that stage 1,
and one killed in stage 2 (or base killed in training) continues from its last finished epoch
(`<model>-<seed>.stage2-state.safetensors` / `.train-state.safetensors`, models/training_loop.py), ending
with the checkpoint a run that never stopped would have saved. `--results DIR` also keeps each finished
run's result as small JSON (`DIR/<protocol folder>/<model>-<seed>.json`: its figures and each query's
NDCG@10, keyed by the data, the test queries' content and the training settings); with `--resume` a later
call takes those as they are and trains only the rest, so a table longer than one machine's life (the
work folder's checkpoints do not outlive it) is finished across several; a stored result whose key differs
is refused by name. The key holds data and settings, not code: the output's `code` lists the commit that
trained each run and the training-code files (models/, this script) changed since each. With `--jobs 2` two runs train at once, one process (and one
torch thread) each. Under leave-one-out, when `--data` is a synthetic world, the output also holds the
oracle rankers' NDCG@10 (bench/oracle_ceiling.py): the headroom the world leaves above the production
rules. `--train-users 0.2` trains every model on a random fifth of the users (the same users for every
model and seed) and still evaluates every user: how the gaps depend on the interactions per video that ID
embeddings get.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

# bench/analysis.py would shadow the `analysis` package that harness.cli imports (the script's folder comes
# first on sys.path); bench/'s own modules (oracle_ceiling, protocols) stay importable behind the root
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quality_parts.compare import gap_checks, paired_intervals, stats  # noqa: E402

from models.adapters import load_recommender  # noqa: E402
from models.checkpoint import environment  # noqa: E402
from models.evaluation import EvalConfig, evaluate, load_or_sample_candidates  # noqa: E402
from models.histories import prepare_data  # noqa: E402
from models.metrics import METRICS  # noqa: E402
from models.pop import PopRecommender  # noqa: E402
from models.protocols import SLICES  # noqa: E402
from models.train_sasrec import TrainConfig, train_sasrec, train_state_path  # noqa: E402

# model name -> (ablation, comment_prior, stage-2 task) of train_lsvcr
LSVCR_NAMES = {"lsvcr": (None, True, "both"), "no_align": ("no_align", True, "both"),
               "no_comments": ("no_comments", True, "both"), "no_text": ("no_text", True, "both"),
               "lsvcr_no_prior": (None, False, "both"), "lsvcr_video": (None, True, "video"),
               "lsvcr_comment": (None, True, "comment")}
# one stage-2 model per task (the paper's choice): each is evaluated on its own task, and the pair is
# reported as `lsvcr_per_task` (video from lsvcr_video, comment from lsvcr_comment)
PER_TASK = {"lsvcr_video": "video", "lsvcr_comment": "comment"}
PROTOCOLS = ("leave_one_out", "temporal")
SLICE_METRICS = ("ndcg@10", "recall@10")


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


def evaluate_per_query(rec, prep, cands, tasks: tuple[str, ...] = ("video", "comment")
                       ) -> tuple[dict, dict[str, np.ndarray]]:
    """`models.evaluation.evaluate` on the test split as {task: {slice: {metric: mean, "queries": n}}} (slices
    all, warm and cold under the temporal protocol, all under leave-one-out; an empty slice's means are
    null), and each query's NDCG@10 ({task: (N,)}, the stored candidates' row order) for the paired
    intervals; a task without data (MovieLens has no comments) is left out."""
    means: dict = {}
    ndcg: dict[str, np.ndarray] = {}
    for r in evaluate(rec, prep.splits, cands, prep.catalogue, split="test", tasks=tasks, metrics=METRICS,
                      per_query=True):
        if r.slice == "all" and r.per_query is None:  # no queries of this task at all
            continue
        means.setdefault(r.task, {})[r.slice] = {k: (None if np.isnan(v) else v) for k, v in r.metrics.items()} | {
            "queries": r.n_queries}
        if r.per_query is not None:
            ndcg[r.task] = r.per_query["ndcg@10"]
    return means, ndcg


_WORKER: dict = {}


def protocol_folder(args: argparse.Namespace, cut: np.datetime64 | None) -> Path:
    """Where one protocol's checkpoints and candidates go: `leave_one_out/`, or `temporal-<cut>/`."""
    if cut is None:
        return Path(args.workdir) / "leave_one_out"
    return Path(args.workdir) / ("temporal-" + str(cut).removesuffix(".000000").replace(":", ""))


def _setup(args: argparse.Namespace) -> dict:
    """Once per process: the data models train on (`train`, with its leave-one-out candidates `train_cands`
    for validation) and the data and candidates they are evaluated on (`eval`, `eval_cands`): the same
    under leave-one-out; under the temporal protocol, the tables before the cut and the temporal splits."""
    if "train" not in _WORKER:
        torch.set_num_threads(args.threads)
        if args.protocol == "temporal":
            _WORKER.update(_temporal_setup(args))
        else:
            tables, source = load_tables(args)
            prep = prepare_data(tables)
            folder = protocol_folder(args, None)
            cands = load_or_sample_candidates(prep.splits, prep.catalogue, folder, EvalConfig(seed=0))
            _WORKER.update(train=prep, train_cands=cands, eval=prep, eval_cands=cands, source=source, folder=folder,
                           cut=None, log_fp=None, provenance=None)
        if args.train_users < 1.0:
            _WORKER["train"] = _subsample_training_users(_WORKER["train"], args.train_users)
    return _WORKER


def _temporal_setup(args: argparse.Namespace) -> dict:
    """The tables `harness train --until` trains on and those `harness evaluate --protocol temporal` scores,
    read by the same function (`_read_logs`), and the temporal splits and candidates `evaluate` builds."""
    from harness.cli.models_cmd import _read_logs
    from harness.cli.shared import UserError
    from models.protocols import Temporal, prepare_temporal

    try:
        train_tables, log_fp, provenance = _read_logs(Path(args.data), args.until)
        tables = _read_logs(Path(args.data), args.until, cut=False)[0]
    except UserError as exc:
        raise SystemExit(f"error: {exc}") from None
    cut = np.datetime64(provenance["until"], "us")
    folder = protocol_folder(args, cut)
    train = prepare_data(train_tables)
    del train_tables
    setup_t = Temporal(cut.astype(np.int64) / 1e6, args.queries_per_user, 0)
    prep, setup = prepare_temporal(tables, setup_t)
    return dict(train=train, eval=prep, source=str(args.data), folder=folder, cut=cut, log_fp=log_fp,
                provenance=provenance,
                train_cands=load_or_sample_candidates(train.splits, train.catalogue, folder, EvalConfig(seed=0)),
                eval_cands=load_or_sample_candidates(prep.splits, prep.catalogue, folder, EvalConfig(seed=0), setup))


def _subsample_training_users(prep, fraction: float):
    """Train on the events of a random `fraction` of users only (seed 0, the same for every model):
    fewer interactions per video, so ID embeddings learn less and text has more to add. Validation and
    test targets, and the histories read at evaluation, stay those of every user."""
    import dataclasses

    train = prep.splits.train
    keep = np.random.default_rng(0).random(train.n_users) < fraction
    train = train.head(np.where(keep, train.n_video_events(), 0), np.where(keep, train.n_comment_records(), 0))
    return dataclasses.replace(prep, splits=dataclasses.replace(prep.splits, train=train))


def _window_problem(folder: Path) -> str | None:
    """Under the temporal protocol, why a checkpoint may have trained past the cut (None: it did not), as
    `harness evaluate --protocol temporal` checks; None under leave-one-out."""
    if _WORKER["cut"] is None:
        return None
    from harness.logs.window import events_of, training_window_problem
    from models.checkpoint import read_config

    meta = read_config(folder)
    return training_window_problem(meta.get("training_data"), _WORKER["cut"], _WORKER["log_fp"],
                                   data_fingerprint=meta.get("data_fingerprint"),
                                   events=events_of(Path(_WORKER["source"])))


RESULT_FORMAT = 1


def test_candidates_digest(cands) -> str:
    """sha256 of the test queries' content (users, targets, candidate lists, labels, slices): the stored
    candidates' file key names the data and settings they were drawn from, not what the draw gave."""
    h = hashlib.sha256()
    for task in ("video", "comment"):
        r = cands.rows("test", task)
        cols = [c for c in ("user_id", "time", "video_id", "candidates", "labels", "slice") if c in r.columns]
        h.update(json.dumps([task, cols, r[cols].astype(str).to_numpy().tolist()]).encode())
    return h.hexdigest()


def _test_digest() -> str:
    """test_candidates_digest of this process's evaluation candidates, computed once and only when
    --results asks for a key."""
    if "test_digest" not in _WORKER:
        _WORKER["test_digest"] = test_candidates_digest(_WORKER["eval_cands"])
    return _WORKER["test_digest"]


def run_key(args: argparse.Namespace, name: str, seed: int) -> dict:
    """What a stored result must agree on to stand for this call's run: the data trained and scored on,
    the test queries, and the settings that change what the model learns (threads and device are
    recorded beside it, not keyed: they move results in the last bits only)."""
    w = _WORKER
    key = {"format": RESULT_FORMAT, "model": name, "seed": seed, "protocol": args.protocol,
           "until": None if w["cut"] is None else str(w["cut"]),
           "queries_per_user": args.queries_per_user if w["cut"] is not None else None,
           "train_data": w["train"].splits.full.fingerprint(), "eval_data": w["eval"].splits.full.fingerprint(),
           "catalogue": w["eval"].catalogue.digest(), "train_candidates": w["train_cands"].key,
           "test_candidates": _test_digest(), "train_users": args.train_users}
    if name == "base":
        key |= {"epochs": args.epochs, "patience": args.base_patience or args.patience,
                "budget_s": args.base_budget}
    elif name in LSVCR_NAMES:
        key |= {"epochs": args.epochs, "patience": args.patience, "budget_s": args.lsvcr_budget or None}
    return key


def result_path(args: argparse.Namespace, name: str, seed: int) -> Path:
    return Path(args.results) / _WORKER["folder"].name / f"{name}-{seed}.json"


def stored_result(args: argparse.Namespace, name: str, seed: int) -> tuple[dict, dict, dict[str, np.ndarray]] | None:
    """The run's stored result under `--results` when `--resume` is given and one is there (None
    otherwise); one stored for other data or settings is refused, naming what differs."""
    if not (args.results and args.resume):
        return None
    path = result_path(args, name, seed)
    if not path.exists():
        return None
    stored = json.loads(path.read_text())
    key = run_key(args, name, seed)
    differs = sorted(k for k in key.keys() | stored["key"].keys() if key.get(k) != stored["key"].get(k))
    if differs:
        raise SystemExit(f"{path} holds a result for other data or settings (differs in: {', '.join(differs)}); "
                         "run without --resume to measure it again, or give another --results folder")
    info = stored["info"] | {"stored": True, "commit": stored["recorded"].get("commit")}
    return info, stored["metrics"], {t: np.asarray(v, dtype=np.float64) for t, v in stored["per_query"].items()}


def _git(*argv: str) -> str | None:
    try:
        return subprocess.run(["git", *argv], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def code_provenance(runs: list[dict]) -> dict:
    """Which commit trained each run, and which files of the training code (models/, bench/quality.py)
    differ between each stored run's commit and this checkout's: the stored key holds data and settings,
    not code, so a table assembled across sessions says here whether its runs shared their code."""
    head = _git("rev-parse", "HEAD")
    by_commit: dict[str, list[str]] = {}
    for r in runs:
        by_commit.setdefault(r.get("commit") or head or "unknown", []).append(f"{r['model']}/{r['seed']}")
    diffs = {c: _git("diff", "--name-only", c, "HEAD", "--", "models", "bench/quality.py")
             for c in by_commit if c not in (head, "unknown")}
    changed = {c: None if d is None else d.split() for c, d in diffs.items()}  # None: commit not in this clone
    return {"head": head, "runs_by_commit": by_commit, "training_code_changed_since": changed}


def store_result(args: argparse.Namespace, name: str, seed: int, info: dict, metrics: dict,
                 per_query: dict[str, np.ndarray]) -> None:
    """Write one finished run's result under `--results`, atomically: small JSON (each query's NDCG@10
    in full precision, for the paired intervals) that outlives the work folder's checkpoints, so a table
    that takes longer than one machine's life can be finished across several."""
    if not args.results:
        return
    path = result_path(args, name, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"key": run_key(args, name, seed), "info": info, "metrics": metrics,
           "per_query": {t: v.tolist() for t, v in per_query.items()},
           "recorded": {"threads": args.threads, "device": args.device, "commit": _git("rev-parse", "HEAD"),
                        "at": time.strftime("%Y-%m-%dT%H:%M:%S"), "environment": environment()}}
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(doc, default=lambda x: x.item() if hasattr(x, "item") else str(x)) + "\n")
    os.replace(tmp, path)


def run_one(args: argparse.Namespace, name: str, seed: int) -> tuple[dict, dict, dict[str, np.ndarray]]:
    """Train (or fit) one model with one seed and evaluate it on the test split: the run's log line, the
    metrics per task and slice, and the per-query NDCG@10 per task."""
    w = _setup(args)
    prep, cands = w["train"], w["train_cands"]
    t = time.perf_counter()
    info: dict = {"model": name, "seed": seed}
    folder = w["folder"] / f"{name}-{seed}"
    resumable = args.resume and name != "pop" and (folder / "config.json").exists()
    problem = _window_problem(folder) if resumable else None
    if problem:
        err(f"  {name}/{seed}: not resumed, training again: {folder} {problem}")
    if name == "pop":
        rec = PopRecommender.fit(prep.splits.train, prep.catalogue)
    elif resumable and not problem:  # a finished run of an interrupted bench
        rec = load_recommender(folder, catalogue=prep.catalogue, device=args.device)
        info |= _run_info(json.loads((folder / "config.json").read_text())["training_metrics"]) | {"resumed": True}
    elif name == "base":
        state = train_state_path(folder)  # where `harness train --resume` keeps it
        if not args.resume:
            state.unlink(missing_ok=True)
        res = train_sasrec(prep.splits, prep.catalogue, cands,
                           config=TrainConfig(epochs=args.epochs, seed=seed, device=args.device,
                                              patience=args.base_patience or args.patience, progress=False,
                                              max_seconds=args.base_budget),
                           log=lambda s, sd=seed: err(f"  base/{sd}: {s}"), resume=state)
        rec = res.recommender
        rec.save(folder, data_fingerprint=prep.splits.full.fingerprint(), seed=seed, metrics=res.metrics())
        state.unlink()
        _record_training_data(folder)
        info |= _run_info(res.metrics())
    else:
        from models.lsvcr.config import LSVCRConfig
        from models.lsvcr.train import stage1_dir, stage2_state_path, train_lsvcr

        ablation, prior, task = LSVCR_NAMES[name]
        cfg = LSVCRConfig()  # as `harness train --model lsvcr [--no-comment-prior]` builds it
        cfg = replace(cfg, sr=replace(cfg.sr, comment_prior=prior),
                      stage2=replace(cfg.stage2, patience=args.patience, task=task))
        stage = "all"
        joint_stage1 = stage1_dir(w["folder"] / f"lsvcr-{seed}")
        if name in PER_TASK and joint_stage1.is_dir():  # stage 1 is the joint model's, same seed and settings
            own = stage1_dir(folder)
            if not own.exists():
                own.unlink(missing_ok=True)  # a link left dangling
                own.symlink_to(joint_stage1.resolve(), target_is_directory=True)
            stage = "finetune"
        elif args.resume and ablation not in ("no_align", "no_text") and stage1_dir(folder).is_dir():
            # an interrupted run's finished stage 1 (written atomically; train_lsvcr checks its seed, ablation
            # and LM): only stage 2 is trained again
            err(f"  {name}/{seed}: resuming from the stage 1 in {stage1_dir(folder)}")
            stage = "finetune"
        # stage 2 keeps its state here after every epoch: a later --resume continues a run killed in stage 2
        # from its last finished epoch (on the same saved stage 1; otherwise it starts afresh)
        state = stage2_state_path(folder)
        if not (args.resume and stage == "finetune"):
            state.unlink(missing_ok=True)
        folder = train_lsvcr(None, folder, stage=stage, ablation=ablation, seed=seed, config=cfg,
                             device=args.device, catalogue=prep.catalogue, splits=prep.splits,
                             epochs=args.epochs, candidates_dir=w["folder"],
                             cache_dir=Path(args.workdir) / ".lsvcr-cache",
                             time_budget_s=args.lsvcr_budget or None, progress=False, resume_state=state,
                             log=lambda s, n=name, sd=seed: err(f"  {n}/{sd}: {s}"))
        _record_training_data(folder)
        rec = load_recommender(folder, catalogue=prep.catalogue, device=args.device)
        info |= _run_info(json.loads((folder / "config.json").read_text())["training_metrics"])
    rec.name = name
    metrics, per_query = evaluate_per_query(rec, w["eval"], w["eval_cands"], tasks=(PER_TASK[name],)
                                            if name in PER_TASK else ("video", "comment"))
    for task, by_slice in metrics.items():
        for sl, m in by_slice.items():
            info[f"test_{task}_ndcg@10" if sl == "all" else f"test_{task}_{sl}_ndcg@10"] = m["ndcg@10"]
    info["seconds"] = round(time.perf_counter() - t, 1)
    err("run " + json.dumps(info, default=lambda x: round(x, 4) if isinstance(x, float) else str(x)))
    store_result(args, name, seed, info, metrics, per_query)
    return info, metrics, per_query


def _record_training_data(folder: Path) -> None:
    """Under the temporal protocol, the `training_data` record `harness train --until` writes (which logs,
    which cut), so the checkpoint passes the same check as `harness evaluate --protocol temporal`'s."""
    if _WORKER["provenance"] is None:
        return
    from models.checkpoint import record_training_data

    record_training_data(folder, _WORKER["provenance"])
    problem = _window_problem(folder)
    if problem:
        raise RuntimeError(f"{folder}: {problem}")


def _run_info(m: dict) -> dict:
    """The per-run log fields of a checkpoint's training metrics (base or LSVCR)."""
    keys = ("best_epoch", "pretrained_embedding_s", "stage1_s", "stage2_s", "total_s", "valid_video_ndcg@5",
            "valid_comment_ndcg@5", "stage2_resumed_after")
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

    prep = _setup(args)["train"]
    t = time.perf_counter()
    lm, cfg = load_llm(None, device=args.device), LSVCRConfig().stage1
    # the same key as train_lsvcr's: final embeddings plus the states entering the tuned top blocks
    cached_catalogue_embedding_and_boundary(lm, prep.catalogue, Path(args.workdir) / ".lsvcr-cache",
                                            boundary_layer=stage1_boundary_layer(lm, cfg),
                                            max_tokens=cfg.text_max_tokens, batch_size=cfg.embed_batch)
    err(f"pre-trained text cache ready in {time.perf_counter() - t:.1f} s")


def _watch_parent(parent: int) -> None:
    """Worker initializer: exit when the main process is gone (killed), instead of training on as an orphan."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def oracle_ceiling(args: argparse.Namespace) -> dict | None:
    """The oracle rankers of bench/oracle_ceiling.py on the same candidates, when --data is a world
    (leave-one-out only: bench/oracle_ceiling.py reads the leave-one-out candidates)."""
    if not args.data or args.protocol != "leave_one_out":
        return None
    import contextlib
    import io

    from oracle_ceiling import main as ceiling_main  # bench/ is on sys.path when this script runs

    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            ceiling_main(["--data", args.data, "--workdir", str(_WORKER["folder"])])
    except (FileNotFoundError, ValueError, KeyError) as e:  # not a synthetic world: no oracle
        err(f"no oracle ceiling: {e}")
        return None
    res = json.loads(buf.getvalue())
    return {task: {name: v["ndcg@10"] for name, v in res[task].items() if isinstance(v, dict)}
            for task in ("video", "comment")}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="base,pop",
                    help="comma list of base, pop, lsvcr, lsvcr_no_prior, no_align, no_comments, no_text")
    ap.add_argument("--seeds", default="0,1,2", help="comma list of training seeds")
    ap.add_argument("--protocol", default="leave_one_out", choices=PROTOCOLS, type=lambda s: s.replace("-", "_"),
                    help="leave_one_out (each user's last events) or temporal (train before --until, test after "
                         "it, with warm and cold slices)")
    ap.add_argument("--until", help="temporal only: the cut, an ISO time or experiment-start (synthetic worlds)")
    ap.add_argument("--queries-per-user", type=int, default=10,
                    help="temporal only: test queries drawn per user and task after the cut (0 = all)")
    ap.add_argument("--epochs", type=int, default=50, help="max epochs (base and LSVCR stage 2)")
    ap.add_argument("--patience", type=int, default=5,
                    help="early stopping: epochs without a better validation NDCG@5 (base and LSVCR stage 2)")
    ap.add_argument("--base-patience", type=int, default=None,
                    help="base's own patience (default: --patience). On world v2 SASRec's validation NDCG@5 sits "
                         "flat for epochs 2-6 before it climbs, so a patience of 3 stops it there")
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
                    "(`<protocol folder>/<model>-<seed>/`, e.g. of an interrupted run) instead of training them again, "
                    "and take the runs stored under --results as they are")
    ap.add_argument("--results", help="a folder that keeps each finished run's result (`<protocol folder>/"
                    "<model>-<seed>.json`: its figures and each query's NDCG@10, keyed by data and settings), "
                    "e.g. one under version control: with --resume a later call, on another machine, "
                    "reuses them and trains only the runs not stored")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    _WORKER.clear()  # one setup per call (tests call main more than once in a process)
    if args.protocol == "temporal" and (args.until is None or not args.data):
        raise SystemExit("--protocol temporal needs --data (logs) and --until (the cut: an ISO time, or "
                         "experiment-start on a synthetic world)")
    if args.protocol != "temporal" and args.until is not None:
        raise SystemExit("--until applies to --protocol temporal only; leave-one-out has no cut")
    if args.queries_per_user < 0:
        raise SystemExit(f"--queries-per-user must be >= 0 (0 = all), got {args.queries_per_user}")
    args.workdir = str(Path(args.workdir or tempfile.mkdtemp(prefix="bench-quality-")))
    if args.results:
        args.results = str(Path(args.results).resolve())
    if not 0.0 < args.train_users <= 1.0:
        raise SystemExit(f"--train-users must be in (0, 1], got {args.train_users}")
    seeds = [int(s) for s in args.seeds.split(",")]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in ("base", "pop", *LSVCR_NAMES)]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; known: base, pop, {', '.join(LSVCR_NAMES)}")
    w = _setup(args)
    prep, evp, folder = w["train"], w["eval"], w["folder"]
    # checkpoints record the full log's fingerprint, which subsampling does not change: a marker keeps
    # --resume from mixing models trained on different fractions of the users in one work folder
    marker = folder / "train_users.json"
    held = json.loads(marker.read_text())["train_users"] if marker.exists() else args.train_users
    if held != args.train_users:
        raise SystemExit(f"{folder} holds models trained with --train-users {held}, not {args.train_users}: "
                         "use another --workdir")
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"train_users": args.train_users}))
    source = w["source"]
    err(f"data {source}: {evp.splits.full.n_users} users, {evp.catalogue.n_videos} videos; protocol "
        f"{args.protocol}{'' if w['cut'] is None else ' cut ' + str(w['cut'])}; work {folder}")
    # longest runs first, so parallel jobs finish together
    cost = {"lsvcr": 0, "lsvcr_no_prior": 0, "no_comments": 1, "lsvcr_video": 2, "lsvcr_comment": 2, "no_align": 2,
            "no_text": 3, "base": 4, "pop": 5}
    jobs = sorted(((m, s) for m in models for s in seeds), key=lambda j: (cost[j[0]], j[1]))
    stored = {j: r for j in jobs if (r := stored_result(args, *j)) is not None}
    if stored:
        err(f"{len(stored)} of {len(jobs)} runs taken from {args.results}: "
            + ", ".join(f"{m}/{s}" for m, s in stored))
    jobs = [j for j in jobs if j not in stored]
    if any(m in LSVCR_NAMES and m != "no_text" for m, _ in jobs):
        _warm_text_cache(args)
    if args.jobs > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn"), initializer=_watch_parent,
                                 initargs=(os.getpid(),)) as ex:
            done = list(ex.map(run_one, [args] * len(jobs), [m for m, _ in jobs], [s for _, s in jobs]))
    else:
        done = [run_one(args, m, s) for m, s in jobs]
    done = [*stored.values(), *done]
    per: dict[tuple[str, str, str], dict[str, list]] = {}
    per_query: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    runs: list[dict] = []
    for info, metrics, pq in done:
        runs.append(info)
        names = [info["model"]] + (["lsvcr_per_task"] if info["model"] in PER_TASK else [])
        for name in names:
            per_query.setdefault((name, info["seed"]), {}).update(pq)
            for task, by_slice in metrics.items():
                for sl, mt in by_slice.items():
                    d = per.setdefault((name, task, sl), {})
                    for k, v in mt.items():
                        if k != "queries":
                            d.setdefault(k, []).append(v)
    out: dict = {"bench": "quality", "data": source, "protocol": args.protocol,
                 "until": None if w["cut"] is None else str(w["cut"]),
                 "queries_per_user": args.queries_per_user if w["cut"] is not None else None,
                 "seeds": seeds, "threads": args.threads, "jobs": args.jobs, "patience": args.patience,
                 "base_patience": args.base_patience or args.patience,
                 "lsvcr_budget_s": args.lsvcr_budget, "base_budget_s": args.base_budget,
                 "train_users": args.train_users, "train_video_events": int(prep.splits.train.n_video_events().sum()),
                 "n_users": evp.splits.full.n_users, "n_videos": evp.catalogue.n_videos, "results": {}}
    rows = {task: w["eval_cands"].rows("test", task) for task in ("video", "comment")}
    slices = {task: (r["slice"].to_numpy() if "slice" in r.columns else np.full(len(r), "all"))
              for task, r in rows.items()}
    out["test_queries"] = {task: {sl: int((s == sl).sum()) if sl != "all" else len(s)
                                  for sl in (SLICES if w["cut"] is not None else ("all",))}
                           for task, s in slices.items() if len(s)}
    for (name, task, sl), d in per.items():
        if sl == "all":
            out["results"].setdefault(name, {})[task] = {k: stats(v) for k, v in d.items()}
    out["slices"] = {}
    for (name, task, sl), d in per.items():
        out["slices"].setdefault(name, {}).setdefault(task, {})[sl] = {k: stats(d[k]) for k in SLICE_METRICS}
    out["checks"] = gap_checks(out["results"])
    users = {task: r["user_id"].to_numpy() for task, r in rows.items() if len(r)}
    out["paired"] = paired_intervals(per_query, users, slices)
    out["oracle_ndcg@10"] = oracle_ceiling(args)
    out["workdir"] = str(folder)
    out["runs"] = runs
    if args.results:
        out["code"] = code_provenance(runs)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
