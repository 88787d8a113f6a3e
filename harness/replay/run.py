"""`harness replay` as an API: logs + checkpoints -> per-user estimates -> paired lifts -> gate -> one stored run.

Steps: read the window's users; load each model and check it never saw the window; register the run; then,
user batch by user batch (`harness.replay.batches`), score the batch's requests and comment sections with each
model, predict the cross-fitted reward model, estimate every policy's four outcomes per user with every
estimator, compute the truth when the logs come from the synthetic world, and store the batch (its users'
rows and its estimate statistics, one transaction). A killed run resumes at the first missing batch
(`resume=True`) and ends with the results an uninterrupted run gives. Finally the per-user table is read
back and handed to the statistics layer (paired by user, or an online-style split by a salted hash of the
user id), the batches' statistics are merged into the estimates, the test plan is computed, and the gate
applied.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from analysis.gate import GateConfig
from harness.logs.window import WindowError, experiment_start, parse_cut
from harness.replay import batches as B
from harness.replay import estimators as est
from harness.replay import policies, scoring
from harness.replay.batches import user_arms
from harness.replay.cache import DEFAULT_DIR as DEFAULT_CACHE
from harness.replay.cache import Cache
from harness.replay.checks import (
    ReplayError,
    check_config,
    check_estimators,
    check_resumable,
    check_split,
    load_models,
    window_start,
)
from harness.replay.data import (
    ReplayData,
    load_window,
    open_logs,
    user_totals,
    validate_window,
    window_users,
)
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
from harness.replay.finish import ReplayOutcome, finish
from harness.replay.finish import metric_column as _col
from harness.replay.parts import BatchSource, WindowParts
from harness.replay.reward_model import CONTINUE, METRICS, CascadeFit, CascadeModel, fit_cascade
from harness.replay.truth import Truth, deterministic_truth, logging_truth, plackett_luce_truth
from harness.store import ResultsStore

FIT_MAX_REQUESTS = 200_000  # the reward model is fitted on at most this many of the window's requests


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
    power: float = 0.8
    users_per_day: float | None = None  # test plan: daily traffic (both arms); None = the logs' own rate
    default_estimator: str = DEFAULT_ESTIMATOR
    batch_users: int = B.DEFAULT_BATCH_USERS
    cache_dir: Path | None = DEFAULT_CACHE  # None: recompute everything

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["data"], d["checkpoints"] = str(self.data), str(self.checkpoints)
        d["cache_dir"] = None if self.cache_dir is None else str(self.cache_dir)
        return d

    @property
    def arms(self) -> tuple[str, ...]:
        """Arm labels, control first: a policy named twice (an A/A test) gets `#2`, `#3` on its later arms."""
        out: list[str] = []
        for name in (self.control, *self.treatments):
            label, i = name, 1
            while label in out:
                i += 1
                label = f"{name}#{i}"
            out.append(label)
        return tuple(out)

    @staticmethod
    def policy(arm: str) -> str:
        """The policy (model name) behind an arm label."""
        return arm.split("#", 1)[0]

    def identity(self) -> dict[str, Any]:
        """What the results depend on (stored as the run's config; a resumed run must match it): not the cache."""
        d = self.to_dict()
        del d["cache_dir"]
        return d


Progress = Callable[[str, int], Callable[[int], None]]  # (step label, total) -> tick(n)


def _no_progress(label: str, total: int) -> Callable[[int], None]:
    return lambda n: None


class Engine(Protocol):
    """Runs user batches: yields (batch, unit rows, statistics rows) for each of `todo` = [(batch, user ids)],
    in any order, each exactly once. The driver stores every batch as it arrives, so an engine that loses a
    worker may recompute its batches (a batch's result depends only on the batch, the inputs and the seed)."""

    def map_batches(self, ctx: ReplayContext, todo: list[tuple[int, np.ndarray]]
                    ) -> Iterator[tuple[int, pd.DataFrame, list[dict[str, Any]]]]: ...


class LocalEngine:
    """The embedded engine: every batch in this process, in order."""

    def map_batches(self, ctx: ReplayContext, todo: list[tuple[int, np.ndarray]]
                    ) -> Iterator[tuple[int, pd.DataFrame, list[dict[str, Any]]]]:
        for b, users in todo:
            units, stats = run_batch(ctx, b, users)
            yield b, units, stats


@dataclass
class ReplayContext:
    """What every batch needs, loaded once per process (`prepare`): an engine's workers build their own from the
    same config, and share the driver's fitted reward model (`fit_box`) so every batch sees the same one."""

    cfg: ReplayConfig
    logs: Any
    start: np.datetime64
    end: np.datetime64 | None
    fingerprint: str
    users: np.ndarray
    catalogue: Any
    videos: Any  # the videos table (durations: the event log's watch rule)
    models: dict[str, Any]
    digests: dict[str, str]
    index: scoring.CommentIndex
    list_size: int
    pre: pd.DataFrame
    users_tab: pd.DataFrame
    examination: est.Examination | None
    cache: Cache
    where: dict[str, str]
    has_world: bool
    progress: Progress
    warnings: list[str]
    timings: dict[str, float]
    fit_box: list[CascadeFit] = field(default_factory=list)
    oracle_box: list[Any] = field(default_factory=list)
    parts: WindowParts | None = None  # the window split by batch (`WindowParts.ensure`, set by the driver)
    training_logs: dict[str, str] = field(default_factory=dict)  # per model: how its training logs match (load_models)

    def fit(self) -> CascadeFit:
        """The reward model, fitted on first use (not at all when every batch's predictions are cached)."""
        if not self.fit_box:
            t = time.perf_counter()
            sample = _fit_users(self.logs, self.start, self.end, self.users, FIT_MAX_REQUESTS)
            data = load_window(self.logs, self.start, self.end, users=None if len(sample) == len(self.users)
                               else sample)
            self.fit_box.append(fit_cascade(self.logs, data, folds=self.cfg.folds, seed=self.cfg.seed))
            self.timings["reward_fit"] = time.perf_counter() - t
        return self.fit_box[0]

    def oracle(self):
        if not self.oracle_box:
            from harness.simulate.oracle import Oracle

            self.oracle_box.append(Oracle.from_dataset(self.cfg.data))
        return self.oracle_box[0]


def run_replay(cfg: ReplayConfig, *, store: ResultsStore, gate: GateConfig | None = None,
               gate_path: Path | None = None, run_id: str | None = None, replace: bool = False,
               resume: bool = False, progress: Progress = _no_progress,
               log: Callable[[str], None] = lambda s: None, engine: Engine | None = None) -> ReplayOutcome:
    """Run (or resume) a replay and store it; `engine` runs the user batches (default: here, one after another)."""
    timings: dict[str, float] = {}
    warnings: list[str] = []
    t0 = time.perf_counter()
    check_config(cfg)
    store.check_writable()
    if resume:
        check_resumable(store, run_id)
    logs = open_logs(cfg.data)
    try:
        ctx = prepare(cfg, logs, progress, warnings, timings, log)
        batch = B.batch_of(ctx.users, B.n_batches(len(ctx.users), cfg.batch_users))
        n_b = int(batch.max()) + 1
        run_config = {"command": "replay", **cfg.identity(), "window": {"start": str(ctx.start), "end": str(ctx.end)},
                      "users": int(len(ctx.users)), "batches": n_b, "warnings": warnings,
                      "training_logs": ctx.training_logs,
                      "gate": None if gate_path is None else str(gate_path), "estimators": list(ESTIMATORS),
                      "default_estimator": cfg.default_estimator,
                      "correction_scope": "Holm within each metric's segment levels; the gate adjusts its primary "
                                          "metrics over every treatment arm"}
        rid = store.create_run(kind="replay", control=cfg.control, treatment=",".join(cfg.treatments),
                               config=run_config, seed=cfg.seed, data_fingerprint=ctx.fingerprint,
                               checkpoint_digests=ctx.digests, run_id=run_id, replace=replace)
        with store.recording(rid):
            done = store.replay_batch_ids(rid) if not replace else set()
            if done:
                log(f"resuming run {rid}: {len(done)} of {n_b} batches already stored")
            tick = progress("replaying user batches", n_b)
            tick(len(done & set(range(n_b))))
            todo = [(b, ctx.users[batch == b]) for b in range(n_b) if b not in done]
            if todo:
                t1 = time.perf_counter()
                ctx.parts = WindowParts.ensure(logs, ctx.start, ctx.end, ctx.users, batch, folder=cfg.cache_dir,
                                               fingerprint=ctx.fingerprint)
                timings["partition"] = time.perf_counter() - t1
                log(f"window split by batch: {ctx.parts.bytes / 1e6:,.0f} MB under {ctx.parts.root}")
            t1 = time.perf_counter()
            try:
                for b, units, stats in (engine or LocalEngine()).map_batches(ctx, todo):
                    t2 = time.perf_counter()
                    store.append_replay_batch(rid, b, units, stats)  # as each batch finishes: resumable
                    timings["store"] = timings.get("store", 0.0) + time.perf_counter() - t2
                    log(f"batch {b + 1}/{n_b} stored ({int((batch == b).sum())} users)")
                    tick(1)
            finally:
                if ctx.parts is not None:
                    ctx.parts.discard()
            timings["batches"] = time.perf_counter() - t1
            out = finish(ctx, store, rid, gate, gate_path)
            out.resumed_batches = len(done)
    finally:
        logs.close()
    timings["total"] = time.perf_counter() - t0
    return out


def prepare(cfg: ReplayConfig, logs, progress: Progress, warnings: list[str], timings: dict[str, float],
             log: Callable[[str], None]) -> ReplayContext:
    t0 = time.perf_counter()
    start = window_start(cfg, logs)
    try:
        end = parse_cut(cfg.window_end, logs) if cfg.window_end else None
    except WindowError as exc:
        raise ReplayError(f"--window-end: {exc}") from None
    if end is not None and end <= start:
        raise ReplayError(f"--window-end {end} is not after the window start {start}: the window is empty")
    users = window_users(logs, start, end)
    facts = validate_window(logs, start, end)
    examination = _examination(logs, start, end, warnings)
    check_estimators(cfg, facts, examination is not None)
    check_split(cfg, users)
    fingerprint = logs.fingerprint()
    videos = logs.table("videos")
    users_tab = logs.table("users").to_pandas()
    pre = user_totals(logs, None, start)
    log(f"window: {len(users):,} users from {start}")

    from models.catalogue import Catalogue

    catalogue = Catalogue.from_tables(videos, logs.table("comments"))
    arms = (cfg.control, *cfg.treatments)
    models, digests, matched = load_models(arms, cfg, catalogue, start, fingerprint, warnings, logs, log)
    timings["prepare"] = time.perf_counter() - t0
    return ReplayContext(cfg, logs, start, end, fingerprint, users, catalogue, videos, models, digests,
                    scoring.CommentIndex.build(catalogue), _list_size(logs), pre, users_tab,
                    examination, Cache(cfg.cache_dir),
                    {"logs": fingerprint, "start": str(start), "end": str(end)}, _has_world(logs), progress,
                    warnings, timings, training_logs=matched)


def run_batch(ctx: ReplayContext, b: int, batch_users: np.ndarray) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """One user batch: scores, reward-model predictions, estimates, truth; its unit rows and statistics."""
    if ctx.parts is None:
        raise ReplayError("run_batch needs the window split by batch (ReplayContext.parts, set by run_replay)")
    with ctx.parts.source(b) as src:
        data = load_window(src, ctx.start, ctx.end, users=batch_users)
        events = _BatchEvents(ctx, src)
        units, stats = _run_batch(ctx, b, data, events)
    return units, stats


class _BatchEvents:
    """The batch's users' event log (the models' histories), built from the batch's rows on first use: not at
    all when the batch's scores and truth come from the cache."""

    def __init__(self, ctx: ReplayContext, src: BatchSource) -> None:
        self.ctx, self.src, self.log = ctx, src, None

    def __call__(self):
        if self.log is None:
            from models.histories import event_log_from_tables

            t = time.perf_counter()
            self.log = event_log_from_tables(self.ctx.catalogue, {**self.src.tables(), "videos": self.ctx.videos})
            self.ctx.timings["histories"] = self.ctx.timings.get("histories", 0.0) + time.perf_counter() - t
        return self.log


def _run_batch(ctx: ReplayContext, b: int, data: ReplayData, events: _BatchEvents
               ) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    cfg = ctx.cfg
    users, user_index = np.unique(data.user_id, return_inverse=True)
    where = {**ctx.where, "users": hashlib.sha256(users.tobytes()).hexdigest()}
    sections, section_of = _logged_sections(data)
    inputs: dict[str, PolicyInputs] = {}
    for name in dict.fromkeys((cfg.control, *cfg.treatments)):
        inputs[name] = logging_inputs(data) if name == LOGGING else _policy(ctx, name, data, events, sections,
                                                                           section_of, where)
    model = _reward_model(ctx, data, where, _needed_candidates(inputs, data))
    logging_slots = None
    if ctx.examination is not None and data.logging_score is not None:
        logging_slots = policies.logging_by_slot(data.pscore, data.logging_score, data.candidates, data.video)
    seed = B.batch_seed(cfg.seed, b)
    by_policy: dict[str, ArmEstimates] = {}
    for name in sorted(inputs):
        by_policy[name] = estimate_arm(inputs[name], data, model, user_index, len(users),
                                       examination=ctx.examination if logging_slots is not None else None,
                                       logging_slots=logging_slots, clip=cfg.clip, samples=cfg.dm_samples, seed=seed)
    arm_est = {a: by_policy[cfg.policy(a)] for a in cfg.arms}
    truth = _truth(ctx, data, events, inputs, where, seed) if cfg.truth and ctx.has_world else {}
    truth = {a: truth[cfg.policy(a)] for a in cfg.arms if cfg.policy(a) in truth}
    rare = {a: B.rare_mass(inputs[cfg.policy(a)].slate.target_prob, data.pscore) for a in cfg.arms}
    units = _unit_table(cfg, users, arm_est, ctx.pre, ctx.users_tab)
    return units, B.stats_rows(arm_est, user_index, len(users), data.k, rare, truth)


def _policy(ctx: ReplayContext, name: str, data: ReplayData, events: _BatchEvents, sections: np.ndarray,
            section_of: np.ndarray, where: dict[str, str]) -> PolicyInputs:
    rec, L = ctx.models[name], ctx.list_size

    def score() -> dict[str, np.ndarray]:
        scores = scoring.score_videos(rec, events(), ctx.catalogue, data)
        ranked = scoring.rank_comments(rec, events(), ctx.catalogue, ctx.index, data, sections // data.k,
                                       data.video.ravel()[sections], L)
        return {"scores": scores, "ranked": ranked}

    t = time.perf_counter()
    got = ctx.cache.arrays(ctx.cache.key("scores", model=ctx.digests[name], list_size=L, **where), score)
    ctx.timings["score"] = ctx.timings.get("score", 0.0) + time.perf_counter() - t
    pol = policies.slate_policy(got["scores"], data.candidates, data.video, ctx.cfg.temperature)
    return PolicyInputs(name, pol, comment_target(data, got["ranked"], section_of))


# ------------------------------------------------------------------------------------------- helpers
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


def _logged_sections(data: ReplayData) -> tuple[np.ndarray, np.ndarray]:
    """Distinct opened sections as flat slot rows (row * k + slot), ascending, and each impression's section."""
    key = data.c_row * data.k + data.c_slot
    uniq, inv = np.unique(key, return_inverse=True)
    return uniq, inv


def _examination(logs, start: np.datetime64, end: np.datetime64 | None,
                 warnings: list[str]) -> est.Examination | None:
    """The PBM examination curve from the window's random-exposure slots (all users: one aggregate query)."""
    have = set(logs.query("SELECT * FROM impressions LIMIT 0").column_names)
    if "is_random" not in have:
        return None
    params: list[Any] = [start.astype("datetime64[us]").item()]
    end_sql = ""
    if end is not None:
        end_sql, params = " AND r.ts < ?", [*params, end.astype("datetime64[us]").item()]
    got = logs.query("SELECT i.position, (i.watch_time_s > 0) AS examined FROM impressions i JOIN requests r "
                     f"USING (request_id) WHERE i.is_random AND r.ts >= ?{end_sql}", params).to_pandas()
    if got.empty:
        return None
    k = int(logs.query("SELECT max(position) + 1 AS k FROM impressions").to_pylist()[0]["k"])
    try:
        exam = est.examination_from_random(got["examined"].to_numpy(bool), got["position"].to_numpy(np.int64),
                                           np.ones(len(got), bool), k)
    except ValueError as exc:
        warnings.append(f"pbm unavailable: {exc}")
        return None
    zero = np.flatnonzero(exam.examination <= 0)
    if zero.size:
        warnings.append(f"pbm unavailable: no random-exposure slot at position(s) {zero.tolist()} was played "
                        f"(of {exam.counts[zero].tolist()} random rows), so their examination is estimated as 0")
        return None
    return exam


def _fit_users(logs, start: np.datetime64, end: np.datetime64 | None, users: np.ndarray, cap: int) -> np.ndarray:
    """Users whose requests fit the reward model: all when the window has at most `cap` requests, else users
    in a fixed hash order until `cap` requests (bounds the fit's memory whatever the log size)."""
    params: list[Any] = [start.astype("datetime64[us]").item()]
    end_sql = ""
    if end is not None:
        end_sql, params = " AND ts < ?", [*params, end.astype("datetime64[us]").item()]
    counts = logs.query(f"SELECT user_id, count(*) AS n FROM requests WHERE ts >= ?{end_sql} GROUP BY 1 ORDER BY 1",
                        params).to_pandas()
    if counts["n"].sum() <= cap:
        return users
    order = np.argsort(B.batch_of(counts["user_id"].to_numpy(), 1 << 30), kind="stable")
    take = np.cumsum(counts["n"].to_numpy()[order]) <= cap
    return np.sort(counts["user_id"].to_numpy()[order][take])


def _unit_table(cfg: ReplayConfig, users: np.ndarray, arm_est: dict[str, ArmEstimates], pre: pd.DataFrame,
                users_tab: pd.DataFrame) -> pd.DataFrame:
    """One row per (user, arm) of the batch: every (metric, estimator) column, `<metric>_pre`, segments; in a
    split design only the user's own arm."""
    arms = cfg.arms
    base = pd.DataFrame({"unit_id": users.astype(str)})
    prev = pre.reindex(users).fillna(0.0)
    for m in METRICS:
        base[f"{m}_pre"] = prev[m].to_numpy() if m in prev else 0.0
    if len(users_tab):  # segments, when the logs describe their users
        ut = users_tab.set_index("user_id").reindex(users)
        for s in ("activity_level", "comment_level"):
            if s in ut:
                base[s] = ut[s].fillna("none").astype(str).to_numpy()
        if "signup_day" in ut:
            base["new_user"] = np.where(ut["signup_day"].fillna(-1).to_numpy() >= 0, "new", "existing")
    parts = []
    assign = user_arms(users, arms, cfg.traffic or [1.0] * len(arms), cfg.salt) if cfg.design == "split" else None
    for a in arms:
        f = base.copy()
        f.insert(1, "arm", a)
        for (m, e), v in arm_est[a].per_user.items():
            f[_col(m, e, cfg.default_estimator)] = v
        parts.append(f if assign is None else f[assign == a])
    return pd.concat(parts, ignore_index=True)


def _needed_candidates(inputs: dict[str, PolicyInputs], data: ReplayData) -> np.ndarray | None:
    """(R, n) the candidates whose reward-model predictions the estimators read, when every target is a
    deterministic top-k: its own slate (`engine.continuation_values` reads f and c there only), k of the n
    candidates per target, so the trees predict a fraction of the rows. None (every candidate) when a target
    is stochastic (Plackett-Luce or the logging policy): its expectations run over all of them."""
    if any(name == LOGGING or not p.slate.deterministic for name, p in inputs.items()):
        return None
    need = np.zeros(data.candidates.shape, bool)
    for p in inputs.values():
        np.put_along_axis(need, p.slate.slate, True, axis=1)
    return need


def _reward_model(ctx: ReplayContext, data: ReplayData, where: dict[str, str],
                  need: np.ndarray | None = None) -> CascadeModel:
    """The batch's cross-fitted reward-model predictions (the candidates in `need`, all when None), from the
    cache when computed before."""
    def compute() -> dict[str, np.ndarray]:
        m = ctx.fit().predict(data, need)
        return {**{f"cand_{o}": v for o, v in m.cand.items()}, **{f"logged_{o}": v for o, v in m.logged.items()}}

    t = time.perf_counter()
    only = {} if need is None else {"candidates": hashlib.sha256(np.packbits(need).tobytes()).hexdigest()}
    z = ctx.cache.arrays(ctx.cache.key("reward", folds=ctx.cfg.folds, seed=ctx.cfg.seed, fit_max=FIT_MAX_REQUESTS,
                                       **where, **only), compute)
    ctx.timings["reward_model"] = ctx.timings.get("reward_model", 0.0) + time.perf_counter() - t
    outcomes = (*METRICS, CONTINUE)
    return CascadeModel({o: z[f"cand_{o}"] for o in outcomes}, {o: z[f"logged_{o}"] for o in outcomes}, [])


def _truth(ctx: ReplayContext, data: ReplayData, events: _BatchEvents, inputs: dict[str, PolicyInputs], where: dict[str, str],
           seed: int) -> dict[str, Truth]:
    t = time.perf_counter()
    out: dict[str, Truth] = {}
    cfg = ctx.cfg
    for name, pol in inputs.items():
        key = ctx.cache.key("truth", model=ctx.digests.get(name, LOGGING), temperature=cfg.temperature,
                            samples=cfg.truth_samples, seed=seed, **where)
        z = ctx.cache.arrays(key, lambda name=name, pol=pol: _truth_arrays(_one_truth(ctx, data, events, name, pol, seed)))
        out[name] = Truth({m: z[f"value_{m}"] for m in METRICS}, {m: z[f"se_{m}"] for m in METRICS},
                          str(z["method"]))
    ctx.timings["truth"] = ctx.timings.get("truth", 0.0) + time.perf_counter() - t
    return out


def _truth_arrays(t: Truth) -> dict[str, np.ndarray]:
    return {**{f"value_{m}": t.value[m] for m in METRICS}, **{f"se_{m}": t.se[m] for m in METRICS},
            "method": np.array(t.method)}


def _one_truth(ctx: ReplayContext, data: ReplayData, events: _BatchEvents, name: str, pol: PolicyInputs, seed: int) -> Truth:
    R, k = data.video.shape
    cfg, oracle = ctx.cfg, ctx.oracle()
    if name == LOGGING:
        return logging_truth(oracle, data.request_id, samples=cfg.truth_samples, seed=seed)
    rec, L = ctx.models[name], ctx.list_size
    if pol.slate.deterministic:
        videos = np.take_along_axis(data.candidates, pol.slate.slate, 1)
        rows = np.repeat(np.arange(R), k)
        rk = scoring.rank_comments(rec, events(), ctx.catalogue, ctx.index, data, rows, videos.ravel(), L)
        return deterministic_truth(oracle, data.request_id, videos, rk.reshape(R, k, L))
    n = data.candidates.shape[1]

    def rank_all() -> np.ndarray:
        return scoring.rank_comments(rec, events(), ctx.catalogue, ctx.index, data, np.repeat(np.arange(R), n),
                                     data.candidates.ravel(), L).reshape(R, n, L)

    assert pol.slate.log_weights is not None
    return plackett_luce_truth(oracle, data.request_id, data.candidates, pol.slate.log_weights, k, rank_all,
                               samples=cfg.truth_samples, seed=seed)
