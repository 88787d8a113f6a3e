"""bench/quality.py's JSON line as the two Markdown tables BENCHMARKS.md shows; prints Markdown.

    python bench/quality_table.py OUT.json [--metric ndcg@10]

OUT.json holds the bench's output (its last line is read, so a log with earlier lines works too). Table 1:
per model, the epochs each seed ran (best epoch in brackets) and the metric's mean ± std over the seeds,
per task and slice (`all`, and `warm`/`cold` under the temporal protocol). Table 2: the paired
differences, LSVCR minus each model, with their 95% intervals (the bench's `paired`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ORDER = ("base", "pop", "lsvcr", "lsvcr_no_prior", "lsvcr_per_task", "lsvcr_video", "lsvcr_comment",
         "no_align", "no_comments", "no_text")


def _columns(out: dict) -> list[tuple[str, str]]:
    slices = ("all", "warm", "cold") if out.get("protocol") == "temporal" else ("all",)
    return [(task, sl) for task in ("video", "comment") for sl in slices if task in out.get("test_queries", {})]


def _epochs(out: dict, model: str) -> str:
    runs = sorted((r for r in out["runs"] if r["model"] == model), key=lambda r: r["seed"])
    if not runs:
        return "from its two parts" if model == "lsvcr_per_task" else "-"
    if "best_epoch" not in runs[0]:
        return "-"
    return " / ".join(f"{r['epochs_run']} ({r['best_epoch']})" for r in runs)


def results_table(out: dict, metric: str) -> str:
    cols = _columns(out)
    seeds = "/".join(str(s) for s in out["seeds"])
    lines = [f"| model | epochs run (best), seeds {seeds} | " + " | ".join(f"{t} {s}" for t, s in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for model in sorted(out["slices"], key=lambda m: ORDER.index(m) if m in ORDER else len(ORDER)):
        cells = []
        for task, sl in cols:
            v = out["slices"][model].get(task, {}).get(sl, {}).get(metric)
            cells.append("-" if v is None or v["mean"] is None else f"{v['mean']:.3f} ± {v['std']:.3f}")
        lines.append(f"| {model} | {_epochs(out, model)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_table(out: dict) -> str:
    cols = _columns(out)
    lines = ["| LSVCR minus | " + " | ".join(f"{t} {s}" for t, s in cols) + " |", "|---|" + "---|" * len(cols)]
    for name, block in out.get("paired", {}).items():
        cells = []
        for task, sl in cols:
            d = block.get(f"{task}_{sl}")
            cells.append("-" if d is None else f"{d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]")
        lines.append(f"| {name.removeprefix('lsvcr_vs_')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", type=Path, help="bench/quality.py's output (its last line is read)")
    ap.add_argument("--metric", default="ndcg@10", choices=("ndcg@10", "recall@10"))
    args = ap.parse_args(argv)
    lines = [ln for ln in args.file.read_text().splitlines() if ln.strip()]
    if not lines:
        raise SystemExit(f"{args.file} is empty: it should hold bench/quality.py's JSON line")
    try:
        out = json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        raise SystemExit(f"{args.file}: its last line is not bench/quality.py's JSON ({exc})") from None
    print(f"{args.metric}, mean ± std over seeds {', '.join(map(str, out['seeds']))} ({out['protocol']}):\n")
    print(results_table(out, args.metric))
    if out.get("paired"):
        print("\nPaired differences on NDCG@10, LSVCR minus each model (95% intervals, clustered by user):\n")
        print(paired_table(out))


if __name__ == "__main__":
    main()
