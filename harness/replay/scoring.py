"""Feed the replayed requests to one recommender: video scores per request, comment rankings per section.

Each user's requests are scored in one `score_videos` call (the adapters encode a user's history once
and read every request from it with time masks), reading the user's logged history strictly before
each request, as production would. Comment sections (request row, video) are ranked by
`score_comments` over every comment under the video, at the request's time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from harness.replay.data import ReplayData
from harness.replay.policies import comment_ranking
from models.batch import CommentQuery, VideoQuery
from models.catalogue import Catalogue
from models.histories import EventLog

MAX_QUERY_CELLS = 1 << 21  # B x Q x C per comment-scoring call: bounds memory whatever the section sizes


@dataclass
class CommentIndex:
    """Comments of each video as catalogue indices (CSR over video index)."""

    offsets: np.ndarray  # (V+2,)
    comments: np.ndarray  # comment indices grouped by video, ascending

    @classmethod
    def build(cls, catalogue: Catalogue) -> CommentIndex:
        cv = np.asarray(catalogue.comment_video[1:], np.int64)
        order = np.argsort(cv, kind="stable")
        counts = np.bincount(cv, minlength=catalogue.n_videos + 1)
        return cls(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), order.astype(np.int64) + 1)

    def of(self, video_index: int) -> np.ndarray:
        return self.comments[self.offsets[video_index]:self.offsets[video_index + 1]]


def score_videos(rec, log: EventLog, catalogue: Catalogue, data: ReplayData, *, batch_users: int = 64,
                 tick: Callable[[int], None] | None = None) -> np.ndarray:
    """(R, n) scores of every request's candidates (float64, rows aligned with `data`)."""
    users, bounds = data.user_bounds()
    rows_of = log.user_rows(users)
    cand_idx = catalogue.video_index(data.candidates)  # (R, n), 0 = unknown to the catalogue
    if (cand_idx == 0).any():
        r = int(np.flatnonzero((cand_idx == 0).any(axis=1))[0])
        raise ValueError(f"request {int(data.request_id[r])} has a candidate video missing from the catalogue")
    secs = data.seconds()
    out = np.empty(data.candidates.shape)
    for s in range(0, len(users), batch_users):
        ub = np.arange(s, min(s + batch_users, len(users)))
        starts, ends = bounds[ub], bounds[ub + 1]
        Q = int((ends - starts).max())
        time = np.full((len(ub), Q), -np.inf)
        cands = np.zeros((len(ub), Q, cand_idx.shape[1]), np.int64)
        for b, (a, e) in enumerate(zip(starts, ends, strict=True)):
            time[b, :e - a] = secs[a:e]
            cands[b, :e - a] = cand_idx[a:e]
        hist = _histories(log, rows_of[ub])
        sc = rec.score_videos(hist, VideoQuery(torch.from_numpy(time), torch.from_numpy(cands)))
        sc = sc.detach().cpu().double().numpy()
        for b, (a, e) in enumerate(zip(starts, ends, strict=True)):
            out[a:e] = sc[b, :e - a]
        if tick:
            tick(len(ub))
    return out


def rank_comments(rec, log: EventLog, catalogue: Catalogue, index: CommentIndex, data: ReplayData,
                  rows: np.ndarray, videos: np.ndarray, list_size: int, *,
                  tick: Callable[[int], None] | None = None) -> np.ndarray:
    """(S, list_size) comment ids (-1 = none) the model shows first in the section of video `videos[s]`
    opened in request row `rows[s]` (rows sorted ascending)."""
    S = len(rows)
    out = np.full((S, list_size), -1, np.int64)
    if S == 0:
        return out
    vidx = catalogue.video_index(videos)
    sizes = index.offsets[vidx + 1] - index.offsets[vidx]
    secs = data.seconds()
    user_of_row = data.user_id[rows]
    # sections grouped by user (rows are sorted, and a user's rows are contiguous)
    cut = np.flatnonzero(np.r_[True, user_of_row[1:] != user_of_row[:-1], True])
    groups = [np.arange(cut[i], cut[i + 1]) for i in range(len(cut) - 1)]
    users = user_of_row[cut[:-1]]
    log_rows = log.user_rows(users)
    g_q = np.array([len(x) for x in groups])
    g_c = np.array([max(1, int(sizes[x].max())) for x in groups])
    g = 0
    while g < len(groups):  # batches of users whose padded (B, Q, C) stays under MAX_QUERY_CELLS
        h, Q, C = g + 1, int(g_q[g]), int(g_c[g])
        while h < len(groups):
            q, c = max(Q, int(g_q[h])), max(C, int(g_c[h]))
            if (h + 1 - g) * q * c > MAX_QUERY_CELLS:
                break
            h, Q, C = h + 1, q, c
        batch = groups[g:h]
        time = np.full((len(batch), Q), -np.inf)
        qv = np.zeros((len(batch), Q), np.int64)
        cc = np.zeros((len(batch), Q, C), np.int64)
        for b, sec in enumerate(batch):
            time[b, :len(sec)] = secs[rows[sec]]
            qv[b, :len(sec)] = vidx[sec]
            for i, s in enumerate(sec):
                cm = index.of(int(vidx[s]))
                cc[b, i, :len(cm)] = cm
        hist = _histories(log, log_rows[g:h])
        sc = rec.score_comments(hist, CommentQuery(torch.from_numpy(time), torch.from_numpy(qv),
                                                   torch.from_numpy(cc))).detach().cpu().double().numpy()
        for b, sec in enumerate(batch):
            c = cc[b, :len(sec)]
            ids = np.where(c > 0, catalogue.comment_ids[np.maximum(c - 1, 0)], -1)
            out[sec] = comment_ranking(sc[b, :len(sec)], ids, list_size)
        if tick:
            tick(sum(len(x) for x in batch))
        g = h
    return out


def _histories(log: EventLog, rows: np.ndarray):
    """Histories of `rows` (users without any logged engagement, row -1, get an empty history)."""
    known = rows >= 0
    if known.all():
        return log.histories(rows)
    hist = log.histories(np.where(known, rows, 0))
    empty = torch.from_numpy(~known)
    hist.video_ids[empty] = 0
    hist.video_time[empty] = float("inf")
    hist.comment_video_ids[empty] = 0
    hist.comment_ids[empty] = 0
    hist.comment_time[empty] = float("inf")
    return hist
