"""A/A test of the replay's split design: the same policy in both arms, many assignment salts; the share of
salts whose 95% CI of the lift excludes 0 is the false-positive rate (target 0.02-0.08 per metric).

    python bench/replay_aa.py [--salts 200] [--world DIR | --users 400 --videos 400 --days 4 --seed 7]
                              [--policy base] [--temperature T] [--checkpoints DIR] [--work DIR]

Each salt is a full `harness replay --design split --control P --treatment P --salt S` run (`run_replay`,
the cache on: the scores, reward model and truth are computed once and reused, every salt re-estimates,
re-assigns users by its salted hash, re-analyses with Welch CIs and CUPED on the pre-period, and is
stored). Without --world a small world is simulated and `base` trained on its pre-period (2 epochs).

Prints one JSON line: per metric, the false-positive rate of the default estimator's lift (and its
binomial 95% interval), the same for every other estimator, and the seconds per salt.
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
    ap.add_argument("--salts", type=int, default=200)
    ap.add_argument("--world", type=Path, default=None, help="logs to replay [default: a small simulated world]")
    ap.add_argument("--checkpoints", type=Path, default=None)
    ap.add_argument("--users", type=int, default=400)
    ap.add_argument("--videos", type=int, default=400)
    ap.add_argument("--days", type=int, default=4)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--policy", default="base")
    ap.add_argument("--temperature", type=float, default=None)
    ap.add_argument("--work", type=Path, default=Path(".harness-cache/aa"))
    ap.add_argument("--threads", type=int, default=2)
    return ap.parse_args()


def _setup(a: argparse.Namespace) -> tuple[Path, Path]:
    if a.world is not None:
        return a.world, a.checkpoints or Path("shipped")
    from typer.testing import CliRunner

    from harness.cli import app
    from harness.simulate.config import WorldConfig
    from harness.simulate.generate import simulate

    data, ck = a.work / "world", a.work / "ck"
    if not data.exists():
        simulate(WorldConfig(users=a.users, videos=a.videos, comments_per_video=6.0, days=a.days, seed=a.seed), data,
                 progress=False)
    if not (ck / a.policy).exists():
        extra = ["--epochs", "2"] if a.policy == "base" else []
        r = CliRunner().invoke(app, ["train", "--model", a.policy, "--data", str(data), "--out", str(ck / a.policy),
                                     "--until", "experiment-start", "--no-progress", *extra])
        if r.exit_code != 0:
            raise RuntimeError(r.output[-500:])
    return data, ck


def _wilson(k: int, n: int) -> list[float]:
    if n == 0:
        return [float("nan"), float("nan")]
    z, p = 1.959964, k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [float(c - h), float(c + h)]


def main() -> None:
    a = _parse()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from harness.replay.run import ReplayConfig, run_replay
    from harness.store import ResultsStore

    torch.set_num_threads(a.threads)
    a.work.mkdir(parents=True, exist_ok=True)
    data, ck = _setup(a)
    store = ResultsStore(a.work / "aa.duckdb")
    hits: dict[tuple[str, str], list[bool]] = {}
    t0 = time.perf_counter()
    for s in range(a.salts):
        cfg = ReplayConfig(data=data, control=a.policy, treatments=(a.policy,), checkpoints=ck, design="split",
                           salt=f"aa-{s}", temperature=a.temperature, truth=False,
                           cache_dir=a.work / "cache")
        out = run_replay(cfg, store=store, run_id=f"aa-{s}", replace=True)
        for r in out.lifts.itertuples():
            if r.abs_ci_low == r.abs_ci_low and r.abs_ci_high == r.abs_ci_high:
                hits.setdefault((r.metric, r.estimator), []).append(not r.abs_ci_low <= 0 <= r.abs_ci_high)
    seconds = time.perf_counter() - t0
    fpr: dict[str, dict] = {}
    for (m, e), h in sorted(hits.items()):
        fpr.setdefault(e, {})[m] = {"salts": len(h), "fpr": float(np.mean(h)), "fpr_ci95": _wilson(sum(h), len(h))}
    print(json.dumps({"bench": "replay_aa", "salts": a.salts, "policy": a.policy, "temperature": a.temperature,
                      "world": str(data), "users": int(out.estimates["n_units"].iloc[0]),
                      "default_estimator": out.estimates.loc[out.estimates["is_default"], "estimator"].iloc[0],
                      "seconds_per_salt": round(seconds / max(a.salts, 1), 2), "load_avg": os.getloadavg()[0],
                      "false_positive_rate": fpr}))


if __name__ == "__main__":
    main()
