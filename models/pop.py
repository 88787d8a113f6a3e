"""`pop`: popularity from the training data, the floor every sequential model must beat.

Video score = number of training video events of the candidate (the same for every user and time;
it ignores the history on purpose). Comment score = the comment's like count, the production
comment-ranking rule, which `base` uses too (it has no comment model). Unknown videos/comments
(index 0) score -inf, like padding.

The like counts are the catalogue's snapshot until `set_comment_likes` installs others: evaluation
installs the counts as of each query's time (`models.likes.CommentLikes`), since a snapshot taken at the
end of the log holds likes given after the query.
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


def comment_like_scores(likes: Tensor, query: CommentQuery) -> Tensor:
    """(B, Q, C) like counts (`likes`, (C+1,)) of the candidate comments (production ranking), -inf at pads."""
    s = likes.to(device=query.candidates.device, dtype=torch.float32)[query.candidates]
    return s.masked_fill(query.candidates == 0, float("-inf"))


def like_table(catalogue: Catalogue, likes: np.ndarray | None = None) -> Tensor:
    """(C+1,) float like counts: `likes`, or the catalogue's snapshot; refuses a table of the wrong length."""
    likes = catalogue.comment_likes if likes is None else np.asarray(likes)
    if likes.shape != (catalogue.n_comments + 1,):
        raise ValueError(f"comment like counts have shape {likes.shape}, expected ({catalogue.n_comments + 1},): "
                         "one per comment index, 0 for padding")
    return torch.as_tensor(likes, dtype=torch.float32)


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
        self.comment_likes = like_table(catalogue)

    def set_comment_likes(self, likes: np.ndarray | None) -> None:
        """Rank comments by these like counts (C+1,) from now on; None = the catalogue's snapshot."""
        self.comment_likes = like_table(self.catalogue, likes)

    @classmethod
    def fit(cls, train: EventLog, catalogue: Catalogue) -> PopRecommender:
        counts = np.bincount(train.video, minlength=catalogue.n_videos + 1).astype(np.float32)
        counts[0] = 0
        return cls(torch.from_numpy(counts), catalogue)

    def score_videos(self, hist: UserHistories, query: VideoQuery) -> Tensor:
        s = self.counts.to(query.candidates.device)[query.candidates]
        return s.masked_fill(query.candidates == 0, float("-inf"))

    def score_comments(self, hist: UserHistories, query: CommentQuery) -> Tensor:
        return comment_like_scores(self.comment_likes, query)

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
