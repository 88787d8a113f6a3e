"""The replay end to end against the adapters' scoring alone, in logged requests per second, and its peak memory.

    python bench/replay.py [--requests 1000000] [--batch-users 1000,250] [--large-batch-users 1000]
                           [--threads 2] [--work .harness-cache/bench-replay] [--cases score,e2e,reward]
                           [--engines local,ray] [--ray-workers 1,2] [--ray-batch-users 250]
                           [--skip-default] [--skip-large]

Two worlds. The default world (`data/world`, the shipped checkpoints, control `base`, treatment `lsvcr`)
and a large world of about `--requests` logged requests in its replay window, simulated once into
WORK/world-<N> (the default world's behaviour, users scaled to the size, 3 videos per user as in the
default world, 8 days of which the first is the pre-period, so that the window holds most of the
requests) with `pop` and `base` trained on its pre-period (`harness train --until experiment-start
--epochs 1`; LSVCR on a world this size is too expensive for the development machine: control `pop`,
treatment `base`). A world already in WORK is reused.

Per world, each case in a fresh process (same torch threads; its peak RSS read from the process itself):
* scoring alone: the window's users in the replay's user batches (the first `--batch-users`); per batch,
  the batch's rows and histories read as the replay reads them (its `WindowParts` partition), then per
  model `scoring.score_videos` over every request's candidates and `scoring.rank_comments` over the
  logged comment sections. Its requests/s counts the adapters' seconds only (the reads are reported
  beside: `with_reads_requests_per_s`); setup (preparation, the partition) is timed apart.
* end to end: `run_replay` with `cache_dir=None` (nothing cached) and `truth=False` (the oracle's truth is
  the synthetic world's own check of the estimates, not work a replay of real logs does), once per
  `--batch-users`; wall seconds, the run's own `timings`, and the peak RSS of each phase: preparation
  (window checks, catalogue, models), the first user batch (which also fits the reward model), the
  largest later batch, the final analysis (the per-user table read back from the store), reset between
  phases through /proc/self/clear_refs.

`--engines local,ray`: also end to end on `RayEngine` (a local runtime started and stopped by each run, one
torch thread per actor) with each `--ray-workers` count, against the local engine at `--ray-batch-users`
in the same invocation: requests/s, their ratio (`over_local`; target >= 0.85 with 2 workers on 2 cores),
Ray's start, fit, ready and stop seconds, and its overhead per batch (round trip minus the worker's compute).

`--cases reward` (with the others, or alone) times, in another process, the reward model's predictions for the first batch: for
every candidate, and for the candidates the top-k targets' estimators read (their slates), best of 2 each.

Prints one JSON line: per world the requests, the scoring-alone and end-to-end seconds and requests/s,
their ratio (end to end over scoring alone, both at the first batch size; target >= 0.7), the same ratio
measured inside the end-to-end run (the scoring's share of its seconds: on a shared machine the two
processes see different loads), where the rest of the end-to-end time goes, peak RSS in MB per case and
phase, what the preparation holds (the catalogue, the models' tensors) and the partition's size and
seconds, the load average (at the start and end of each case) and the torch threads.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

# bench/analysis.py would shadow the `analysis` package when this script runs as `python bench/...`
sys.path[:] = [x for x in sys.path if Path(x or ".").resolve() != Path(__file__).resolve().parent]

ROOT = Path(__file__).resolve().parents[1]
# the default world's behaviour over 8 days with a 1-day pre-period: window requests per user (measured on
# 2,000 users: 97,183 window requests), used to size the large world
WINDOW_REQUESTS_PER_USER = 48.6
LARGE_DAYS, LARGE_PRE_DAYS, VIDEOS_PER_USER = 8, 1, 3


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=1_000_000,
                    help=f"window requests of the large world (users = this / {WINDOW_REQUESTS_PER_USER}); 0 skips it")
    ap.add_argument("--batch-users", default="1000,250",
                    help="comma-separated user-batch sizes of the end-to-end runs; the first is also scoring alone's")
    ap.add_argument("--large-batch-users", default=None,
                    help="the same for the large world (default: --batch-users); each size is a full replay of it")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of every case")
    ap.add_argument("--work", type=Path, default=Path(".harness-cache/bench-replay"),
                    help="folder of the large world, its checkpoints and the runs' databases")
    ap.add_argument("--data", type=Path, default=Path("data/world"), help="the default world")
    ap.add_argument("--checkpoints", type=Path, default=Path("shipped"), help="the default world's checkpoints")
    ap.add_argument("--cases", default="score,e2e",
                    help="comma-separated: score (scoring alone), e2e (end to end), reward (the reward model's "
                         "predictions of one batch: every candidate against the top-k targets' slates only)")
    ap.add_argument("--engines", default="local",
                    help="comma-separated: local, ray (end to end on Ray actors of one torch thread each, per "
                         "--ray-workers, against the local engine at --ray-batch-users in the same run)")
    ap.add_argument("--ray-workers", default="1,2", help="comma-separated worker counts of the Ray runs")
    ap.add_argument("--ray-batch-users", type=int, default=250,
                    help="user-batch size of the Ray runs and their local reference (small enough for a few "
                         "batches per worker)")
    ap.add_argument("--skip-default", action="store_true")
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: one case, as JSON
    return ap.parse_args(argv)


# ------------------------------------------------------------------------------------------- memory
def _status_mb(key: str) -> float | None:
    """VmRSS / VmHWM of this process in MB (None where /proc is not there)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


_PEAK_BEFORE_RESETS = [0.0]  # the largest VmHWM seen before a reset (a reset also lowers ru_maxrss)


def _reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux: clear_refs 5), keeping the overall peak."""
    _PEAK_BEFORE_RESETS[0] = max(_PEAK_BEFORE_RESETS[0], _status_mb("VmHWM") or 0.0)
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _max_rss_mb() -> float:
    """Peak RSS of this process over its whole life (getrusage, and the peaks recorded before any reset)."""
    return round(max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, _PEAK_BEFORE_RESETS[0]), 1)


# ------------------------------------------------------------------------------------------- cases
def _setup(spec: dict):
    """The replay's own preparation (`run.prepare`: window checks, pre-period totals, the catalogue, the models)
    and the window split by user batch (`WindowParts`, in a temporary folder), timed, with what they hold."""
    from harness.replay import batches as B
    from harness.replay.data import open_logs
    from harness.replay.parts import WindowParts
    from harness.replay.run import ReplayConfig, prepare

    cfg = ReplayConfig(data=Path(spec["data"]), control=spec["control"], treatments=(spec["treatment"],),
                       checkpoints=Path(spec["checkpoints"]), truth=False, cache_dir=None,
                       batch_users=spec["batch_users"])
    mem: dict = {"after_imports": _status_mb("VmRSS")}
    t = time.perf_counter()
    logs = open_logs(cfg.data)
    ctx = prepare(cfg, logs, lambda label, total: (lambda n: None), [], {}, lambda s: None)
    seconds = time.perf_counter() - t
    mem["peak_prepare"] = _status_mb("VmHWM")
    mem["held_after_prepare"] = _status_mb("VmRSS")
    texts = sum(sys.getsizeof(x) for v in vars(ctx.catalogue).values() if isinstance(v, list) for x in v)
    mem["catalogue_mb"] = round((sum(getattr(v, "nbytes", 0) for v in vars(ctx.catalogue).values()) + texts)
                                / 2**20, 1)
    mem["model_parameters_mb"] = {n: round(sum(p.numel() * p.element_size() for p in _parameters(m)) / 2**20, 1)
                                  for n, m in ctx.models.items()}
    t = time.perf_counter()
    batch = B.batch_of(ctx.users, B.n_batches(len(ctx.users), spec["batch_users"]))
    ctx.parts = WindowParts.ensure(logs, ctx.start, ctx.end, ctx.users, batch, folder=None,
                                   fingerprint=ctx.fingerprint)
    partition_s = time.perf_counter() - t
    mem["peak_partition"] = _status_mb("VmHWM")
    return ctx, {"seconds": round(seconds, 2), "partition_s": round(partition_s, 2),
                 "partition_mb": round(ctx.parts.bytes / 1e6, 1), "memory": mem}


def _parameters(model) -> list:
    """Torch tensors a recommender holds (its modules' parameters and buffers, and tensor attributes)."""
    import torch

    seen: dict[int, torch.Tensor] = {}
    for v in vars(model).values():
        if isinstance(v, torch.nn.Module):
            for p in (*v.parameters(), *v.buffers()):
                seen[id(p)] = p
        elif isinstance(v, torch.Tensor):
            seen[id(v)] = v
    return list(seen.values())


def _score_case(spec: dict) -> dict:
    """Scoring alone: per user batch, load the window as the replay does and score it with every model."""
    from harness.replay import batches as B
    from harness.replay import scoring
    from harness.replay.data import load_window
    from harness.replay.run import _logged_sections
    from models.histories import event_log_from_tables

    names = [spec["control"], spec["treatment"]]
    ctx, setup = _setup(spec)
    users = ctx.users
    batch = B.batch_of(users, B.n_batches(len(users), spec["batch_users"]))
    secs = {"load_window": 0.0, "histories": 0.0, **{f"{n}.score_videos": 0.0 for n in names},
            **{f"{n}.rank_comments": 0.0 for n in names}}
    requests = sections = 0
    _reset_peak()
    t0 = time.perf_counter()
    for b in range(int(batch.max()) + 1):
        t = time.perf_counter()
        with ctx.parts.source(b) as src:
            data = load_window(src, ctx.start, ctx.end, users=users[batch == b])
            secs["load_window"] += time.perf_counter() - t
            t = time.perf_counter()
            events = event_log_from_tables(ctx.catalogue, {**src.tables(), "videos": ctx.videos})
            secs["histories"] += time.perf_counter() - t
        sec, _ = _logged_sections(data)
        requests += data.n_requests
        sections += len(sec)
        for n in names:
            rec = ctx.models[n]
            t = time.perf_counter()
            scoring.score_videos(rec, events, ctx.catalogue, data)
            secs[f"{n}.score_videos"] += time.perf_counter() - t
            t = time.perf_counter()
            scoring.rank_comments(rec, events, ctx.catalogue, ctx.index, data, sec // data.k,
                                  data.video.ravel()[sec], ctx.list_size)
            secs[f"{n}.rank_comments"] += time.perf_counter() - t
        del data, events
    total = time.perf_counter() - t0
    peak_batches = _status_mb("VmHWM")
    ctx.parts.discard()
    scoring_s = sum(v for k, v in secs.items() if "." in k)
    return {"requests": int(requests), "users": int(len(users)), "batches": int(batch.max()) + 1,
            "comment_sections": int(sections), "seconds": round(total, 2), "scoring_seconds": round(scoring_s, 2),
            "requests_per_s": round(requests / scoring_s, 1),
            "with_reads_requests_per_s": round(requests / total, 1),
            "parts_s": {k: round(v, 2) for k, v in secs.items()}, "setup": setup,
            "peak_rss_batches_mb": peak_batches, "peak_rss_mb": max(_PEAK_BEFORE_RESETS[0], peak_batches or 0.0)}


def _e2e_case(spec: dict) -> dict:
    """`run_replay` end to end, nothing cached, no truth; peak RSS per phase."""
    from harness.replay.run import ReplayConfig, run_replay
    from harness.store import ResultsStore

    db = Path(spec["db"])
    for p in (db, Path(str(db) + ".wal")):
        p.unlink(missing_ok=True)
    phases: dict = {"batches_mb": []}
    t0 = time.perf_counter()
    marks: dict = {}

    def progress(label: str, total: int):
        marks["prepared"] = time.perf_counter() - t0
        phases["prepare_mb"] = _status_mb("VmHWM")
        phases["held_after_prepare_mb"] = _status_mb("VmRSS")
        _reset_peak()

        def tick(n: int) -> None:
            if n:
                phases["batches_mb"].append(_status_mb("VmHWM"))
                _reset_peak()
        return tick

    cfg = ReplayConfig(data=Path(spec["data"]), control=spec["control"], treatments=(spec["treatment"],),
                       checkpoints=Path(spec["checkpoints"]), truth=False, cache_dir=None,
                       batch_users=spec["batch_users"])
    engine = None
    if spec.get("engine") == "ray":
        from harness.replay.ray_engine import RayEngine

        engine = RayEngine(workers=spec["workers"], threads_per_worker=1)
    out = run_replay(cfg, store=ResultsStore(db), progress=progress, engine=engine)
    wall = time.perf_counter() - t0
    phases["finish_mb"] = _status_mb("VmHWM")
    est = out.estimates
    row = est[(est["arm"] == spec["control"]) & est["is_default"]].iloc[0]
    requests = int(row["n_requests"])
    timings = {k: round(v, 2) for k, v in out.timings.items()}
    for p in (db, Path(str(db) + ".wal")):
        p.unlink(missing_ok=True)
    ray: dict = {}
    if engine is not None:
        r = engine.report
        over = [r.round_trip_s[b] - r.compute_s[b] for b in r.compute_s]
        ray = {"engine": "ray", "workers": spec["workers"], "start_s": round(r.start_s, 2),
               "fit_s": round(r.fit_s, 2), "ready_s": round(r.ready_s, 2), "batches_s": round(r.batches_s, 2),
               "stop_s": round(r.stop_s, 2),
               "worker_prepare_s": [round(w["prepare_s"], 2) for w in r.workers],
               "per_batch_overhead_s": round(sum(over) / len(over), 3) if over else None,
               "per_batch_compute_s": round(sum(r.compute_s.values()) / len(over), 3) if over else None,
               "resubmitted": r.resubmitted}
    return {**ray, "requests": requests, "users": int(row["n_units"]), "batch_users": spec["batch_users"],
            "batches": len(phases["batches_mb"]), "seconds": round(wall, 2),
            "requests_per_s": round(requests / wall, 1), "timings": timings,
            "peak_rss_mb": _max_rss_mb(), "peak_rss_phases": {
                "prepare": phases.get("prepare_mb"), "held_after_prepare": phases.get("held_after_prepare_mb"),
                "first_batch_with_reward_fit": phases["batches_mb"][0] if phases["batches_mb"] else None,
                "largest_later_batch": max(phases["batches_mb"][1:], default=None), "finish": phases["finish_mb"]}}


def _reward_case(spec: dict) -> dict:
    """The reward model's predictions for the first user batch: every candidate against only the candidates the
    top-k targets' estimators read (`run._needed_candidates`), alternated, best of `repeat` each."""
    from harness.replay import batches as B
    from harness.replay.data import load_window
    from harness.replay.run import _BatchEvents, _logged_sections, _needed_candidates, _policy

    ctx, _ = _setup(spec)
    t = time.perf_counter()
    fit = ctx.fit()
    fit_s = time.perf_counter() - t
    batch = B.batch_of(ctx.users, B.n_batches(len(ctx.users), spec["batch_users"]))
    with ctx.parts.source(0) as src:
        data = load_window(src, ctx.start, ctx.end, users=ctx.users[batch == 0])
        sections, section_of = _logged_sections(data)
        events = _BatchEvents(ctx, src)
        inputs = {n: _policy(ctx, n, data, events, sections, section_of, {})
                  for n in (spec["control"], spec["treatment"])}
    ctx.parts.discard()
    need = _needed_candidates(inputs, data)
    best = {"all": float("inf"), "needed": float("inf")}
    for _ in range(spec.get("repeat", 2)):
        for name, mask in (("all", None), ("needed", need)):
            t = time.perf_counter()
            fit.predict(data, mask)
            best[name] = min(best[name], time.perf_counter() - t)
    return {"requests": int(data.n_requests), "candidates_per_request": int(data.candidates.shape[1]),
            "needed_per_request": round(float(need.sum()) / data.n_requests, 2), "fit_s": round(fit_s, 2),
            "predict_all_s": round(best["all"], 2), "predict_needed_s": round(best["needed"], 2),
            "speedup": round(best["all"] / best["needed"], 2)}


def _world_case(spec: dict) -> dict:
    """Simulate the large world and train its two models (skipping what is already there)."""
    from typer.testing import CliRunner

    from harness.cli import app
    from harness.simulate.config import WorldConfig
    from harness.simulate.generate import simulate

    data, ck = Path(spec["data"]), Path(spec["checkpoints"])
    out: dict = {}
    if not (data / "requests.parquet").exists():
        t = time.perf_counter()
        users = spec["users"]
        simulate(WorldConfig(users=users, videos=VIDEOS_PER_USER * users, days=LARGE_DAYS, pre_days=LARGE_PRE_DAYS,
                             seed=0), data, progress=False)
        out["simulate_s"] = round(time.perf_counter() - t, 1)
        out["simulate_peak_rss_mb"] = _max_rss_mb()
    for model in ("pop", "base"):
        if (ck / model / "config.json").exists():
            continue
        t = time.perf_counter()
        r = CliRunner().invoke(app, ["train", "--model", model, "--data", str(data), "--out", str(ck / model),
                                     "--until", "experiment-start", "--epochs", "1", "--no-progress"])
        if r.exit_code != 0:
            raise RuntimeError(f"training {model} failed: {r.output[-800:]}")
        out[f"train_{model}_s"] = round(time.perf_counter() - t, 1)
    return out


def _child(spec: dict) -> None:
    import torch

    torch.set_num_threads(spec["threads"])
    load0 = os.getloadavg()[0]
    out = {"world": _world_case, "score": _score_case, "e2e": _e2e_case, "reward": _reward_case}[spec["kind"]](spec)
    out["load_avg"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    print(json.dumps(out))


def _spawn(spec: dict) -> dict:
    """One case in a fresh Python process (so its peak RSS is its own)."""
    res = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)], cwd=ROOT,
                         capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if res.returncode != 0:
        raise RuntimeError(f"case {spec['kind']} failed:\n{res.stderr[-3000:]}")
    print(f"[bench/replay] {spec['kind']} {spec.get('tag', '')}: {res.stdout.strip()[-400:]}", file=sys.stderr)
    return json.loads(res.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------- driver
def _world(tag: str, data: Path, ck: Path, control: str, treatment: str, a: argparse.Namespace,
           sizes: list[int]) -> dict:
    base = {"data": str(data), "checkpoints": str(ck), "control": control, "treatment": treatment,
            "threads": a.threads, "tag": tag}
    cases = set(a.cases.split(","))
    out: dict = {"data": str(data), "control": control, "treatment": treatment, "batch_users": sizes}
    if "reward" in cases:
        out["reward_predictions"] = _spawn({**base, "kind": "reward", "batch_users": sizes[0]})
    if "ray" in a.engines.split(","):
        out["ray"] = _ray(base, a, tag)
    if not {"score", "e2e"} <= cases:
        return out
    score = _spawn({**base, "kind": "score", "batch_users": sizes[0]})
    e2e = {str(s): _spawn({**base, "kind": "e2e", "batch_users": s, "db": str(a.work / f"run-{tag}-{s}.duckdb")})
           for s in sizes}
    main = e2e[str(sizes[0])]
    t = main["timings"]
    rest = {"score_in_replay": t.get("score"), "reward_model_fit_and_predict": t.get("reward_model"),
            "of_which_fit": t.get("reward_fit"), "prepare": t.get("prepare"), "partition": t.get("partition"),
            "histories": t.get("histories"), "store_appends": t.get("store"), "analysis": t.get("analysis")}
    rest["other_batch_work"] = round(t.get("batches", 0.0) - sum(t.get(k) or 0.0 for k in
                                                                  ("score", "reward_model", "histories", "store")), 2)
    rest["opening_logs_registering_and_rest"] = round(t["total"] - t.get("batches", 0.0) - t.get("prepare", 0.0)
                                                      - t.get("partition", 0.0) - t.get("analysis", 0.0), 2)
    out.update({
        "requests": main["requests"], "users": main["users"], "scoring_alone": score, "end_to_end": e2e,
        "ratio_end_to_end_over_scoring": round(main["requests_per_s"] / score["requests_per_s"], 3),
        "end_to_end_seconds_by_step": rest,
        "peak_rss_mb": {"scoring_alone": score["peak_rss_mb"],
                        **{f"end_to_end_{s}": e2e[str(s)]["peak_rss_mb"] for s in sizes}}})
    # the same ratio measured inside one run (load-independent): the scoring's share of the end-to-end seconds
    # (the replay does not time its batch reads apart, so they count as overhead here)
    out["score_share_of_end_to_end"] = {str(s): round(e2e[str(s)]["timings"].get("score", 0.0)
                                                      / e2e[str(s)]["timings"]["total"], 3) for s in sizes}
    return out


def _ray(base: dict, a: argparse.Namespace, tag: str) -> dict:
    """Ray with each --ray-workers count against the local engine at the same batch size, same world, same run;
    each Ray run starts and stops its own local runtime (counted: `start_s`, `stop_s`)."""
    size = a.ray_batch_users
    local = _spawn({**base, "kind": "e2e", "batch_users": size, "db": str(a.work / f"run-{tag}-local-{size}.duckdb")})
    out: dict = {"batch_users": size, "local": {k: local[k] for k in ("requests_per_s", "seconds", "batches")}}
    for w in (int(x) for x in a.ray_workers.split(",")):
        got = _spawn({**base, "kind": "e2e", "batch_users": size, "engine": "ray", "workers": w,
                      "db": str(a.work / f"run-{tag}-ray{w}-{size}.duckdb")})
        got.pop("timings", None)
        got["over_local"] = round(got["requests_per_s"] / local["requests_per_s"], 3)
        out[f"workers_{w}"] = got
    return out


def main() -> None:
    a = _parse()
    if a.child is not None:
        _child(json.loads(a.child))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sizes = [int(s) for s in a.batch_users.split(",")]
    a.work = a.work.resolve()
    a.work.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    out: dict = {"bench": "replay", "threads": a.threads, "engines": a.engines, "cpus": os.cpu_count(), "truth": False, "cache": False}
    if not a.skip_default:
        out["default"] = _world("default", a.data.resolve(), a.checkpoints.resolve(), "base", "lsvcr", a, sizes)
    if not a.skip_large and a.requests > 0:
        users = max(2, round(a.requests / WINDOW_REQUESTS_PER_USER))
        root = a.work / f"world-{a.requests}"
        data, ck = root / "logs", root / "ck"
        built = _spawn({"kind": "world", "data": str(data), "checkpoints": str(ck), "users": users,
                        "threads": a.threads})
        large_sizes = [int(s) for s in a.large_batch_users.split(",")] if a.large_batch_users else sizes
        large = _world(f"large-{a.requests}", data, ck, "pop", "base", a, large_sizes)
        large.update(asked_requests=a.requests, world={"users": users, "videos": VIDEOS_PER_USER * users,
                                                       "days": LARGE_DAYS, "pre_days": LARGE_PRE_DAYS,
                                                       "built_this_run": built})
        out["large"] = large
    out.update(seconds=round(time.perf_counter() - t0, 1), load_avg_start=[round(x, 2) for x in load0],
               load_avg_end=[round(x, 2) for x in os.getloadavg()])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
