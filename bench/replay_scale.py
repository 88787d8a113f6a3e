"""The replay's unit costs for a scaling plan (docs/scale.md), and the Ray engine against the local one.

    python bench/replay_scale.py [--data data/world] [--checkpoints shipped] [--batch-users 250] [--batches 2]
                                 [--engines local,ray1,ray2] [--skip-costs] [--skip-engines]

Costs (one process, ONE thread: torch, OpenMP and the trees), on the first `--batches` user batches of the
window (control `base`, treatment `lsvcr`, no truth, nothing cached), after the replay's own preparation:
* per model, logged requests scored per second (wall, and per CPU second: robust to a loaded machine) by
  the replay's scoring path (`scoring.score_videos` over
  every request's candidates and `scoring.rank_comments` over its opened comment sections);
* a whole batch (`run.run_batch`: read, both models, the reward model's predictions, every estimator) per
  request: the work a worker does per logged request;
* bytes per request: what a batch's read returns (the arrays of its requests, logical bytes), the bytes
  DuckDB reads to produce it (`rchar` of /proc/self/io: every column chunk it scans, page cache or not), the
  logs' Parquet bytes on disk per logged request, and what a batch sends back (its pickled unit rows and
  statistics) and the reward model sent once (pickled);
* the preparation every worker repeats (seconds, and the RSS it leaves held).

Engines: `run_replay` end to end (no truth, nothing cached, `--batch-users`) with the local engine (`local`:
torch at the machine's threads; `local1`: one thread) and with Ray at N workers of one thread (`rayN`);
requests per second, each Ray run over each local one, and Ray's costs: starting the runtime, the first
actor ready, stopping, and per batch the round trip minus the compute inside the actor. On a machine shared
with other work the wall clock says more about the scheduler than about the engine, so each case also gives
its CPU seconds: this process's, the Ray processes' it reaped (GCS, raylet), and the actors' own.

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import subprocess
import sys
import time
from pathlib import Path

# bench/analysis.py would shadow the `analysis` package when this script runs as `python bench/...`
sys.path[:] = [x for x in sys.path if Path(x or ".").resolve() != Path(__file__).resolve().parent]
ROOT = Path(__file__).resolve().parents[1]
LOG_TABLES = ("requests", "impressions", "candidates", "comment_impressions")  # what a batch's read touches


def _rchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _config(a: argparse.Namespace):
    from harness.replay.run import ReplayConfig

    return ReplayConfig(data=a.data, control="base", treatments=("lsvcr",), checkpoints=a.checkpoints, truth=False,
                        cache_dir=None, batch_users=a.batch_users)


def costs(a: argparse.Namespace) -> dict:
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(limits=1)
    from harness.replay import batches as B
    from harness.replay import scoring
    from harness.replay.data import load_window, open_logs
    from harness.replay.parts import WindowParts
    from harness.replay.run import _logged_sections, prepare, run_batch
    from models.histories import event_log_from_tables

    cfg = _config(a)
    logs = open_logs(cfg.data)
    rss0, t = _rss_mb(), time.perf_counter()
    ctx = prepare(cfg, logs, lambda label, total: (lambda n: None), [], {}, lambda s: None)
    out: dict = {"prepare_s": round(time.perf_counter() - t, 2), "prepare_rss_held_mb": round(_rss_mb() - rss0, 1),
                 "window_users": int(len(ctx.users))}
    t = time.perf_counter()
    fit = ctx.fit()
    out["reward_fit_s"] = round(time.perf_counter() - t, 2)
    out["reward_model_pickled_mb"] = round(len(pickle.dumps(fit, protocol=5)) / 2**20, 2)
    batch = B.batch_of(ctx.users, B.n_batches(len(ctx.users), cfg.batch_users))
    n_b = int(batch.max()) + 1
    t = time.perf_counter()
    ctx.parts = WindowParts.ensure(logs, ctx.start, ctx.end, ctx.users, batch, folder=None,
                                   fingerprint=ctx.fingerprint)
    out["partition_s"] = round(time.perf_counter() - t, 2)
    out["partition_mb"] = round(ctx.parts.bytes / 1e6, 1)
    acc = {"requests": 0, "sections": 0, "read_s": 0.0, "read_rchar": 0, "read_logical": 0, "batch_s": 0.0,
           "result_bytes": 0, "batch_cpu": 0.0, **{f"{m}_s": 0.0 for m in ctx.models},
           **{f"{m}_cpu": 0.0 for m in ctx.models}}
    for b in range(min(a.batches, n_b)):
        users = ctx.users[batch == b]
        r0, t = _rchar(), time.perf_counter()
        with ctx.parts.source(b) as src:  # the batch's rows and histories, as the replay reads them
            data = load_window(src, ctx.start, ctx.end, users=users)
            events = event_log_from_tables(ctx.catalogue, {**src.tables(), "videos": ctx.videos})
        acc["read_s"] += time.perf_counter() - t
        acc["read_rchar"] += _rchar() - r0
        acc["read_logical"] += sum(v.nbytes for v in _arrays(data))
        sec, _ = _logged_sections(data)
        acc["requests"] += data.n_requests
        acc["sections"] += len(sec)
        for name, rec in ctx.models.items():
            t, c = time.perf_counter(), time.process_time()
            scoring.score_videos(rec, events, ctx.catalogue, data)
            scoring.rank_comments(rec, events, ctx.catalogue, ctx.index, data, sec // data.k,
                                  data.video.ravel()[sec], ctx.list_size)
            acc[f"{name}_s"] += time.perf_counter() - t
            acc[f"{name}_cpu"] += time.process_time() - c
        del data
        t, c = time.perf_counter(), time.process_time()
        units, stats = run_batch(ctx, b, users)
        acc["batch_s"] += time.perf_counter() - t
        acc["batch_cpu"] += time.process_time() - c
        acc["result_bytes"] += len(pickle.dumps((units, stats), protocol=5))
    ctx.parts.discard()
    R = acc["requests"]
    on_disk = sum((cfg.data / f"{t}.parquet").stat().st_size for t in LOG_TABLES if (cfg.data / f"{t}.parquet").exists())
    logged = int(logs.query("SELECT count(*) AS n FROM requests").to_pylist()[0]["n"])
    logs.close()
    out.update({
        "batches_measured": min(a.batches, n_b), "batches_in_window": n_b, "requests_measured": R,
        "comment_sections_per_request": round(acc["sections"] / R, 3),
        "requests_per_s_one_thread": {
            **{f"score_{m}": round(R / acc[f"{m}_s"], 1) for m in ctx.models},
            "whole_batch": round(R / acc["batch_s"], 1)},
        "requests_per_cpu_s": {  # robust to the machine's load: CPU seconds of this (one-thread) process
            **{f"score_{m}": round(R / acc[f"{m}_cpu"], 1) for m in ctx.models},
            "whole_batch": round(R / acc["batch_cpu"], 1)},
        "seconds_per_1k_requests_one_thread": {
            **{f"score_{m}": round(1000 * acc[f"{m}_s"] / R, 3) for m in ctx.models},
            "read": round(1000 * acc["read_s"] / R, 3), "whole_batch": round(1000 * acc["batch_s"] / R, 3)},
        "bytes_per_request": {
            "read_logical": round(acc["read_logical"] / R), "read_scanned_rchar": round(acc["read_rchar"] / R),
            "parquet_on_disk_per_logged_request": round(on_disk / logged), "result_back": round(acc["result_bytes"] / R)},
        "read_scanned_mb_per_batch": round(acc["read_rchar"] / min(a.batches, n_b) / 2**20, 1),
        "parquet_on_disk_mb": round(on_disk / 2**20, 1), "logged_requests": logged,
    })
    return out


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _arrays(data) -> list:
    import numpy as np

    out = []
    for v in vars(data).values():
        if isinstance(v, np.ndarray):
            out.append(v)
        elif isinstance(v, dict):
            out += [x for x in v.values() if isinstance(x, np.ndarray)]
    return out


def engines(a: argparse.Namespace) -> dict:
    import torch

    from harness.replay.run import run_replay
    from harness.store import ResultsStore

    machine = torch.get_num_threads()
    out: dict = {"local_torch_threads": machine}
    work = ROOT / ".harness-cache" / "bench-replay-scale"
    work.mkdir(parents=True, exist_ok=True)
    for case in a.engines.split(","):
        engine = None
        torch.set_num_threads(1 if case == "local1" else machine)
        if case.startswith("ray"):
            from harness.replay.ray_engine import RayEngine

            engine = RayEngine(workers=int(case[3:]), threads_per_worker=1)
        db = work / f"{case}.duckdb"
        db.unlink(missing_ok=True)
        load0, t, cpu0, kids0 = os.getloadavg()[0], time.perf_counter(), time.process_time(), _children_cpu()
        res = run_replay(_config(a), store=ResultsStore(db), engine=engine)
        wall = time.perf_counter() - t
        cpu = time.process_time() - cpu0 + _children_cpu() - kids0  # this process, and Ray's reaped processes
        est = res.estimates
        R = int(est[(est["arm"] == "base") & est["is_default"]]["n_requests"].iloc[0])
        if engine is not None:
            cpu += sum(engine.report.worker_cpu_s.values())  # the actors (reparented when the runtime stops)
        row = {"seconds": round(wall, 1), "requests": R, "requests_per_s": round(R / wall, 1),
               "cpu_s": round(cpu, 1), "requests_per_cpu_s": round(R / cpu, 1),
               "batches_s": round(res.timings.get("batches", 0.0), 1),
               "load_avg": [round(load0, 2), round(os.getloadavg()[0], 2)]}
        if engine is not None:
            rep = engine.report
            over = [rep.round_trip_s[b] - rep.compute_s[b] for b in rep.compute_s]
            row.update(start_s=round(rep.start_s, 2), fit_s=round(rep.fit_s, 2), first_ready_s=round(rep.ready_s, 2),
                       stop_s=round(rep.stop_s, 2), batches=len(over),
                       per_batch_overhead_s=round(sum(over) / max(len(over), 1), 4),
                       per_batch_compute_s=round(sum(rep.compute_s.values()) / max(len(over), 1), 2),
                       worker_prepare_s=[round(w["prepare_s"], 1) for w in rep.workers])
        out[case] = row
        db.unlink(missing_ok=True)
    for local in ("local", "local1"):
        for case in [c for c in out if c.startswith("ray") and local in out]:
            out[case][f"over_{local}"] = round(out[case]["requests_per_s"] / out[local]["requests_per_s"], 3)
            out[case][f"cpu_over_{local}"] = round(out[case]["cpu_s"] / out[local]["cpu_s"], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "world")
    ap.add_argument("--checkpoints", type=Path, default=ROOT / "shipped")
    ap.add_argument("--batch-users", type=int, default=250)
    ap.add_argument("--batches", type=int, default=2, help="user batches measured for the unit costs")
    ap.add_argument("--engines", default="local,ray1,ray2")
    ap.add_argument("--skip-costs", action="store_true")
    ap.add_argument("--skip-engines", action="store_true")
    ap.add_argument("--part", default=None, help=argparse.SUPPRESS)  # internal: costs or engines, in a child
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if a.part is not None:
        print(json.dumps(costs(a) if a.part == "costs" else engines(a)))
        return
    out: dict = {"bench": "replay_scale", "cpus": os.cpu_count(), "batch_users": a.batch_users,
                 "load_avg_start": [round(x, 2) for x in os.getloadavg()]}
    for part in ("costs", "engines"):  # each in its own process: one thread for the costs, the machine's after
        if getattr(a, f"skip_{part}"):
            continue
        res = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--part", part], capture_output=True,
                             text=True, cwd=ROOT)
        if res.returncode != 0:
            raise SystemExit(f"{part} failed:\n{res.stderr[-3000:]}")
        out[part] = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"[bench/replay_scale] {part}: {res.stdout.strip()[-600:]}", file=sys.stderr)
    out["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
