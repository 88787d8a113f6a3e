"""SASRec (`base`): masks, no future leak, one-pass = naive scoring, and learning a deterministic cycle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.adapters import SASRecRecommender
from models.batch import UserHistories, VideoQuery
from models.catalogue import Catalogue
from models.evaluation import evaluate, sample_candidates
from models.histories import prepare_data
from models.pop import PopRecommender
from models.sasrec import SASRec, SASRecConfig, n_windows, reading_window
from models.train_sasrec import TrainConfig, train_sasrec, training_windows
from tests.models.fixtures import cyclic_world


def _rec(n_items: int = 40, max_len: int = 8, seed: int = 0) -> SASRecRecommender:
    torch.manual_seed(seed)
    cat = Catalogue(np.arange(1, n_items + 1), [None] * (n_items + 1), np.zeros(0), np.zeros(1), [None],
                    np.zeros(n_items + 1))
    return SASRecRecommender(SASRec(SASRecConfig(n_items, hidden=16, ffn=32, max_len=max_len)), cat)


def _hist(B: int = 3, L: int = 30, n_items: int = 40, seed: int = 0) -> UserHistories:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([L, L // 2, 3])[:B]
    vid = torch.randint(1, n_items + 1, (B, L), generator=g)
    t = torch.arange(L, dtype=torch.float64).repeat(B, 1) * 10.0
    t[:, 5] = t[:, 4]  # two events in one request
    pad = torch.arange(L)[None] >= lengths[:, None]
    vid[pad] = 0
    t[pad] = float("inf")
    return UserHistories(vid, t, torch.zeros(B, 1, dtype=torch.long), torch.zeros(B, 1, 3, dtype=torch.long),
                         torch.full((B, 1), float("inf"), dtype=torch.float64))


def _query(B: int = 3, Q: int = 7, C: int = 6, n_items: int = 40, seed: int = 1) -> VideoQuery:
    g = torch.Generator().manual_seed(seed)
    time = torch.tensor([0.0, 5.0, 40.0, 41.0, 95.0, 200.0, 1e9], dtype=torch.float64)[:Q].repeat(B, 1)
    cand = torch.randint(1, n_items + 1, (B, Q, C), generator=g)
    cand[:, :, -1] = 0  # a padded candidate
    return VideoQuery(time, cand)


def test_window_rule() -> None:
    assert [n_windows(n, 50) for n in (1, 50, 51, 75, 76, 100)] == [1, 1, 2, 2, 3, 3]
    i = torch.tensor([0, 24, 49, 50, 74, 75, 99])
    w = reading_window(i, 50)
    assert w.tolist() == [0, 0, 0, 1, 1, 2, 2]
    pos = i - 25 * w
    assert ((pos[w > 0] >= 25) & (pos[w > 0] < 50)).all()  # second half: 26..50 events of context


def test_shapes_pads_and_empty_history() -> None:
    rec, hist, q = _rec(), _hist(), _query()
    s = rec.score_videos(hist, q)
    assert s.shape == (3, 7, 6)
    assert torch.isneginf(s[:, :, -1]).all() and torch.isfinite(s[:, :, :-1]).all()
    assert (s[:, 0, :-1] == 0).all()  # query at t=0: nothing visible -> zero user vector


def test_padding_content_changes_nothing() -> None:
    rec, hist, q = _rec(), _hist(), _query()
    base = rec.score_videos(hist, q)
    pad = hist.video_ids == 0
    h2 = UserHistories(hist.video_ids.masked_fill(pad, 7), hist.video_time, hist.comment_video_ids,
                       hist.comment_ids, hist.comment_time)
    # pads are recognised by video_ids == 0; garbage ids beyond each user's length must not matter
    lengths = (hist.video_ids != 0).sum(1)
    h2.video_ids[torch.arange(30)[None] >= lengths[:, None]] = 0
    torch.testing.assert_close(rec.score_videos(h2, q), base)
    # extra padding columns change nothing either
    h3 = UserHistories(torch.cat([hist.video_ids, torch.zeros(3, 9, dtype=torch.long)], 1),
                       torch.cat([hist.video_time, torch.full((3, 9), float("inf"), dtype=torch.float64)], 1),
                       hist.comment_video_ids, hist.comment_ids, hist.comment_time)
    torch.testing.assert_close(rec.score_videos(h3, q), base)


def test_future_never_leaks() -> None:
    rec, hist, q = _rec(), _hist(), _query()
    base = rec.score_videos(hist, q)
    t_q = 41.0  # query index 3: events with time < 41 (indices 0..4, since t[5] = t[4] = 40) are visible
    future = (hist.video_time >= t_q) & (hist.video_ids != 0)
    g = torch.Generator().manual_seed(5)
    vid = hist.video_ids.clone()
    vid[future] = torch.randint(1, 41, (int(future.sum()),), generator=g)
    s = rec.score_videos(UserHistories(vid, hist.video_time, hist.comment_video_ids, hist.comment_ids,
                                       hist.comment_time), q)
    torch.testing.assert_close(s[:, :4], base[:, :4])  # queries at t <= 41 unchanged
    assert not torch.allclose(s[0, 4:6], base[0, 4:6])  # later queries do see the change
    # an event at exactly the query time is not visible (strict <): changing event 4 (t=40) leaves
    # the query at t=40 unchanged but changes the one at t=41
    vid = hist.video_ids.clone()
    vid[:, 4] = vid[:, 4] % 40 + 1
    s = rec.score_videos(UserHistories(vid, hist.video_time, hist.comment_video_ids, hist.comment_ids,
                                       hist.comment_time), q)
    torch.testing.assert_close(s[:, 2], base[:, 2])
    assert not torch.allclose(s[:2, 3], base[:2, 3])


def test_one_causal_pass_equals_naive_per_request() -> None:
    rec, hist, q = _rec(), _hist(), _query()
    fast = rec.score_videos(hist, q)
    naive = rec.score_videos_naive(hist, q)
    torch.testing.assert_close(fast, naive, rtol=1e-5, atol=1e-5)


def test_encode_at_equals_full_encode_at_read_positions() -> None:
    torch.manual_seed(0)
    m = SASRec(SASRecConfig(50, max_len=12)).eval()
    seq = torch.randint(1, 51, (5, 12))
    seq[3, 7:] = 0  # a short window, padding at the end
    rows = torch.tensor([0, 0, 2, 4, 4, 4, 3, 0, 1])
    pos = torch.tensor([11, 0, 5, 3, 3, 9, 6, 11, 2])  # repeats, and windows read at one position only
    with torch.no_grad():
        full = m.encode(seq)
        torch.testing.assert_close(m.encode_at(seq, rows, pos), full[rows, pos], rtol=1e-5, atol=1e-5)
    m.train()  # with dropout it takes the plain path
    assert m.encode_at(seq, rows, pos).shape == (9, 64)


def test_padded_queries_are_minus_inf_and_do_not_change_live_scores() -> None:
    rec, hist, q = _rec(), _hist(), _query()
    s = rec.score_videos(hist, q)
    cand = q.candidates.clone()
    cand[1, 2:] = 0  # user 1 loses its later queries
    s2 = rec.score_videos(hist, VideoQuery(q.time, cand))
    assert torch.isneginf(s2[1, 2:]).all()
    torch.testing.assert_close(s2[1, :2], s[1, :2])
    torch.testing.assert_close(s2[[0, 2]], s[[0, 2]])


def test_training_windows_cover_every_target_once() -> None:
    prep = prepare_data(cyclic_world(n_users=2, n_videos=60, n_requests=40))
    data = training_windows(prep.splits.train, max_len=8)
    # every training event but the first of each user is a target
    assert data.n_targets == int((prep.splits.train.n_video_events() - 1).sum())
    # the state that predicts a target holds the previous event (distinct times in this world)
    for w in range(data.seqs.shape[0]):
        for k in range(data.offsets[w], data.offsets[w + 1]):
            prev = int(data.seqs[w, data.pos[k]])
            assert int(data.item[k]) == prev % 60 + 1  # cycle: next = current + 1


@pytest.fixture(scope="module")
def trained():
    prep = prepare_data(cyclic_world())
    cands = sample_candidates(prep.splits, prep.catalogue)
    res = train_sasrec(prep.splits, prep.catalogue, cands,
                       SASRecConfig(prep.catalogue.n_videos, hidden=32, ffn=64, dropout=0.1, max_len=8),
                       TrainConfig(epochs=12, batch_windows=16, lr=5e-3, patience=3, progress=False),
                       log=lambda s: None)
    return prep, cands, res


def test_training_loss_goes_down_and_learns_the_cycle(trained) -> None:
    prep, cands, res = trained
    losses = [h["loss"] for h in res.history]
    assert losses[-1] < 0.7 * losses[0]
    (test,) = evaluate(res.recommender, prep.splits, cands, prep.catalogue, tasks=("video",))
    assert test.n_queries == 24
    assert test.metrics["recall@1"] >= 0.95  # the next video is deterministic
    (pop,) = evaluate(PopRecommender.fit(prep.splits.train, prep.catalogue), prep.splits, cands,
                      prep.catalogue, tasks=("video",))
    assert pop.metrics["recall@1"] < 0.3


def test_training_is_deterministic_by_seed(trained) -> None:
    prep, cands, res = trained
    again = train_sasrec(prep.splits, prep.catalogue, cands,
                         SASRecConfig(prep.catalogue.n_videos, hidden=32, ffn=64, dropout=0.1, max_len=8),
                         TrainConfig(epochs=2, batch_windows=16, lr=5e-3, patience=3, progress=False),
                         log=lambda s: None)
    assert again.history[0]["loss"] == pytest.approx(res.history[0]["loss"], rel=1e-6)
