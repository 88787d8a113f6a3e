"""Typed tensors handed to every recommender: users' histories and the queries to score.

Conventions (the models' data contract):
- indices are catalogue indices (see `models.catalogue`), 0 = padding;
- histories are oldest first with padding at the END, times in seconds (float64), +inf at pads;
- a query at time t sees only history events with time < t (strict), so an event in the same
  request as the query, or later, never influences its score; a padded query has time -inf;
- scores come back as (B, Q, C) with -inf wherever the candidate is padding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from torch import Tensor


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


@dataclass
class UserHistories:
    """B users' engagement histories, oldest first, padding at the end."""

    video_ids: Tensor  # (B, L) engaged videos, 0 = pad
    video_time: Tensor  # (B, L) event time (seconds since epoch), +inf at pads
    comment_video_ids: Tensor  # (B, Lc) videos whose comments the user engaged with, 0 = pad
    comment_ids: Tensor  # (B, Lc, M) the user's engaged comments under that video, 0 = pad
    comment_time: Tensor  # (B, Lc) +inf at pads

    def __post_init__(self) -> None:
        B = self.video_ids.shape[0]
        _check(self.video_ids.ndim == 2, f"video_ids must be (B, L), got {tuple(self.video_ids.shape)}")
        _check(self.video_time.shape == self.video_ids.shape,
               f"video_time {tuple(self.video_time.shape)} != video_ids {tuple(self.video_ids.shape)}")
        _check(self.comment_video_ids.ndim == 2 and self.comment_video_ids.shape[0] == B,
               f"comment_video_ids must be (B={B}, Lc), got {tuple(self.comment_video_ids.shape)}")
        _check(self.comment_time.shape == self.comment_video_ids.shape,
               "comment_time must have the shape of comment_video_ids")
        _check(self.comment_ids.ndim == 3 and self.comment_ids.shape[:2] == self.comment_video_ids.shape,
               f"comment_ids must be (B, Lc, M), got {tuple(self.comment_ids.shape)}")
        _check(not self.video_ids.dtype.is_floating_point, "video_ids must be an integer tensor")
        _check(self.video_time.dtype == torch.float64, "video_time must be float64 seconds")
        _check(self.comment_time.dtype == torch.float64, "comment_time must be float64 seconds")

    @property
    def batch_size(self) -> int:
        return int(self.video_ids.shape[0])

    def to(self, device: torch.device | str) -> UserHistories:
        return UserHistories(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def lengths(self) -> Tensor:
        """(B,) number of video events per user."""
        return (self.video_ids != 0).sum(1)


@dataclass
class VideoQuery:
    """Q queries per user, each with C candidate videos."""

    time: Tensor  # (B, Q) score "as of" this time; -inf marks a padded query
    candidates: Tensor  # (B, Q, C) candidate video indices, 0 = pad

    def __post_init__(self) -> None:
        _check(self.time.ndim == 2, f"VideoQuery.time must be (B, Q), got {tuple(self.time.shape)}")
        _check(self.candidates.ndim == 3 and self.candidates.shape[:2] == self.time.shape,
               f"VideoQuery.candidates must be (B, Q, C) matching time {tuple(self.time.shape)}, "
               f"got {tuple(self.candidates.shape)}")

    def to(self, device: torch.device | str) -> VideoQuery:
        return VideoQuery(self.time.to(device), self.candidates.to(device))


@dataclass
class CommentQuery:
    """Q queries per user: the video being watched and C candidate comments under it."""

    time: Tensor  # (B, Q)
    video_ids: Tensor  # (B, Q) the video being watched
    candidates: Tensor  # (B, Q, C) candidate comment indices, 0 = pad

    def __post_init__(self) -> None:
        _check(self.time.ndim == 2, f"CommentQuery.time must be (B, Q), got {tuple(self.time.shape)}")
        _check(self.video_ids.shape == self.time.shape, "CommentQuery.video_ids must match time (B, Q)")
        _check(self.candidates.ndim == 3 and self.candidates.shape[:2] == self.time.shape,
               f"CommentQuery.candidates must be (B, Q, C), got {tuple(self.candidates.shape)}")

    def to(self, device: torch.device | str) -> CommentQuery:
        return CommentQuery(self.time.to(device), self.video_ids.to(device), self.candidates.to(device))


def visible_count(times: Tensor, query_time: Tensor) -> Tensor:
    """(B, Q) number of history events strictly before each query time.

    `times` is (B, L), sorted ascending per row with +inf at pads, so this is a row-wise
    searchsorted (left side: an event at exactly the query time is not visible).
    """
    return torch.searchsorted(times.contiguous(), query_time.to(times.dtype).contiguous(), side="left")


def score_live(candidates: Tensor, user: Tensor, score: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """(B, Q, C) scores, -inf at padded candidates, from `score(users (N, d), candidates (N, C)) -> (N, C)`
    called on the queries that have a candidate only: batches of users with unequal request counts are
    mostly padded queries, which are then never gathered or scored."""
    out = torch.full(candidates.shape, float("-inf"), dtype=user.dtype, device=user.device)
    live = (candidates != 0).any(-1)  # (B, Q)
    c = candidates[live]
    if len(c):
        out[live] = score(user[live], c).masked_fill(c == 0, float("-inf"))
    return out
