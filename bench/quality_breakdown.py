"""Where one model beats another: paired per-query NDCG@10 differences by kind of query.

    python bench/quality_breakdown.py --data WORLD --workdir DIR --models base=DIR/base-0,lsvcr=DIR/lsvcr-0

Scores the stored candidates of `bench/quality.py` (`--workdir` holds them) with two checkpoints and
prints one JSON line: per task, the mean NDCG@10 of each model and the relative gain of the second
over the first, overall and within slices of the queries:
  video:   the target video's training popularity (engaged events in the training split: 0 = a video
           the ID models never saw), the user's comment records in training (what LSVCR's comment
           history can read), the user's video-history length;
  comment: the number of candidates (a video's comment count, capped at 100) and the user's comment
           records.
Each difference comes with a 95% interval from a paired t-test over queries (scipy.stats.ttest_rel):
it reflects which queries the test split happens to hold, not training-seed noise (bench/quality.py
reports that across seeds).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import stats

from harness.logs.store import LogStore
from models.adapters import load_recommender
from models.evaluation import load_or_sample_candidates, score_candidates
from models.histories import prepare_data
from models.metrics import ranking_metrics


def paired(a: np.ndarray, b: np.ndarray) -> dict:
    """Means of a and b, b - a with a 95% paired-t interval, and b / a - 1."""
    out = {"n": int(len(a)), "a": float(a.mean()), "b": float(b.mean()), "diff": float((b - a).mean()),
           "rel": float(b.mean() / a.mean() - 1) if a.mean() > 0 else None}
    if len(a) > 2 and np.any(a != b):
        ci = stats.ttest_rel(b, a).confidence_interval(0.95)
        out |= {"diff_lo": float(ci.low), "diff_hi": float(ci.high)}
    return out


def slices(values: np.ndarray, edges: list[float], labels: list[str]) -> list[tuple[str, np.ndarray]]:
    """Masks of values in [edges[i], edges[i+1])."""
    return [(lab, (values >= lo) & (values < hi)) for lab, lo, hi in zip(labels, edges[:-1], edges[1:], strict=True)]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="logs folder of the world")
    ap.add_argument("--workdir", required=True, help="the bench/quality.py work folder (stored candidates)")
    ap.add_argument("--models", required=True, help="two name=checkpoint pairs: the reference, then the challenger")
    ap.add_argument("--split", default="test", choices=("valid", "test"))
    args = ap.parse_args(argv)
    pairs = [m.split("=", 1) for m in args.models.split(",")]
    if len(pairs) != 2 or any(len(p) != 2 for p in pairs):
        raise SystemExit("--models takes exactly two name=checkpoint pairs, e.g. base=DIR/base-0,lsvcr=DIR/lsvcr-0")
    with LogStore.open(Path(args.data)) as store:
        tables = store.tables()
    prep = prepare_data(tables)
    cat, splits = prep.catalogue, prep.splits
    cands = load_or_sample_candidates(splits, cat, Path(args.workdir))
    recs = [load_recommender(Path(path), catalogue=cat) for _, path in pairs]
    train = splits.train
    video_pop = np.bincount(train.video, minlength=cat.n_videos + 1)
    out: dict = {"bench": "quality_breakdown", "data": args.data, "split": args.split,
                 "a": pairs[0][0], "b": pairs[1][0], "tasks": {}}
    for task in ("video", "comment"):
        per = []
        for rec in recs:
            scored = score_candidates(rec, splits, cands, cat, split=args.split, task=task)
            if scored is None:
                break
            rows, scores, labels, valid = scored
            per.append(ranking_metrics(scores, labels, valid, ("ndcg@10",))["ndcg@10"])
        if len(per) < 2:
            continue
        a, b = per
        user = train.user_rows(rows["user_id"].to_numpy(np.int64))
        n_comm = np.where(user >= 0, train.n_comment_records()[np.maximum(user, 0)], 0)
        res = {"all": paired(a, b)}
        groups = slices(n_comm, [0, 1, 5, np.inf], ["0", "1-4", "5+"])
        dims = {"user_comment_records": groups}
        if task == "video":
            target = np.array([cat.video_index(np.asarray(c, np.int64))[np.asarray(lab, bool)][0]
                               for c, lab in zip(rows["candidates"], rows["labels"], strict=True)])
            pop = video_pop[target]
            q = np.quantile(pop[pop > 0], [1 / 3, 2 / 3]) if (pop > 0).any() else [1, 1]
            dims["target_train_events"] = slices(pop, [0, 1, q[0], q[1], np.inf],
                                                 ["0", f"1-{q[0]:.0f}", f"{q[0]:.0f}-{q[1]:.0f}", f">={q[1]:.0f}"])
            n_vid = np.where(user >= 0, train.n_video_events()[np.maximum(user, 0)], 0)
            qv = np.quantile(n_vid, [1 / 3, 2 / 3])
            dims["user_video_events"] = slices(n_vid, [0, qv[0], qv[1], np.inf],
                                               [f"<{qv[0]:.0f}", f"{qv[0]:.0f}-{qv[1]:.0f}", f">={qv[1]:.0f}"])
        else:
            n_c = valid.sum(1)
            dims["candidates"] = slices(n_c, [0, 21, 51, np.inf], ["<=20", "21-50", "51-100"])
        for dim, groups in dims.items():
            res[dim] = {lab: paired(a[m], b[m]) for lab, m in groups if m.sum() > 0}
        out["tasks"][task] = res
    print(json.dumps(out))


if __name__ == "__main__":
    main()
