"""The end of a replay: the stored batches read back, analysed, their estimates merged, the online test
planned, the gate applied and the run completed (`finish`); `ReplayOutcome` is what a replay returns."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from analysis.config import AnalysisConfig
from analysis.experiment import analyze
from analysis.gate import GateConfig, GateDecision, evaluate_gate
from analysis.metrics import MeanMetric
from analysis.results import ExperimentResult
from harness.replay import batches as B
from harness.replay.engine import ESTIMATORS, LOGGING
from harness.replay.reward_model import METRICS
from harness.replay.test_plan import test_plan_rows
from harness.store import ResultsStore
from harness.store.experiment import experiment_summary

if TYPE_CHECKING:
    from harness.replay.run import ReplayConfig, ReplayContext

SEGMENTS = ("activity_level", "comment_level", "new_user")
PRIMARY_ORDER = ("comment_watch_time_s", "comment_interactions", "watch_time_s", "video_interactions")


@dataclass
class ReplayOutcome:
    run_id: str
    db: Path
    result: ExperimentResult
    decision: GateDecision | None
    lifts: pd.DataFrame  # replay_lifts rows
    estimates: pd.DataFrame  # replay_estimates rows
    test_plan: pd.DataFrame  # replay_test_plan rows
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what limits the numbers (low overlap, ...), not errors
    fit_report: list[dict] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    resumed_batches: int = 0


def finish(ctx: ReplayContext, store: ResultsStore, rid: str, gate: GateConfig | None,
            gate_path: Path | None) -> ReplayOutcome:
    """Read the stored batches back, analyse, merge the estimates, plan the online test, gate, complete."""
    cfg = ctx.cfg
    t1 = time.perf_counter()
    frame = store.unit_metrics(rid, wide=True)
    stats = store.replay_batches(rid)
    estimates = B.merge(stats, cfg.default_estimator)
    have = set(zip(estimates["metric"], estimates["estimator"], strict=True))
    metrics = [MeanMetric(metric_column(m, e, cfg.default_estimator), covariates=(f"{m}_pre",))
               for m in _ordered(METRICS) for e in ESTIMATORS if (m, e) in have]
    acfg = AnalysisConfig(alpha=cfg.alpha, paired=cfg.design == "paired",
                          cuped="none" if cfg.design == "paired" else "single", seed=cfg.seed,
                          min_units=2, expected_split=_split(cfg) if cfg.design == "split" else None)
    segs = [s for s in SEGMENTS if s in frame.columns]
    result = analyze(frame, arm_col="arm", control=cfg.arms[0], treatment=list(cfg.arms[1:]), metrics=metrics,
                     unit_col="unit_id", segments=segs, config=acfg)
    dflt = estimates[estimates["is_default"]]
    weight_ess = {(a, m): float(x) for a, m, x in zip(dflt["arm"], dflt["metric"], dflt["ess"], strict=True)
                  if a != LOGGING and pd.notna(x)}
    decision = evaluate_gate(result, gate, weight_ess=weight_ess) if gate is not None else None
    lift_rows = _lift_rows(cfg, result, estimates)
    plan = test_plan_rows(ctx.logs, ctx.start, ctx.end, lift_rows, alpha=cfg.alpha, power=cfg.power,
                          users_per_day=cfg.users_per_day)
    fit_report = _fit_report(ctx)
    notes = _overlap_notes(cfg, estimates)
    summary = {**experiment_summary(result), "reward_model": fit_report, "notes": notes,
               "weight_diagnostics": "replay_estimates: ess, max_weight_share, clipped_share, extra.rare_share"}
    default_lifts = [r for r in result.lifts if "__" not in r.metric]
    store.write_results(
        rid, lifts=default_lifts, checks=result.checks,
        heterogeneity=[h for h in result.heterogeneity if "__" not in h.metric],
        power=[p for p in result.power if "__" not in p.metric], gate=decision,
        gate_digest=None if gate_path is None else _sha(gate_path), summary=summary,
        replay_estimates=estimates, replay_lifts=lift_rows, test_plan=plan)
    ctx.timings["analysis"] = time.perf_counter() - t1
    return ReplayOutcome(rid, store.path, result, decision, lift_rows, estimates, plan, ctx.warnings, notes,
                         fit_report, ctx.timings)


def _fit_report(ctx: ReplayContext) -> list[dict]:
    """The reward model's held-out fit: from this run's fit, else from the cache (every batch was cached)."""
    key = ctx.cache.key("reward-report", folds=ctx.cfg.folds, seed=ctx.cfg.seed, **ctx.where)
    z = ctx.cache.arrays(key, lambda: {"report": np.array(json.dumps(ctx.fit().report))})
    return json.loads(str(z["report"]))


LOW_ESS_SHARE = 0.01  # below this share of the slot rows, the weights rest on few requests


def _overlap_notes(cfg: ReplayConfig, estimates: pd.DataFrame) -> list[str]:
    """Say when the default estimator's weights rest on few rows (wide intervals, gate INCONCLUSIVE)."""
    notes = []
    rows = estimates[(estimates["metric"] == "watch_time_s") & estimates["is_default"] & (estimates["arm"] != LOGGING)]
    for r in rows.itertuples():
        if r.ess is None or pd.isna(r.ess):
            continue
        slot_rows = float(r.slot_rows)
        if r.ess < LOW_ESS_SHARE * slot_rows:
            notes.append(f"low overlap for {r.arm}: the {cfg.default_estimator} weights' effective sample size is "
                         f"{r.ess:,.0f} of {slot_rows:,.0f} slot rows (the logging policy rarely showed {r.arm}'s "
                         "slates in its order), so intervals are wide; a stochastic target (--temperature) overlaps "
                         "more, and the biased estimators (pbm, dm) are narrower but miss the truth under a cascade")
    return notes


# ---------------------------------------------------------------------------------------- helpers
def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def metric_column(metric: str, estimator: str, default: str) -> str:
    """Per-user column of (metric, estimator): the default estimator's is the plain metric name (what the
    gate and the `lifts` table read); the others are `<metric>__<estimator>`."""
    return metric if estimator == default else f"{metric}__{estimator}"


def _ordered(metrics: Sequence[str]) -> list[str]:
    return [m for m in PRIMARY_ORDER if m in metrics]


def _split(cfg: ReplayConfig) -> dict[str, float]:
    arms = cfg.arms
    shares = cfg.traffic or tuple(1.0 for _ in arms)
    return {a: float(s) for a, s in zip(arms, shares, strict=True)}


def _lift_rows(cfg: ReplayConfig, result: ExperimentResult, estimates: pd.DataFrame) -> pd.DataFrame:
    """replay_lifts rows: the analysis' overall lifts per estimator, with the true lift where known."""
    truth = {(a, m): v for a, m, v in zip(estimates["arm"], estimates["metric"], estimates["true_value"], strict=True)
             if v is not None and pd.notna(v)}
    rows = []
    for r in result.lifts:
        if not r.is_overall:
            continue
        m, _, e = r.metric.partition("__")
        e = e or cfg.default_estimator
        row = {"control": r.control, "treatment": r.treatment, "metric": m, "estimator": e,
               "is_default": e == cfg.default_estimator, "control_value": r.control_mean,
               "treatment_value": r.treatment_mean, "abs_diff": r.abs_diff, "abs_ci_low": r.abs_ci_low,
               "abs_ci_high": r.abs_ci_high, "rel_diff": r.rel_diff, "rel_ci_low": r.rel_ci_low,
               "rel_ci_high": r.rel_ci_high, "p_value": r.p_value, "n_units": r.n_treatment}
        if (r.control, m) in truth and (r.treatment, m) in truth:
            c, t = truth[(r.control, m)], truth[(r.treatment, m)]
            row.update(true_control=float(c), true_treatment=float(t), true_abs_diff=float(t - c),
                       true_rel_diff=float(t / c - 1) if c else None)
        rows.append(row)
    return pd.DataFrame(rows)
