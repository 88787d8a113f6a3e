"""What each evaluation protocol lets a model see, and how models fare on cold items.

    python bench/protocols.py --data data/world --workdir /tmp/protocols \
        [--models base=shipped/base,lsvcr=shipped/lsvcr] [--until experiment-start]

Prints one JSON line:
- `leave_one_out`: the split's leaks (issue 14, defect 5), for the rule before the fix (each task held
  out its own last two events) and for today's (training stops at each user's first held-out query):
  the share of test video targets found in the user's training comment records at the target's time, of
  comment test queries with a training video event at or after the query time, of video test queries with
  a training comment record at or after it, and of all held-out queries with any training event of their
  user at or after them; plus the share of training events today's rule keeps.
- `likes`: logged comment likes against the snapshot (`comments.like_count`), comments with more logged
  likes than their snapshot (a snapshot that omits them, as the synthetic world's does), the share of
  leave-one-out comment test queries whose candidates' counts as of the query differ from the snapshot
  (any candidate, a positive), and the share of videos whose most-liked comment differs as of the cut.
- `temporal` (with --models): per model, NDCG@10 per task and slice (all, warm, cold), and where cold video
  targets rank among the 100 candidates and among the cold candidates alone (what text can do for an item
  no training event held), from the stored temporal candidates (`harness evaluate --protocol temporal`
  draws the same ones with the same settings); with two models, the second minus the first per task and
  slice, with a 95% interval clustered by user (a user's up to 10 queries are not independent): the mean
  difference d over N queries, se^2 = G/(G-1) sum_g (S_g - n_g d)^2 / N^2 over users g with n_g queries
  whose differences sum to S_g, d +- 1.96 se. It reflects which queries were drawn, not seed noise.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from harness.logs.store import MODEL_TABLES, LogStore
from harness.logs.window import cut_tables, parse_cut
from models.adapters import load_recommender
from models.evaluation import EvalConfig, load_or_sample_candidates, score_candidates
from models.histories import Splits, prepare_data
from models.metrics import ranking_metrics
from models.protocols import Temporal, prepare_temporal


def leaks(splits: Splits) -> dict[str, float]:
    """The held-out queries' future in the training split, read from its arrays."""
    tr = splits.train

    def span(kind: str, u: int) -> tuple[np.ndarray, np.ndarray]:
        off, t, item = ((tr.video_offsets, tr.video_time, tr.video) if kind == "video"
                        else (tr.comment_offsets, tr.comment_time, tr.comment_video))
        return t[off[u]:off[u + 1]], item[off[u]:off[u + 1]]

    test = splits.test
    in_comments = [((span("comment", q.user_row)[0] == q.time) & (span("comment", q.user_row)[1] == q.target)).any()
                   for q in test.video.itertuples()]
    later_video = [(span("video", q.user_row)[0] >= q.time).any() for q in test.comment.itertuples()]
    later_comment = [(span("comment", q.user_row)[0] >= q.time).any() for q in test.video.itertuples()]
    held = [q for s in (splits.valid, splits.test) for t in (s.video, s.comment) for q in t.itertuples()]
    later_any = [(span("video", q.user_row)[0] >= q.time).any() or (span("comment", q.user_row)[0] >= q.time).any()
                 for q in held]
    return {"video_targets_in_train_comments": float(np.mean(in_comments)),
            "comment_queries_with_later_train_video": float(np.mean(later_video)),
            "video_queries_with_later_train_comments": float(np.mean(later_comment)),
            "held_out_queries_with_later_training": float(np.mean(later_any)),
            "train_video_events": int(tr.video.shape[0]), "train_comment_records": int(tr.comment_video.shape[0])}


def old_rule(splits: Splits) -> Splits:
    """The split before the fix: each task held out its own last two events and kept the rest."""
    log = splits.full
    nv, nc = log.n_video_events(), log.n_comment_records()
    train = log.head(nv - np.where(nv >= 3, 2, 0), nc - np.where(nc >= 2, 2, 0))
    return Splits(log, train, splits.valid, splits.test, splits.likes)


def like_figures(prep, cands, cut_s: float) -> dict[str, float | int]:
    lk, cat = prep.splits.likes, prep.catalogue
    rows = cands.rows("test", "comment")
    changed_any, changed_pos = [], []
    for r in rows.itertuples():
        c = cat.comment_index(np.asarray(r.candidates, np.int64))
        diff = lk.as_of(c, np.full(c.shape, r.time)) != lk.snapshot[c]
        changed_any.append(diff.any())
        changed_pos.append(diff[np.asarray(r.labels, bool)].any())
    at_cut = lk.as_of(np.arange(cat.n_comments + 1), np.full(cat.n_comments + 1, cut_s))
    differs = 0
    for v in range(1, cat.n_videos + 1):
        under = cat.comments_of(v)
        if under.size:  # most-liked, ties to the smallest index, as Catalogue.popular_comment
            differs += int(under[np.argmax(at_cut[under])] != cat.popular_comment[v])
    return {"logged_likes": lk.n_logged, "snapshot_likes": int(lk.snapshot.sum()),
            "comments_over_snapshot": lk.n_over_snapshot,
            "loo_comment_queries_any_candidate_changed": float(np.mean(changed_any)),
            "loo_comment_queries_positive_changed": float(np.mean(changed_pos)),
            "videos_whose_popular_comment_differs_at_cut": differs / cat.n_videos}


def temporal_figures(name: str, path: str, prep, cands, setup) -> tuple[dict, dict[str, np.ndarray]]:
    """NDCG@10 per task and slice, cold-target ranks; and the per-query NDCG@10 (task -> array) for pairing."""
    rec = load_recommender(path, catalogue=prep.catalogue)
    out: dict = {"model": name}
    per_query: dict[str, np.ndarray] = {}
    for task in ("video", "comment"):
        rows, scores, labels, valid = score_candidates(rec, prep.splits, cands, prep.catalogue, split="test",
                                                       task=task)
        ndcg = ranking_metrics(scores, labels, valid, ("ndcg@10",))["ndcg@10"]
        per_query[task] = ndcg
        sl = rows["slice"].to_numpy()
        for name_, keep in (("all", np.ones(len(rows), bool)), ("warm", sl == "warm"), ("cold", sl == "cold")):
            out[f"{task}_{name_}_ndcg@10"] = float(ndcg[keep].mean())
            out[f"{task}_{name_}_queries"] = int(keep.sum())
        if task != "video":
            continue
        cand = [prep.catalogue.video_index(np.asarray(c, np.int64)) for c in rows["candidates"]]
        rank_all, rank_cold, n_cold = [], [], []
        for i in np.flatnonzero(sl == "cold"):
            others = scores[i, 1:len(cand[i])]
            m = setup.is_cold(cand[i][1:])
            rank_all.append(int((others >= scores[i, 0]).sum()) + 1)  # pessimistic ties, as models.metrics
            rank_cold.append(int((others[m] >= scores[i, 0]).sum()) + 1)
            n_cold.append(int(m.sum()) + 1)
        out |= {"cold_rank_mean": float(np.mean(rank_all)), "cold_rank_median": float(np.median(rank_all)),
                "rank_among_cold_candidates_median": float(np.median(rank_cold)),
                "cold_candidates_mean": float(np.mean(n_cold)),
                "recall@1_among_cold_candidates": float(np.mean(np.asarray(rank_cold) == 1)),
                "random_recall@1_among_cold_candidates": float(np.mean(1.0 / np.asarray(n_cold)))}
    per_query["slices"] = {t: cands.rows("test", t)["slice"].to_numpy() for t in ("video", "comment")}  # type: ignore[assignment]
    per_query["users"] = {t: cands.rows("test", t)["user_id"].to_numpy() for t in ("video", "comment")}  # type: ignore[assignment]
    return out, per_query


def clustered(diff: np.ndarray, users: np.ndarray) -> tuple[float, float]:
    """Mean of `diff` and its standard error clustered by `users` (CR1, see the module docstring)."""
    d = float(diff.mean())
    _, g = np.unique(users, return_inverse=True)
    S, n = np.bincount(g, weights=diff), np.bincount(g)
    G, N = S.shape[0], diff.shape[0]
    return d, float(np.sqrt(G / max(G - 1, 1) * ((S - n * d) ** 2).sum()) / N)


def paired(a: dict, b: dict) -> dict:
    """b - a per task and slice, with a 95% interval clustered by user."""
    out = {}
    for task in ("video", "comment"):
        sl, users = a["slices"][task], a["users"][task]
        for name, keep in (("all", np.ones(len(sl), bool)), ("warm", sl == "warm"), ("cold", sl == "cold")):
            x, y = a[task][keep], b[task][keep]
            diff, se = clustered(y - x, users[keep])
            out[f"{task}_{name}"] = {"diff": diff, "lo": diff - 1.96 * se, "hi": diff + 1.96 * se,
                                     "rel": float(y.mean() / x.mean() - 1) if x.mean() > 0 else None,
                                     "users": int(np.unique(users[keep]).size)}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="logs folder (or .duckdb) of the world")
    ap.add_argument("--workdir", required=True, help="folder for the stored evaluation candidates")
    ap.add_argument("--models", default="", help="name=checkpoint pairs to rank cold targets with (optional)")
    ap.add_argument("--until", default="experiment-start", help="the temporal cut: ISO time or experiment-start")
    ap.add_argument("--queries-per-user", type=int, default=10, help="temporal test queries per user and task")
    args = ap.parse_args(argv)
    with LogStore.open(Path(args.data)) as store:
        tables = cut_tables(store, MODEL_TABLES)
        cut = parse_cut(args.until, store)
    cut_s = float(cut.astype("datetime64[us]").astype(np.int64) / 1e6)
    prep = prepare_data(tables)
    cands = load_or_sample_candidates(prep.splits, prep.catalogue, args.workdir, EvalConfig(seed=0))
    before, after = leaks(old_rule(prep.splits)), leaks(prep.splits)
    after["kept_video_events"] = after["train_video_events"] / before["train_video_events"]
    after["kept_comment_records"] = after["train_comment_records"] / before["train_comment_records"]
    out: dict = {"bench": "protocols", "data": args.data, "until": str(cut),
                 "leave_one_out": {"before_fix": before, "after_fix": after},
                 "likes": like_figures(prep, cands, cut_s)}
    if args.models:
        tprep, setup = prepare_temporal(tables, Temporal(cut_s, args.queries_per_user, 0))
        tcands = load_or_sample_candidates(tprep.splits, tprep.catalogue, args.workdir, EvalConfig(seed=0), setup)
        pairs = [m.split("=", 1) for m in args.models.split(",")]
        if any(len(p) != 2 for p in pairs):
            raise SystemExit("--models takes name=checkpoint pairs, e.g. base=shipped/base,lsvcr=shipped/lsvcr")
        figures = [temporal_figures(name, path, tprep, tcands, setup) for name, path in pairs]
        out["temporal"] = [f for f, _ in figures]
        if len(figures) == 2:
            out["temporal_paired"] = {"a": pairs[0][0], "b": pairs[1][0], **paired(figures[0][1], figures[1][1])}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
