"""`train_lsvcr`: the whole LSVCR pipeline (stage 1 alignment, stage 2 fine-tuning) and its ablations.

    stage="align"    stage 1 only; writes `<out>-stage1/` (SR weights, tuned text embeddings, the tuned LM
                     part, log)
    stage="finetune" stage 2 from an existing `<out>-stage1/`; writes the checkpoint `<out>/`
    stage="all"      both

Ablations: `no_align` (no stage 1: the frozen pre-trained LM's embeddings and a fresh text MLP),
`no_comments` (empty comment histories everywhere, training and serving), `no_text` (IDs only: video
ID table, and a comment ID table since LSVCR proper has no comment IDs; no LM at all).

The checkpoint keeps the part of the LM that stage 1 tuned (`tuned_lm.safetensors`, config.json `tuned_lm`;
models/lsvcr/tuned_lm.py): with the base LM it embeds titles and comments the model has not seen.

The pre-trained LM's embedding of the catalogue is cached (`cache_dir`, default `<out>/../.lsvcr-cache`)
because it is the same for every seed and ablation. Evaluation candidates are the stored ones of
`models.evaluation` (`candidates_dir`, default the parent of `out`, shared with the other models).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
from safetensors.torch import load_file, save_file

from models.catalogue import Catalogue
from models.errors import ModelInputError
from models.evaluation import load_or_sample_candidates
from models.histories import Splits, event_log_from_tables, leave_one_out
from models.lsvcr.config import ABLATIONS, LSVCRConfig, SRConfig
from models.lsvcr.llm import load_llm
from models.lsvcr.stage1 import run_stage1, stage1_boundary_layer
from models.lsvcr.stage2 import run_stage2
from models.lsvcr.text import TEXT_FILE, TextTables, cached_catalogue_embedding_and_boundary
from models.lsvcr.tuned_lm import TunedLM
from models.training_loop import seeded_torch

STAGES = ("all", "align", "finetune")
STAGE1_WEIGHTS = "sr_stage1.safetensors"
STAGE1_INFO = "stage1.json"


def prepare_data(tables: Mapping) -> tuple[Catalogue, Splits]:
    """Catalogue and leave-one-out splits from log tables keyed by schema name."""
    if tables.get("videos") is None:
        raise ValueError("the logs lack the 'videos' table, needed for the catalogue")
    catalogue = Catalogue.from_tables(tables["videos"], tables.get("comments"))
    return catalogue, leave_one_out(event_log_from_tables(catalogue, dict(tables)))


def _has_any_text(catalogue: Catalogue) -> bool:
    return any(isinstance(t, str) and t.strip() for t in (*catalogue.titles, *catalogue.comment_texts))


def stage1_dir(out_dir: Path) -> Path:
    return out_dir.with_name(out_dir.name + "-stage1")


def stage2_state_path(out_dir: Path) -> Path:
    """Where stage 2 keeps its state between epochs (`train_lsvcr(resume_state=...)`), beside the checkpoint."""
    return out_dir.with_name(out_dir.name + ".stage2-state.safetensors")


def _save_stage1(folder: Path, state: dict, tables: TextTables, info: dict, tuned: TunedLM) -> None:
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / STAGE1_WEIGHTS))
    tables.save(tmp / TEXT_FILE)
    tuned.save(tmp)
    (tmp / STAGE1_INFO).write_text(json.dumps({**info, "tuned_lm": tuned.spec.to_dict()}, indent=2, default=float))
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)


def _load_stage1(folder: Path, catalogue: Catalogue) -> tuple[dict, TextTables, dict, TunedLM | None]:
    if not (folder / STAGE1_INFO).exists():
        raise FileNotFoundError(f"no stage-1 result in {folder}: run train_lsvcr(..., stage='align') "
                                "(or `harness train --model lsvcr --stage align`) first")
    info = json.loads((folder / STAGE1_INFO).read_text())
    if info.get("catalogue_digest") != catalogue.digest():
        raise ValueError(f"{folder} was aligned on a different catalogue than this data; re-run stage 1")
    tables = TextTables.load(folder / TEXT_FILE)
    tables.check_catalogue(catalogue, str(folder / TEXT_FILE))
    tuned = TunedLM.load(folder, info["tuned_lm"]) if info.get("tuned_lm") else None  # None: an older stage 1
    return load_file(str(folder / STAGE1_WEIGHTS)), tables, info, tuned


def _check_stage1(info: dict, folder: Path, *, ablation: str | None, seed: int, llm_path: str | None) -> None:
    """A stage-1 result may only seed stage 2 of the same ablation, seed and language model."""
    given = {"ablation": ablation, "seed": seed}
    if llm_path is not None:
        given["llm_path"] = llm_path
    differ = [f"{k} {info.get(k)!r} (stage 1) vs {v!r} (now)" for k, v in given.items()
              if k in info and info.get(k) != v and not (k == "llm_path" and str(info.get(k)).endswith(str(v)))]
    if differ:
        raise ModelInputError(f"{folder} was aligned with a different setting: {'; '.join(differ)}; re-run "
                              "--stage align with these options, or --stage all")


def train_lsvcr(
    data: Mapping | None,
    out_dir: Path | str,
    *,
    stage: str = "all",
    llm_path: str | None = None,
    ablation: str | None = None,
    device: str = "cpu",
    seed: int = 0,
    epochs: int | None = None,
    stage1_epochs: int | None = None,
    config: LSVCRConfig | None = None,
    catalogue: Catalogue | None = None,
    splits: Splits | None = None,
    candidates_dir: Path | str | None = None,
    cache_dir: Path | str | None = None,
    name: str | None = None,
    time_budget_s: float | None = 540.0,
    progress: bool = True,
    log: Callable[[str], None] = print,
    resume_state: Path | str | None = None,
) -> Path:
    """Train LSVCR on log tables (`data`, keyed by schema name) or on a prepared `catalogue` + `splits`.

    Returns the checkpoint folder (`out_dir`), or the stage-1 folder for stage="align".
    `time_budget_s` caps the whole call, the pre-trained embedding pass included: stage 1's steps get
    `stage1.budget_share` of what is left after that pass, stage 2 gets what stage 1 left (at least 30 s);
    both stop at step granularity, stage 2 validating a last partial epoch and keeping the best epoch
    (models.training_loop). None = no cap (stage 1 runs its samples, early stopping alone ends stage 2).
    `config` is read, never changed: the configs the stages ran with (seed, epochs, budget shares, the
    SR model's sizes) are derived with `dataclasses.replace` and saved in the checkpoint's config.json.
    Deterministic by `seed`; torch's global random state is seeded inside and restored on return.
    `resume_state`: a file where stage 2 keeps its state after every epoch; a call killed in stage 2 and
    made again with the same file (and `stage="finetune"` on the saved stage 1) continues from the last
    finished epoch bit for bit, and the file is deleted once the checkpoint is saved.
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation must be one of {ABLATIONS}, got {ablation!r}")
    if stage == "align" and ablation in ("no_align", "no_text"):
        raise ModelInputError(f"--stage align with --ablation {ablation}: this ablation has no alignment stage "
                              "(stage 1); train it with --stage all (or finetune)")
    out_dir = Path(out_dir)
    base = config or LSVCRConfig()  # read, never changed: every setting below goes into a new config
    cfg = replace(base, seed=seed, ablation=ablation, llm_path=llm_path if llm_path is not None else base.llm_path,
                  stage1=base.stage1 if stage1_epochs is None else replace(base.stage1, epochs=stage1_epochs),
                  stage2=base.stage2 if epochs is None else replace(base.stage2, epochs=epochs))
    if catalogue is None or splits is None:
        if data is None:
            raise ValueError("pass the log tables (data) or both catalogue= and splits=")
        catalogue, splits = prepare_data(data)
    if ablation != "no_text" and not _has_any_text(catalogue):
        # Degrade honestly on text-less logs (e.g. imported KuaiRand): never invent text features.
        raise ValueError(
            "these logs carry no text (every video title and comment text is null, as in imported KuaiRand "
            "logs): LSVCR's text inputs and its alignment stage have nothing to read. Train the ID-only "
            "variant instead (`harness train --model lsvcr --ablation no_text`), or use logs with titles.")
    # Each stage seeds its own generators; this covers the rest (a Hugging Face model's weights that its
    # checkpoint lacks are initialised from torch's global generator), and restores the caller's state.
    with seeded_torch(seed):
        return _train(catalogue, splits, out_dir, cfg, stage=stage, device=device, cache_dir=cache_dir,
                      candidates_dir=candidates_dir, name=name, time_budget_s=time_budget_s, progress=progress,
                      log=log, resume_state=resume_state)


def _budgeted(max_seconds: float | None, share: float) -> float:
    """A stage's step budget: its share of the whole-call budget, or less if its config asks for less."""
    return share if max_seconds is None else min(max_seconds, share)


def _train(catalogue: Catalogue, splits: Splits, out_dir: Path, cfg: LSVCRConfig, *, stage: str, device: str,
           cache_dir: Path | str | None, candidates_dir: Path | str | None, name: str | None,
           time_budget_s: float | None, progress: bool, log: Callable[[str], None],
           resume_state: Path | str | None) -> Path:
    seed, ablation = cfg.seed, cfg.ablation
    cache = Path(cache_dir) if cache_dir is not None else out_dir.parent / ".lsvcr-cache"
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    sr_given = cfg.sr

    def sr(use_ids: bool, lm_dim: int) -> SRConfig:  # the SR model's shape for this catalogue and ablation
        return replace(sr_given, n_videos=catalogue.n_videos, n_comments=catalogue.n_comments, use_ids=use_ids,
                       use_comments=ablation != "no_comments", use_text=ablation != "no_text", lm_dim=lm_dim)

    needs_stage1 = ablation not in ("no_align", "no_text")
    init_state, tables = None, None
    tuned: TunedLM | None = None  # the LM part that embeds new texts at serving time (none without text)
    stage1_info: dict = {}
    s1 = stage1_dir(out_dir)
    if ablation == "no_text":
        lm_dim = 8
        tables = TextTables.empty(catalogue, lm_dim)
    elif stage in ("all", "align") or not needs_stage1:
        lm = load_llm(cfg.llm_path, device=device)
        lm_dim = lm.hidden_size
        t = time.perf_counter()
        layer = stage1_boundary_layer(lm, cfg.stage1) if needs_stage1 else None
        pre, boundary = cached_catalogue_embedding_and_boundary(
            lm, catalogue, cache, boundary_layer=layer, max_tokens=cfg.stage1.text_max_tokens,
            batch_size=cfg.stage1.embed_batch, progress=progress)
        timings["pretrained_embedding_s"] = time.perf_counter() - t
        if needs_stage1:
            if time_budget_s is not None:  # stage 1's steps get a share of what the budget has left
                share = cfg.stage1.budget_share * max(1.0, time_budget_s - (time.perf_counter() - t0))
                cfg = replace(cfg, stage1=replace(cfg.stage1, max_seconds=_budgeted(cfg.stage1.max_seconds, share)))
            cfg1 = replace(cfg, sr=sr(use_ids=False, lm_dim=lm_dim))  # stage 1: no ID tables
            res = run_stage1(splits.train, catalogue, lm, pre, cfg1.sr, cfg1.stage1, seed=seed, device=device,
                             progress=progress, log=log, boundary=boundary)
            timings["stage1_s"] = res.seconds
            init_state, tables = res.sr.state_dict(), res.tables
            first = [h["total"] for h in res.history[: max(1, len(res.history) // 5)]]
            last = [h["total"] for h in res.history[-max(1, len(res.history) // 5):]]
            stage1_info = {
                "catalogue_digest": catalogue.digest(), "config": cfg1.to_dict(), "seconds": res.seconds,
                "loss_first": float(np.mean(first)), "loss_last": float(np.mean(last)), "history": res.history,
                "llm_path": lm.path, "lm_tuning": cfg.stage1.lm_tuning, "seed": seed, "ablation": ablation,
                "steps": res.steps, "planned_steps": res.planned_steps, "truncated": res.truncated}
            s1c = cfg.stage1
            tuned = TunedLM.from_model(lm, res.lm_state, tuning=s1c.lm_tuning, llm_path=cfg.llm_path,
                                       max_tokens=s1c.text_max_tokens,
                                       lora={"r": s1c.lora_r, "alpha": s1c.lora_alpha, "dropout": s1c.lora_dropout})
            _save_stage1(s1, init_state, tables, stage1_info, tuned)
            log(f"stage 1 done in {res.seconds:.1f} s: loss {np.mean(first):.4f} -> {np.mean(last):.4f}; saved {s1}")
            if res.truncated:
                log(f"WARNING: stage 1 (alignment) ran {res.steps} of its {res.planned_steps} planned steps before its "
                    f"time budget ran out: this model is under-aligned, and its checkpoint says so "
                    "(training_metrics.stage1_truncated); raise --time-budget or pass --time-budget 0")
        else:  # no_align: the pre-trained LM embedded the tables, and embeds new texts likewise
            tables = pre
            tuned = TunedLM.from_model(lm, {}, tuning="frozen", llm_path=cfg.llm_path,
                                       max_tokens=cfg.stage1.text_max_tokens)
        del lm, boundary  # the boundary states (~0.5 GB on the default world) are not needed in stage 2
        if stage == "align":
            return s1
    else:
        init_state, tables, info, tuned = _load_stage1(s1, catalogue)
        _check_stage1(info, s1, ablation=ablation, seed=seed, llm_path=cfg.llm_path)
        if tuned is None:
            log(f"WARNING: {s1} predates the saved tuned language model: this checkpoint will score only the items "
                "it is trained on (re-run --stage align to save it)")
        stage1_info = info
        lm_dim = int(tables.dim)
        timings["stage1_s"] = float(info.get("seconds", 0.0))

    cfg = replace(cfg, sr=sr(use_ids=True, lm_dim=lm_dim))
    if time_budget_s is not None:
        left = max(30.0, time_budget_s - (time.perf_counter() - t0))
        cfg = replace(cfg, stage2=replace(cfg.stage2, max_seconds=_budgeted(cfg.stage2.max_seconds, left)))
    cands = load_or_sample_candidates(splits, catalogue, Path(candidates_dir) if candidates_dir else out_dir.parent)
    keep = Path(resume_state) if resume_state is not None else None
    res2 = run_stage2(splits, catalogue, cands, tables, cfg, init_state=init_state, device=device,
                      progress=progress, name=name or out_dir.name, log=log, resume=keep)
    timings["stage2_s"] = res2.seconds
    timings["total_s"] = time.perf_counter() - t0
    provenance = {k: stage1_info.get(k) for k in ("seed", "ablation", "llm_path", "lm_tuning", "steps",
                                                  "planned_steps", "truncated", "seconds", "catalogue_digest")}
    metrics = {"best_epoch": res2.best_epoch, "stopped_by": res2.stopped_by,
               **{f"valid_{k}": v for k, v in res2.best_valid.items()},
               **timings, "epochs": res2.history,
               "stage1_steps": stage1_info.get("steps"), "stage1_planned_steps": stage1_info.get("planned_steps"),
               "stage1_truncated": bool(stage1_info.get("truncated", False)),
               "stage2_resumed_after": res2.resumed_after}
    res2.recommender.tuned_lm = tuned
    res2.recommender.save(out_dir, data_fingerprint=splits.full.fingerprint(), seed=seed, metrics=metrics,
                          extra={"ablation": ablation, "llm_path": cfg.llm_path, "stage": stage,
                                 "eval_candidates_key": cands.key,
                                 "stage1": provenance if stage1_info else None})
    if keep is not None:
        keep.unlink(missing_ok=True)  # the run is saved: its state has served
    log(f"LSVCR{'' if ablation is None else ' (' + ablation + ')'} saved to {out_dir} "
        f"(best epoch {res2.best_epoch}, {timings['total_s']:.1f} s)")
    return out_dir
