"""Benchmark `harness simulate`: impressions per second and peak memory, one JSON line.

Each case runs in a fresh child process (so ru_maxrss is that case's peak), generates the world and
its logs and writes them as Parquet to a temporary folder. Cases: 10k users x 7 days and 100k users x
1 day (videos = 1.5 x users, other options default). Usage: `.venv/bin/python bench/simulate.py
[--quick]` (--quick: 2k users x 7 days only).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, sys, tempfile, time
from pathlib import Path
from harness.simulate.config import WorldConfig
from harness.simulate.generate import generate
from harness.logs.store import write_logs
users, days = int(sys.argv[1]), int(sys.argv[2])
cfg = WorldConfig(users=users, videos=int(1.5 * users), days=days, seed=0)
t0 = time.perf_counter()
world, tables, summary = generate(cfg)
t1 = time.perf_counter()
with tempfile.TemporaryDirectory() as d:
    write_logs(tables, Path(d) / "w", extra_files=world.to_files())
t2 = time.perf_counter()
imps = summary.rows["impressions"]
print(json.dumps({"users": users, "videos": cfg.videos, "days": days, "impressions": imps,
                  "requests": summary.rows["requests"], "candidates": summary.rows["candidates"],
                  "generate_s": round(t1 - t0, 2), "write_s": round(t2 - t1, 2),
                  "impressions_per_s": round(imps / (t2 - t0)),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
"""


def run_case(users: int, days: int) -> dict:
    with tempfile.TemporaryDirectory():
        res = subprocess.run([sys.executable, "-c", CHILD, str(users), str(days)], capture_output=True,
                             text=True, check=False)
    if res.returncode != 0:
        return {"users": users, "days": days, "error": res.stderr.strip().splitlines()[-1:]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    cases = [(2000, 7)] if "--quick" in sys.argv else [(10_000, 7), (100_000, 1)]
    out = {"bench": "simulate", "what": "generate + write parquet, fresh process per case; "
           "videos = 1.5 x users; other options default", "cases": [run_case(u, d) for u, d in cases]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
