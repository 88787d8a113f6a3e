"""Benchmark of the statistics layer: `analyze` on 1M and 10M units x 10 metrics from Parquet.

10 metrics = 8 mean metrics with CUPED on their `_pre` column + 2 ratio metrics (delta method). The
Parquet file is generated into a temp dir (not timed). Each timing runs in a fresh child process so
its peak memory (ru_maxrss) is the analysis alone; imports are not timed (both sides). The baseline is a plain pandas + numpy + scipy
implementation of the same work (read Parquet, per-arm CUPED means and Welch tests, delta-method
ratios), the usual hand-written analyst script. The floor is what DuckDB alone needs to read those
columns: a fresh connection and `SELECT sum(c1), ..., sum(c20) FROM the file` (no grouping), timed in
the same run so that load from other processes hits both alike; `ratio_vs_floor_*` compares the best
times, `cpu_*` are the children's CPU seconds (user + sys, all threads), less sensitive to a busy
machine than wall time. Prints one JSON line.

    .venv/bin/python bench/analysis.py [--sizes 1000000 10000000] [--repeat 2] [--no-baseline]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

MEANS = [f"m{i}" for i in range(8)]
RATIOS = [("r0", "num0", "den0"), ("r1", "num1", "den1")]


def generate(path: Path, n: int, seed: int = 0, chunk: int = 1_000_000) -> None:
    rng = np.random.default_rng(seed)
    writer = None
    for start in range(0, n, chunk):
        k = min(chunk, n - start)
        arm = np.where(rng.random(k) < 0.5, "control", "treatment")
        cols: dict[str, object] = {"arm": arm}
        for m in MEANS:
            pre = rng.gamma(2.0, 10.0, k)
            cols[m] = pre * rng.lognormal(0, 0.3, k)
            cols[m + "_pre"] = pre
        for _, num, den in RATIOS:
            d = rng.poisson(5.0, k) + 1.0
            cols[den] = d
            cols[num] = d * rng.gamma(2.0, 1.0, k)
        table = pa.table(cols)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()


# every child prints {"s": wall seconds, "cpu": CPU seconds of the timed part, "rss": peak KiB}
_CPU = "sum(resource.getrusage(resource.RUSAGE_SELF)[:2])"

CHILD_OURS = """
import json, resource, sys, time
from analysis import AnalysisConfig, MeanMetric, RatioMetric, analyze
c0 = {cpu}
t0 = time.perf_counter()
metrics = [MeanMetric(m) for m in {means!r}] + [RatioMetric(n, a, b) for n, a, b in {ratios!r}]
r = analyze({path!r}, arm_col="arm", control="control", metrics=metrics, config=AnalysisConfig(cuped="single"))
assert len(r.lifts) == 10
print(json.dumps({{"s": time.perf_counter() - t0, "cpu": {cpu} - c0,
                  "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}))
"""

CHILD_FLOOR = """
import json, resource, time
import duckdb
cols = [c for m in {means!r} for c in (m, m + "_pre")] + [c for _, a, b in {ratios!r} for c in (a, b)]
c0 = {cpu}
t0 = time.perf_counter()
con = duckdb.connect()
con.execute("SELECT " + ", ".join(f'sum("{{c}}")' for c in cols) + " FROM read_parquet(?)", [{path!r}]).fetchall()
con.close()
print(json.dumps({{"s": time.perf_counter() - t0, "cpu": {cpu} - c0,
                  "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}))
"""

CHILD_BASE = """
import json, resource, time
import numpy as np, pandas as pd
from scipy import stats
c0 = {cpu}
t0 = time.perf_counter()
df = pd.read_parquet({path!r})
c, t = df[df.arm == "control"], df[df.arm == "treatment"]
out = []
for m in {means!r}:
    x = df[m + "_pre"]; y = df[m]
    theta = np.cov(y, x)[0, 1] / x.var()
    adj_c = c[m] - theta * (c[m + "_pre"] - x.mean()); adj_t = t[m] - theta * (t[m + "_pre"] - x.mean())
    out.append(stats.ttest_ind(adj_t, adj_c, equal_var=False).confidence_interval())
for _, num, den in {ratios!r}:
    res = []
    for a in (c, t):
        r = a[num].mean() / a[den].mean()
        lin = (a[num] - r * a[den]) / a[den].mean()
        res.append((r, lin.var() / len(a)))
    out.append((res[1][0] - res[0][0], res[1][1] + res[0][1]))
print(json.dumps({{"s": time.perf_counter() - t0, "cpu": {cpu} - c0,
                  "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}))
"""


def _child(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--repeat", type=int, default=2, help="timings per size; the best is reported")
    ap.add_argument("--no-baseline", action="store_true", help="skip the (slow) pandas script")
    args = ap.parse_args()
    fig: dict[str, object] = {"bench": "analysis", "metrics": 10, "cpus": os.cpu_count(),
                              "baseline": "pandas+numpy+scipy script",
                              "floor": "duckdb SELECT sum(col) x20 over the file"}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            path = Path(tmp) / f"units_{n}.parquet"
            generate(path, n)
            kw = dict(path=str(path), means=MEANS, ratios=RATIOS, cpu=_CPU)
            runs: dict[str, list[dict]] = {"ours": [], "floor": [], "base": []}
            for _ in range(args.repeat):  # interleaved, so load changes hit every side alike
                runs["floor"].append(_child(CHILD_FLOOR.format(**kw)))
                runs["ours"].append(_child(CHILD_OURS.format(**kw)))
                if not args.no_baseline:
                    runs["base"].append(_child(CHILD_BASE.format(**kw)))
            ours, floor = (min(runs[k], key=lambda d: d["s"]) for k in ("ours", "floor"))
            tag = f"{n // 1_000_000}M" if n >= 1_000_000 else str(n)
            fig[f"s_{tag}"] = round(ours["s"], 3)
            fig[f"cpu_s_{tag}"] = round(min(d["cpu"] for d in runs["ours"]), 3)
            fig[f"peak_mb_{tag}"] = round(ours["rss"] / 1024, 1)
            fig[f"floor_s_{tag}"] = round(floor["s"], 3)
            fig[f"floor_cpu_s_{tag}"] = round(min(d["cpu"] for d in runs["floor"]), 3)
            fig[f"ratio_vs_floor_{tag}"] = round(ours["s"] / floor["s"], 2)
            fig[f"cpu_ratio_vs_floor_{tag}"] = round(fig[f"cpu_s_{tag}"] / fig[f"floor_cpu_s_{tag}"], 2)
            if runs["base"]:
                base = min(runs["base"], key=lambda d: d["s"])
                fig[f"baseline_s_{tag}"] = round(base["s"], 3)
                fig[f"baseline_peak_mb_{tag}"] = round(base["rss"] / 1024, 1)
                fig[f"speedup_vs_baseline_{tag}"] = round(base["s"] / ours["s"], 2)
            path.unlink()
    print(json.dumps(fig))


if __name__ == "__main__":
    main()
