"""Benchmark of the dashboard: the decision page of a run with 1M units, rendered by Streamlit's AppTest.

The run is built as `harness analyze` builds one (`harness.analysis_run.run_analysis`, the store's write
API): a generated per-unit table of `--units` users in two arms with the four online metrics, a pre-period
covariate (CUPED), requests and a segment, the default launch gate, and every unit's values stored in
`unit_metrics` (not timed; about 7 values per unit). Then, in this process:

- `first_s`: the first render in the process, imports of the app's modules included (a server pays it once);
- `cold_s`: a new session with the read cache cleared (every store read runs against the file);
- `warm_s`: the same session rerun (reads served from the cache; the median of `--repeat`);
- `new_session_s`: a new session with the cache warm (another analyst opening the same run).

Target: the decision page in under 2 s. Prints one JSON line.

    .venv/bin/python bench/dashboard.py [--units 1000000] [--repeat 5] [--db PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RUN_ID = "bench-1m"
TARGET_S = 2.0


def build(db: Path, units: int, work: Path) -> float:
    """Store one analyze run of `units` users (two arms) in `db`; returns the seconds it took."""
    from analysis.config import AnalysisConfig
    from analysis.gate import load_gate
    from analysis.metrics import parse_metric
    from harness.analysis_run import run_analysis
    from harness.store import ResultsStore

    rng = np.random.default_rng(0)
    arm = np.where(rng.random(units) < 0.5, "base", "lsvcr")
    pre = rng.gamma(4.0, 300.0, units)
    lift = 1.0 + 0.004 * (arm == "lsvcr")
    table = work / "units.parquet"
    pd.DataFrame({
        "user_id": np.arange(units), "arm": arm,
        "watch_time_s": (0.8 * pre + rng.gamma(2.0, 150.0, units)) * lift, "watch_time_s_pre": pre,
        "video_interactions": rng.poisson(12.0 * lift), "comment_watch_time_s": rng.gamma(1.5, 40.0, units) * lift,
        "comment_interactions": rng.poisson(0.8 * lift), "requests": rng.poisson(30.0, units) + 1,
        "activity_level": rng.choice(["low", "medium", "high"], units),
    }).to_parquet(table, index=False)
    metrics = [parse_metric(m) for m in ("watch_time_s", "video_interactions", "comment_watch_time_s",
                                         "comment_interactions")]
    t0 = time.perf_counter()
    run_analysis(table, arm_col="arm", control="base", metrics=metrics, segments=["activity_level"],
                 unit_col="user_id", config=AnalysisConfig(cuped="single"),
                 gate=load_gate(ROOT / "analysis" / "gate_default.toml"),
                 gate_path=ROOT / "analysis" / "gate_default.toml", store=ResultsStore(db), run_id=RUN_ID)
    return time.perf_counter() - t0


def render(db: Path) -> object:
    from streamlit.testing.v1 import AppTest

    os.environ["HARNESS_DB"] = str(db)
    at = AppTest.from_file(str(ROOT / "dashboards" / "app.py"), default_timeout=120)
    at.query_params["run"] = RUN_ID
    at.query_params["page"] = "Decision"
    return at


def timed_run(at: object) -> float:
    t0 = time.perf_counter()
    at.run()  # type: ignore[attr-defined]
    dt = time.perf_counter() - t0
    assert not at.exception, [e.value for e in at.exception]  # type: ignore[attr-defined]
    banner = [e.value for e in at.main.get("success")] + [e.value for e in at.main.get("error")] + \
        [e.value for e in at.main.get("warning")]  # type: ignore[attr-defined]
    assert any("Launch decision" in str(b) for b in banner), banner
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=1_000_000, help="units (users) in the run")
    ap.add_argument("--repeat", type=int, default=5, help="warm renders; the median is reported")
    ap.add_argument("--db", type=Path, default=None,
                    help="results database to use; built there when it lacks the run (default: a temp file)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from dashboards.data import clear_cache
    from harness.store import ResultsStore, UnknownRunError

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        db = args.db or work / "bench.duckdb"
        try:
            ResultsStore(db).run(RUN_ID)
            build_s = None
        except UnknownRunError:
            build_s = build(db, args.units, work)
        n_units = int(sum(ResultsStore(db).run(RUN_ID)["summary"]["arm_counts"].values()))
        first = timed_run(render(db))
        clear_cache()
        at = render(db)
        cold = timed_run(at)
        warm = [timed_run(at) for _ in range(args.repeat)]
        new_session = timed_run(render(db))
        fig = {
            "bench": "dashboard_decision_page", "units": n_units, "build_s": build_s and round(build_s, 1),
            "db_mb": round(db.stat().st_size / 1e6, 1), "first_s": round(first, 3), "cold_s": round(cold, 3),
            "warm_s": round(statistics.median(warm), 3), "new_session_s": round(new_session, 3),
            "target_s": TARGET_S, "met": max(cold, statistics.median(warm), new_session) < TARGET_S,
            "load_avg": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count(),
        }
    print(json.dumps(fig))


if __name__ == "__main__":
    main()
