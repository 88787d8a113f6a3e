"""Offline evaluation protocol (as LSVCR's paper), with candidates sampled once and stored.

Video recommendation: for each user's validation / test target (leave-one-out, `models.histories`),
rank the target among 99 negatives drawn uniformly without replacement from the videos the user never
engaged with (in the whole log); fewer when the catalogue is too small. Comment recommendation: for
the user's validation / test comment-history record, rank the watched video's comments: all of them
when there are at most 100, else all positives (the comments the user engaged with) plus uniformly
sampled negatives up to 100. The query time is the target's time, so the model sees only the events
strictly before it. Metrics (`models.metrics`) are averaged over users.

Candidates are drawn once from `numpy.random.default_rng([seed, split, task])`, stored as Parquet
(external ids, so a file is readable on its own) under a name keyed by the data's fingerprint, the
catalogue digest and the protocol settings, and re-read by every later evaluation: every model sees
the same candidates, run after run (the public LSVCR code resamples them each time, a pitfall).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from models.batch import CommentQuery, VideoQuery
from models.catalogue import Catalogue
from models.histories import Splits
from models.metrics import METRICS, mean_metrics, ranking_metrics

SPLITS = ("valid", "test")
TASKS = ("video", "comment")
_SPLIT_CODE = {"valid": 0, "test": 1}
_TASK_CODE = {"video": 0, "comment": 1}


@dataclass(frozen=True)
class EvalConfig:
    n_negatives: int = 99  # video task: target + 99 negatives = 100 candidates
    max_comment_candidates: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_negatives < 1 or self.max_comment_candidates < 2:
            raise ValueError("EvalConfig needs n_negatives >= 1 and max_comment_candidates >= 2")


@dataclass
class EvalCandidates:
    """Stored candidates: one row per (split, task, user) with external ids and 0/1 labels."""

    table: pd.DataFrame  # split, task, user_id, time, video_id, candidates (list), labels (list)
    key: str

    def rows(self, split: str, task: str) -> pd.DataFrame:
        t = self.table
        return t[(t["split"] == split) & (t["task"] == task)].reset_index(drop=True)


def candidates_key(splits: Splits, catalogue: Catalogue, config: EvalConfig) -> str:
    h = hashlib.sha256()
    h.update(splits.full.fingerprint().encode())
    h.update(catalogue.digest().encode())
    h.update(repr(sorted(asdict(config).items())).encode())
    return h.hexdigest()[:16]


def sample_candidates(splits: Splits, catalogue: Catalogue, config: EvalConfig | None = None) -> EvalCandidates:
    """Draw the evaluation candidates (deterministic given the data, the catalogue and the seed)."""
    cfg = config or EvalConfig()
    log = splits.full
    V = catalogue.n_videos
    records = []
    for split in SPLITS:
        targets = getattr(splits, split)
        rng = np.random.default_rng([cfg.seed, _SPLIT_CODE[split], _TASK_CODE["video"]])
        for row in targets.video.itertuples(index=False):
            seen = np.unique(log.user_videos(row.user_row))
            pool_size = V - seen.size
            k = min(cfg.n_negatives, pool_size)
            # Uniform without replacement over unseen videos: draw a rank among the unseen and map it
            # to a video index by skipping the seen ones (exact, no rejection loop).
            ranks = np.sort(rng.choice(pool_size, size=k, replace=False)) if k > 0 else np.zeros(0, np.int64)
            free = np.setdiff1d(np.arange(1, V + 1), seen, assume_unique=True)
            neg = free[ranks] if k > 0 else np.zeros(0, np.int64)
            rng.shuffle(neg)
            cands = np.concatenate([[row.target], neg])
            records.append((split, "video", row.user_id, row.time, int(catalogue.video_ids[row.target - 1]),
                            catalogue.video_ids[cands - 1].tolist(), [True] + [False] * k))
        rng = np.random.default_rng([cfg.seed, _SPLIT_CODE[split], _TASK_CODE["comment"]])
        for row in targets.comment.itertuples(index=False):
            pool = catalogue.comments_of(row.video)
            pos = np.intersect1d(log.record_positives(row.record), pool)
            if pos.size == 0:
                continue
            neg_pool = np.setdiff1d(pool, pos, assume_unique=True)
            if pool.size <= cfg.max_comment_candidates:
                neg = neg_pool
            else:
                k = max(0, cfg.max_comment_candidates - pos.size)
                neg = np.sort(rng.choice(neg_pool, size=min(k, neg_pool.size), replace=False))
            cands = np.concatenate([pos, neg])
            labels = [True] * pos.size + [False] * neg.size
            records.append((split, "comment", row.user_id, row.time, int(catalogue.video_ids[row.video - 1]),
                            catalogue.comment_ids[cands - 1].tolist(), labels))
    table = pd.DataFrame(records, columns=["split", "task", "user_id", "time", "video_id", "candidates", "labels"])
    return EvalCandidates(table, candidates_key(splits, catalogue, cfg))


def load_or_sample_candidates(
    splits: Splits, catalogue: Catalogue, folder: Path | str, config: EvalConfig | None = None
) -> EvalCandidates:
    """Read `<folder>/eval_candidates-<key>.parquet` if present, else sample and store it atomically."""
    cfg = config or EvalConfig()
    key = candidates_key(splits, catalogue, cfg)
    folder = Path(folder)
    path = folder / f"eval_candidates-{key}.parquet"
    if path.exists():
        return EvalCandidates(pq.read_table(path).to_pandas(), key)
    cands = sample_candidates(splits, catalogue, cfg)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    table = pa.Table.from_pandas(cands.table, preserve_index=False)
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return cands


@dataclass(frozen=True)
class TaskResult:
    model: str
    task: str
    split: str
    n_queries: int
    metrics: dict[str, float]

    def to_rows(self, seed: int) -> list[dict]:
        """Rows for the results store's `ranking_metrics` table."""
        return [{"model": self.model, "task": self.task, "split": self.split, "metric": m, "value": v,
                 "seed": seed} for m, v in self.metrics.items()]


def pad_ragged(lists: list[np.ndarray], fill) -> np.ndarray:
    """Rows of different lengths as one (N, max length) array, `fill` after each row's end."""
    C = max(1, max((len(x) for x in lists), default=1))
    out = np.full((len(lists), C), fill, dtype=np.asarray(lists[0]).dtype if lists else np.int64)
    for i, x in enumerate(lists):
        out[i, :len(x)] = x
    return out


def score_candidates(recommender, splits: Splits, candidates: EvalCandidates, catalogue: Catalogue, *,
                     split: str, task: str, batch_users: int = 256):
    """The stored candidates of one split and task, scored: (rows, scores, labels, valid), the arrays
    (N, C) with `valid` false at padding; None when the split has no query of this task. Per-query
    analyses (bench/quality_breakdown.py) start here; `evaluate` averages them."""
    rows = candidates.rows(split, task)
    if len(rows) == 0:
        return None
    log = splits.full
    user_rows = log.user_rows(rows["user_id"].to_numpy(np.int64))
    index = catalogue.video_index if task == "video" else catalogue.comment_index
    cand = pad_ragged([index(np.asarray(c, np.int64)) for c in rows["candidates"]], 0)
    labels = pad_ragged([np.asarray(x, bool) for x in rows["labels"]], False)
    scores = np.zeros(cand.shape, np.float64)
    for s in range(0, len(rows), batch_users):
        sl = slice(s, s + batch_users)
        hist = log.histories(user_rows[sl])
        time = torch.tensor(rows["time"].to_numpy(np.float64)[sl])[:, None]
        c = torch.from_numpy(cand[sl])[:, None, :]
        if task == "video":
            out = recommender.score_videos(hist, VideoQuery(time, c))
        else:
            vid = torch.from_numpy(catalogue.video_index(rows["video_id"].to_numpy(np.int64)[sl]))[:, None]
            out = recommender.score_comments(hist, CommentQuery(time, vid, c))
        scores[sl] = out[:, 0, :].detach().cpu().double().numpy()
    return rows, scores, labels, cand != 0


def evaluate(
    recommender,
    splits: Splits,
    candidates: EvalCandidates,
    catalogue: Catalogue,
    *,
    split: str = "test",
    tasks: tuple[str, ...] = TASKS,
    batch_users: int = 256,
    metrics: tuple[str, ...] = METRICS,
) -> list[TaskResult]:
    """Score the stored candidates with `recommender` and average the metrics over users.

    `catalogue` is the data's; the recommender must use the same one (checked by digest when it
    exposes `catalogue`), since histories are built in its index space.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rcat = getattr(recommender, "catalogue", None)
    if rcat is not None and rcat.digest() != catalogue.digest():
        raise ValueError(f"model {recommender.name!r} uses a different catalogue than the data: "
                         f"{rcat.describe_difference(catalogue)}")
    results = []
    for task in tasks:
        scored = score_candidates(recommender, splits, candidates, catalogue, split=split, task=task,
                                  batch_users=batch_users)
        if scored is None:
            results.append(TaskResult(recommender.name, task, split, 0, {m: float("nan") for m in metrics}))
            continue
        rows, scores, labels, valid = scored
        per_query = ranking_metrics(scores, labels, valid, metrics)
        results.append(TaskResult(recommender.name, task, split, len(rows), mean_metrics(per_query)))
    return results
