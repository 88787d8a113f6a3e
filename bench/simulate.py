"""Benchmark `harness simulate`: impressions per second and peak memory, one JSON line.

Each case runs in a fresh child process (so ru_maxrss is that case's peak), generates the world and
its logs and writes them as Parquet to a temporary folder. Cases: 3.4k users x 7 days and 35k users x
1 day, about 1M impressions each with world v2's volume (videos = 1.5 x users, other options
default). Usage: `.venv/bin/python bench/simulate.py [--quick] [--workers N]` (--quick: 700 users x 7
days only; --workers: threads for the exact
Plackett-Luce marginals, default up to 2; the output does not depend on it).

Figures per case: wall seconds and CPU seconds (user + system of the child, all its threads; DuckDB
validation in the write uses several) for the world build, the session generation and the write;
impressions per wall second and per CPU second (on a shared machine wall time depends on the load,
CPU time much less); peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, resource, sys, tempfile, time
from pathlib import Path
from harness.simulate.config import WorldConfig
from harness.simulate.generate import generate
from harness.logs.store import write_logs

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

users, days, workers = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
cfg = WorldConfig(users=users, videos=int(1.5 * users), days=days, seed=0)
t0, c0 = time.perf_counter(), cpu()
world, tables, summary = generate(cfg, workers=workers or None)
t1, c1 = time.perf_counter(), cpu()
with tempfile.TemporaryDirectory() as d:
    write_logs(tables, Path(d) / "w", extra_files=world.to_files())
t2, c2 = time.perf_counter(), cpu()
imps = summary.rows["impressions"]
print(json.dumps({"users": users, "videos": cfg.videos, "days": days, "workers": workers or "default",
                  "impressions": imps,
                  "requests": summary.rows["requests"], "candidates": summary.rows["candidates"],
                  "comments": summary.rows["comments"],
                  "generate_s": round(t1 - t0, 2), "write_s": round(t2 - t1, 2), "total_s": round(t2 - t0, 2),
                  "generate_cpu_s": round(c1 - c0, 2), "write_cpu_s": round(c2 - c1, 2),
                  "total_cpu_s": round(c2 - c0, 2),
                  "impressions_per_s": round(imps / (t2 - t0)), "impressions_per_cpu_s": round(imps / (c2 - c0)),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
"""


def run_case(users: int, days: int, workers: int) -> dict:
    res = subprocess.run([sys.executable, "-c", CHILD, str(users), str(days), str(workers)], capture_output=True,
                         text=True, check=False)
    if res.returncode != 0:
        return {"users": users, "days": days, "error": res.stderr.strip().splitlines()[-1:]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2k users x 7 days only")
    ap.add_argument("--workers", type=int, default=0,
                    help="threads for the exact Plackett-Luce marginals (0 = default, up to 2); the output does "
                         "not depend on it")
    args = ap.parse_args(argv)
    # world v2 shows ~2.2x v1's impressions per user: these sizes give about 1M impressions each
    cases = [(700, 7)] if args.quick else [(3_400, 7), (35_000, 1)]
    workers = args.workers
    load = os.getloadavg()[0]
    out = {"bench": "simulate", "what": "generate + write parquet, fresh process per case; "
           "videos = 1.5 x users; other options default", "cpus": os.cpu_count(),
           "load_avg_1m_at_start": round(load, 2), "cases": [run_case(u, d, workers) for u, d in cases]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
