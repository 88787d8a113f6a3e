"""What a replay checks before it registers a run: the options, the window, the checkpoints (never trained on
the window), the estimators these logs can feed, a split that gives every arm users, a run to resume. Each
failure is a ReplayError saying what is wrong and what to do, raised before anything is stored."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.logs.window import (
    EventsFingerprints,
    WindowError,
    events_of,
    experiment_start,
    parse_cut,
    training_window,
)
from harness.replay.batches import user_arms
from harness.replay.data import WindowFacts
from harness.replay.engine import ESTIMATORS, LOGGING, unavailable
from harness.store import ResultsStore
from harness.store.errors import UnknownRunError

if TYPE_CHECKING:
    from harness.replay.run import ReplayConfig


class ReplayError(ValueError):
    """A replay that cannot run as asked (the message says why and what to do)."""


def check_config(cfg: ReplayConfig) -> None:
    names = (cfg.control, *cfg.treatments)
    if len(set(names)) != len(names) and cfg.design == "paired":
        raise ReplayError("the paired design puts every user under every policy, so a policy against itself is "
                          "identical by construction; for an A/A test use --design split")
    if any("#" in n for n in names):
        raise ReplayError(f"policy names may not contain '#' (got {list(names)}); it marks repeated arms")
    if cfg.default_estimator not in ESTIMATORS:
        raise ReplayError(f"unknown estimator {cfg.default_estimator!r}; choose one of {list(ESTIMATORS)}")
    if cfg.batch_users < 1:
        raise ReplayError(f"--batch-users must be at least 1, got {cfg.batch_users}")


def check_resumable(store: ResultsStore, run_id: str | None) -> None:
    if run_id is None:
        raise ReplayError("--resume needs the id of the run to resume")
    try:
        run = store.run(run_id)
    except UnknownRunError:
        raise ReplayError(f"no run {run_id!r} to resume in {store.path}; `harness runs list` shows the runs") from None
    if run["status"] == "complete":
        raise ReplayError(f"run {run_id!r} is already complete; nothing to resume (pass --replace to recompute it)")
    if run["kind"] != "replay":
        raise ReplayError(f"run {run_id!r} is a {run['kind']!r} run, not a replay")


def check_estimators(cfg: ReplayConfig, facts: WindowFacts, examination: bool) -> None:
    """Refuse, before anything is stored, a default estimator that these logs cannot feed for some arm."""
    for arm in dict.fromkeys((cfg.control, *cfg.treatments)):  # policies
        why = unavailable(arm, slot_pscore=facts.slot_pscore, logging_score=facts.logging_score,
                          examination=examination)
        if cfg.default_estimator in why:
            can = [e for e in ESTIMATORS if e not in why]
            raise ReplayError(f"--estimator {cfg.default_estimator} cannot run for {arm!r} on these logs: "
                              f"{why[cfg.default_estimator]}. Estimators that still apply: {', '.join(can)} "
                              "(pass one with --estimator)")


def check_split(cfg: ReplayConfig, users: np.ndarray) -> None:
    """A split design must give every arm users (else no lift can be computed)."""
    if cfg.design != "split":
        return
    arms = cfg.arms
    got = user_arms(users, arms, cfg.traffic or [1.0] * len(arms), cfg.salt)
    empty = [a for a in arms if not (got == a).any()]
    if empty:
        raise ReplayError(f"the split gives arm(s) {empty} no users of the {len(users):,} in the window (traffic "
                          f"{'/'.join(f'{t:g}' for t in cfg.traffic or [1.0] * len(arms))}); give every arm a larger "
                          "share, or use the paired design")


def window_start(cfg: ReplayConfig, logs) -> np.datetime64:
    try:
        if cfg.window_start is not None:
            return parse_cut(cfg.window_start, logs)
    except WindowError as exc:
        raise ReplayError(f"--window-start: {exc}") from None
    start = experiment_start(logs)
    if start is None:
        raise ReplayError(f"{cfg.data} records no experiment start: pass --window-start (an ISO time); models must "
                          "be trained on requests before it (`harness train --until <the same time>`)")
    return start


def load_models(arms, cfg: ReplayConfig, catalogue, start: np.datetime64, fingerprint: str,
                 warnings: list[str], logs=None, log: Callable[[str], None] = lambda s: None
                 ) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """(models, checkpoint digests, how each checkpoint's training logs were matched to these: `logs`, the
    same fingerprint; `events`, the same events before its cut; `overlap`, allowed by --allow-overlap)."""
    from models.adapters import load_recommender, resolve_checkpoint
    from models.checkpoint import CheckpointError, read_config

    events = None if logs is None else functools.cache(events_of(logs))
    models, digests, matched = {}, {}, {}
    for name in dict.fromkeys(arms):
        if name == LOGGING:
            continue
        try:
            folder = resolve_checkpoint(name, cfg.checkpoints)
            meta = read_config(folder)
            matched[name] = check_training_window(name, folder, meta, start, fingerprint, cfg.allow_overlap,
                                                  warnings, events, log)
            rec = load_recommender(folder, catalogue=catalogue)
        except CheckpointError as exc:
            raise ReplayError(str(exc)) from None
        models[name] = rec
        digests[name] = getattr(rec, "digest", "")
    return models, digests, matched


def check_training_window(name: str, folder: Path, meta: dict, start: np.datetime64, fingerprint: str,
                          allow_overlap: bool, warnings: list[str], events: EventsFingerprints | None = None,
                          log: Callable[[str], None] = lambda s: None) -> str:
    """Refuse a checkpoint that may have seen the replayed window (unless allowed, then mark the run); returns
    how its training logs match these (`logs`, `events` or `overlap`), by `training_window`'s rule.

    Logs whose fingerprint differs from the checkpoint's record only in float bits (another CPU wrote the
    same world) pass when the events before its cut are the ones it read (`same_training_events`)."""
    td = meta.get("training_data") or {}
    matched, problem = training_window(td, start, fingerprint, data_fingerprint=meta.get("data_fingerprint"),
                                       events=events, cut_name="the replayed window's start")
    if matched == "events":
        log(f"{name}: trained on logs with fingerprint {str(td.get('logs_fingerprint'))[:12]}... (these are "
            f"{fingerprint[:12]}...) whose events before its cut {td.get('until')} are these logs' (data fingerprint "
            f"{str(meta.get('data_fingerprint'))[:12]}...): the logs differ in float bits only")
    if problem:
        problem = f"{name} ({folder}): {problem}"
        if not allow_overlap:
            raise ReplayError(f"{problem}. Train it with `harness train --model ... --until experiment-start` (or "
                              "--until <the window start>), or pass --allow-overlap to run anyway (the run is marked)")
        warnings.append(f"OVERLAP: {problem}; estimates may favour this model")
        matched = "overlap"
    stopped = (meta.get("training_metrics") or {}).get("stopped_by")
    if stopped == "time_budget":
        warnings.append(f"UNDER-TRAINED: {name} ({folder}) stopped at its time budget, not at convergence; its "
                        "estimates understate what the model can do")
    return matched
