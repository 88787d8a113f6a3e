"""Comment like counts as of a time, from the logs' snapshot and the likes the logs record.

The `comments` table's `like_count` is a snapshot taken when the log was written (harness/logs/schema.py):
it holds every like up to the end of the log, those of the logged requests included. A query at time t
may only see the likes given before t, so evaluation ranks with

    likes_c(t) = max(0, like_count_c - #{logged likes of c at request time >= t})

(strict: a like in the query's own request, or later, is not yet there). This is exact when the snapshot
is taken at the end of the log and counts every logged like; likes given outside the logged requests
after t (other users, other surfaces) cannot be removed, so on real logs it is an upper bound.

The synthetic world departs from that reading: its like counts are fixed per comment for the whole log
(the logging ranking uses them unchanged on every day) and do not include the likes its users give, so
there the subtraction under-counts by the later logged likes (docs/models.md "Evaluation protocols"
measures how much). `n_over_snapshot` counts the comments with more logged likes than their snapshot,
the visible sign of such logs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from models.catalogue import Catalogue
from models.histories import _seconds


def _frame(table: pa.Table | pd.DataFrame, name: str, columns: list[str]) -> pd.DataFrame:
    df = table.to_pandas() if isinstance(table, pa.Table) else table
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"table {name!r} lacks column(s) {missing}; see harness/logs/schema.py")
    return df[columns]


@dataclass
class CommentLikes:
    """The like-count snapshot (C+1,) and every logged like as (comment index, time), comment-major CSR."""

    snapshot: np.ndarray  # (C+1,) like_count of each comment index, 0 for padding
    offsets: np.ndarray  # (C+2,) the logged likes of comment j are times[offsets[j]:offsets[j+1]]
    times: np.ndarray  # (L,) seconds since the epoch, ascending within a comment

    def __post_init__(self) -> None:
        C1 = self.snapshot.shape[0]
        if self.offsets.shape != (C1 + 1,) or self.offsets[-1] != self.times.shape[0]:
            raise ValueError(f"CommentLikes.offsets must be ({C1 + 1},) ending at the {self.times.shape[0]} like "
                             f"times, got shape {self.offsets.shape}")

    @classmethod
    def snapshot_only(cls, catalogue: Catalogue) -> CommentLikes:
        """No logged like: every time sees the snapshot (logs without comment impressions)."""
        C1 = catalogue.n_comments + 1
        return cls(catalogue.comment_likes.astype(np.int64), np.zeros(C1 + 1, np.int64), np.zeros(0))

    @classmethod
    def from_tables(cls, catalogue: Catalogue, requests: pa.Table | pd.DataFrame,
                    comment_impressions: pa.Table | pd.DataFrame | None) -> CommentLikes:
        """The catalogue's snapshot and the `liked` rows of `comment_impressions` timed by their request's `ts`
        (comments unknown to the catalogue are dropped)."""
        if comment_impressions is None or len(comment_impressions) == 0 or catalogue.n_comments == 0:
            return cls.snapshot_only(catalogue)
        ci = _frame(comment_impressions, "comment_impressions", ["request_id", "comment_id", "liked"])
        ci = ci[ci["liked"].to_numpy(bool)]
        req = _frame(requests, "requests", ["request_id", "ts"])
        ci = ci.merge(req, on="request_id", how="inner")
        c = catalogue.comment_index(ci["comment_id"].to_numpy(np.int64))
        t = _seconds(ci["ts"]) if len(ci) else np.zeros(0)
        keep = c > 0
        c, t = c[keep], t[keep]
        order = np.lexsort((t, c))
        counts = np.bincount(c, minlength=catalogue.n_comments + 1)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(catalogue.comment_likes.astype(np.int64), offsets, t[order].astype(np.float64))

    @property
    def n_logged(self) -> int:
        return int(self.times.shape[0])

    def n_logged_per_comment(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def n_over_snapshot(self) -> int:
        """Comments with more logged likes than their snapshot count (a snapshot that omits logged likes)."""
        return int((self.n_logged_per_comment() > self.snapshot).sum())

    def as_of(self, comments: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Like count of each comment index at the matching time (broadcast): the snapshot minus its logged
        likes at times >= t, at least 0. Padding (index 0) gives 0. Cost: O(cells log L) over the cells whose
        comment has a logged like; the rest read the snapshot."""
        comments, times = np.broadcast_arrays(np.asarray(comments, np.int64), np.asarray(times, np.float64))
        out = self.snapshot[comments].astype(np.int64)
        liked = self.n_logged_per_comment()[comments] > 0
        if not liked.any():
            return out
        c, t = comments[liked], times[liked]
        order = np.argsort(c, kind="stable")
        c, t = c[order], t[order]
        later = np.empty(c.shape[0], np.int64)
        bounds = np.flatnonzero(np.diff(c)) + 1
        for s, e in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [c.shape[0]]]), strict=True):
            j = c[s]
            own = self.times[self.offsets[j]:self.offsets[j + 1]]
            later[s:e] = own.shape[0] - np.searchsorted(own, t[s:e], side="left")
        fixed = np.empty_like(later)
        fixed[order] = np.maximum(self.snapshot[c] - later, 0)
        out[liked] = fixed
        return out
