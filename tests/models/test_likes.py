"""Comment like counts as of a time (models/likes.py) and how evaluation hands them to each recommender."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from models.adapters import SASRecRecommender, comment_likes_setter
from models.batch import CommentQuery, UserHistories
from models.catalogue import Catalogue
from models.evaluation import evaluate, like_rounds, sample_candidates
from models.histories import prepare_data
from models.likes import CommentLikes
from models.pop import PopRecommender
from models.sasrec import SASRec, SASRecConfig
from tests.models.fixtures import T0
from tests.models.test_lsvcr_model import recommender as lsvcr_recommender
from tests.models.test_split_leaks import hand_logs

t0 = T0.value / 1e9


def likes_world() -> CommentLikes:
    """Comments 1..3 (ids 11, 12, 21): snapshots 5, 4, 1; comment 11 liked at t0+20 and t0+30, comment 21
    at t0+5 and t0+6 (more logged likes than its snapshot), comment 12 never."""
    cat = Catalogue.from_tables(pd.DataFrame({"video_id": [1, 2]}),
                                pd.DataFrame({"comment_id": [11, 12, 21], "video_id": [1, 1, 2],
                                              "like_count": [5, 4, 1]}))
    req = pd.DataFrame({"request_id": [1, 2, 3, 4], "ts": [T0 + pd.Timedelta(seconds=s) for s in (20, 30, 5, 6)]})
    ci = pd.DataFrame({"request_id": [1, 2, 3, 4, 1], "comment_id": [11, 11, 21, 21, 99],  # 99: unknown, dropped
                       "liked": [True, True, True, True, True]})
    ci = pd.concat([ci, pd.DataFrame({"request_id": [2], "comment_id": [12], "liked": [False]})])  # not a like
    return CommentLikes.from_tables(cat, req, ci)


def test_as_of_subtracts_the_likes_at_or_after_the_time() -> None:
    lk = likes_world()
    assert lk.n_logged == 4 and lk.n_logged_per_comment().tolist() == [0, 2, 0, 2] and lk.n_over_snapshot == 1
    c = np.array([1, 1, 1, 1, 1, 2, 3, 3, 3, 0])
    t = t0 + np.array([10, 20, 25, 30, 31, 0, 0, 5.5, 7, 0])
    # 11: both likes later (3), the like at 20 is not yet there at 20 (3), one left (4), the one at 30 at 30 (4),
    # none later (5); 12: no logged like (4); 21: 1 - 2 floored at 0, 1 - 1 = 0, 1; padding 0
    assert lk.as_of(c, t).tolist() == [3, 3, 4, 4, 5, 4, 0, 0, 1, 0]
    assert lk.as_of(np.array([[1, 2], [1, 3]]), t0 + np.array([[0], [100]])).tolist() == [[3, 4], [5, 1]]
    assert CommentLikes.snapshot_only(Catalogue.from_tables(pd.DataFrame({"video_id": [1]}), None)).as_of(
        np.array([0]), np.array([0.0])).tolist() == [0]


def test_like_rounds_separate_only_conflicting_queries() -> None:
    video = np.array([1, 1, 2, 1, 2, 1])
    cand = np.array([[1, 2], [1, 2], [3, 4], [1, 2], [3, 4], [2, 1]])
    likes = np.array([[3, 4], [3, 4], [0, 1], [5, 4], [0, 1], [4, 3]])
    # video 1: states A (rows 0, 1), B (row 3), C (row 5: other candidate order); video 2: one state
    assert like_rounds(video, cand, likes).tolist() == [0, 0, 0, 1, 0, 2]


def _comment_query(c: list[int]) -> tuple[UserHistories, CommentQuery]:
    hist = UserHistories(torch.tensor([[1, 2, 0]]), torch.tensor([[1e9, 1e9 + 1, np.inf]], dtype=torch.float64),
                         torch.tensor([[1]]), torch.tensor([[[1, 0, 0]]]), torch.tensor([[1e9]], dtype=torch.float64))
    return hist, CommentQuery(torch.tensor([[1e9 + 5]], dtype=torch.float64), torch.tensor([[1]]), torch.tensor([[c]]))


def test_installed_like_counts_reach_every_model_and_are_restored() -> None:
    rec = lsvcr_recommender()
    cat = rec.catalogue
    hist, q = _comment_query([1, 2, 3, 50, 0])
    before = rec.score_comments(hist, q)
    other = (cat.comment_likes * 3 + 1) % 500
    other[0] = 0
    install = comment_likes_setter(rec)
    assert install is not None
    install(other)
    # reference: the same weights over a catalogue whose snapshot is `other`
    ref = lsvcr_recommender()
    ref.model.set_text(ref.tables.title_emb, ref.tables.title_has, ref.tables.comment_emb, ref.tables.comment_has,
                       torch.from_numpy(cat.popular_comment), torch.from_numpy(other))
    torch.testing.assert_close(rec.score_comments(hist, q), ref.score_comments(hist, q))
    assert not torch.allclose(rec.score_comments(hist, q)[..., :4], before[..., :4])
    install(None)
    torch.testing.assert_close(rec.score_comments(hist, q), before)
    # base and pop rank by the installed counts
    sas = SASRecRecommender(SASRec(SASRecConfig(n_items=cat.n_videos)), cat)
    pop = PopRecommender(torch.zeros(cat.n_videos + 1), cat)
    for m in (sas, pop):
        comment_likes_setter(m)(other)
        assert m.score_comments(hist, q)[0, 0, :4].tolist() == [float(other[j]) for j in (1, 2, 3, 50)]
        comment_likes_setter(m)(None)
        assert m.score_comments(hist, q)[0, 0, :4].tolist() == [float(cat.comment_likes[j]) for j in (1, 2, 3, 50)]
    with pytest.raises(ValueError, match=r"shape \(3,\), expected \(121,\): one per comment index"):
        pop.set_comment_likes(np.zeros(3))
    assert comment_likes_setter(object()) is None


def test_queries_under_one_video_at_different_times_each_get_their_counts() -> None:
    """Comment 11 (snapshot 5) is liked at t = 20 and 30; comment 12 has 4. User 1 asks at t = 10 (11 had 3:
    its positive 12 ranks first); user 4 asks at t = 40 (11 has 5: its positive 11 ranks first). One table
    for both queries would rank one of them wrong; the snapshot ranks user 1's wrong."""
    ev = [(1, 0, 1, 15.0, [(12, 5.0, False), (11, 0.5, False)]), (1, 10, 1, 15.0, [(12, 5.0, False), (11, 0.5, False)]),
          (2, 20, 1, 15.0, [(11, 5.0, True)]), (3, 30, 1, 15.0, [(11, 5.0, True)]),
          (4, 35, 1, 15.0, [(11, 5.0, False), (12, 0.5, False)]), (4, 40, 1, 15.0, [(11, 5.0, False), (12, 0.5, False)])]
    prep = prepare_data(hand_logs(ev, likes={11: 5, 12: 4}))
    cands = sample_candidates(prep.splits, prep.catalogue)
    pop = PopRecommender.fit(prep.splits.train, prep.catalogue)
    (test,) = evaluate(pop, prep.splits, cands, prep.catalogue, tasks=("comment",))
    assert test.n_queries == 2 and test.metrics["recall@1"] == 1.0
    assert pop.comment_likes.tolist() == prep.catalogue.comment_likes.tolist()  # the snapshot again afterwards
    prep.splits.likes = None  # the end-of-log snapshot, as before the fix
    (snap,) = evaluate(pop, prep.splits, cands, prep.catalogue, tasks=("comment",))
    assert snap.metrics["recall@1"] == 0.5
