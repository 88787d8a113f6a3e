"""`harness train` and `harness evaluate`: train recommenders and rank them offline.

A thin layer over `models/`: logs are read through `harness.logs.store.LogStore` and handed to
`models.histories.prepare_data` as Arrow tables; training calls `models.train_sasrec.train_sasrec`
(base), `models.pop.PopRecommender.fit` (pop) or `models.lsvcr.train.train_lsvcr` (lsvcr);
evaluation resolves names through `models.adapters.load_recommender` and scores the stored
candidates (`models.evaluation`), which live in the models directory (the parent of `--out`, or
`--checkpoints`) keyed by the data's fingerprint, so every model is ranked on the same candidates.

Errors go through `harness.cli.shared.cli_errors` (exit 3, one line on stderr, no traceback). Only our
packages' own error types are turned into a user message here (bad logs: `harness.logs`' errors; an
unusable checkpoint: `models.checkpoint.CheckpointError`; logs a model cannot learn from or a missing
language-model package: `models.errors.ModelInputError`); anything else reaches `cli_errors()`, which
reports it as a bug, so a bug in training is never passed off as bad input.
"""

from __future__ import annotations

from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from harness.cli.logs_cmd import LOG_ERRORS, log_error
from harness.cli.shared import DbOpt, JsonOpt, UserError, cli_errors, console, print_json, user_set
from models.lsvcr.config import ABLATIONS

# --ablation takes its choices from models.lsvcr.config (torch-free). The choices below restate tuples of modules that import torch (models.adapters.KNOWN_NAMES,
# models.lsvcr.train.STAGES, models.evaluation.SPLITS), which `harness --help` must not load;
# tests/test_cli_errors.py checks that they agree.


class ModelKind(StrEnum):
    base = "base"
    pop = "pop"
    lsvcr = "lsvcr"


class Stage(StrEnum):
    align = "align"
    finetune = "finetune"
    all = "all"


class Device(StrEnum):
    cpu = "cpu"
    cuda = "cuda"


class Split(StrEnum):
    valid = "valid"
    test = "test"


class EvalProtocol(StrEnum):
    leave_one_out = "leave-one-out"
    temporal = "temporal"


Ablation = StrEnum("Ablation", {a: a for a in ABLATIONS if a is not None})  # type: ignore[misc]

# LSVCR-only options of `harness train` (parameter name -> flag)
_LSVCR_ONLY = {"stage": "--stage", "llm": "--llm", "ablation": "--ablation", "time_budget": "--time-budget",
               "comment_prior": "--comment-prior", "per_task": "--per-task"}


def register(app: typer.Typer) -> None:
    """Add this group's commands to the top-level app."""
    app.command("train", help="Train a recommender (base = SASRec, pop, lsvcr) on logs and save a checkpoint.")(train)
    app.command("evaluate", help="Rank models offline on stored candidates (leave-one-out, or temporal with a cold "
                                 "slice): models x tasks x metrics.")(evaluate)


THREADS_HELP = ("Torch threads: a number, or 'auto' to time a probe step at 1 thread and at every core when the "
                "run starts and keep the faster (on a busy machine one thread wins; on an idle one, every core).")


def _read_logs(path: Path, until: str | None = None, *, cut: bool = True) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """The model tables (requests before `until` when given and `cut`), the logs' fingerprint and what the cut
    keeps (the `training_data` record a checkpoint carries: the replay and the temporal protocol refuse
    checkpoints that saw what they score). `cut=False` parses `until` but keeps every request (evaluation)."""
    from harness.logs.store import MODEL_TABLES, LogStore
    from harness.logs.window import WindowError, cut_tables, event_range, parse_cut

    if not path.exists():
        raise UserError(f"--data {path} does not exist; create logs with `harness simulate --out {path}`")
    try:
        with LogStore.open(path) as store:
            at = None
            if until is not None:
                try:
                    at = parse_cut(until, store)
                except WindowError as exc:
                    raise UserError(f"--until: {exc}") from None
            kept = event_range(store, before=at)
            if until is not None and kept.requests == 0:
                raise UserError(f"--until {until}: no request of {path} lies before {at}; pick a later cut")
            fingerprint = store.fingerprint()
            info: dict[str, Any] = {"logs_fingerprint": fingerprint, "until": None if at is None else str(at),
                                    **kept.to_dict()}
            return cut_tables(store, MODEL_TABLES, before=at if cut else None), fingerprint, info
    except LOG_ERRORS as exc:
        raise log_error(exc) from None


# base's validation NDCG@5 on the default world stays flat for 4-5 epochs after epoch 2 before it climbs
# (BENCHMARKS.md, temporal protocol: seeds 0 and 1), so a patience of 5 escapes it by one epoch at most;
# 10 leaves room. LSVCR's stage 2 improves steadily from its first epoch.
BASE_PATIENCE = 10
LSVCR_PATIENCE = 5


def train(
    ctx: typer.Context,
    model: ModelKind = typer.Option(..., "--model", help="Which model: base (SASRec over video IDs), pop, lsvcr."),
    data: Path = typer.Option(..., "--data", help="Logs: a folder of Parquet files or a .duckdb file."),
    out: Path | None = typer.Option(None, "--out", help="Checkpoint folder to write [default: checkpoints/<model>]."),
    stage: Stage = typer.Option(Stage.all, "--stage", help="LSVCR only: align (stage 1), finetune (stage 2) or all."),
    llm: str | None = typer.Option(None, "--llm", help="LSVCR only: local Hugging Face model folder "
                                                       "[default: the packaged all-MiniLM-L6-v2]."),
    device: Device = typer.Option(Device.cpu, "--device", help="Torch device."),
    epochs: int = typer.Option(50, "--epochs", min=1, help="Maximum epochs (early stopping on validation NDCG@5)."),
    seed: int = typer.Option(0, "--seed", help="Seed for initialisation, shuffling and evaluation candidates."),
    patience: int | None = typer.Option(None, "--patience", min=1,
                                        help="Epochs without a better validation NDCG@5 before stopping "
                                             f"[default: {BASE_PATIENCE} for base, {LSVCR_PATIENCE} for lsvcr "
                                             "(stage 2)]."),
    ablation: Ablation | None = typer.Option(None, "--ablation", help="LSVCR only: train an ablation."),
    time_budget: float = typer.Option(540.0, "--time-budget", min=0.0,
                                      help="LSVCR only: seconds for the whole pipeline, the language model's first "
                                           "pass over the catalogue included; stage 1 gets 40% of what is left "
                                           "after it, stage 2 the rest, both stopped at step granularity (0 = "
                                           "none: stage 1 runs all its samples, early stopping ends stage 2)."),
    comment_prior: bool = typer.Option(True, "--comment-prior/--no-comment-prior",
                                       help="LSVCR only: add the learned like-count prior to comment scores "
                                            "(--no-comment-prior = the paper's text-only comment tower)."),
    per_task: bool = typer.Option(False, "--per-task/--joint",
                                  help="LSVCR only: one stage-2 model per task from one stage 1, served as one "
                                       "checkpoint (the paper's choice; better on video on the default world, "
                                       "BENCHMARKS.md), or one joint model. --per-task needs --time-budget 0."),
    resume: bool = typer.Option(False, "--resume/--no-resume",
                                help="Continue an interrupted training with the same settings into the same "
                                     "--out: base and LSVCR's stage 2 go on from their last finished epoch "
                                     "(<out>.train-state.safetensors / <out>.stage2-state.safetensors, kept "
                                     "while training and deleted with the checkpoint saved), LSVCR reuses a "
                                     "finished stage 1 (<out>-stage1) and, with --per-task, a finished part. "
                                     "The result is the checkpoint an uninterrupted run would have saved. "
                                     "Without it, a state left there is discarded."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    threads: str = typer.Option("auto", "--threads", help=THREADS_HELP),
    until: str | None = typer.Option(None, "--until",
                                     help="Train on requests before this time only: an ISO timestamp or "
                                          "'experiment-start' (the synthetic world's; what `harness replay` "
                                          "needs, since it refuses checkpoints that saw its window) "
                                          "[default: all requests]."),
) -> None:
    with cli_errors():
        if model is not ModelKind.lsvcr:
            given = [_LSVCR_ONLY[name] if name != "comment_prior" or comment_prior else "--no-comment-prior"
                     for name in _LSVCR_ONLY if user_set(ctx, name)]
            if given:
                raise UserError(f"these options apply to --model lsvcr only: {', '.join(given)}")
        from models.checkpoint import CheckpointError
        from models.errors import ModelInputError

        if per_task and (time_budget or stage is not Stage.all):
            raise UserError("--per-task trains every stage to convergence in one call: pass --time-budget 0 and "
                            "no --stage")
        if patience is None:
            patience = BASE_PATIENCE if model is ModelKind.base else LSVCR_PATIENCE
        n_threads = _threads(threads)
        tables, _, provenance = _read_logs(data, until)
        target = out or Path("checkpoints") / model.value
        if device is Device.cpu and model is not ModelKind.pop:  # pop counts, it has no torch work
            from models.threads import choose_threads

            choice = choose_threads(n_threads)
            typer.echo(choice.describe())
            provenance = {**provenance, "threads": choice.record()}
        try:
            _train(model, tables, target, stage=stage.value, llm=llm,
                   device=device.value, epochs=epochs, seed=seed, patience=patience,
                   ablation=ablation and ablation.value, time_budget=time_budget, comment_prior=comment_prior,
                   per_task=per_task, progress=progress, resume=resume)
        except LOG_ERRORS as exc:
            raise log_error(exc) from None
        except (CheckpointError, ModelInputError) as exc:
            raise UserError(str(exc)) from None
        if stage is not Stage.align:
            from models.checkpoint import record_training_data

            record_training_data(target, provenance)


def _threads(value: str) -> int | None:
    from models.threads import parse_threads

    try:
        return parse_threads(value)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _train(model: ModelKind, tables: dict[str, Any], out: Path, *, stage: str, llm: str | None, device: str,
           epochs: int, seed: int, patience: int, ablation: str | None, time_budget: float, comment_prior: bool,
           progress: bool, per_task: bool = False, resume: bool = False) -> None:
    from models.evaluation import EvalConfig, load_or_sample_candidates
    from models.histories import prepare_data

    prep = prepare_data(tables)
    cands = load_or_sample_candidates(prep.splits, prep.catalogue, out.parent, EvalConfig(seed=0))
    typer.echo(f"data: {prep.catalogue.n_videos} videos, {prep.catalogue.n_comments} comments, "
               f"{prep.splits.full.n_users} users, {len(prep.splits.valid.video)} validation users")
    if model is ModelKind.pop:
        from models.pop import PopRecommender

        PopRecommender.fit(prep.splits.train, prep.catalogue).save(out, data_fingerprint=prep.fingerprint, seed=seed)
    elif model is ModelKind.base:
        from models.train_sasrec import TrainConfig, train_sasrec, train_state_path

        cfg = TrainConfig(epochs=epochs, seed=seed, device=device, patience=patience, progress=progress)
        state = _fresh_state(train_state_path(out), resume)
        res = train_sasrec(prep.splits, prep.catalogue, cands, config=cfg, log=typer.echo, resume=state)
        res.recommender.save(out, data_fingerprint=prep.fingerprint, seed=seed, metrics=res.metrics())
        state.unlink(missing_ok=True)
    else:
        from models.lsvcr.config import LSVCRConfig
        from models.lsvcr.train import train_lsvcr

        base = LSVCRConfig()
        cfg_l = replace(base, sr=replace(base.sr, comment_prior=comment_prior),
                        stage2=replace(base.stage2, patience=patience))
        if per_task:
            from models.lsvcr.pair import train_pair

            train_pair(out, config=cfg_l, ablation=ablation, llm_path=llm, device=device, seed=seed, epochs=epochs,
                       catalogue=prep.catalogue, splits=prep.splits, candidates_dir=out.parent, progress=progress,
                       log=typer.echo, resume=resume)
            return
        from models.lsvcr.train import stage1_dir, stage2_state_path

        state = _fresh_state(stage2_state_path(out), resume)
        if resume and stage == "all" and ablation not in ("no_align", "no_text") and stage1_dir(out).is_dir():
            typer.echo(f"resuming: stage 1 is already done, in {stage1_dir(out)}; training stage 2 from it")
            stage = "finetune"
        written = train_lsvcr(None, out, stage=stage, llm_path=llm, ablation=ablation, device=device, seed=seed,
                              epochs=epochs, config=cfg_l, catalogue=prep.catalogue, splits=prep.splits,
                              candidates_dir=out.parent, time_budget_s=time_budget or None, progress=progress,
                              log=typer.echo, resume_state=None if stage == "align" else state)
        if stage != "align" and _stopped_by(out) == "time_budget":
            typer.echo(f"note: the {time_budget:.0f} s budget ended training before early stopping did; for an "
                       "offline or launch comparison against base, train to convergence with --time-budget 0 "
                       "(BENCHMARKS.md: LSVCR under a 600 s budget ranks below base)", err=True)
        if stage != "align" and _stage1_truncated(out):
            typer.echo("WARNING: stage 1 (alignment) was cut by the time budget: this checkpoint is under-aligned "
                       "(training_metrics.stage1_truncated); pass --time-budget 0 or a larger budget", err=True)
        if stage == "align":
            typer.echo(f"saved the stage-1 (alignment) result to {written}; train stage 2 with --stage finetune "
                       f"--out {out}")
            return
    typer.echo(f"saved {model.value} checkpoint to {out}")


def _fresh_state(path: Path, resume: bool) -> Path:
    """The file where training keeps its state between epochs; without --resume, one left there by an
    interrupted run is discarded (said, so nobody wonders where it went)."""
    if path.exists() and not resume:
        typer.echo(f"note: discarding the state an interrupted training left in {path} (pass --resume to "
                   "continue it)")
        path.unlink()
    return path


def _stage1_truncated(checkpoint: Path) -> bool:
    from models.checkpoint import CheckpointError, read_config

    try:
        return bool(read_config(checkpoint).get("training_metrics", {}).get("stage1_truncated", False))
    except CheckpointError:
        return False


def _stopped_by(checkpoint: Path) -> str | None:
    """Why a checkpoint's training ended (training_metrics.stopped_by); None for a folder that is not a
    checkpoint or one saved before the field existed."""
    from models.checkpoint import CheckpointError, read_config

    try:
        return (read_config(checkpoint).get("training_metrics") or {}).get("stopped_by")
    except CheckpointError:
        return None


def evaluate(
    ctx: typer.Context,
    models: str = typer.Option(..., "--models", help="Comma-separated names (base, pop, lsvcr, ablations) "
                                                     "or checkpoint paths."),
    data: Path = typer.Option(..., "--data", help="Logs: a folder of Parquet files or a .duckdb file."),
    checkpoints: Path = typer.Option(Path("checkpoints"), "--checkpoints",
                                     help="Folder holding one checkpoint folder per model name (and the stored "
                                          "evaluation candidates)."),
    split: Split = typer.Option(Split.test, "--split", help="Evaluate on the validation or the test targets "
                                                            "(leave-one-out only)."),
    protocol: EvalProtocol = typer.Option(EvalProtocol.leave_one_out, "--protocol",
                                          help="leave-one-out (each user's last events) or temporal (events after "
                                               "one global cut, --until; with warm and cold slices; docs/models.md)."),
    until: str | None = typer.Option(None, "--until",
                                     help="Temporal only: the cut, an ISO timestamp or 'experiment-start'; every "
                                          "model must have been trained before it (`harness train --until`)."),
    queries_per_user: int = typer.Option(10, "--queries-per-user", min=0,
                                         help="Temporal only: test queries drawn per user and task among its events "
                                              "after the cut (0 = all of them)."),
    device: Device = typer.Option(Device.cpu, "--device", help="Torch device."),
    seed: int = typer.Option(0, "--seed", help="Seed of the evaluation candidates (0 = those used in training) "
                                               "and of the temporal protocol's query draw."),
    as_json: bool = JsonOpt,
    db: Path | None = DbOpt,
    store: bool = typer.Option(True, "--store/--no-store", help="Record the metrics in the results database."),
    threads: str = typer.Option("auto", "--threads", help=THREADS_HELP),
) -> None:
    with cli_errors():
        n_threads = _threads(threads)
        names = [m.strip() for m in models.split(",") if m.strip()]
        if not names:
            raise UserError("--models is empty; pass e.g. --models base,pop")
        temporal = protocol is EvalProtocol.temporal
        if temporal and until is None:
            raise UserError("--protocol temporal needs --until: the cut the models were trained before, e.g. "
                            "--until experiment-start (synthetic worlds) or an ISO time")
        if not temporal and until is not None:
            raise UserError("--until applies to --protocol temporal only; leave-one-out has no cut")
        if temporal and split is Split.valid:
            raise UserError("--split valid applies to leave-one-out only: the temporal protocol has test queries "
                            "(after the cut) and no validation split")
        if not temporal and user_set(ctx, "queries_per_user"):
            raise UserError("--queries-per-user applies to --protocol temporal only")
        from models.checkpoint import CheckpointError
        from models.errors import ModelInputError

        tables, log_fp, info = _read_logs(data, until, cut=False)
        if device is Device.cpu:
            from models.threads import choose_threads

            choice = choose_threads(n_threads)
            if not as_json:
                typer.echo(choice.describe())
        settings = {"protocol": protocol.value, "until": info["until"],
                    "queries_per_user": queries_per_user if temporal else None}
        try:
            results, digests = _evaluate(names, tables, checkpoints, split.value, device.value, seed,
                                         settings, log_fp, data)
        except LOG_ERRORS as exc:
            raise log_error(exc) from None
        except (CheckpointError, ModelInputError) as exc:
            raise UserError(str(exc)) from None
        if store:
            _store(results, db, names, seed, log_fp, digests, checkpoints, split.value, settings)
    if as_json:
        print_json({"split": split.value, "seed": seed, "data_fingerprint": log_fp, **settings,
                    "results": [{k: v for k, v in r.__dict__.items() if k != "per_query"} for r in results]})
        return
    _print_table(results, split.value, settings)


def _evaluate(names: list[str], tables: dict[str, Any], checkpoints: Path, split: str, device: str,
              seed: int, settings: dict[str, Any], log_fp: str, data: Path) -> tuple[list[Any], dict[str, str]]:
    from models.adapters import load_recommender
    from models.evaluation import EvalConfig, load_or_sample_candidates
    from models.evaluation import evaluate as run_eval
    from models.histories import prepare_data

    setup = None
    if settings["protocol"] == EvalProtocol.temporal:
        import numpy as np

        from models.protocols import Temporal, prepare_temporal

        cut = np.datetime64(settings["until"], "us")
        for name in names:
            _check_trained_before(name, checkpoints, cut, log_fp, settings["until"], data)
        protocol = Temporal(cut.astype(np.int64) / 1e6, settings["queries_per_user"], seed)
        prep, setup = prepare_temporal(tables, protocol)
    else:
        prep = prepare_data(tables)
    cands = load_or_sample_candidates(prep.splits, prep.catalogue, checkpoints, EvalConfig(seed=seed), setup)
    results, digests = [], {}
    for name in names:
        rec = load_recommender(name, checkpoints, catalogue=prep.catalogue, device=device)
        digests[rec.name] = getattr(rec, "digest", "")
        results += run_eval(rec, prep.splits, cands, prep.catalogue, split=split)
    return results, digests


def _check_trained_before(name: str, checkpoints: Path, cut, log_fp: str, until: str, data: Path) -> None:
    """The temporal protocol scores events after the cut: refuse a checkpoint that may have trained on them."""
    from harness.logs.window import events_of, training_window_problem
    from models.adapters import resolve_checkpoint
    from models.checkpoint import read_config

    folder = resolve_checkpoint(name, checkpoints)
    meta = read_config(folder)
    problem = training_window_problem(meta.get("training_data"), cut, log_fp,
                                      data_fingerprint=meta.get("data_fingerprint"), events=events_of(data))
    if problem:
        raise UserError(f"--protocol temporal: {name} ({folder}) cannot be scored after the cut {until}: {problem}. "
                        f"Train it with `harness train --model ... --until {until}` (or an earlier cut), or "
                        "evaluate with --protocol leave-one-out")


def _store(results, db, names, seed, log_fp, digests, checkpoints, split, settings) -> None:
    from harness.store import ResultsStore

    rs = ResultsStore(db)
    run_id = rs.create_run(kind="evaluate", control=None, treatment=None,
                           config={"models": names, "split": split, "checkpoints": str(checkpoints), **settings},
                           seed=seed, data_fingerprint=log_fp, checkpoint_digests=digests)
    rs.write_results(run_id, ranking_metrics=[row for r in results for row in r.to_rows(seed)])
    typer.echo(f"stored as run {run_id} in {rs.path}", err=True)


def _print_table(results, split: str, settings: dict[str, Any]) -> None:
    from models.metrics import METRICS

    temporal = settings["protocol"] == EvalProtocol.temporal
    where = (f"temporal, cut {settings['until']}, up to {settings['queries_per_user'] or 'all'} queries per user; "
             "cold = target published after the cut" if temporal else "leave-one-out")
    t = Table(title=f"Offline ranking ({split}; {where}; stored candidates)")
    for col in ("model", "task", *(["slice"] if temporal else []), "queries"):
        t.add_column(col)
    for m in METRICS:
        t.add_column(m, justify="right")
    for r in results:
        t.add_row(r.model, r.task, *([r.slice] if temporal else []), str(r.n_queries),
                  *(f"{r.metrics[m]:.4f}" for m in METRICS))
    con = console()
    con.width = max(con.width, 160)  # 10-11 columns of figures: never squeeze them into "1.00…"
    con.print(t)
