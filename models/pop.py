"""`pop`: popularity from the training data, the floor every sequential model must beat.

Video score = number of training video events of the candidate (the same for every user and time;
it ignores the history on purpose). Comment score = the comment's like count, the production
comment-ranking rule, which `base` uses too (it has no comment model). Unknown videos/comments
(index 0) score -inf, like padding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from models.batch import CommentQuery, UserHistories, VideoQuery
from models.catalogue import Catalogue
from models.checkpoint import check_state_shapes, load_checkpoint, save_checkpoint
from models.histories import EventLog


def comment_like_scores(catalogue: Catalogue, query: CommentQuery) -> Tensor:
    """(B, Q, C) like counts of the candidate comments (production ranking), -inf at pads."""
    likes = torch.as_tensor(catalogue.comment_likes, dtype=torch.float32, device=query.candidates.device)
    s = likes[query.candidates]
    return s.masked_fill(query.candidates == 0, float("-inf"))


class PopRecommender:
    """Ranks candidate videos by training popularity and comments by like count."""

    kind = "pop"

    def __init__(self, counts: Tensor, catalogue: Catalogue, name: str = "pop", digest: str = ""):
        if counts.shape != (catalogue.n_videos + 1,):
            raise ValueError(f"pop counts have shape {tuple(counts.shape)}, expected ({catalogue.n_videos + 1},)")
        self.counts = counts.float()
        self.catalogue = catalogue
        self.name = name
        self.digest = digest

    @classmethod
    def fit(cls, train: EventLog, catalogue: Catalogue) -> PopRecommender:
        counts = np.bincount(train.video, minlength=catalogue.n_videos + 1).astype(np.float32)
        counts[0] = 0
        return cls(torch.from_numpy(counts), catalogue)

    def score_videos(self, hist: UserHistories, query: VideoQuery) -> Tensor:
        s = self.counts.to(query.candidates.device)[query.candidates]
        return s.masked_fill(query.candidates == 0, float("-inf"))

    def score_comments(self, hist: UserHistories, query: CommentQuery) -> Tensor:
        return comment_like_scores(self.catalogue, query)

    def save(self, folder: Path, *, data_fingerprint: str, seed: int, metrics: dict | None = None) -> Path:
        return save_checkpoint(folder, kind=self.kind, hyperparameters={}, state={"counts": self.counts},
                               catalogue=self.catalogue, data_fingerprint=data_fingerprint, seed=seed,
                               training_metrics=metrics)

    @classmethod
    def load(cls, folder: Path, *, catalogue: Catalogue | None = None, name: str = "pop",
             device: str = "cpu") -> PopRecommender:
        ck = load_checkpoint(folder, kind=cls.kind, catalogue=catalogue)
        check_state_shapes(ck.state, {"counts": torch.zeros(ck.catalogue.n_videos + 1)}, folder)
        return cls(ck.state["counts"], ck.catalogue, name=name, digest=ck.digest)
