"""`harness replay` as an API: logs + checkpoints -> per-user estimates -> paired lifts -> gate -> one stored run.

Steps (each behind a progress bar): read the window; load each model and check it never saw the window;
score every request (and the comment sections) with each model; fit the cross-fitted reward model; estimate
every policy's four outcomes per user with every estimator; compute the truth when the logs come from the
synthetic world; hand the per-user table to the statistics layer (paired by user, or an online-style
split by a salted hash of the user id); apply the gate; write everything in one transaction.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.config import AnalysisConfig
from analysis.experiment import analyze
from analysis.gate import GateConfig, GateDecision, evaluate_gate
from analysis.metrics import MeanMetric
from analysis.results import ExperimentResult
from harness.logs.window import WindowError, experiment_start, parse_cut
from harness.replay import estimators as est
from harness.replay import policies, scoring
from harness.replay.cache import DEFAULT_DIR as DEFAULT_CACHE
from harness.replay.cache import Cache
from harness.replay.data import ReplayData, load_window, open_logs
from harness.replay.engine import (
    DEFAULT_ESTIMATOR,
    ESTIMATORS,
    LOGGING,
    ArmEstimates,
    PolicyInputs,
    comment_target,
    estimate_arm,
    logging_inputs,
)
from harness.replay.reward_model import CONTINUE, METRICS, CascadeModel, fit_cascade
from harness.replay.truth import Truth, deterministic_truth, logging_truth, plackett_luce_truth
from harness.store import ResultsStore
from harness.store.experiment import experiment_summary

SEGMENTS = ("activity_level", "comment_level", "new_user")
PRIMARY_ORDER = ("comment_watch_time_s", "comment_interactions", "watch_time_s", "video_interactions")


class ReplayError(ValueError):
    """A replay that cannot run as asked (the message says why and what to do)."""


@dataclass(frozen=True)
class ReplayConfig:
    data: Path
    control: str
    treatments: tuple[str, ...]
    checkpoints: Path = Path("checkpoints")
    window_start: str | None = None  # ISO time or 'experiment-start'; None = the world's experiment start
    window_end: str | None = None
    temperature: float | None = None  # None = deterministic top-k
    design: str = "paired"  # paired | split
    traffic: tuple[float, ...] | None = None  # split: shares per arm (control first)
    salt: str = "replay"
    clip: float | None = None
    seed: int = 0
    truth: bool = True
    truth_samples: int = 64
    dm_samples: int = 8
    allow_overlap: bool = False
    folds: int = 2
    alpha: float = 0.05
    default_estimator: str = DEFAULT_ESTIMATOR
    cache_dir: Path | None = DEFAULT_CACHE  # None: recompute everything

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["data"], d["checkpoints"] = str(self.data), str(self.checkpoints)
        d["cache_dir"] = None if self.cache_dir is None else str(self.cache_dir)
        return d


@dataclass
class ReplayOutcome:
    run_id: str
    db: Path
    result: ExperimentResult
    decision: GateDecision | None
    lifts: pd.DataFrame  # replay_lifts rows
    estimates: pd.DataFrame  # replay_estimates rows
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what limits the numbers (low overlap, ...), not errors
    fit_report: list[dict] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


Progress = Callable[[str, int], Callable[[int], None]]  # (step label, total) -> tick(n)


def _no_progress(label: str, total: int) -> Callable[[int], None]:
    return lambda n: None


def user_arms(users: np.ndarray, arms: Sequence[str], traffic: Sequence[float], salt: str) -> np.ndarray:
    """Arm of each user by a salted sha256 of its id, as an online split would assign it."""
    shares = np.asarray(traffic, float)
    edges = np.cumsum(shares / shares.sum())
    u = np.array([int.from_bytes(hashlib.sha256(f"{salt}:{x}".encode()).digest()[:8], "big") / 2**64
                  for x in users])
    return np.asarray(arms, dtype=object)[np.minimum(np.searchsorted(edges, u, side="right"), len(arms) - 1)]


def run_replay(cfg: ReplayConfig, *, store: ResultsStore, gate: GateConfig | None = None,
               gate_path: Path | None = None, run_id: str | None = None, replace: bool = False,
               progress: Progress = _no_progress, log: Callable[[str], None] = lambda s: None) -> ReplayOutcome:
    timings: dict[str, float] = {}
    warnings: list[str] = []
    t0 = time.perf_counter()
    arms = (cfg.control, *cfg.treatments)
    if len(set(arms)) != len(arms) and cfg.design == "split":
        raise ReplayError("a split design needs distinct arms; for an A/A test use the paired design or "
                          "two names for the same checkpoint")
    if cfg.default_estimator not in ESTIMATORS:
        raise ReplayError(f"unknown estimator {cfg.default_estimator!r}; choose one of {list(ESTIMATORS)}")
    store.check_writable()
    logs = open_logs(cfg.data)
    try:
        start = _window_start(cfg, logs)
        end = parse_cut(cfg.window_end, logs) if cfg.window_end else None
        data = load_window(logs, start, end)
        fingerprint = logs.fingerprint()
        tables = logs.tables()
        users_tab = logs.table("users").to_pandas()
        pre = _pre_period(logs, start)
        timings["read"] = time.perf_counter() - t0
        log(f"window: {data.n_requests:,} requests of {len(np.unique(data.user_id)):,} users from {start}")

        from models.catalogue import Catalogue
        from models.histories import event_log_from_tables

        catalogue = Catalogue.from_tables(tables["videos"], tables.get("comments"))
        event_log = event_log_from_tables(catalogue, tables)
        models, digests = _load_models(arms, cfg, catalogue, start, fingerprint, warnings)
        users, user_index = np.unique(data.user_id, return_inverse=True)
        cache = Cache(cfg.cache_dir)
        where = {"logs": fingerprint, "start": str(start), "end": str(end)}
        sections, section_of = _logged_sections(data)
        index = scoring.CommentIndex.build(catalogue)
        inputs: dict[str, PolicyInputs] = {}
        models_for_truth: dict[str, tuple[Any, int]] = {}  # name -> (recommender, comment list size)
        t1 = time.perf_counter()
        for name in dict.fromkeys(arms):
            if name == LOGGING:
                inputs[name] = logging_inputs(data)
                continue
            rec = models[name]
            L = _list_size(logs)

            def score(rec=rec, name=name, L=L) -> dict[str, np.ndarray]:
                tick = progress(f"scoring requests ({name})", len(users))
                scores = scoring.score_videos(rec, event_log, catalogue, data, tick=tick)
                tick = progress(f"ranking opened comment sections ({name})", len(sections))
                ranked = scoring.rank_comments(rec, event_log, catalogue, index, data, sections // data.k,
                                               data.video.ravel()[sections], L, tick=tick)
                return {"scores": scores, "ranked": ranked}

            got = cache.arrays(cache.key("scores", model=digests[name], list_size=L, **where), score)
            scores, ranked = got["scores"], got["ranked"]
            pol = policies.slate_policy(scores, data.candidates, data.video, cfg.temperature)
            inputs[name] = PolicyInputs(name, pol, comment_target(data, ranked, section_of))
            models_for_truth[name] = (rec, L)
        timings["score"] = time.perf_counter() - t1

        t1 = time.perf_counter()
        log("fitting the reward model (cross-fitted over users)")
        model = _reward_model(cache, cache.key("reward", folds=cfg.folds, seed=cfg.seed, **where),
                              lambda: fit_cascade(logs, data, folds=cfg.folds, seed=cfg.seed))
        timings["reward_model"] = time.perf_counter() - t1
        examination, logging_slots = _pbm_inputs(data, warnings)

        t1 = time.perf_counter()
        arm_est: dict[str, ArmEstimates] = {}
        for name in dict.fromkeys(arms):
            arm_est[name] = estimate_arm(inputs[name], data, model, user_index, len(users),
                                         examination=examination, logging_slots=logging_slots, clip=cfg.clip,
                                         samples=cfg.dm_samples, seed=cfg.seed)
        if cfg.default_estimator in arm_est[cfg.control].unavailable:
            raise ReplayError(f"the default estimator {cfg.default_estimator!r} cannot run on these logs: "
                              f"{arm_est[cfg.control].unavailable[cfg.default_estimator]}")
        timings["estimate"] = time.perf_counter() - t1

        truth: dict[str, Truth] = {}
        if cfg.truth and _has_world(logs):
            t1 = time.perf_counter()
            truth = _truth(cfg, data, inputs, models_for_truth, event_log, catalogue, index, progress, cache,
                           where, digests)
            timings["truth"] = time.perf_counter() - t1
        elif cfg.truth:
            log("no synthetic world in these logs: the true lifts are unknown (real logs)")
    finally:
        logs.close()

    frame = _unit_table(cfg, users, arm_est, pre, users_tab)
    metrics = [MeanMetric(_col(m, e, cfg.default_estimator)) for m in _ordered(METRICS) for e in ESTIMATORS
               if (m, e) in arm_est[cfg.control].estimates]
    acfg = AnalysisConfig(alpha=cfg.alpha, paired=cfg.design == "paired",
                          cuped="none" if cfg.design == "paired" else "single", seed=cfg.seed,
                          min_units=2, expected_split=_split(cfg) if cfg.design == "split" else None)
    t1 = time.perf_counter()
    result = analyze(frame, arm_col="arm", control=cfg.control, treatment=list(cfg.treatments), metrics=metrics,
                     unit_col="user_id", segments=[s for s in SEGMENTS if s in frame.columns], config=acfg)
    decision = evaluate_gate(result, gate) if gate is not None else None
    if decision is not None and gate is not None:
        decision = _overlap_guard(decision, gate, cfg, arm_est)
    timings["analysis"] = time.perf_counter() - t1
    est_rows, lift_rows = _report_rows(cfg, result, arm_est, truth, user_index, len(users))
    notes = _overlap_notes(cfg, arm_est)
    default_lifts = [r for r in result.lifts if "__" not in r.metric]
    run_config = {"command": "replay", **cfg.to_dict(), "window": {"start": str(start), "end": str(end)},
                  "requests": data.n_requests, "users": int(len(users)), "warnings": warnings,
                  "reward_model": model.report, "gate": None if gate_path is None else str(gate_path),
                  "estimators": list(ESTIMATORS), "default_estimator": cfg.default_estimator,
                  "unavailable": {a: e.unavailable for a, e in arm_est.items() if e.unavailable},
                  "correction_scope": "Holm within each metric's segment levels; the gate adjusts its primary "
                                      "metrics over every treatment arm"}
    segs = [s for s in SEGMENTS if s in frame.columns]
    keep = [m.name for m in metrics] + [c for c in (f"{m}_pre" for m in METRICS) if c in frame.columns]
    units = frame[["user_id", "arm", *keep, *segs]].rename(columns={"user_id": "unit_id"})
    units["unit_id"] = units["unit_id"].astype(str)
    rid = store.write_run(
        kind="replay", control=cfg.control, treatment=",".join(cfg.treatments), config=run_config,
        seed=cfg.seed, data_fingerprint=fingerprint, checkpoint_digests=digests, run_id=run_id, replace=replace,
        unit_metrics=units, lifts=default_lifts, checks=result.checks,
        heterogeneity=[h for h in result.heterogeneity if "__" not in h.metric],
        power=[p for p in result.power if "__" not in p.metric], gate=decision,
        gate_digest=None if gate_path is None else _sha(gate_path), summary=experiment_summary(result),
        replay_estimates=est_rows, replay_lifts=lift_rows)
    timings["total"] = time.perf_counter() - t0
    return ReplayOutcome(rid, store.path, result, decision, lift_rows, est_rows, warnings, notes, model.report,
                         timings)


MIN_GATE_ESS = 1000.0  # below this weight ESS (slot rows) a replay's CIs are not trusted by the gate


def _overlap_guard(decision: GateDecision, gate: GateConfig, cfg: ReplayConfig,
                   arm_est: dict[str, ArmEstimates]) -> GateDecision:
    """A gate rule of the replay's own: every gated metric's default estimate, in both arms, must rest on a
    weight ESS of at least MIN_GATE_ESS slot rows, else that arm cannot SHIP (INCONCLUSIVE).

    Why: with few effective rows an importance-weighted mean is usually below its expectation and its
    standard error is estimated from the few rows that carry weight, so its CI under-covers (measured on
    the default world: deterministic top-k base, ESS 33, cascade_dr per-arm errors of up to 5 standard
    errors). A wrong SHIP is the worst error a launch gate can make."""
    from analysis.gate import RuleOutcome, decisions_by_arm

    rules = list(decision.rules)
    for t in cfg.treatments:
        low = []
        for m in gate.metrics:
            for a in (cfg.control, t):
                e = arm_est[a].estimates.get((m, cfg.default_estimator))
                if a != LOGGING and e is not None and np.isfinite(e.ess) and e.ess < MIN_GATE_ESS:
                    low.append((e.ess, a, m))
        if low:
            ess, a, m = min(low)
            rules.append(RuleOutcome(
                rule="min_sample", metric=m, passed=False, outcome="inconclusive", treatment=t,
                reason=f"replay weight ESS {ess:,.0f} ({a}, {cfg.default_estimator}) < {MIN_GATE_ESS:,.0f}: the "
                       "off-policy CIs are not reliable at this overlap (docs/replay.md)"))
    if len(rules) == len(decision.rules):
        return decision
    arms = decisions_by_arm([r.to_dict() for r in rules])
    vals = set(arms.values())
    overall = "NO_SHIP" if "NO_SHIP" in vals else "INCONCLUSIVE" if "INCONCLUSIVE" in vals else "SHIP"
    return GateDecision(overall, rules, decision.treatment, arms, decision.mode)


LOW_ESS_SHARE = 0.01  # below this share of the slot rows, the weights rest on few requests


def _overlap_notes(cfg: ReplayConfig, arm_est: dict[str, ArmEstimates]) -> list[str]:
    """Say when the default estimator's weights rest on few rows (wide intervals, gate INCONCLUSIVE)."""
    notes = []
    for a, ae in arm_est.items():
        e = ae.estimates.get(("watch_time_s", cfg.default_estimator))
        if e is None or not np.isfinite(e.ess) or a == LOGGING:
            continue
        rows = e.contributions.size
        if e.ess < LOW_ESS_SHARE * rows:
            notes.append(f"low overlap for {a}: the {cfg.default_estimator} weights' effective sample size is "
                         f"{e.ess:,.0f} of {rows:,} slot rows (the logging policy rarely showed {a}'s slates in "
                         "its order), so intervals are wide; a stochastic target (--temperature) overlaps more, "
                         "and the biased estimators (pbm, dm) are narrower but miss the truth under a cascade")
    return notes


# ------------------------------------------------------------------------------------------- helpers
def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _col(metric: str, estimator: str, default: str) -> str:
    """Per-user column of (metric, estimator): the default estimator's is the plain metric name (what the
    gate and the `lifts` table read); the others are `<metric>__<estimator>`."""
    return metric if estimator == default else f"{metric}__{estimator}"


def _ordered(metrics: Sequence[str]) -> list[str]:
    return [m for m in PRIMARY_ORDER if m in metrics]


def _split(cfg: ReplayConfig) -> dict[str, float]:
    arms = (cfg.control, *cfg.treatments)
    shares = cfg.traffic or tuple(1.0 for _ in arms)
    return {a: float(s) for a, s in zip(arms, shares, strict=True)}


def _window_start(cfg: ReplayConfig, logs) -> np.datetime64:
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


def _has_world(logs) -> bool:
    return experiment_start(logs) is not None


def _list_size(logs) -> int:
    """How many comments a section shows: the world's setting, else the longest logged list."""
    from harness.logs.window import WORLD_CONFIG_FILE

    if WORLD_CONFIG_FILE in logs.extra_file_names:
        meta = json.loads(logs.extra_file(WORLD_CONFIG_FILE))
        size = meta.get("config", {}).get("behaviour", {}).get("comment_list_size")
        if size:
            return int(size)
    row = logs.query("SELECT max(position) + 1 AS n FROM comment_impressions").to_pylist()[0]
    return int(row["n"] or 1)


def _load_models(arms, cfg: ReplayConfig, catalogue, start: np.datetime64, fingerprint: str,
                 warnings: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    from models.adapters import load_recommender, resolve_checkpoint
    from models.checkpoint import CheckpointError, read_config

    models, digests = {}, {}
    for name in dict.fromkeys(arms):
        if name == LOGGING:
            continue
        try:
            folder = resolve_checkpoint(name, cfg.checkpoints)
            meta = read_config(folder)
            _check_training_window(name, folder, meta, start, fingerprint, cfg.allow_overlap, warnings)
            rec = load_recommender(folder, catalogue=catalogue)
        except CheckpointError as exc:
            raise ReplayError(str(exc)) from None
        models[name] = rec
        digests[name] = getattr(rec, "digest", "")
    return models, digests


def _check_training_window(name: str, folder: Path, meta: dict, start: np.datetime64, fingerprint: str,
                           allow_overlap: bool, warnings: list[str]) -> None:
    """Refuse a checkpoint that may have seen the replayed window (unless allowed, then mark the run)."""
    td = meta.get("training_data") or {}
    problem = None
    if not td:
        problem = (f"{name} ({folder}) records no training window (trained without `--until`), so nothing shows it "
                   "did not see the replayed requests")
    elif td.get("logs_fingerprint") != fingerprint:
        problem = (f"{name} ({folder}) was trained on other logs (fingerprint {str(td.get('logs_fingerprint'))[:12]}..., "
                   f"these are {fingerprint[:12]}...); if these logs are a default world written by an older "
                   "version, regenerate them with `harness simulate --out data/world --seed 0 --overwrite`")
    elif td.get("until") is None or np.datetime64(td["until"]) > start:
        problem = (f"{name} ({folder}) was trained on requests up to {td.get('last_request')}, inside the replayed "
                   f"window that starts {start}")
    if problem:
        if not allow_overlap:
            raise ReplayError(f"{problem}. Train it with `harness train --model ... --until experiment-start` (or "
                              "--until <the window start>), or pass --allow-overlap to run anyway (the run is marked)")
        warnings.append(f"OVERLAP: {problem}; estimates may favour this model")
    stopped = (meta.get("training_metrics") or {}).get("stopped_by")
    if stopped == "time_budget":
        warnings.append(f"UNDER-TRAINED: {name} ({folder}) stopped at its time budget, not at convergence; its "
                        "estimates understate what the model can do")


def _logged_sections(data: ReplayData) -> tuple[np.ndarray, np.ndarray]:
    """Distinct opened sections as flat slot rows (row * k + slot), ascending, and each impression's section."""
    key = data.c_row * data.k + data.c_slot
    uniq, inv = np.unique(key, return_inverse=True)
    return uniq, inv


def _pbm_inputs(data: ReplayData, warnings: list[str]):
    if data.logging_score is None or not data.is_random.any():
        return None, None
    try:
        exam = est.examination_from_random(data.examined.ravel(), np.tile(np.arange(data.k), data.n_requests),
                                           data.is_random.ravel(), data.k)
    except ValueError as exc:
        warnings.append(f"pbm unavailable: {exc}")
        return None, None
    return exam, policies.logging_by_slot(data.pscore, data.logging_score, data.candidates, data.video)


def _pre_period(logs, start: np.datetime64) -> pd.DataFrame:
    """Per-user totals of the four outcomes before the window (CUPED covariates, segments)."""
    p = [start.astype("datetime64[us]").item()]
    v = logs.query("SELECT r.user_id, sum(i.watch_time_s) AS watch_time_s, sum(i.liked::INT)::DOUBLE AS "
                   "video_interactions, sum(i.comment_watch_time_s) AS comment_watch_time_s FROM impressions i "
                   "JOIN requests r USING (request_id) WHERE r.ts < ? GROUP BY 1", p).to_pandas()
    c = logs.query("SELECT r.user_id, sum(c.liked::INT + c.replied::INT)::DOUBLE AS comment_interactions FROM "
                   "comment_impressions c JOIN requests r USING (request_id) WHERE r.ts < ? GROUP BY 1",
                   p).to_pandas()
    return v.merge(c, on="user_id", how="outer").set_index("user_id")


def _unit_table(cfg: ReplayConfig, users: np.ndarray, arm_est: dict[str, ArmEstimates], pre: pd.DataFrame,
                users_tab: pd.DataFrame) -> pd.DataFrame:
    arms = (cfg.control, *cfg.treatments)
    base = pd.DataFrame({"user_id": users})
    prev = pre.reindex(users).fillna(0.0)
    for m in METRICS:
        for e in ESTIMATORS:
            base[_col(m, e, cfg.default_estimator) + "_pre"] = prev[m].to_numpy() if m in prev else 0.0
    if len(users_tab):  # segments, when the logs describe their users
        ut = users_tab.set_index("user_id").reindex(users)
        for s in ("activity_level", "comment_level"):
            if s in ut:
                base[s] = ut[s].fillna("none").astype(str).to_numpy()
        if "signup_day" in ut:
            base["new_user"] = np.where(ut["signup_day"].fillna(-1).to_numpy() >= 0, "new", "existing")
    parts = []
    assign = user_arms(users, arms, cfg.traffic or [1.0] * len(arms), cfg.salt) if cfg.design == "split" else None
    for a in dict.fromkeys(arms):
        f = base.copy()
        f["arm"] = a
        for (m, e), v in arm_est[a].per_user.items():
            f[_col(m, e, cfg.default_estimator)] = v
        parts.append(f if assign is None else f[assign == a])
    return pd.concat(parts, ignore_index=True)


def _reward_model(cache: Cache, key: str, fit: Callable[[], CascadeModel]) -> CascadeModel:
    """The cross-fitted reward model, from the cache when the same logs and settings were fitted before."""
    def compute() -> dict[str, np.ndarray]:
        m = fit()
        return {**{f"cand_{o}": v for o, v in m.cand.items()}, **{f"logged_{o}": v for o, v in m.logged.items()},
                "report": np.array(json.dumps(m.report))}

    z = cache.arrays(key, compute)
    outcomes = (*METRICS, CONTINUE)
    return CascadeModel({o: z[f"cand_{o}"] for o in outcomes}, {o: z[f"logged_{o}"] for o in outcomes},
                        json.loads(str(z["report"])))


def _truth(cfg, data, inputs, ranked_models, event_log, catalogue, index, progress, cache: Cache,
           where: dict[str, str], digests: dict[str, str]) -> dict[str, Truth]:
    from harness.simulate.oracle import Oracle

    oracle_box: list[Oracle] = []

    def oracle() -> Oracle:  # loaded only when something is not cached
        if not oracle_box:
            oracle_box.append(Oracle.from_dataset(cfg.data))
        return oracle_box[0]

    out: dict[str, Truth] = {}
    for name, pol in inputs.items():
        key = cache.key("truth", model=digests.get(name, LOGGING), temperature=cfg.temperature,
                        samples=cfg.truth_samples, seed=cfg.seed, **where)
        z = cache.arrays(key, lambda name=name, pol=pol: _truth_arrays(
            _one_truth(cfg, data, name, pol, ranked_models, event_log, catalogue, index, progress, oracle())))
        out[name] = Truth({m: z[f"value_{m}"] for m in METRICS}, {m: z[f"se_{m}"] for m in METRICS},
                          str(z["method"]))
    return out


def _truth_arrays(t: Truth) -> dict[str, np.ndarray]:
    return {**{f"value_{m}": t.value[m] for m in METRICS}, **{f"se_{m}": t.se[m] for m in METRICS},
            "method": np.array(t.method)}


def _one_truth(cfg, data, name, pol, ranked_models, event_log, catalogue, index, progress, oracle) -> Truth:
    R, k = data.video.shape
    if name == LOGGING:
        return logging_truth(oracle, data.request_id, samples=cfg.truth_samples, seed=cfg.seed)
    rec, L = ranked_models[name]
    if pol.slate.deterministic:
        videos = np.take_along_axis(data.candidates, pol.slate.slate, 1)
        rows = np.repeat(np.arange(R), k)
        tick = progress(f"truth: ranking comments of {name}'s slates", R * k)
        rk = scoring.rank_comments(rec, event_log, catalogue, index, data, rows, videos.ravel(), L, tick=tick)
        return deterministic_truth(oracle, data.request_id, videos, rk.reshape(R, k, L))
    n = data.candidates.shape[1]

    def rank_all() -> np.ndarray:
        tick = progress(f"truth: ranking comments of {name}'s candidates", R * n)
        return scoring.rank_comments(rec, event_log, catalogue, index, data, np.repeat(np.arange(R), n),
                                     data.candidates.ravel(), L, tick=tick).reshape(R, n, L)

    assert pol.slate.log_weights is not None
    return plackett_luce_truth(oracle, data.request_id, data.candidates, pol.slate.log_weights, k, rank_all,
                               samples=cfg.truth_samples, seed=cfg.seed)


def _report_rows(cfg, result: ExperimentResult, arm_est: dict[str, ArmEstimates], truth: dict[str, Truth],
                 user_index: np.ndarray, n_users: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """replay_estimates and replay_lifts rows (truth per user averaged over the analysed users)."""
    true_user = {a: {m: np.bincount(user_index, weights=t.value[m], minlength=n_users) for m in METRICS}
                 for a, t in truth.items()}
    true_se = {a: {m: float(np.sqrt((t.se[m] ** 2).sum())) / n_users for m in METRICS} for a, t in truth.items()}
    est_rows = []
    for a, ae in arm_est.items():
        for (m, e), x in ae.estimates.items():
            est_rows.append({"arm": a, "metric": m, "estimator": e, "is_default": e == cfg.default_estimator,
                             "value": float(ae.per_user[(m, e)].mean()),
                             "se": float(x.se) * x.n / n_users, "n_units": n_users, "n_requests": int(x.n),
                             "ess": None if np.isnan(x.ess) else float(x.ess),
                             "max_weight_share": None if np.isnan(x.max_weight_share) else float(x.max_weight_share),
                             "clipped_share": float(x.clipped_share),
                             "true_value": float(true_user[a][m].mean()) if a in true_user else None,
                             "true_se": true_se[a][m] if a in true_se else None})
    lift_rows = []
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
        if r.control in true_user and r.treatment in true_user:
            c, t = true_user[r.control][m].mean(), true_user[r.treatment][m].mean()
            row.update(true_control=float(c), true_treatment=float(t), true_abs_diff=float(t - c),
                       true_rel_diff=float(t / c - 1) if c else None)
        lift_rows.append(row)
    return pd.DataFrame(est_rows), pd.DataFrame(lift_rows)
