"""The LSVCR SR model and its adapter: shapes, masks, time, one pass vs naive per-query scoring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.batch import CommentQuery, UserHistories, VideoQuery
from models.catalogue import Catalogue
from models.lsvcr.adapter import LSVCRRecommender
from models.lsvcr.config import SRConfig
from models.lsvcr.sr_model import LSVCRSR, visible
from models.lsvcr.text import TextTables
from tests.models.test_lsvcr_support import one_thread, random_histories  # noqa: F401

V, C, M, D = 40, 120, 3, 16


def catalogue() -> Catalogue:
    cv = np.concatenate([[0], (np.arange(C) % V) + 1])
    pop = np.zeros(V + 1, np.int64)
    pop[1:] = np.arange(1, V + 1)  # comment j (1..V) sits under video j
    likes = np.concatenate([[0], (np.arange(C) * 7919) % 300])  # 0..299 likes: buckets 0..8
    return Catalogue(np.arange(V) * 10 + 5, [None] + [f"t{i}" for i in range(V)], np.arange(C) + 1000, cv,
                     [None] + [f"c{j}" for j in range(C)], pop, comment_likes=likes)


def tables(seed: int = 0) -> TextTables:
    g = torch.Generator().manual_seed(seed)
    th = torch.ones(V + 1, dtype=torch.bool)
    th[0] = th[7] = False  # video 7 has no title
    ch = torch.ones(C + 1, dtype=torch.bool)
    ch[0] = False
    te, ce = torch.randn(V + 1, D, generator=g), torch.randn(C + 1, D, generator=g)
    te[~th], ce[~ch] = 0, 0
    return TextTables(te, th, ce, ch)


def recommender(seed: int = 0, **kw) -> LSVCRRecommender:
    torch.manual_seed(seed)
    cfg = SRConfig(lm_dim=D, text_dim=32, n_videos=V, n_comments=C, use_ids=True, **kw)
    model = LSVCRSR(cfg)
    with torch.no_grad():  # a trained-looking gate and ID table
        model.video_id.weight.normal_(0, 0.5)
        if model.like_prior is not None:
            model.like_prior.weight.normal_(0, 1.0)
            model.like_slope.fill_(0.3)
        model.reset_pad_rows()
    return LSVCRRecommender(model, catalogue(), tables(), device="cpu")


def queries(hist: UserHistories, Q: int, Cn: int, seed: int = 1) -> tuple[VideoQuery, CommentQuery]:
    g = torch.Generator().manual_seed(seed)
    B = hist.batch_size
    lo, hi = 1e9 - 5, float(hist.video_time[torch.isfinite(hist.video_time)].max()) + 20
    t = lo + torch.rand(B, Q, generator=g, dtype=torch.float64) * (hi - lo)
    t[:, 0] = hist.video_time[:, 3]  # exactly at an event time (ties: not visible)
    t[0, -1] = float("-inf")  # a padded query
    vc = torch.randint(1, V + 1, (B, Q, Cn), generator=g)
    vc[:, :, -1] = 0  # padded candidate
    cc = torch.randint(1, C + 1, (B, Q, Cn), generator=g)
    cc[:, :, -2:] = 0
    return VideoQuery(t, vc), CommentQuery(t, torch.randint(1, V + 1, (B, Q), generator=g), cc)


def test_visible_mask_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    kt = torch.sort(torch.randint(0, 30, (2, 70), generator=g).double())[0]
    kt[1, 60:] = float("inf")
    qt = torch.randint(-2, 33, (2, 9), generator=g).double()
    for strict in (True, False):
        got = visible(kt, qt, 50, strict=strict)
        for b in range(2):
            for q in range(9):
                idx = [j for j in range(70) if (kt[b, j] < qt[b, q] if strict else kt[b, j] <= qt[b, q])]
                want = set(idx[-50:])
                assert {j for j in range(70) if got[b, q, j]} == want


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("kw", [{}, {"use_comments": False}])
def test_one_pass_equals_naive_per_query_scoring(kw):
    rec = recommender(**kw)
    # lengths above max_len (50) exercise the windows; user 2 has no comment history at all
    hist = random_histories(3, 120, 60, M, V, C, lengths=[120, 75, 30], clengths=[60, 10, 0])
    vq, cq = queries(hist, 6, 7)
    fast_v, naive_v = rec.score_videos(hist, vq), rec.score_videos_naive(hist, vq)
    fast_c, naive_c = rec.score_comments(hist, cq), rec.score_comments_naive(hist, cq)
    assert fast_v.shape == (3, 6, 7) and fast_c.shape == (3, 6, 7)
    assert torch.equal(torch.isinf(fast_v), vq.candidates.eq(0).expand_as(fast_v))
    assert torch.equal(torch.isinf(fast_c), cq.candidates.eq(0))
    torch.testing.assert_close(fast_v, naive_v, atol=2e-4, rtol=1e-5)
    torch.testing.assert_close(fast_c, naive_c, atol=2e-4, rtol=1e-5)
    assert fast_v[torch.isfinite(fast_v)].std() > 0.1  # scores are not degenerate


def _long_histories() -> UserHistories:
    """Three users with long histories whose comment records are bursty in time: user 0 comments
    a lot early and rarely late (old records are read through the cross mix), user 1 the opposite,
    user 2 has no comment records."""
    g = torch.Generator().manual_seed(3)
    B, L, Lc = 3, 420, 160
    vid = torch.randint(1, V + 1, (B, L), generator=g)
    vt = torch.arange(L, dtype=torch.float64).repeat(B, 1) * 10.0
    ct = torch.full((B, Lc), float("inf"), dtype=torch.float64)
    ct[0] = torch.cat([torch.linspace(0, 300, 150), torch.linspace(3000, 4100, 10)]).double()
    ct[1, :120] = torch.cat([torch.linspace(100, 200, 20), torch.linspace(3500, 4190, 100)]).double()
    cv = torch.where(torch.isfinite(ct), torch.randint(1, V + 1, (B, Lc), generator=g), 0)
    cc = torch.randint(1, C + 1, (B, Lc, M), generator=g) * torch.isfinite(ct)[..., None]
    return UserHistories(vid, vt, cv, cc, ct)


@pytest.mark.usefixtures("one_thread")
def test_trimmed_histories_give_identical_scores():
    """`_trim` drops events no query can depend on; the scores must not change at all (late queries
    after long histories: the evaluation case), and the trimmed histories must really be shorter."""
    rec = recommender()
    hist = _long_histories()
    g = torch.Generator().manual_seed(4)
    t = torch.tensor([[3900.0, 4000.5, 4150.0], [4100.0, 4150.0, float("-inf")], [2500.0, 4100.0, 4190.0]],
                     dtype=torch.float64)
    vq = VideoQuery(t, torch.randint(1, V + 1, (3, 3, 9), generator=g))
    cq = CommentQuery(t, torch.randint(1, V + 1, (3, 3), generator=g), torch.randint(1, C + 1, (3, 3, 8), generator=g))
    trimmed = rec._trim(hist, t, "comment")
    kept_v = (trimmed.video_ids > 0).sum(1).tolist()
    kept_c = (trimmed.comment_video_ids > 0).sum(1).tolist()
    # user 0's comment head reads its old records, whose cross-attention reads videos of that time:
    # almost nothing can go; users 1 and 2 keep only their recent past
    # (user 1: 115 = video events before 4150 from the cut at 300; user 2 has no records, so nothing is
    # read, and the rule keeps from 25 * ((420 - 50 - 25) // 25) = 325 to 419: 94)
    assert kept_v[0] > 350 and kept_v[1] == 115 and kept_v[2] == 94 and kept_c[2] == 0
    # the video head reads only the last W video events and the records near them: user 0 (first
    # query 3900: 390 events before it) cuts at 25 * ((390 - 50 - 25) // 25) = 300 and keeps the events
    # before its last query (415): 115; user 1 (410 before 4100) cuts at 325: 90; user 2: 419 - 175 = 244
    kept_v = (rec._trim(hist, t, "video").video_ids > 0).sum(1).tolist()
    assert kept_v == [115, 90, 244]
    fast_v, fast_c = rec.score_videos(hist, vq), rec.score_comments(hist, cq)
    rec.trim = False
    full_v, full_c = rec.score_videos(hist, vq), rec.score_comments(hist, cq)
    torch.testing.assert_close(fast_v, full_v, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(fast_c, full_c, atol=1e-5, rtol=1e-6)
    # and both equal the naive per-query reference on one user (the slow path)
    one = UserHistories(*(x[:1] for x in (hist.video_ids, hist.video_time, hist.comment_video_ids,
                                         hist.comment_ids, hist.comment_time)))
    q1 = CommentQuery(t[:1], cq.video_ids[:1], cq.candidates[:1])
    torch.testing.assert_close(fast_c[:1], rec.score_comments_naive(one, q1), atol=2e-4, rtol=1e-5)


@pytest.mark.usefixtures("one_thread")
def test_future_and_padding_never_leak():
    rec = recommender()
    hist = random_histories(2, 90, 40, M, V, C, lengths=[90, 50], clengths=[40, 25])
    vq, cq = queries(hist, 5, 6)
    base_v, base_c = rec.score_videos(hist, vq), rec.score_comments(hist, cq)
    # 1) padding content: fill every padded slot with real-looking ids (times stay +inf)
    pads = hist.video_ids == 0
    h2 = UserHistories(hist.video_ids.masked_fill(pads, 3), hist.video_time,
                       hist.comment_video_ids.masked_fill(hist.comment_video_ids == 0, 5),
                       hist.comment_ids.masked_fill((hist.comment_video_ids == 0)[..., None], 9), hist.comment_time)
    torch.testing.assert_close(rec.score_videos(h2, vq), base_v, atol=1e-5, rtol=0)
    torch.testing.assert_close(rec.score_comments(h2, cq), base_c, atol=1e-5, rtol=0)
    # 2) the future: change every event at or after a cut time; queries before it are unchanged
    cut = float(hist.video_time[0, 40])
    fut_v = (hist.video_time >= cut) & (hist.video_ids > 0)
    fut_c = (hist.comment_time >= cut) & (hist.comment_video_ids > 0)
    h3 = UserHistories(torch.where(fut_v, (hist.video_ids % V) + 1, hist.video_ids), hist.video_time,
                       torch.where(fut_c, (hist.comment_video_ids % V) + 1, hist.comment_video_ids),
                       torch.where(fut_c[..., None] & (hist.comment_ids > 0), (hist.comment_ids % C) + 1,
                                   hist.comment_ids), hist.comment_time)
    early = (vq.time <= cut)[..., None].expand_as(base_v)
    assert early.any() and (~early).any()
    new_v, new_c = rec.score_videos(h3, vq), rec.score_comments(h3, cq)
    torch.testing.assert_close(new_v[early], base_v[early], atol=1e-5, rtol=0)
    torch.testing.assert_close(new_c[early], base_c[early], atol=1e-5, rtol=0)
    assert not torch.allclose(new_v[~early & torch.isfinite(base_v)], base_v[~early & torch.isfinite(base_v)])


@pytest.mark.usefixtures("one_thread")
def test_cross_history_mix_respects_time():
    """A video-history state only depends on comment records at or before its own time."""
    rec = recommender()
    m = rec.model
    hist = random_histories(1, 30, 30, M, V, C)
    st = m.encode(hist.video_ids, hist.video_time, hist.comment_video_ids, hist.comment_ids, hist.comment_time)
    j = 15
    t_j = hist.comment_time[0, j]
    changed = hist.comment_ids.clone()
    changed[0, j:] = (changed[0, j:] % C + 1) * (changed[0, j:] > 0)
    st2 = m.encode(hist.video_ids, hist.video_time, hist.comment_video_ids, changed, hist.comment_time)
    before = hist.video_time[0] < t_j
    after = hist.video_time[0] >= t_j
    assert before.any() and after.any()
    torch.testing.assert_close(st2.video[0, before], st.video[0, before], atol=1e-6, rtol=0)
    assert not torch.allclose(st2.video[0, after], st.video[0, after])
    # and the comment records before j are untouched by the change of records j..
    torch.testing.assert_close(st2.comment[0, :j][hist.comment_time[0, :j] < t_j],
                               st.comment[0, :j][hist.comment_time[0, :j] < t_j], atol=1e-6, rtol=0)


def test_scores_are_cosine_over_temperature_and_cold_video_is_text_only():
    rec = recommender()
    m = rec.model
    u = torch.randn(1, 1, 64)
    v = torch.tensor([[[3, 9]]])
    s = m.score(u, m.video_item(v))
    items = m.video_item(v)[0, 0]
    want = torch.nn.functional.cosine_similarity(u[0, 0][None], items) / 0.07
    torch.testing.assert_close(s[0, 0], want, atol=1e-5, rtol=1e-5)
    # index 0 (no ID) and a zero ID row give exactly the text vector A t(title)
    with torch.no_grad():
        m.video_id.weight[9] = 0
    torch.testing.assert_close(m.video_item(torch.tensor([9])), m.title_vec(torch.tensor([9])))
    # a video without title: text part is exactly zero
    assert torch.count_nonzero(m.title_vec(torch.tensor([7]))) == 0


def test_comment_logits_add_the_like_count_prior_by_bucket():
    rec = recommender()
    m = rec.model
    likes = rec.catalogue.comment_likes
    c = torch.tensor([[1, 2, 3, 50, 0]])
    u = torch.randn(1, 64)
    want_bucket = [int(np.floor(np.log2(1 + likes[j]))) for j in c[0].tolist()]  # hand rule: 2^b - 1 <= likes < 2^(b+1) - 1
    assert m.like_bucket[c[0]].tolist() == want_bucket
    prior = 20.0 * (m.like_prior.weight[want_bucket, 0] + 0.3 * torch.log1p(torch.tensor(likes[c[0]], dtype=torch.float32)))
    want = m.score(u, m.comment_item(c)) + prior  # PRIOR_SCALE (w[bucket] + slope log(1 + likes))
    torch.testing.assert_close(m.comment_logits(u, c), want)
    assert m.comment_logits(u, c)[0, 0] != m.score(u, m.comment_item(c))[0, 0]
    # a fresh model starts with a zero prior, i.e. the paper's text-only score; off = exactly that
    fresh = LSVCRSR(SRConfig(lm_dim=D, text_dim=32, n_videos=V, n_comments=C, use_ids=True))
    assert torch.count_nonzero(fresh.like_prior.weight) == 0 and fresh.like_slope == 0
    off = LSVCRSR(SRConfig(lm_dim=D, text_dim=32, n_videos=V, n_comments=C, use_ids=True, comment_prior=False))
    assert off.like_prior is None and torch.count_nonzero(off.comment_bias(c)) == 0


def test_no_text_model_uses_ids_only():
    rec = recommender(use_text=False)
    hist = random_histories(2, 20, 5, M, V, C)
    vq, cq = queries(hist, 3, 4)
    assert torch.isfinite(rec.score_comments(hist, cq)[cq.candidates > 0]).all()
    assert rec.model.comment_id is not None
    assert torch.count_nonzero(rec.model.title_vec(torch.tensor([1, 2]))) == 0


def test_config_validation_messages():
    with pytest.raises(ValueError, match="divisible by n_heads"):
        SRConfig(hidden=64, n_heads=3)
    with pytest.raises(ValueError, match="needs IDs"):
        SRConfig(use_text=False, use_ids=False)
    rec = recommender()
    with pytest.raises(ValueError, match="catalogue has 40 videos"):
        LSVCRRecommender(rec.model, catalogue(), TextTables.empty(
            Catalogue(np.arange(3), [None] * 4, np.zeros(0), np.zeros(1), [None], np.zeros(4)), D))


def test_no_comments_model_never_reads_comment_histories():
    """The no_comments ablation: its scores are the same whatever comment histories it is given
    (it once read them after stage 1, by up to 0.27 on video and 0.53 on comment scores)."""
    rec = recommender(use_comments=False)
    hist = random_histories(4, 12, 6, M, V, C, seed=3)
    other = random_histories(4, 12, 9, M, V, C, seed=8)
    swapped = type(hist)(hist.video_ids, hist.video_time, other.comment_video_ids, other.comment_ids,
                         other.comment_time)
    empty = type(hist)(hist.video_ids, hist.video_time, torch.zeros_like(hist.comment_video_ids),
                       torch.zeros_like(hist.comment_ids), torch.full_like(hist.comment_time, float("inf")))
    vq, cq = queries(hist, 5, 7)
    for h in (swapped, empty):
        torch.testing.assert_close(rec.score_videos(h, vq), rec.score_videos(hist, vq), rtol=0, atol=0)
        torch.testing.assert_close(rec.score_comments(h, cq), rec.score_comments(hist, cq), rtol=0, atol=0)
    # the full model does read them
    full = recommender()
    assert not torch.equal(full.score_videos(swapped, vq), full.score_videos(hist, vq))
