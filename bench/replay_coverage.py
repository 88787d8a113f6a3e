"""Coverage study of the replay's estimators: over many synthetic worlds, how far each estimator's lift is
from the true lift, and how often its 95% CI holds it.

    python bench/replay_coverage.py [--worlds 100] [--first-seed 1000] [--users 150] [--videos 300] [--days 4]
                                    [--temperatures none,1.0] [--control pop] [--treatment base]
                                    [--work DIR] [--threads 2]

Per world (seed s): simulate a small world; train the control and the treatment (`harness train --until
experiment-start`: `pop`, and `base` with 2 epochs); replay the window paired by user once per target
(`none` = deterministic top-k, a number = Plackett-Luce at that temperature) with the truth on. Every
(target, estimator, metric) row of `replay_lifts` gives the estimated relative lift, its 95% CI and the
true relative lift on the same requests. Per-world rows are appended to WORK/rows.jsonl as they finish,
so an interrupted study continues where it stopped (`--work` the same folder).

Prints one JSON line: per target, estimator and metric, the worlds counted, the bias and RMSE of the
relative lift where it is defined (in lift points, estimated minus true) and of the absolute lift, the
share of worlds whose 95% CI of the absolute lift holds the true absolute lift (`coverage_abs`, defined in
every world; target 0.90-0.98 for the default estimator) and the same for the relative lift where defined
(`coverage_rel`: small worlds often have a control mean not clearly above 0, which leaves the relative
lift undefined), the median weight ESS, and the per-arm value coverage (estimate within 1.96 SE of the
oracle's value) for the treatment.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

# bench/analysis.py would shadow the `analysis` package when this script runs as `python bench/...`
sys.path[:] = [x for x in sys.path if Path(x or ".").resolve() != Path(__file__).resolve().parent]


def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worlds", type=int, default=100)
    ap.add_argument("--first-seed", type=int, default=1000)
    ap.add_argument("--users", type=int, default=150)
    ap.add_argument("--videos", type=int, default=300)
    ap.add_argument("--days", type=int, default=4)
    ap.add_argument("--temperatures", default="none,1.0", help="comma-separated: none (top-k) or temperatures")
    ap.add_argument("--control", default="pop")
    ap.add_argument("--treatment", default="base")
    ap.add_argument("--work", type=Path, default=Path(".harness-cache/coverage"))
    ap.add_argument("--threads", type=int, default=2)
    return ap.parse_args()


def _world(seed: int, a: argparse.Namespace, root: Path) -> tuple[Path, Path]:
    from typer.testing import CliRunner

    from harness.cli import app
    from harness.simulate.config import WorldConfig
    from harness.simulate.generate import simulate

    data, ck = root / "world", root / "ck"
    simulate(WorldConfig(users=a.users, videos=a.videos, comments_per_video=6.0, days=a.days, seed=seed), data,
             progress=False)
    for model in dict.fromkeys((a.control, a.treatment)):
        extra = ["--epochs", "2"] if model == "base" else []
        r = CliRunner().invoke(app, ["train", "--model", model, "--data", str(data), "--out", str(ck / model),
                                     "--until", "experiment-start", "--no-progress", "--seed", str(seed), *extra])
        if r.exit_code != 0:
            raise RuntimeError(f"training {model} on world {seed} failed: {r.output[-500:]}")
    return data, ck


def _one_world(seed: int, a: argparse.Namespace, temps: list[float | None]) -> list[dict]:
    import shutil

    from harness.replay.run import ReplayConfig, run_replay
    from harness.store import ResultsStore

    root = a.work / f"world-{seed}"
    shutil.rmtree(root, ignore_errors=True)
    data, ck = _world(seed, a, root)
    rows = []
    for t in temps:
        cfg = ReplayConfig(data=data, control=a.control, treatments=(a.treatment,), checkpoints=ck, temperature=t,
                           seed=seed, cache_dir=None)
        out = run_replay(cfg, store=ResultsStore(root / "r.duckdb"))
        est = out.estimates.set_index(["arm", "metric", "estimator"])
        for r in out.lifts.itertuples():
            e = est.loc[(a.treatment, r.metric, r.estimator)]
            tv, se, v = e["true_value"], e["se"], e["value"]
            rows.append({"seed": seed, "target": "top-k" if t is None else f"T={t:g}", "estimator": r.estimator,
                         "metric": r.metric, "rel": _f(r.rel_diff), "low": _f(r.rel_ci_low), "high": _f(r.rel_ci_high),
                         "true": _f(r.true_rel_diff), "abs": _f(r.abs_diff), "abs_low": _f(r.abs_ci_low),
                         "abs_high": _f(r.abs_ci_high), "true_abs": _f(r.true_abs_diff), "ess": _f(e["ess"]),
                         "arm_covered": bool(abs(v - tv) <= 1.959964 * se) if se == se and tv == tv else None})
    shutil.rmtree(root, ignore_errors=True)
    return rows


def _f(x) -> float | None:
    return None if x is None or x != x else float(x)


def _summary(rows: list[dict]) -> dict:
    """Coverage of the absolute lift (always defined), bias and RMSE of the relative lift where defined."""
    out: dict[str, dict] = {}
    keys = sorted({(r["target"], r["estimator"], r["metric"]) for r in rows})
    for target, e, m in keys:
        rs = [r for r in rows if (r["target"], r["estimator"], r["metric"]) == (target, e, m)]
        ab = [r for r in rs if None not in (r["abs"], r["abs_low"], r["abs_high"], r["true_abs"])]
        rel = [r for r in rs if None not in (r["rel"], r["low"], r["high"], r["true"])]
        err = np.array([r["rel"] - r["true"] for r in rel])
        arm = [r["arm_covered"] for r in rs if r["arm_covered"] is not None]
        ess = [r["ess"] for r in rs if r["ess"] is not None]
        out.setdefault(target, {}).setdefault(e, {})[m] = {
            "worlds": len(ab),
            "coverage_abs": float(np.mean([r["abs_low"] <= r["true_abs"] <= r["abs_high"] for r in ab])) if ab else None,
            "coverage_rel": float(np.mean([r["low"] <= r["true"] <= r["high"] for r in rel])) if rel else None,
            "rel_defined": len(rel),
            "bias_rel": float(err.mean()) if len(rel) else None,
            "rmse_rel": float(np.sqrt((err**2).mean())) if len(rel) else None,
            "bias_abs": float(np.mean([r["abs"] - r["true_abs"] for r in ab])) if ab else None,
            "rmse_abs": float(np.sqrt(np.mean([(r["abs"] - r["true_abs"]) ** 2 for r in ab]))) if ab else None,
            "median_ess": float(np.median(ess)) if ess else None,
            "arm_value_coverage": float(np.mean(arm)) if arm else None,
        }
    return out


def main() -> None:
    a = _parse()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(a.threads)
    temps = [None if t.strip().lower() == "none" else float(t) for t in a.temperatures.split(",")]
    a.work.mkdir(parents=True, exist_ok=True)
    log = a.work / "rows.jsonl"
    done = {json.loads(line)["seed"] for line in log.read_text().splitlines()} if log.exists() else set()
    t0 = time.perf_counter()
    for seed in range(a.first_seed, a.first_seed + a.worlds):
        if seed in done:
            continue
        rows = _one_world(seed, a, temps)
        with log.open("a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    seeds = set(range(a.first_seed, a.first_seed + a.worlds))
    rows = [r for r in map(json.loads, log.read_text().splitlines()) if r["seed"] in seeds]
    print(json.dumps({"bench": "replay_coverage", "worlds": len({r["seed"] for r in rows}), "users": a.users,
                      "videos": a.videos, "days": a.days, "control": a.control, "treatment": a.treatment,
                      "seconds_this_run": round(time.perf_counter() - t0, 1), "load_avg": os.getloadavg()[0],
                      "summary": _summary(rows)}))


if __name__ == "__main__":
    main()
