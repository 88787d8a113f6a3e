"""Stage-1 samples and prompts as the paper builds them: the most recent items in time order (20 videos
and 20 comment records), a token budget met by cutting words (checked with MiniLM's own tokenizer), and
augmentation per history and then per item, never dropping or reordering items."""

from __future__ import annotations

import re

import numpy as np
import pytest

from models.catalogue import Catalogue
from models.lsvcr.config import LSVCRConfig, Stage1Config
from models.lsvcr.prompts import PROMPT_ITEMS, Stage1Samples, augment_mask, build_samples, prompt_and_response
from models.lsvcr.train import prepare_data
from tests.models.fixtures import cyclic_world

FILLER = "red green blue cyan magenta yellow black"  # 7 words: every text has 8
V, NV, NC = 30, 25, 22  # catalogue videos, history videos, comment records (both above the prompt's 20)


def hand_catalogue() -> Catalogue:
    """Videos v1..v30, each with comments c{3v-2}..c{3v}; the first is the popular one."""
    C = 3 * V
    return Catalogue(video_ids=np.arange(1, V + 1), titles=[None] + [f"v{k} {FILLER}" for k in range(1, V + 1)],
                     comment_ids=np.arange(1, C + 1), comment_video=np.r_[0, np.repeat(np.arange(1, V + 1), 3)],
                     comment_texts=[None] + [f"c{j} {FILLER}" for j in range(1, C + 1)],
                     popular_comment=np.r_[0, 3 * np.arange(1, V + 1) - 2])


def hand_sample(task: int = 0) -> Stage1Samples:
    """One sample whose histories hold 25 videos (v1..v25) and 22 comment records (videos v30, v29, ...,
    each with the user's two non-popular comments), oldest first."""
    hv = np.arange(1, NV + 1)[None]
    hc = (V + 1 - np.arange(1, NC + 1))[None]
    hc_com = np.stack([3 * hc - 1, 3 * hc], -1)  # (1, NC, 2)
    pos = np.arange(NV)[None]
    return Stage1Samples(task=np.array([task]), user=np.zeros(1, np.int64), time=np.array([1e4]),
                         target=np.array([26 if task == 0 else 3 * 27]), watched=np.array([0 if task == 0 else 27]),
                         hv=hv, hv_time=10.0 * hv, hv_pos=pos, hv_shown=3 * hv - 2, hv_shown_sr=3 * hv - 2,
                         hc=hc, hc_time=10.0 * np.arange(1, NC + 1)[None], hc_pos=pos[:, :NC], hc_comments=hc_com,
                         hc_comments_sr=hc_com)


def blocks(prompt: str) -> tuple[list[int], list[int], int, int]:
    """Videos of the video block and of the comment block in prompt order, and the words shown of each title
    and comment (the same for all texts)."""
    video = re.search(r"Video history: (.*?)\.(?: Comment| Task)", prompt).group(1)
    records = re.search(r"Comment history: (.*?)\.(?: Video| Task)", prompt)
    nums = [int(n) for n in re.findall(r"(?:^|\| )(\d+)\. ", video)]
    assert nums == list(range(1, len(nums) + 1))  # numbered 1, 2, ...
    words = {len(t.split()) for t in re.findall(r"v\d+[a-z ]*|c\d+[a-z ]*", prompt)}
    assert len(words) == 1, words
    w = words.pop()
    return ([int(v) for v in re.findall(r"v(\d+)", video)],
            [int(v) for v in re.findall(r"v(\d+)", records.group(1))] if records else [], w, w)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from models.lsvcr.llm import default_llm_path

    return AutoTokenizer.from_pretrained(default_llm_path(), local_files_only=True)


def n_tokens(tok, text: str) -> int:
    return len(tok(text, verbose=False)["input_ids"])


# ----- order, recency, the cap of 20 ------------------------------------------------------------------
def test_the_prompt_lists_the_last_20_items_of_each_history_in_time_order():
    cat, s = hand_catalogue(), hand_sample()
    prompt, response = prompt_and_response(s, 0, cat, np.random.default_rng(0))
    videos, records, w, _ = blocks(prompt)
    assert videos == list(range(NV - PROMPT_ITEMS + 1, NV + 1))  # v6..v25: the most recent 20, oldest first
    assert records == list(V + 1 - np.arange(NC - PROMPT_ITEMS + 1, NC + 1))  # the last 20 records, in time order
    assert w == 8  # no budget: whole texts
    assert f"v6 {FILLER}; c16 {FILLER}" in prompt  # each video with its popular comment
    assert f"v28 {FILLER}; c83 {FILLER} / c84 {FILLER}" in prompt  # each record with the user's comments
    assert prompt.endswith("Task: predict the next video the user watches.") and response == f"v26 {FILLER}"
    # fewer items when asked; only the blocks' order depends on the generator
    short, _ = prompt_and_response(s, 0, cat, np.random.default_rng(0), video_items=3, comment_items=0)
    assert blocks(short)[:2] == ([23, 24, 25], [])
    orders = {prompt_and_response(s, 0, cat, np.random.default_rng(k))[0].startswith("Video") for k in range(20)}
    assert orders == {True, False}
    for k in range(5):
        assert blocks(prompt_and_response(s, 0, cat, np.random.default_rng(k))[0])[:2] == (videos, records)


def test_comment_task_prompt_names_the_watched_video():
    prompt, response = prompt_and_response(hand_sample(task=1), 0, hand_catalogue(), np.random.default_rng(0))
    assert prompt.endswith(f'Task: the user watches "v27 {FILLER}"; predict a comment the user engages with.')
    assert response == f"c81 {FILLER}"


def test_build_samples_take_the_most_recent_items_before_the_target():
    cat, splits = prepare_data(cyclic_world(n_users=6, n_videos=40, n_requests=75, comments_per_video=3))
    log = splits.train
    s = build_samples(log, cat, 200, seed=3)
    assert s.hv.shape[1] == PROMPT_ITEMS and s.hc.shape[1] == PROMPT_ITEMS
    full = 0
    for i in range(len(s)):
        u, t = s.user[i], s.time[i]
        vs, ve = log.video_offsets[u], log.video_offsets[u + 1]
        before = np.flatnonzero(log.video_time[vs:ve] < t)[-PROMPT_ITEMS:] + vs
        n = len(before)
        np.testing.assert_array_equal(s.hv[i, :n], log.video[before])
        np.testing.assert_array_equal(s.hv_time[i, :n], log.video_time[before])
        assert (s.hv[i, n:] == 0).all() and np.isinf(s.hv_time[i, n:]).all()
        cs, ce = log.comment_offsets[u], log.comment_offsets[u + 1]
        rec = np.flatnonzero(log.comment_time[cs:ce] < t)[-PROMPT_ITEMS:] + cs
        np.testing.assert_array_equal(s.hc[i, :len(rec)], log.comment_video[rec])
        np.testing.assert_array_equal(s.hc_comments[i, :len(rec)], log.comment_top[rec])
        for pos, k in ((s.hv_pos[i], n), (s.hc_pos[i], len(rec))):  # sorted distinct positions in 0..49
            assert (np.diff(pos[:k]) > 0).all() and pos[:k].min(initial=0) >= 0 and pos[:k].max(initial=0) < 50
        full += n == PROMPT_ITEMS
    assert full > 50  # many samples have more than 20 earlier videos: the cap is exercised


# ----- the token budget, by words -----------------------------------------------------------------------
def test_the_budget_is_met_by_cutting_words_not_items(tokenizer):
    cat, s = hand_catalogue(), hand_sample()
    count = lambda p: n_tokens(tokenizer, p)  # noqa: E731

    def at(w: int) -> str:
        return prompt_and_response(s, 0, cat, np.random.default_rng(0), w)[0]

    sizes = {w: count(at(w)) for w in range(1, 9)}
    assert all(sizes[w] > sizes[w - 1] for w in range(2, 9))
    for budget, want in ((sizes[8], 8), (sizes[8] - 1, 7), (sizes[3], 3), (sizes[2] + 1, 2), (sizes[1], 1)):
        prompt, _ = prompt_and_response(s, 0, cat, np.random.default_rng(0), count_tokens=count, max_tokens=budget)
        videos, records, w, _ = blocks(prompt)
        assert w == want and count(prompt) <= budget  # the largest W that fits, every text cut alike
        assert videos == list(range(6, NV + 1)) and len(records) == PROMPT_ITEMS  # all 40 items kept
        assert prompt == at(want)


def test_below_one_word_a_text_the_oldest_items_go_first(tokenizer):
    cat, s = hand_catalogue(), hand_sample()
    count = lambda p: n_tokens(tokenizer, p)  # noqa: E731
    one_word = count(prompt_and_response(s, 0, cat, np.random.default_rng(0), 1)[0])
    for budget in (one_word - 30, 128, 60):
        prompt, _ = prompt_and_response(s, 0, cat, np.random.default_rng(0), count_tokens=count, max_tokens=budget)
        videos, records, w, _ = blocks(prompt)
        assert count(prompt) <= budget and w == 1
        assert videos == list(range(NV - len(videos) + 1, NV + 1))  # a most-recent suffix, in time order
        full_records = blocks(prompt_and_response(s, 0, cat, np.random.default_rng(0))[0])[1]
        assert records == full_records[len(full_records) - len(records):]
        assert abs(len(videos) - len(records)) <= 1  # taken from the longer block first


# ----- augmentation: per history, then per item ---------------------------------------------------------
def _bounds(p: float, n: int, z: float = 5.0) -> tuple[float, float]:
    sd = np.sqrt(p * (1 - p) / n)
    return p - z * sd, p + z * sd


def test_augmentation_mask_chooses_histories_then_items():
    rng = np.random.default_rng(7)
    present = np.ones((4000, 20), bool)
    present[:, 15:] = False  # pads are never chosen
    m = augment_mask(present, 0.5, 0.3, rng)
    assert not m[:, 15:].any()
    chosen = m.any(1)  # a chosen history has no swap with p 0.7^15 = 0.5%: counted out below
    p_any = 0.5 * (1 - 0.7 ** 15)
    lo, hi = _bounds(p_any, len(m))
    assert lo <= chosen.mean() <= hi
    items = m[chosen, :15]
    lo, hi = _bounds(0.3 / (1 - 0.7 ** 15), items.size, z=6.0)  # items of a chosen history, independent
    assert lo <= items.mean() <= hi
    per_history = items.sum(1)  # Binomial(15, 0.3) given >= 1, not all 15 as when whole histories swapped
    assert per_history.var() == pytest.approx(15 * 0.3 * 0.7, rel=0.15) and (per_history < 15).mean() > 0.99
    assert not augment_mask(present, 0.0, 0.3, rng).any() and not augment_mask(present, 0.5, 0.0, rng).any()
    np.testing.assert_array_equal(augment_mask(present, 1.0, 1.0, rng), present)


def test_build_samples_swap_comments_per_item_and_keep_every_item_in_order():
    cat, splits = prepare_data(cyclic_world(n_users=12, n_videos=40, n_requests=60, comments_per_video=3,
                                            like_popular=False))  # the user's comment is never the popular one
    runs = {pq: build_samples(splits.train, cat, 1500, swap_p=pq[0], swap_item_p=pq[1], seed=5)
            for pq in ((0.0, 0.0), (0.5, 0.3), (1.0, 1.0))}
    base = runs[(0.0, 0.0)]
    for s in runs.values():  # the items, their times, positions and the LLM's view never change
        for name in ("task", "target", "hv", "hv_time", "hv_pos", "hv_shown", "hc", "hc_time", "hc_pos", "hc_comments"):
            np.testing.assert_array_equal(getattr(s, name), getattr(base, name), err_msg=name)
        assert ((s.hv_shown_sr > 0) == (s.hv > 0)).all() and ((s.hc_comments_sr[..., 0] > 0) == (s.hc > 0)).all()
    np.testing.assert_array_equal(base.hv_shown_sr, base.hv_shown)
    np.testing.assert_array_equal(base.hc_comments_sr, base.hc_comments)
    every = runs[(1.0, 1.0)]
    assert (every.hv_shown_sr != every.hv_shown)[every.hv > 0].all()
    assert (every.hc_comments_sr != every.hc_comments).any(-1)[every.hc > 0].all()
    # (0.5, 0.3): swapped items per history X_i = B_i * Binomial(n_i, 0.3), B_i ~ Bernoulli(0.5); sum over histories
    s = runs[(0.5, 0.3)]
    for shown, orig, present in ((s.hv_shown_sr, s.hv_shown, s.hv > 0),
                                 (s.hc_comments_sr, s.hc_comments, s.hc > 0)):
        swapped = (shown != orig) if shown.ndim == 2 else (shown != orig).any(-1)
        assert not swapped[~present].any()
        n = present.sum(1)
        mean, var = (0.15 * n).sum(), (0.105 * n + 0.0225 * n ** 2).sum()
        assert abs(swapped.sum() - mean) <= 5 * np.sqrt(var)
        p_any = 0.5 * (1 - 0.7 ** n[n > 0])
        assert abs(swapped.any(1)[n > 0].sum() - p_any.sum()) <= 5 * np.sqrt((p_any * (1 - p_any)).sum())


# ----- configuration ------------------------------------------------------------------------------------
def test_stage1_config_records_the_new_rules_and_reads_old_records():
    cfg = Stage1Config()
    assert (cfg.n_video_items, cfg.n_comment_items, cfg.prompt_video_items, cfg.prompt_comment_items) == (20, 20, 20, 20)
    assert (cfg.swap_p, cfg.swap_item_p, cfg.item_grad) == (0.5, 0.3, True)
    assert Stage1Config.from_dict(cfg.to_dict()) == cfg
    # a config.json written before them (as shipped/lsvcr's) describes whole-history swaps and no in-graph texts
    old = {k: v for k, v in cfg.to_dict().items()
           if k not in ("swap_item_p", "item_grad", "item_grad_max_texts", "prompt_video_items", "prompt_comment_items")}
    read = LSVCRConfig.from_dict({"stage1": old}).stage1
    assert (read.swap_item_p, read.item_grad) == (1.0, False)
    for bad in ({"swap_item_p": 1.5}, {"item_grad_max_texts": -1}, {"words_per_text": 0}, {"prompt_video_items": -1}):
        with pytest.raises(ValueError, match="Stage1Config"):
            Stage1Config(**bad)
    cat, splits = prepare_data(cyclic_world(n_users=2, n_requests=6))
    with pytest.raises(ValueError, match="n_video_items"):
        build_samples(splits.train, cat, 4, n_video_items=51)
