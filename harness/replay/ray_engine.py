"""`--engine ray`: the replay's user batches on a pool of Ray actors, on this machine or an existing cluster.

The unit of work is the driver's user batch (`harness.replay.batches`: whole users, assigned by a stable
hash), so a batch's result depends only on (batch, inputs, seed) and equals the local engine's. Each actor
is built once: it opens the logs from the path in the config (a path every worker can read: the logs are
never shipped from the driver), prepares its own `ReplayContext` (models, catalogue, event log), sets its
torch and OpenMP threads, and receives the driver's fitted reward model once through the object store
(`ray.put`). Then the driver hands it batches (user ids: a few KB) and gets back each batch's unit rows and
statistics, which it stores as they complete.

Why a hand-run actor pool (`ray.wait` over one call per idle actor) and not `ray.util.ActorPool` or Ray
Data's `map_batches`: a batch is already a unit of work, of storage and of resuming, so there is nothing
to re-block or stream; `ActorPool` does not say which input a failed call held (and puts a dead actor back
in its pool), and Ray Data adds a streaming executor and its own re-blocking of rows, with output order and
retries out of the driver's hands. Here every batch is in flight at most once, so none is yielded twice.

Failures: a batch whose actor dies (killed, out of memory, its node lost) goes back to the front of the
queue for the next free actor, and a new actor takes the dead one's place; a batch lost `MAX_ATTEMPTS` times
ends the run with an error (the batches stored so far stay: `--resume`). Ray's own actor restarts are not
used: a restarted actor would need its constructor's object-store arguments kept alive and would replay the
lost call behind the driver's back, while here the driver alone decides, so a batch is never in flight twice
and never yielded twice. An exception raised by the replay code itself (a bad input, a bug) is
deterministic and is raised at once, as the local engine would; so is an actor that cannot even be built
(its logs or checkpoints unreadable on that node).

Ray is an optional extra (`pip install 'lsvcr-harness[ray]'`), imported only here, when this engine runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.replay.run import ReplayConfig, ReplayContext, ReplayError

INSTALL_HINT = "pip install 'lsvcr-harness[ray]'"
MAX_ATTEMPTS = 3  # per batch, counting only attempts lost to a dead actor (never to an error of the replay)


class RayEngineError(ReplayError):
    """Ray is missing, cannot start or connect, or the workers keep dying (the message says what to do)."""


def import_ray():
    """The `ray` module, or a RayEngineError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RayEngineError(f"--engine ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


@dataclass
class EngineReport:
    """What the last `map_batches` cost: for the benchmark's overhead figures and for a reader of a slow run."""

    start_s: float = 0.0  # ray.init (start a local runtime, or connect)
    fit_s: float = 0.0  # the driver's reward-model fit and its ray.put
    ready_s: float = 0.0  # from the end of the fit until the first actor was ready (started and prepared)
    batches_s: float = 0.0  # from the first submission to the last result
    stop_s: float = 0.0  # killing the actors and shutting down (or disconnecting)
    compute_s: dict[int, float] = field(default_factory=dict)  # batch -> seconds inside run_batch
    round_trip_s: dict[int, float] = field(default_factory=dict)  # batch -> submission to result
    pid_of: dict[int, int] = field(default_factory=dict)  # batch -> the worker process that computed it
    worker_cpu_s: dict[int, float] = field(default_factory=dict)  # pid -> its CPU seconds at its last batch
    workers: list[dict[str, Any]] = field(default_factory=list)  # per actor: pid, node, prepare_s
    resubmitted: int = 0  # batches handed to another actor after theirs died
    replaced_workers: int = 0


class ReplayWorker:
    """One actor: its own context built once, then batch after batch (wrapped by `ray.remote` at run time)."""

    def __init__(self, cfg: ReplayConfig, threads: int) -> None:
        t0 = time.perf_counter()
        os.environ["OMP_NUM_THREADS"] = str(threads)  # the reward model's trees read it (tree_threads)
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(threads)
        threadpool_limits(limits=threads)
        from harness.replay.data import open_logs
        from harness.replay.run import _no_progress, prepare

        self.logs = open_logs(cfg.data)
        self.ctx = prepare(cfg, self.logs, _no_progress, [], {}, lambda s: None)
        self.prepare_s = time.perf_counter() - t0

    def set_shared(self, fit: Any, parts: Any) -> None:
        """The driver's reward model and window partition (sent once, after construction, so the driver fits
        while actors prepare)."""
        self.ctx.fit_box[:] = [fit]
        self.ctx.parts = parts

    def ready(self) -> dict[str, Any]:
        import socket

        return {"pid": os.getpid(), "node": socket.gethostname(), "prepare_s": self.prepare_s}

    def run(self, b: int, users: np.ndarray) -> tuple[pd.DataFrame, list[dict[str, Any]], dict[str, float]]:
        """The batch's unit rows and statistics, and the seconds its steps took here (`run` = all of it; `pid` =
        this worker's process, `cpu` its CPU seconds so far)."""
        from harness.replay.run import run_batch

        t, before = time.perf_counter(), dict(self.ctx.timings)
        units, stats = run_batch(self.ctx, b, users)
        steps = {k: v - before.get(k, 0.0) for k, v in self.ctx.timings.items()}
        return units, stats, {**steps, "run": time.perf_counter() - t, "pid": os.getpid(), "cpu": time.process_time()}


def worker_config(cfg: ReplayConfig) -> ReplayConfig:
    """The config the actors read: paths made absolute (a worker's working directory is not the driver's; on a
    cluster the same absolute path must exist on every node: a shared mount)."""
    def absolute(p: Path | None) -> Path | None:
        return None if p is None else Path(p).expanduser().resolve()

    return replace(cfg, data=absolute(cfg.data), checkpoints=absolute(cfg.checkpoints),
                   cache_dir=absolute(cfg.cache_dir))


class RayEngine:
    """Runs the replay's user batches on `workers` Ray actors of `threads_per_worker` CPUs each.

    `address=None` starts a local Ray runtime of workers x threads CPUs for the run and stops it at the end
    (errors and Ctrl-C included); an address ('auto', 'ray://host:10001', 'host:6379') connects to an
    existing cluster (so does Ray's own RAY_ADDRESS variable), which is never shut down: only this run's actors
    are killed and the driver disconnects. If Ray is already initialised in this process, that runtime is used
    and left running.
    """

    def __init__(self, address: str | None = None, workers: int = 2, threads_per_worker: int = 1) -> None:
        if workers < 1:
            raise RayEngineError(f"--workers must be at least 1, got {workers}")
        if threads_per_worker < 1:
            raise RayEngineError(f"--threads-per-worker must be at least 1, got {threads_per_worker}")
        self.ray = import_ray()
        _probe(address)
        self.address, self.workers, self.threads = address, workers, threads_per_worker
        self.actors: list[Any] = []  # the live pool during map_batches (tests kill one to check recovery)
        self.parts: Any = None
        self.report = EngineReport()

    # ------------------------------------------------------------------------------------------ runtime
    def _start(self) -> None:
        """Start a local runtime or connect to the cluster at `address` (nothing when Ray is already up)."""
        ray = self.ray
        if ray.is_initialized():
            return
        address = self.address or os.environ.get("RAY_ADDRESS")  # Ray's own variable names a cluster too
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
        if address is None:
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # Ray >= 2.5x writes an auth token otherwise
            kwargs["num_cpus"] = self.workers * self.threads
        try:
            ray.init(address=address, **kwargs)
        except Exception as exc:  # ConnectionError, RuntimeError, ...: say where and what to check
            where = f"the Ray cluster at {address!r}" if address else "a local Ray runtime"
            raise RayEngineError(f"could not start or reach {where}: {exc}. Check the address (`ray status` "
                                 "on the head node) or run with --engine local") from None

    def _new_actor(self, cfg: ReplayConfig, fit_ref: Any | None) -> Any:
        """An actor preparing its context; once `fit_ref` exists it is sent the reward model (calls run in order)."""
        a = self.ray.remote(ReplayWorker).options(num_cpus=self.threads, max_restarts=0).remote(cfg, self.threads)
        if fit_ref is not None:
            a.set_shared.remote(fit_ref, self.parts)
        return a

    # ------------------------------------------------------------------------------------------ the pool
    def map_batches(self, ctx: ReplayContext, todo: list[tuple[int, np.ndarray]]
                    ) -> Iterator[tuple[int, pd.DataFrame, list[dict[str, Any]]]]:
        """Yield (batch, unit rows, statistics rows) for every batch of `todo`, each exactly once, as they
        complete (in any order)."""
        if not todo:
            return
        ray = self.ray
        self.report = rep = EngineReport()
        was_up = ray.is_initialized()  # a runtime found up is left up; one started (or joined) here is not
        try:
            t = time.perf_counter()
            self._start()
            rep.start_s = time.perf_counter() - t
            cfg = worker_config(ctx.cfg)
            self.parts = ctx.parts  # a folder every worker reads (the cache folder: shared on a cluster)
            self.actors = [self._new_actor(cfg, None) for _ in range(min(self.workers, len(todo)))]
            t = time.perf_counter()  # the driver fits while the actors start and prepare
            fit_ref = ray.put(ctx.fit())  # once in the object store; each actor deserialises it once
            for a in self.actors:
                a.set_shared.remote(fit_ref, self.parts)
            rep.fit_s = time.perf_counter() - t
            yield from self._drive(cfg, fit_ref, todo, ctx.timings)
        finally:  # also on errors and Ctrl-C
            t = time.perf_counter()
            for a in self.actors:
                try:
                    ray.kill(a)
                except Exception:  # already gone with its node or the runtime: nothing left to stop
                    pass
            self.actors = []
            if not was_up and ray.is_initialized():
                ray.shutdown()  # a local runtime stops; a cluster is only disconnected from, never stopped
            rep.stop_s = time.perf_counter() - t

    def _drive(self, cfg: ReplayConfig, fit_ref: Any, todo: list[tuple[int, np.ndarray]],
               timings: dict[str, float]) -> Iterator[tuple[int, pd.DataFrame, list[dict[str, Any]]]]:
        ray, rep = self.ray, self.report
        from ray.exceptions import RayActorError, RayTaskError

        users = dict(todo)
        queue = [b for b, _ in todo]  # waiting batches, front first
        attempts = dict.fromkeys(queue, 0)
        starting = {a.ready.remote(): a for a in self.actors}  # ref -> actor still preparing
        idle: list[Any] = []
        inflight: dict[Any, tuple[int, Any, float]] = {}  # ref -> (batch, actor, submitted at)
        done: set[int] = set()
        t0 = time.perf_counter()
        while len(done) < len(users):
            while idle and queue:
                a, b = idle.pop(), queue.pop(0)
                attempts[b] += 1
                inflight[a.run.remote(b, users[b])] = (b, a, time.perf_counter())
            if not (starting or inflight):
                raise RayEngineError(f"{len(users) - len(done)} batches unfinished: every Ray worker died. "
                                     f"{self._where(cfg)}")
            ref = ray.wait([*starting, *inflight], num_returns=1)[0][0]
            if ref in starting:
                a = starting.pop(ref)
                try:
                    rep.workers.append(ray.get(ref))
                except RayActorError as exc:  # died while preparing
                    self._replace(a, cfg, fit_ref, starting, exc)
                    continue
                rep.ready_s = rep.ready_s or time.perf_counter() - t0
                idle.append(a)
                continue
            b, a, sent = inflight.pop(ref)
            try:
                units, stats, steps = ray.get(ref)
            except RayTaskError as exc:  # the replay's own error: deterministic, raised as the local engine would
                raise exc.as_instanceof_cause() from None
            except RayActorError as exc:  # the actor died for good: another one takes the batch
                if attempts[b] >= MAX_ATTEMPTS:
                    raise RayEngineError(f"batch {b} was lost with its Ray worker {attempts[b]} times; last error: "
                                         f"{_last_line(exc)}") from None
                queue.insert(0, b)
                rep.resubmitted += 1
                self._replace(a, cfg, fit_ref, starting, exc)
                continue
            idle.append(a)
            if b in done:  # cannot happen (one call per batch in flight at a time); never yield a batch twice
                continue
            done.add(b)
            rep.compute_s[b], rep.round_trip_s[b] = steps.pop("run"), time.perf_counter() - sent
            rep.pid_of[b] = pid = int(steps.pop("pid"))
            rep.worker_cpu_s[pid] = steps.pop("cpu")
            for k, v in steps.items():  # the run's timings: worker seconds summed over batches, as run locally
                timings[k] = timings.get(k, 0.0) + v
            yield b, units, stats
        rep.batches_s = time.perf_counter() - t0

    def _replace(self, dead: Any, cfg: ReplayConfig, fit_ref: Any, starting: dict[Any, Any],
                 exc: BaseException) -> None:
        """Drop a dead actor and start another in its place (at most `workers * MAX_ATTEMPTS` per run); an actor
        whose own construction failed is not replaced: that error is raised (another would fail the same way)."""
        self.ray.kill(dead)
        self.actors.remove(dead)
        if getattr(exc, "actor_init_failed", False):
            raise RayEngineError(f"a Ray worker could not start: {_last_line(exc)}. {self._where(cfg)}") from None
        if self.report.replaced_workers < self.workers * MAX_ATTEMPTS:
            self.report.replaced_workers += 1
            a = self._new_actor(cfg, fit_ref)
            self.actors.append(a)
            starting[a.ready.remote()] = a

    @staticmethod
    def _where(cfg: ReplayConfig) -> str:
        return (f"Every worker opens the logs at {cfg.data} and the checkpoints under {cfg.checkpoints} itself: on a "
                "cluster, that path must exist on every node (a shared mount) with this package installed")


def _probe(address: str | None, timeout: float = 10.0) -> None:
    """Fail fast on a cluster address nobody answers at (`ray.init` would retry for minutes): a TCP connect to
    HOST:PORT, `ray://HOST:PORT` included; `auto` and other forms are left to Ray."""
    if address is None:
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not (host and port.isdigit()):
        return
    import socket

    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise RayEngineError(f"--ray-address {address}: nothing answers there ({exc}). Is the cluster up (`ray status` "
                             "on its head node)? Or run with --engine local") from None


def _last_line(exc: BaseException) -> str:
    """The exception line of a worker's error (Ray's messages carry the whole remote traceback)."""
    lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
    return lines[-1] if lines else type(exc).__name__
