"""Stage-1 samples and the LLM recommender's prompts (docs/lsvcr-method.md, "Stage 1").

A sample is one prediction point taken from the training histories: the next video (video task, the
response is its title) or, given the watched video, a comment the user engaged with under it (comment
task, the response is the comment's text). Its histories are the user's most recent events strictly
before the target's time: the last `n_video_items` videos and the last `n_comment_items` comment
records (20 and 20, as in the paper), oldest first. Nothing is drawn at random but the SR model's
positions, a sorted random subset of 0..49 (the paper's stage-1 positions).

Prompt (`prompt_and_response`): the same items, numbered and in time order; only the order of the two
blocks is random:

    Video history: 1. <title>; <popular comment> | 2. ... .
    Comment history: 1. <title>; <the user's comments, " / "-separated> | ... .
    Task: predict the next video the user watches.          (video task)
    Task: the user watches "<title>"; predict a comment the user engages with.   (comment task)

A token budget is met by cutting words, not items: every title and comment shows its first W words,
W = `words_per_text` and then smaller, until the prompt fits. Only a prompt that does not fit even at
one word a text loses items, the oldest first, one at a time from the longer block (never at random).
With MiniLM's tokenizer a one-word item costs about 6 tokens (a video, or a record with one comment;
about 10 with three), plus about 23 for the rest: the default 128-token budget holds about 15 items,
and 20 + 20 need 270 to 350 tokens (`Stage1Config.max_prompt_tokens`).

Augmentation (the paper and the authors' code: p = 0.5 per history, then p = 0.3 per item of an
augmented history; `swap_p`, `swap_item_p`): a chosen item shows the SR model other comments than the
LLM: a history video shows a random other comment of the video instead of its popular one, a comment
record shows the video's popular comment instead of the user's comments. The LLM keeps the original
view, so the two views of one history differ item by item and the alignment must be robust to it.
Items are never dropped or reordered. (Until 2026-12-01 a chosen history swapped every item, and the
items were a random draw from the last 50, shown to the LLM in random order.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from models.catalogue import Catalogue
from models.histories import EventLog

PROMPT_ITEMS = 20  # the paper's prompt: the last 20 videos and the last 20 comment records


@dataclass
class Stage1Samples:
    task: np.ndarray  # (N,) 0 = video, 1 = comment
    user: np.ndarray  # (N,) row in the EventLog
    time: np.ndarray  # (N,) float64 target time
    target: np.ndarray  # (N,) video index (video task) or comment index (comment task)
    watched: np.ndarray  # (N,) watched video index (comment task), 0 otherwise
    hv: np.ndarray  # (N, Kv) history videos, time order, 0 = pad (at the end)
    hv_time: np.ndarray  # (N, Kv) +inf at pads
    hv_pos: np.ndarray  # (N, Kv) sorted random positions in 0..49
    hv_shown: np.ndarray  # (N, Kv) comment the LLM sees with each video (its popular comment)
    hv_shown_sr: np.ndarray  # (N, Kv) comment the SR model sees (augmented per item)
    hc: np.ndarray  # (N, Kc) comment-record videos
    hc_time: np.ndarray  # (N, Kc)
    hc_pos: np.ndarray  # (N, Kc)
    hc_comments: np.ndarray  # (N, Kc, M) the user's comments (LLM view)
    hc_comments_sr: np.ndarray  # (N, Kc, M) SR view (augmented per item)

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


def augment_mask(present: np.ndarray, history_p: float, item_p: float, rng: np.random.Generator) -> np.ndarray:
    """(N, K) bool: the items whose views differ. Each history (row) is chosen with `history_p`, then
    each present item of a chosen history with `item_p`, independently (the paper's two-level rule)."""
    chosen = rng.random(present.shape[0]) < history_p  # (N,)
    return chosen[:, None] & (rng.random(present.shape) < item_p) & present


def _recent(times: np.ndarray, start: int, end: int, before: float, k: int) -> np.ndarray:
    """Global indices of the last `k` events of one user's slice [start, end) with time < `before`."""
    n = int(np.searchsorted(times[start:end], before, side="left"))  # visible: t < target time
    return np.arange(max(0, n - k), n) + start


def build_samples(log: EventLog, catalogue: Catalogue, n: int, *, comment_share: float = 0.5,
                  n_video_items: int = PROMPT_ITEMS, n_comment_items: int = PROMPT_ITEMS, max_len: int = 50,
                  swap_p: float = 0.5, swap_item_p: float = 0.3, seed: int = 0) -> Stage1Samples:
    """Draw `n` stage-1 samples (see the module docstring). Video targets are events after a user's
    first one; comment targets are any comment-history record (its history may be empty)."""
    if not 1 <= n_video_items <= max_len or not 0 <= n_comment_items <= max_len:
        raise ValueError(f"build_samples: n_video_items ({n_video_items}) must be in 1..{max_len} and "
                         f"n_comment_items ({n_comment_items}) in 0..{max_len} (the SR model's positions)")
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
        take = _recent(log.video_time, log.video_offsets[u], log.video_offsets[u + 1], time[i], Kv)
        hv[i, :len(take)] = log.video[take]
        hv_time[i, :len(take)] = log.video_time[take]
        hv_pos[i, :len(take)] = np.sort(rng.choice(max_len, size=len(take), replace=False))
        if n_comment_items == 0:
            continue
        take = _recent(log.comment_time, log.comment_offsets[u], log.comment_offsets[u + 1], time[i], Kc)
        hc[i, :len(take)] = log.comment_video[take]
        hc_time[i, :len(take)] = log.comment_time[take]
        hc_pos[i, :len(take)] = np.sort(rng.choice(max_len, size=len(take), replace=False))
        hc_com[i, :len(take)] = log.comment_top[take]
    hv_shown = catalogue.popular_comment[hv] * (hv > 0)
    # SR-side augmentation, item by item.
    off, by_video = _comments_by_video(catalogue)
    hv_sr = hv_shown.copy()
    for i, j in zip(*np.nonzero(augment_mask(hv > 0, swap_p, swap_item_p, rng)), strict=True):
        cands = by_video[off[hv[i, j]]:off[hv[i, j] + 1]]
        others = cands[cands != hv_shown[i, j]]
        if len(others):
            hv_sr[i, j] = rng.choice(others)
    hc_sr = hc_com.copy()
    swap_c = augment_mask(hc > 0, swap_p, swap_item_p, rng)
    hc_sr[swap_c] = 0
    hc_sr[..., 0][swap_c] = catalogue.popular_comment[hc][swap_c]
    keep = hc_sr.sum(-1) > 0  # a video without comments keeps the user's own
    hc_sr[swap_c & ~keep] = hc_com[swap_c & ~keep]
    return Stage1Samples(task, user, time, target, watched, hv, hv_time, hv_pos, hv_shown, hv_sr,
                         hc, hc_time, hc_pos, hc_com, hc_sr)


def _clip(text: str | None, words: int) -> str:
    return "" if not text else " ".join(text.split()[:words])


def prompt_and_response(s: Stage1Samples, i: int, catalogue: Catalogue, rng: np.random.Generator,
                        words: int = 8, *, count_tokens: Callable[[str], int] | None = None,
                        max_tokens: int | None = None, video_items: int = PROMPT_ITEMS,
                        comment_items: int = PROMPT_ITEMS) -> tuple[str, str]:
    """The LLM's prompt and the response text for sample i (see the module docstring).

    The prompt lists the sample's last `video_items` videos and last `comment_items` comment records,
    oldest first. With `count_tokens` (the prompt's token count, special tokens included) and
    `max_tokens`, every text is cut to its first W words, W = `words`, `words` - 1, ..., 1, until the
    prompt fits; if it does not fit at W = 1, the oldest item of the longer block goes, until it fits.
    One draw from `rng`: the order of the two blocks.
    """
    titles, texts = catalogue.titles, catalogue.comment_texts
    vid = np.flatnonzero(s.hv[i])[-video_items:] if video_items > 0 else np.zeros(0, np.int64)
    rec = np.flatnonzero(s.hc[i])[-comment_items:] if comment_items > 0 else np.zeros(0, np.int64)
    video_first = bool(rng.random() < 0.5)
    if s.task[i] == 0:
        question = "Task: predict the next video the user watches."
        response = titles[s.target[i]] or ""
    else:
        question = (f'Task: the user watches "{_clip(titles[s.watched[i]], words)}"; '
                    "predict a comment the user engages with.")
        response = texts[s.target[i]] or ""

    def build(w: int, vid: np.ndarray, rec: np.ndarray) -> str:
        video = [f"{n}. {_clip(titles[s.hv[i, j]], w)}; {_clip(texts[s.hv_shown[i, j]], w)}"
                 for n, j in enumerate(vid, 1)]
        records = [f"{n}. {_clip(titles[s.hc[i, j]], w)}; "
                   + " / ".join(_clip(texts[c], w) for c in s.hc_comments[i, j] if c > 0) for n, j in enumerate(rec, 1)]
        blocks = ["Video history: " + (" | ".join(video) or "none") + "."]
        if records:
            blocks.append("Comment history: " + " | ".join(records) + ".")
        return " ".join((blocks if video_first else blocks[::-1]) + [question])

    prompt = build(words, vid, rec)
    if count_tokens is None or max_tokens is None or count_tokens(prompt) <= max_tokens:
        return prompt, _clip(response, 2 * words)
    # The prompt grows with W and with every item kept, so both searches are binary (a few tokenizer calls).
    fit = _largest(1, words - 1, lambda w: count_tokens(build(w, vid, rec)) <= max_tokens)
    if fit is not None:
        return build(fit, vid, rec), _clip(response, 2 * words)
    # last resort, when one word a text is still too long: the oldest item of the longer block goes, one by one
    kept = [(len(vid), len(rec))]
    while sum(kept[-1]):
        nv, nc = kept[-1]
        kept.append((nv, nc - 1) if nc >= nv else (nv - 1, nc))

    def shown(r: int) -> str:
        nv, nc = kept[r]
        return build(1, vid[len(vid) - nv:], rec[len(rec) - nc:])

    drop = _largest(-len(kept) + 1, 0, lambda r: count_tokens(shown(-r)) <= max_tokens)
    return shown(len(kept) - 1 if drop is None else -drop), _clip(response, 2 * words)


def _largest(lo: int, hi: int, ok: Callable[[int], bool]) -> int | None:
    """The largest x in [lo, hi] with ok(x), for ok true up to some x and false after it; None if none."""
    best = None
    while lo <= hi:
        mid = (lo + hi) // 2
        if ok(mid):
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best
