"""Offline evaluation protocol (as LSVCR's paper), with candidates sampled once and stored.

Video recommendation: for each user's validation / test target (leave-one-out, `models.histories`),
rank the target among 99 negatives drawn uniformly without replacement from the videos the user never
engaged with (in the whole log) among those published by the data's last request (`Splits.available`:
the validation of a model trained on logs cut before later uploads never meets them); fewer when the
catalogue is too small. Comment recommendation: for the user's validation / test comment-history
record, rank the watched video's comments: all of them
when there are at most 100, else all positives (the comments the user engaged with) plus uniformly
sampled negatives up to 100. The query time is the target's time: the model is handed only the events
strictly before it (histories cut there, `EventLog.histories(before=...)`) and the candidate comments'
like counts as of it (`Splits.likes`, installed per batch of queries, below). Metrics (`models.metrics`)
are averaged over queries (one per user and task under leave-one-out).

The temporal protocol (`models.protocols`) uses the same machinery with its own queries (events after a
global cut), video negatives drawn among the videos published by the query time, and a warm / cold
slice per query (`slice` column of the candidates; `evaluate` reports all, warm and cold).

Like counts as of the query: a recommender reads like counts from one table (C+1,) at a time
(`models.adapters.comment_likes_setter`), so comment queries are scored in rounds: two queries of one
round never hold the same comment with different counts (queries under different videos share no
comment; queries under one video share a round only when their candidates and counts are equal), and
each round installs its queries' counts before scoring. The recommender's own snapshot is restored after.

Candidates are drawn once from `numpy.random.default_rng([seed, split, task])`, stored as Parquet
(external ids, so a file is readable on its own) under a name keyed by the data's fingerprint, the
catalogue digest and the protocol settings, and re-read by every later evaluation: every model sees
the same candidates, run after run (the public LSVCR code resamples them each time, a pitfall).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from models.adapters import comment_likes_setter
from models.batch import CommentQuery, VideoQuery
from models.catalogue import Catalogue
from models.histories import Splits
from models.metrics import METRICS, mean_metrics, ranking_metrics
from models.protocols import LEAVE_ONE_OUT, TEMPORAL, TemporalSetup

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
    """Stored candidates: one row per query (split, task, user, time) with external ids and 0/1 labels."""

    table: pd.DataFrame  # split, task, user_id, time, video_id, candidates (list), labels (list), protocol, slice
    key: str

    def rows(self, split: str, task: str) -> pd.DataFrame:
        t = self.table
        return t[(t["split"] == split) & (t["task"] == task)].reset_index(drop=True)

    @property
    def protocol(self) -> str:
        """'leave-one-out' or 'temporal' (files written before the column existed are leave-one-out)."""
        if "protocol" not in self.table.columns or len(self.table) == 0:
            return LEAVE_ONE_OUT
        return str(self.table["protocol"].iloc[0])


def candidates_key(splits: Splits, catalogue: Catalogue, config: EvalConfig,
                   temporal: TemporalSetup | None = None) -> str:
    h = hashlib.sha256()
    h.update(splits.full.fingerprint().encode())
    h.update(catalogue.digest().encode())
    h.update(repr(sorted(asdict(config).items())).encode())
    if temporal is not None:  # leave-one-out keys stay what they were, so stored files are reused
        h.update(temporal.digest().encode())
    if splits.available is not None:  # likewise: only data cut before later uploads changes the key
        h.update(b"available:" + np.packbits(splits.available).tobytes())
    return h.hexdigest()[:16]


def sample_candidates(splits: Splits, catalogue: Catalogue, config: EvalConfig | None = None,
                      temporal: TemporalSetup | None = None) -> EvalCandidates:
    """Draw the evaluation candidates (deterministic given the data, the catalogue and the seed). With
    `temporal`, video negatives come from the videos published by each query's time, and every query
    carries its slice (cold: target / watched video published at or after the cut)."""
    cfg = config or EvalConfig()
    log = splits.full
    V = catalogue.n_videos
    records = []
    for split in SPLITS:
        targets = getattr(splits, split)
        rng = np.random.default_rng([cfg.seed, _SPLIT_CODE[split], _TASK_CODE["video"]])
        for row in targets.video.itertuples(index=False):
            seen = np.unique(log.user_videos(row.user_row))
            pool = np.arange(1, V + 1)
            if splits.available is not None:  # data cut before later uploads: those are no negatives
                pool = pool[splits.available[1:]]
            if temporal is not None:
                pool = pool[temporal.published[1:] <= row.time]
            # Uniform without replacement over the unseen videos of the pool: draw a rank among them and map it
            # to a video index by skipping the seen ones (exact, no rejection loop).
            free = np.setdiff1d(pool, seen, assume_unique=True)
            k = min(cfg.n_negatives, free.size)
            ranks = np.sort(rng.choice(free.size, size=k, replace=False)) if k > 0 else np.zeros(0, np.int64)
            neg = free[ranks] if k > 0 else np.zeros(0, np.int64)
            rng.shuffle(neg)
            cands = np.concatenate([[row.target], neg])
            records.append((split, "video", row.user_id, row.time, int(catalogue.video_ids[row.target - 1]),
                            catalogue.video_ids[cands - 1].tolist(), [True] + [False] * k,
                            _slice(temporal, row.target)))
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
                            catalogue.comment_ids[cands - 1].tolist(), labels, _slice(temporal, row.video)))
    table = pd.DataFrame(records, columns=["split", "task", "user_id", "time", "video_id", "candidates", "labels",
                                           "slice"])
    table.insert(0, "protocol", LEAVE_ONE_OUT if temporal is None else TEMPORAL)
    return EvalCandidates(table, candidates_key(splits, catalogue, cfg, temporal))


def _slice(temporal: TemporalSetup | None, video: int) -> str:
    if temporal is None:
        return "all"
    return "cold" if bool(temporal.is_cold(np.array([video]))[0]) else "warm"


def load_or_sample_candidates(
    splits: Splits, catalogue: Catalogue, folder: Path | str, config: EvalConfig | None = None,
    temporal: TemporalSetup | None = None,
) -> EvalCandidates:
    """Read `<folder>/eval_candidates-<key>.parquet` if present, else sample and store it atomically."""
    cfg = config or EvalConfig()
    key = candidates_key(splits, catalogue, cfg, temporal)
    folder = Path(folder)
    path = folder / f"eval_candidates-{key}.parquet"
    if path.exists():
        return EvalCandidates(pq.read_table(path).to_pandas(), key)
    cands = sample_candidates(splits, catalogue, cfg, temporal)
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
    protocol: str = LEAVE_ONE_OUT
    slice: str = "all"
    # with evaluate(..., per_query=True), on the "all" result: each query's metrics (N,) in the stored
    # candidates' row order (paired comparisons of two models on the same queries)
    per_query: dict[str, np.ndarray] | None = field(default=None, repr=False, compare=False)

    def to_rows(self, seed: int) -> list[dict]:
        """Rows for the results store's `ranking_metrics` table."""
        return [{"model": self.model, "task": self.task, "split": self.split, "metric": m, "value": v,
                 "seed": seed, "protocol": self.protocol, "slice": self.slice, "n_queries": self.n_queries}
                for m, v in self.metrics.items()]


def pad_ragged(lists: list[np.ndarray], fill) -> np.ndarray:
    """Rows of different lengths as one (N, max length) array, `fill` after each row's end."""
    C = max(1, max((len(x) for x in lists), default=1))
    out = np.full((len(lists), C), fill, dtype=np.asarray(lists[0]).dtype if lists else np.int64)
    for i, x in enumerate(lists):
        out[i, :len(x)] = x
    return out


def like_rounds(video: np.ndarray, cand: np.ndarray, likes: np.ndarray) -> np.ndarray:
    """(N,) round of each comment query: under one video, queries with the same candidates and like counts
    share a round, each other combination takes the next one; queries under different videos never share a
    comment, so one like table per round serves all its queries."""
    rounds = np.zeros(len(video), np.int64)
    seen: dict[int, dict[bytes, int]] = {}
    for i, v in enumerate(video.tolist()):
        states = seen.setdefault(v, {})
        key = cand[i].tobytes() + likes[i].tobytes()
        rounds[i] = states.setdefault(key, len(states))
    return rounds


def score_candidates(recommender, splits: Splits, candidates: EvalCandidates, catalogue: Catalogue, *,
                     split: str, task: str, batch_users: int = 256):
    """The stored candidates of one split and task, scored: (rows, scores, labels, valid), the arrays
    (N, C) with `valid` false at padding; None when the split has no query of this task. Each query is
    handed its user's events strictly before its time, and comment queries the like counts as of it
    (`Splits.likes`; the catalogue's snapshot when None). Per-query analyses (bench/quality_breakdown.py)
    start here; `evaluate` averages them."""
    rows = candidates.rows(split, task)
    if len(rows) == 0:
        return None
    log = splits.full
    user_rows = log.user_rows(rows["user_id"].to_numpy(np.int64))
    times = rows["time"].to_numpy(np.float64)
    index = catalogue.video_index if task == "video" else catalogue.comment_index
    cand = pad_ragged([index(np.asarray(c, np.int64)) for c in rows["candidates"]], 0)
    labels = pad_ragged([np.asarray(x, bool) for x in rows["labels"]], False)
    scores = np.zeros(cand.shape, np.float64)
    watched = catalogue.video_index(rows["video_id"].to_numpy(np.int64))
    as_of = splits.likes if task == "comment" else None
    install = comment_likes_setter(recommender) if as_of is not None else None
    if as_of is None or install is None:
        rounds, likes = np.zeros(len(rows), np.int64), None
    else:
        likes = as_of.as_of(cand, times[:, None])  # (N, C); padding reads 0
        rounds = like_rounds(watched, cand, likes)
    snapshot = catalogue.comment_likes.astype(np.int64)
    try:
        for r in range(int(rounds.max()) + 1):
            members = np.flatnonzero(rounds == r)
            if install is not None and likes is not None:
                table = snapshot.copy()
                table[cand[members]] = likes[members]
                table[0] = 0
                install(table)
            for s in range(0, len(members), batch_users):
                sl = members[s:s + batch_users]
                hist = log.histories(user_rows[sl], before=times[sl])
                time = torch.tensor(times[sl])[:, None]
                c = torch.from_numpy(cand[sl])[:, None, :]
                if task == "video":
                    out = recommender.score_videos(hist, VideoQuery(time, c))
                else:
                    vid = torch.from_numpy(watched[sl])[:, None]
                    out = recommender.score_comments(hist, CommentQuery(time, vid, c))
                scores[sl] = out[:, 0, :].detach().cpu().double().numpy()
    finally:
        if install is not None:
            install(None)  # the recommender's own snapshot again
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
    per_query: bool = False,
) -> list[TaskResult]:
    """Score the stored candidates with `recommender` and average the metrics over queries: one result per
    task on all queries, and under the temporal protocol one per slice (warm, cold) as well; `per_query`
    keeps each query's metrics on the "all" results.

    `catalogue` is the data's; the recommender must use the same one (checked by digest when it
    exposes `catalogue`), since histories are built in its index space.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rcat = getattr(recommender, "catalogue", None)
    if rcat is not None and rcat.digest() != catalogue.digest():
        raise ValueError(f"model {recommender.name!r} uses a different catalogue than the data: "
                         f"{rcat.describe_difference(catalogue)}")
    protocol = candidates.protocol
    slices = ("all", "warm", "cold") if protocol == TEMPORAL else ("all",)
    results = []
    for task in tasks:
        scored = score_candidates(recommender, splits, candidates, catalogue, split=split, task=task,
                                  batch_users=batch_users)
        if scored is None:
            results += [TaskResult(recommender.name, task, split, 0, {m: float("nan") for m in metrics}, protocol, sl)
                        for sl in slices]
            continue
        rows, scores, labels, valid = scored
        each = ranking_metrics(scores, labels, valid, metrics)
        where = rows["slice"].to_numpy() if "slice" in rows.columns else np.full(len(rows), "all")
        for sl in slices:
            keep = np.ones(len(rows), bool) if sl == "all" else where == sl
            n = int(keep.sum())
            means = (mean_metrics({m: v[keep] for m, v in each.items()}) if n
                     else {m: float("nan") for m in metrics})
            results.append(TaskResult(recommender.name, task, split, n, means, protocol, sl,
                                      each if per_query and sl == "all" else None))
    return results
