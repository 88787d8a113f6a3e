"""The temporal protocol (models/protocols.py) on hand-built logs: queries after the cut, histories and
negatives as of each query, the cold slice, and metrics hand-computed for the popularity model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from models.errors import ModelInputError
from models.evaluation import evaluate, sample_candidates
from models.pop import PopRecommender
from models.protocols import Temporal, prepare_temporal, publish_times
from tests.models.fixtures import T0
from tests.models.test_split_leaks import hand_logs

t0 = T0.value / 1e9
CUT = t0 + 25
# publish second of videos 1..9 (relative to T0): 4 before the cut (warm), 5 and 7 after it (cold), 8 never shown
PUBLISHED = {1: -1000, 2: -1000, 3: -1000, 4: 20, 5: 30, 6: -1000, 7: 35, 8: 50, 9: -500}


def world(published: bool = True) -> dict[str, pd.DataFrame]:
    """user 1: videos 1, 2, 3, 4, 5 engaged at t = 0, 10, 20, 30, 40, reading a comment of 3, 4 and 5;
    user 2: videos 1, 2, 3 at t = 0, 26, 27. Cut at 25: the test queries are user 1's 4@30 (warm) and 5@40
    (cold), user 2's 2@26 and 3@27 (warm); comment queries: user 1's on video 4 @30 and video 5 @40."""
    ev = [(1, 10 * (v - 1), v, 15.0, [(10 * v + 1, 5.0, False)] if v >= 3 else []) for v in range(1, 6)]
    ev += [(2, 0, 1, 15.0, []), (2, 26, 2, 15.0, []), (2, 27, 3, 15.0, [])]
    tables = hand_logs(ev)
    videos = pd.DataFrame({"video_id": np.arange(1, 10), "title": [f"v{i}" for i in range(1, 10)], "duration_s": 15.0})
    if published:
        videos["published_at"] = [T0 + pd.Timedelta(seconds=PUBLISHED[v]) for v in range(1, 10)]
    tables["videos"] = videos
    return tables


def test_publish_times_from_the_catalogue_or_the_first_impression() -> None:
    prep, setup = prepare_temporal(world(), Temporal(CUT, 0))
    assert (setup.published[1:] - t0).tolist() == [PUBLISHED[v] for v in range(1, 10)]
    assert setup.is_cold(np.arange(1, 10)).tolist() == [PUBLISHED[v] >= 25 for v in range(1, 10)]
    # without published_at: the first request that showed the video; never shown = never available
    first = publish_times(prep.catalogue, world(published=False))
    assert (first[1:6] - t0).tolist() == [0, 10, 20, 30, 40] and np.isinf(first[6:]).all() and np.isinf(first[0])


def test_queries_after_the_cut_training_before_it() -> None:
    prep, _ = prepare_temporal(world(), Temporal(CUT, 0))
    sp = prep.splits
    assert [(u, t - t0, v) for u, t, v in sp.test.video[["user_id", "time", "target"]].itertuples(index=False)] == [
        (1, 30, 4), (1, 40, 5), (2, 26, 2), (2, 27, 3)]
    assert [(u, t - t0, v) for u, t, v in sp.test.comment[["user_id", "time", "video"]].itertuples(index=False)] == [
        (1, 30, 4), (1, 40, 5)]
    assert sp.valid.video.empty and sp.valid.comment.empty
    assert sp.train.n_video_events().tolist() == [3, 1] and sp.train.n_comment_records().tolist() == [1, 0]
    assert (sp.train.video_time < CUT).all()
    # at most k queries per user and task, drawn among its events after the cut, deterministic given the seed
    one, _ = prepare_temporal(world(), Temporal(CUT, 1, seed=3))
    v = one.splits.test.video
    assert v["user_id"].tolist() == [1, 2] and (v["time"] >= CUT).all()
    again, _ = prepare_temporal(world(), Temporal(CUT, 1, seed=3))
    assert again.splits.test.video.equals(v)
    with pytest.raises(ValueError, match="queries_per_user must be >= 0"):
        Temporal(CUT, -1)
    with pytest.raises(ModelInputError, match="no engaged video event or comment record lies at or after the temporal cut"):
        prepare_temporal(world(), Temporal(t0 + 1000, 0))


def test_negatives_are_published_by_the_query_and_unseen() -> None:
    prep, setup = prepare_temporal(world(), Temporal(CUT, 0))
    c = sample_candidates(prep.splits, prep.catalogue, temporal=setup)
    rows = c.rows("test", "video")
    # published by t and never engaged by the user: user 1 engaged 1..5, user 2 1..3; video 8 is never available
    want = {30: {6, 9}, 40: {6, 7, 9}, 26: {4, 6, 9}, 27: {4, 6, 9}}
    for r in rows.itertuples():
        assert r.candidates[0] == r.video_id and set(r.candidates[1:]) == want[round(r.time - t0)]
    assert rows["slice"].tolist() == ["warm", "cold", "warm", "warm"]
    assert c.rows("test", "comment")["slice"].tolist() == ["warm", "cold"]
    assert c.protocol == "temporal"
    loo = sample_candidates(prep.splits, prep.catalogue)
    assert loo.key != c.key and loo.protocol == "leave-one-out"


class Recorder(PopRecommender):
    """pop, recording the video history each query is handed."""

    def score_videos(self, hist, query):
        self.seen = getattr(self, "seen", []) + [
            (float(query.time[b, 0]) - t0, hist.video_ids[b][hist.video_ids[b] > 0].tolist()) for b in range(hist.batch_size)]
        return super().score_videos(hist, query)


def test_evaluation_slices_and_histories_through_the_query() -> None:
    prep, setup = prepare_temporal(world(), Temporal(CUT, 0))
    c = sample_candidates(prep.splits, prep.catalogue, temporal=setup)
    pop = Recorder.fit(prep.splits.train, prep.catalogue)  # counts before the cut: video 1 twice, 2 and 3 once
    res = {(r.task, r.slice): r for r in evaluate(pop, prep.splits, c, prep.catalogue)}
    # each query reads the events before it, those after the cut included (user 1 @40 sees 4@30)
    assert sorted(pop.seen) == [(26, [1]), (27, [1, 2]), (30, [1, 2, 3]), (40, [1, 2, 3, 4])]
    # hand ranks (pessimistic ties): 4@30 has count 0 like its 2 negatives -> rank 3; 5@40 ties 3 negatives ->
    # rank 4; 2@26 and 3@27 (count 1) beat negatives of count 0 -> rank 1
    ndcg = {30: 1 / np.log2(4), 40: 1 / np.log2(5), 26: 1.0, 27: 1.0}
    assert res[("video", "all")].n_queries == 4 and res[("video", "all")].protocol == "temporal"
    assert res[("video", "all")].metrics["ndcg@10"] == pytest.approx(np.mean(list(ndcg.values())))
    assert res[("video", "warm")].n_queries == 3
    assert res[("video", "warm")].metrics["ndcg@10"] == pytest.approx(np.mean([ndcg[30], ndcg[26], ndcg[27]]))
    assert res[("video", "cold")].n_queries == 1 and res[("video", "cold")].metrics["ndcg@10"] == pytest.approx(ndcg[40])
    assert res[("comment", "cold")].n_queries == 1 and res[("comment", "warm")].n_queries == 1
    rows = res[("video", "cold")].to_rows(seed=0)
    assert {(r["protocol"], r["slice"], r["n_queries"]) for r in rows} == {("temporal", "cold", 1)}
    assert torch.equal(pop.comment_likes, torch.zeros(prep.catalogue.n_comments + 1))  # snapshot restored
