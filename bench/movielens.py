"""`base` against RecBole's SASRec on MovieLens-100k (RecBole's .inter); prints one JSON line.

    pip download --no-deps recbole==1.2.1 -d /tmp/recbole
    python bench/movielens.py /tmp/recbole/recbole-1.2.1-py3-none-any.whl [--seeds 0] [--epochs 50]

runs `base` and `pop` through bench/quality.py (leave-one-out by time, our candidates). With `--parity`
it trains `base` and RecBole 1.2.1's own SASRec (its Trainer, its defaults) on the same data, each to
convergence by its own early stopping, and scores **both checkpoints on both candidate protocols**:

- `ours`: the project's (models/evaluation.py): the target + 99 negatives drawn uniformly without
  replacement from the items the user never rated (in the whole log).
- `uni100`: RecBole's `eval_args.mode: uni100` for sequential models (its RepeatableSampler): the target
  + 100 negatives drawn uniformly *with replacement* over all items, excluding only the target, so a
  negative may be an item the user rated. Drawn once here (seed `--seed`) and given to both models.

    pip install --target /tmp/rblib --no-deps recbole==1.2.1 colorlog==4.7.2 colorama==0.4.4 texttable \
        thop tabulate tensorboard protobuf absl-py
    PYTHONPATH=/tmp/rblib python bench/movielens.py /tmp/recbole/recbole-1.2.1-py3-none-any.whl --parity

(`--target` keeps RecBole and its pins out of the project's environment; torch, numpy, pandas and scipy
are the project's.) Both models see the same queries: each user's last rating, with every earlier rating
as history (RecBole's `LS: valid_and_test`, `order: TO`); the JSON reports how many test targets and
histories agree between the two pipelines. RecBole's own test figures (its uni100 draw) are printed
beside ours as a check that our scoring of its model is its scoring.

RecBole settings changed from its defaults, and why: `use_gpu False` (no GPU), `train_neg_sample_args
None` (required by its CE loss), `eval_args.mode uni100` (the protocol above), `show_progress False`,
`checkpoint_dir`/`data_path` under `--workdir`. RecBole 1.2.1 restores the aliases NumPy 1.24 removed
(`np.float = np.float_`, ...) from names that NumPy 2 removed as well, so the script defines `np.float_`,
`np.complex_` and `np.unicode_` before RecBole runs; nothing else is patched.

RecBole's training takes hours of two cores here, more than one working session, so it can be split:

    PYTHONPATH=/tmp/rblib python bench/movielens.py WHEEL --parity --workdir W --budget 9000

trains for about `--budget` seconds, saves its state after the epoch (model, Adam moments, the early-
stopping count and every random stream: models/run_state.py, through RecBole's own `callback_fn` hook),
prints `"status": "paused"` and exits 75; the same command again continues exactly where it stopped
(base's checkpoint is kept in W too), and the call that finishes prints the results. A run killed
mid-epoch loses only that epoch. The state file `W/recbole/resume.safetensors` holds the best epoch's
weights too, so it alone carries the run to another machine: copy it into a new W's `recbole/` and run
the command there (base is trained again in a few minutes; RecBole's own best-epoch file stays behind).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402  (puts the repository root on sys.path)

from models.adapters import load_recommender  # noqa: E402
from models.evaluation import EvalCandidates, EvalConfig, load_or_sample_candidates, score_candidates  # noqa: E402
from models.histories import prepare_data  # noqa: E402
from models.metrics import mean_metrics, ranking_metrics  # noqa: E402
from models.movielens import INTER_MEMBER, load_ml100k  # noqa: E402
from models.run_state import load_state, save_state  # noqa: E402
from models.train_sasrec import TrainConfig, train_sasrec  # noqa: E402

METRICS = ("recall@10", "ndcg@10")
RECBOLE_INSTALL = ("pip install --target /tmp/rblib --no-deps recbole==1.2.1 colorlog==4.7.2 colorama==0.4.4 "
                   "texttable thop tabulate tensorboard protobuf absl-py, then run with PYTHONPATH=/tmp/rblib")


def uni100_candidates(ours: EvalCandidates, item_ids: np.ndarray, seed: int, n: int = 100) -> EvalCandidates:
    """RecBole's uni100 for the test video queries of `ours`: the target + `n` uniform draws with
    replacement over all items but the target (RepeatableSampler: rejection of the target only)."""
    rows = ours.rows("test", "video")
    rng = np.random.default_rng([seed, 100])
    cands, labels = [], []
    for target in rows["video_id"].to_numpy(np.int64):
        others = item_ids[item_ids != target]
        cands.append([int(target), *others[rng.integers(0, others.size, n)].tolist()])
        labels.append([True] + [False] * n)
    table = rows.assign(candidates=cands, labels=labels)
    return EvalCandidates(table, f"uni100-{seed}")


def _metrics(scores: np.ndarray, labels: np.ndarray, valid: np.ndarray) -> dict:
    return {k: round(v, 4) for k, v in mean_metrics(ranking_metrics(scores, labels, valid, METRICS)).items()}


def _gather(full: np.ndarray, rows_of_user: dict[int, int], item_col: dict[int, int], cands) -> np.ndarray:
    """RecBole's full-sort scores (users x items) read at each query's candidates."""
    table = cands.rows("test", "video")
    out = np.empty((len(table), len(table["candidates"].iloc[0])))
    for i, (u, c) in enumerate(zip(table["user_id"], table["candidates"], strict=True)):
        out[i] = full[rows_of_user[int(u)], [item_col[int(x)] for x in c]]
    return out


class _Paused(Exception):
    """RecBole's training spent this invocation's budget; its state is saved after the last epoch."""


def train_recbole(inter_path: str, workdir: Path, seed: int, epochs: int, stopping_step: int,
                  budget: float | None = None, overrides: dict | None = None) -> dict:
    """RecBole's SASRec with its own Trainer and early stopping; returns its full-sort test scores, or
    {"paused": ...} when `budget` seconds ran out first. The run's state is saved after every epoch in
    `workdir` (models/run_state.py), and a later call with the same `workdir` continues it exactly."""
    try:
        import recbole  # noqa: F401
    except ImportError:
        raise SystemExit(f"--parity needs RecBole: {RECBOLE_INSTALL}") from None
    # RecBole 1.2.1's Config re-creates the aliases NumPy 1.24 removed (np.float = np.float_, ...) from the
    # NumPy 1.x names NumPy 2 removed too; give it those names, so its own shim runs unchanged
    for old, new in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
        if old not in np.__dict__:
            setattr(np, old, new)
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    workdir = workdir.resolve()  # absolute: RecBole runs in it (os.chdir below), and it names every path in it
    data = workdir / "ml-100k"
    data.mkdir(parents=True, exist_ok=True)
    src = Path(inter_path)
    if zipfile.is_zipfile(src):
        with zipfile.ZipFile(src) as z:
            (data / "ml-100k.inter").write_bytes(z.read(INTER_MEMBER))
    else:
        (data / "ml-100k.inter").write_bytes(src.read_bytes())
    cwd = os.getcwd()
    os.chdir(workdir)  # RecBole writes ./log and ./log_tensorboard into the working directory
    try:
        config = Config(model="SASRec", dataset="ml-100k", config_dict={
            "data_path": str(workdir), "checkpoint_dir": str(workdir / "saved"), "use_gpu": False,
            "seed": seed, "show_progress": False, "epochs": epochs, "stopping_step": stopping_step,
            "train_neg_sample_args": None,
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "uni100", "group_by": "user"},
        } | (overrides or {}))  # overrides: only for checking this glue on a smaller model
        init_seed(config["seed"], config["reproducibility"])
        dataset = create_dataset(config)
        train, valid, test = data_preparation(config, dataset)
        model = SASRec(config, train._dataset).to(config["device"])
        trainer = Trainer(config, model)
        state_path, generators = workdir / "resume.safetensors", {"train": train.generator}
        counters = load_state(state_path, model=model, optimizer=trainer.optimizer, generators=generators,
                              extra=True)
        done, prior_s, prior_cpu, sessions = False, 0.0, 0.0, 1
        # the best epoch's weights travel inside the state (not only in RecBole's own saved/ file, a pickle
        # that stays behind): the state file alone carries the run to another machine
        best: dict = {"weights": None, "epoch": None}
        if counters is not None:  # a run an earlier call started: carry on from its last epoch
            best_file = workdir / "saved" / counters["best_file"]
            if counters["extra"]:
                best = {"weights": counters["extra"], "epoch": counters["best_epoch"]}
            elif best_file.exists():  # a state saved before the weights travelled with it
                held = torch.load(best_file, map_location="cpu", weights_only=False)
                best = {"weights": held["state_dict"], "epoch": int(held["epoch"])}
            trainer.start_epoch = counters["epoch"] + 1
            trainer.cur_step = counters["cur_step"]
            trainer.best_valid_score = counters["best_valid_score"]
            trainer.best_valid_result = counters["best_valid_result"]
            trainer.train_loss_dict = {int(k): v for k, v in counters["train_loss"].items()}
            trainer.saved_model_file = str(workdir / "saved" / counters["best_file"])
            done = counters["cur_step"] > stopping_step or trainer.start_epoch >= epochs
            prior_s, prior_cpu = counters["seconds"], counters["cpu_seconds"]
            sessions = counters["sessions"] + (not done)  # calls that trained
            quality.err(f"  recbole: resuming after epoch {counters['epoch'] + 1} ({prior_s:.0f} s so far, "
                        f"best valid {counters['best_valid_score']:.4f})" + ("; already finished" if done else ""))
        t, cpu = time.perf_counter(), time.process_time()

        def after_epoch(epoch_idx: int, valid_score: float) -> None:
            result = trainer.best_valid_result
            if trainer.cur_step == 0:  # RecBole's early stopping just took this epoch as its best
                best.update(weights={k: v.detach().clone() for k, v in model.state_dict().items()}, epoch=epoch_idx)
            save_state(state_path, model=model, optimizer=trainer.optimizer, generators=generators,
                       extra=best["weights"], counters={
                "best_epoch": best["epoch"], "epoch": epoch_idx, "cur_step": trainer.cur_step, "best_valid_score": float(trainer.best_valid_score),
                "best_valid_result": {k: float(v) for k, v in result.items()} if result else None,
                "train_loss": {str(k): float(v) for k, v in trainer.train_loss_dict.items()},
                "best_file": Path(trainer.saved_model_file).name, "seconds": prior_s + time.perf_counter() - t,
                "cpu_seconds": prior_cpu + time.process_time() - cpu, "sessions": sessions})
            quality.err(f"  recbole: epoch {epoch_idx + 1} valid {valid_score:.4f} "
                        f"(best {trainer.best_valid_score:.4f}, {trainer.cur_step} without better)")
            stopping = trainer.cur_step > stopping_step or epoch_idx + 1 >= epochs
            if budget is not None and time.perf_counter() - t > budget and not stopping:
                raise _Paused

        if not done:
            try:
                trainer.fit(train, valid, saved=True, show_progress=False, callback_fn=after_epoch)
            except _Paused:
                return {"paused": {"epochs_run": len(trainer.train_loss_dict),
                                   "best_valid": round(float(trainer.best_valid_score), 4),
                                   "cur_step": trainer.cur_step, "sessions": sessions, "state": str(state_path),
                                   "seconds": round(prior_s + time.perf_counter() - t, 1),
                                   "cpu_seconds": round(prior_cpu + time.process_time() - cpu, 1)}}
        seconds, cpu_seconds = prior_s + time.perf_counter() - t, prior_cpu + time.process_time() - cpu
        best_valid = trainer.best_valid_result
        if best["weights"] is None:
            raise SystemExit(f"{state_path}: RecBole's run has no best epoch recorded; delete {workdir} and run again")
        model.load_state_dict(best["weights"])  # the epoch RecBole's early stopping kept
        own = trainer.evaluate(test, load_best_model=False, show_progress=False)
        inter = test._dataset.inter_feat
        model.eval()
        with torch.no_grad():
            full = torch.cat([model.full_sort_predict(inter[s:s + 256].to(config["device"]))
                              for s in range(0, len(inter), 256)]).numpy().astype(np.float64)
        uid, iid = dataset.uid_field, dataset.iid_field
        user_tok = dataset.field2id_token[uid]
        item_tok = dataset.field2id_token[iid]
        users = np.array([int(user_tok[i]) for i in inter[uid].numpy()])
        targets = np.array([int(item_tok[i]) for i in inter[iid].numpy()])
        lengths = inter[model.ITEM_SEQ_LEN].numpy()
        seqs = inter[model.ITEM_SEQ].numpy()
        histories = [np.array([int(item_tok[i]) for i in seq[:n]], np.int64) for seq, n in zip(seqs, lengths, strict=True)]
        return {"full": full, "users": users, "targets": targets, "histories": histories,
                "item_col": {int(t): i for i, t in enumerate(item_tok) if i > 0},
                "own_test": {k: round(float(v), 4) for k, v in own.items()},
                "best_valid": {k: round(float(v), 4) for k, v in best_valid.items()} if best_valid else None,
                "best_epoch": int(best["epoch"]) + 1, "epochs_run": len(trainer.train_loss_dict),
                "seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1), "sessions": sessions,
                "config": {k: config[k] for k in ("epochs", "stopping_step", "train_batch_size", "learning_rate",
                                                  "hidden_size", "n_layers", "n_heads", "hidden_dropout_prob",
                                                  "attn_dropout_prob", "MAX_ITEM_LIST_LENGTH", "loss_type",
                                                  "valid_metric")}}
    finally:
        os.chdir(cwd)


def parity(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    tables = load_ml100k(args.path)
    prep = prepare_data(tables)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="movielens-parity-"))
    ours = load_or_sample_candidates(prep.splits, prep.catalogue, work, EvalConfig(seed=0))
    uni = uni100_candidates(ours, prep.catalogue.video_ids, args.seed)  # every rated item, as RecBole's
    protocols = {"ours": ours, "uni100": uni}

    rec, base = _base(args, prep, ours, work / f"base-{args.seed}")
    base_s = base["seconds"]
    out: dict = {"bench": "movielens_parity", "status": "complete", "data": "movielens-100k", "seed": args.seed,
                 "test_queries": int(len(ours.rows("test", "video"))), "models": {}}
    for name, cands in protocols.items():
        _, scores, labels, valid = score_candidates(rec, prep.splits, cands, prep.catalogue, split="test",
                                                    task="video")
        base[name] = _metrics(scores, labels, valid)
    out["models"]["base"] = base
    quality.err(f"base: {json.dumps(base)}")

    rb = train_recbole(args.path, work / "recbole", args.seed, args.recbole_epochs, args.patience, args.budget)
    if "paused" in rb:
        return {"bench": "movielens_parity", "status": "paused", "seed": args.seed, "workdir": str(work),
                "models": {"base": base, "recbole_sasrec": rb["paused"]},
                "resume": "run the same command again (same --workdir) to continue RecBole's training"}
    rows_of_user = {int(u): i for i, u in enumerate(rb["users"])}
    test = ours.rows("test", "video")
    ours_targets = test["video_id"].to_numpy(np.int64)
    rb_targets = np.array([rb["targets"][rows_of_user[int(u)]] for u in test["user_id"]])
    ours_hist = _histories(prep, test, rb["config"]["MAX_ITEM_LIST_LENGTH"])
    same_hist = sum(np.array_equal(h, rb["histories"][rows_of_user[int(u)]])
                    for h, u in zip(ours_hist, test["user_id"], strict=True))
    recbole = {k: rb[k] for k in ("seconds", "cpu_seconds", "sessions", "best_epoch", "epochs_run", "best_valid",
                                  "own_test", "config")}
    for name, cands in protocols.items():
        table = cands.rows("test", "video")
        scores = _gather(rb["full"], rows_of_user, rb["item_col"], cands)
        labels = np.array([list(x) for x in table["labels"]], bool)
        recbole[name] = _metrics(scores, labels, np.ones_like(labels))
    out["models"]["recbole_sasrec"] = recbole
    out["queries_agree"] = {"same_target": int((ours_targets == rb_targets).sum()),
                            "same_history": int(same_hist), "of": int(len(test))}
    # CPU time as well as wall time: on a shared machine wall time measures the neighbours as much as the
    # model, and RecBole's training may span several calls at different loads
    out["base_speedup"] = {"wall": round(rb["seconds"] / base_s, 1),
                           "cpu": round(rb["cpu_seconds"] / base["cpu_seconds"], 1)}
    return out


def _base(args: argparse.Namespace, prep, ours: EvalCandidates, folder: Path):
    """`base` trained to early stopping, or the checkpoint an earlier call of the bench left in `folder`
    (same seed, cap and patience), so that resuming RecBole's training does not train base again."""
    settings = {"seed": args.seed, "max_epochs": args.max_epochs, "patience": args.patience}
    config = folder / "config.json"
    if config.exists():
        metrics = json.loads(config.read_text()).get("training_metrics") or {}
        if metrics.get("parity") == settings:
            quality.err(f"  base: the checkpoint in {folder}, trained by an earlier call")
            return load_recommender(folder, catalogue=prep.catalogue), metrics["summary"]
        quality.err(f"  base: {folder} was trained with other settings ({metrics.get('parity')}); training again")
    t, cpu = time.perf_counter(), time.process_time()
    res = train_sasrec(prep.splits, prep.catalogue, ours,
                       config=TrainConfig(epochs=args.max_epochs, seed=args.seed, patience=args.patience,
                                          progress=False),
                       log=lambda s: quality.err(f"  base: {s}"))
    summary = {"seconds": round(time.perf_counter() - t, 1), "cpu_seconds": round(time.process_time() - cpu, 1),
               "threads": args.threads, "best_epoch": res.best_epoch,
               "epochs_run": len(res.history), "stopped_by": res.stopped_by, "patience": args.patience}
    res.recommender.save(folder, data_fingerprint=prep.splits.full.fingerprint(), seed=args.seed,
                         metrics=res.metrics() | {"parity": settings, "summary": summary})
    return res.recommender, summary


def _histories(prep, test, max_len: int) -> list[np.ndarray]:
    """Each test query's history as our models are handed it (external ids, time order), its last `max_len`."""
    log = prep.splits.full
    rows = log.user_rows(test["user_id"].to_numpy(np.int64))
    hist = log.histories(rows, before=test["time"].to_numpy(np.float64))
    out = []
    for seq in hist.video_ids.numpy():
        idx = seq[seq > 0]
        out.append(prep.catalogue.video_ids[idx - 1][-max_len:].astype(np.int64))
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Without --parity, any other option (--seeds, --epochs, --models, ...) goes to "
                                        "bench/quality.py; see `python bench/quality.py --help`.\n\n"
                                        + __doc__.split("\n", 1)[1])
    ap.add_argument("path", help="the recbole-1.2.1 wheel, or RecBole's ml-100k .inter file")
    ap.add_argument("--parity", action="store_true", help="base against RecBole's SASRec, both converged, "
                                                           "both candidate protocols")
    ap.add_argument("--seed", type=int, default=0, help="--parity: training seed of both models and the uni100 draw")
    ap.add_argument("--max-epochs", type=int, default=300, help="--parity: base's epoch cap (RecBole's default: 300)")
    ap.add_argument("--recbole-epochs", type=int, default=300, help="--parity: RecBole's epoch cap (its default)")
    ap.add_argument("--patience", type=int, default=10,
                    help="--parity: epochs without a better validation figure, both models (RecBole's "
                         "stopping_step default: 10)")
    ap.add_argument("--threads", type=int, default=2, help="--parity: torch threads")
    ap.add_argument("--workdir", help="--parity: where candidates, base's checkpoint and RecBole's files and "
                                      "training state go (default: a temporary folder); a second call with the "
                                      "same folder continues an unfinished run")
    ap.add_argument("--budget", type=float, default=None,
                    help="--parity: seconds this call may train RecBole; past them it saves its state after the "
                         "epoch, prints status \"paused\" and exits 75 (needs --workdir)")
    args, rest = ap.parse_known_args()
    if args.parity:
        if rest:
            ap.error(f"--parity does not take {rest}")
        if args.budget is not None and not args.workdir:
            ap.error("--budget needs --workdir: a paused run continues from the folder it saved its state in")
        result = parity(args)
        print(json.dumps(result))
        if result["status"] == "paused":
            sys.exit(75)  # EX_TEMPFAIL: not finished, run again
    else:
        sys.argv = [sys.argv[0], "--movielens", args.path, "--seeds", "0", *rest]
        quality.main()
