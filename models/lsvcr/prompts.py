"""Stage-1 samples and the LLM recommender's prompts.

A sample is one prediction point taken from the training histories: the next video (video task, the
response is its title) or, given the watched video, a comment the user engaged with under it (comment
task, the response is the comment's text). Its histories are the events strictly before the target's
time; at most `n_video_items` / `n_comment_items` of the last 50 are drawn at random (a 128-token
prompt holds only a few items) and kept in time order for the SR model, whose positions are a sorted
random subset of 0..49 (docs/lsvcr-method.md), while the LLM sees them in random order:

    Video history: <title>; <popular comment> | ...
    Comment history: <title>; <the user's comments> | ...
    Task: predict the next video the user watches.          (video task)
    Task: the user watches "<title>"; predict a comment the user engages with.   (comment task)

Augmentation (p = 0.5 per history and sample): the SR model's view swaps the comments: a history
video shows a random other comment of the video instead of its popular one, a comment record shows
the video's popular comment instead of the user's comments; the LLM keeps the original view, so the
two views of the same history differ and the alignment must be robust to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.catalogue import Catalogue
from models.histories import EventLog


@dataclass
class Stage1Samples:
    task: np.ndarray  # (N,) 0 = video, 1 = comment
    user: np.ndarray  # (N,) row in the EventLog
    time: np.ndarray  # (N,) float64 target time
    target: np.ndarray  # (N,) video index (video task) or comment index (comment task)
    watched: np.ndarray  # (N,) watched video index (comment task), 0 otherwise
    hv: np.ndarray  # (N, Kv) history videos, time order, 0 = pad
    hv_time: np.ndarray  # (N, Kv) +inf at pads
    hv_pos: np.ndarray  # (N, Kv) sorted random positions in 0..49
    hv_shown: np.ndarray  # (N, Kv) comment the LLM sees with each video (its popular comment)
    hv_shown_sr: np.ndarray  # (N, Kv) comment the SR model sees (swapped with p)
    hc: np.ndarray  # (N, Kc) comment-record videos
    hc_time: np.ndarray  # (N, Kc)
    hc_pos: np.ndarray  # (N, Kc)
    hc_comments: np.ndarray  # (N, Kc, M) the user's comments (LLM view)
    hc_comments_sr: np.ndarray  # (N, Kc, M) SR view (swapped with p)

    def __len__(self) -> int:
        return int(self.task.shape[0])

    def take(self, idx: np.ndarray) -> Stage1Samples:
        return Stage1Samples(**{k: v[idx] for k, v in self.__dict__.items()})


def _comments_by_video(catalogue: Catalogue) -> tuple[np.ndarray, np.ndarray]:
    """CSR (offsets (V+2,), comment indices) of each video's comments."""
    cv = catalogue.comment_video[1:]
    order = np.argsort(cv, kind="stable")
    counts = np.bincount(cv, minlength=catalogue.n_videos + 1)
    return np.concatenate([[0], np.cumsum(counts)]), order + 1


def build_samples(log: EventLog, catalogue: Catalogue, n: int, *, comment_share: float = 0.5,
                  n_video_items: int = 5, n_comment_items: int = 3, max_len: int = 50, swap_p: float = 0.5,
                  seed: int = 0) -> Stage1Samples:
    """Draw `n` stage-1 samples (see the module docstring). Video targets are events after a user's
    first one; comment targets are any comment-history record (its history may be empty)."""
    rng = np.random.default_rng(seed)
    nv = log.n_video_events()
    v_pos_in_user = np.arange(len(log.video)) - np.repeat(log.video_offsets[:-1], nv)
    v_cand = np.flatnonzero(v_pos_in_user >= 1)  # global video-event indices with an earlier event
    c_cand = np.arange(len(log.comment_video))
    n_c = int(round(n * comment_share)) if len(c_cand) else 0
    n_v = n - n_c
    if n_v and not len(v_cand):
        raise ValueError("stage 1 needs users with at least 2 video events; the training histories have none")
    v_pick = rng.choice(v_cand, size=n_v, replace=len(v_cand) < n_v) if n_v else np.zeros(0, np.int64)
    c_pick = rng.choice(c_cand, size=n_c, replace=len(c_cand) < n_c) if n_c else np.zeros(0, np.int64)
    v_user = np.searchsorted(log.video_offsets, v_pick, side="right") - 1
    c_user = np.searchsorted(log.comment_offsets, c_pick, side="right") - 1
    task = np.concatenate([np.zeros(n_v, np.int64), np.ones(n_c, np.int64)])
    user = np.concatenate([v_user, c_user]).astype(np.int64)
    time = np.concatenate([log.video_time[v_pick], log.comment_time[c_pick]])
    pos_of = [rng.choice(log.record_positives(r)) if len(log.record_positives(r)) else log.comment_top[r, 0]
              for r in c_pick]
    target = np.concatenate([log.video[v_pick], np.asarray(pos_of, np.int64)]).astype(np.int64)
    watched = np.concatenate([np.zeros(n_v, np.int64), log.comment_video[c_pick]]).astype(np.int64)
    perm = rng.permutation(n)
    task, user, time, target, watched = task[perm], user[perm], time[perm], target[perm], watched[perm]

    N, Kv, Kc, M = n, n_video_items, max(n_comment_items, 1), log.comment_top.shape[1]
    hv = np.zeros((N, Kv), np.int64)
    hv_time = np.full((N, Kv), np.inf)
    hv_pos = np.zeros((N, Kv), np.int64)
    hc = np.zeros((N, Kc), np.int64)
    hc_time = np.full((N, Kc), np.inf)
    hc_pos = np.zeros((N, Kc), np.int64)
    hc_com = np.zeros((N, Kc, M), np.int64)
    for i in range(N):
        u = user[i]
        vs, ve = log.video_offsets[u], log.video_offsets[u + 1]
        k = int(np.searchsorted(log.video_time[vs:ve], time[i], side="left"))  # visible: t < target time
        pool = np.arange(max(0, k - max_len), k) + vs
        take = np.sort(rng.choice(pool, size=min(Kv, len(pool)), replace=False)) if len(pool) else pool
        hv[i, :len(take)] = log.video[take]
        hv_time[i, :len(take)] = log.video_time[take]
        hv_pos[i, :len(take)] = np.sort(rng.choice(max_len, size=len(take), replace=False))
        if n_comment_items == 0:
            continue
        cs, ce = log.comment_offsets[u], log.comment_offsets[u + 1]
        k = int(np.searchsorted(log.comment_time[cs:ce], time[i], side="left"))
        pool = np.arange(max(0, k - max_len), k) + cs
        take = np.sort(rng.choice(pool, size=min(Kc, len(pool)), replace=False)) if len(pool) else pool
        hc[i, :len(take)] = log.comment_video[take]
        hc_time[i, :len(take)] = log.comment_time[take]
        hc_pos[i, :len(take)] = np.sort(rng.choice(max_len, size=len(take), replace=False))
        hc_com[i, :len(take)] = log.comment_top[take]
    hv_shown = catalogue.popular_comment[hv] * (hv > 0)
    # SR-side augmentation.
    off, by_video = _comments_by_video(catalogue)
    hv_sr = hv_shown.copy()
    swap_v = rng.random(N) < swap_p
    for i in np.flatnonzero(swap_v):
        for j in np.flatnonzero(hv[i]):
            cands = by_video[off[hv[i, j]]:off[hv[i, j] + 1]]
            others = cands[cands != hv_shown[i, j]]
            if len(others):
                hv_sr[i, j] = rng.choice(others)
    hc_sr = hc_com.copy()
    swap_c = (rng.random(N) < swap_p)[:, None] & (hc > 0)
    hc_sr[swap_c] = 0
    hc_sr[..., 0][swap_c] = catalogue.popular_comment[hc][swap_c]
    keep = hc_sr.sum(-1) > 0  # a video without comments keeps the user's own
    hc_sr[swap_c & ~keep] = hc_com[swap_c & ~keep]
    return Stage1Samples(task, user, time, target, watched, hv, hv_time, hv_pos, hv_shown, hv_sr,
                         hc, hc_time, hc_pos, hc_com, hc_sr)


def _clip(text: str | None, words: int) -> str:
    return "" if not text else " ".join(text.split()[:words])


def prompt_and_response(s: Stage1Samples, i: int, catalogue: Catalogue, rng: np.random.Generator,
                        words: int = 8) -> tuple[str, str]:
    """The LLM's prompt (history items in random order) and the response text for sample i."""
    titles, texts = catalogue.titles, catalogue.comment_texts
    vid = [j for j in np.flatnonzero(s.hv[i])]
    rng.shuffle(vid)
    video_items = [f"{_clip(titles[s.hv[i, j]], words)}; {_clip(texts[s.hv_shown[i, j]], words)}" for j in vid]
    rec = [j for j in np.flatnonzero(s.hc[i])]
    rng.shuffle(rec)
    comment_items = []
    for j in rec:
        mine = " / ".join(_clip(texts[c], words) for c in s.hc_comments[i, j] if c > 0)
        comment_items.append(f"{_clip(titles[s.hc[i, j]], words)}; {mine}")
    parts = ["Video history: " + (" | ".join(video_items) or "none") + "."]
    if comment_items:
        parts.append("Comment history: " + " | ".join(comment_items) + ".")
    if s.task[i] == 0:
        parts.append("Task: predict the next video the user watches.")
        response = titles[s.target[i]] or ""
    else:
        parts.append(f'Task: the user watches "{_clip(titles[s.watched[i]], words)}"; '
                     "predict a comment the user engages with.")
        response = texts[s.target[i]] or ""
    return " ".join(parts), _clip(response, 2 * words)
