"""The evaluation protocol: candidates follow the paper's rules, are stored, and are identical across runs."""

from __future__ import annotations

import numpy as np
import pytest

from models.evaluation import EvalConfig, evaluate, load_or_sample_candidates, sample_candidates
from models.histories import prepare_data
from models.pop import PopRecommender
from tests.models.fixtures import cyclic_world


@pytest.fixture(scope="module")
def prep():
    return prepare_data(cyclic_world(n_users=8, n_videos=150, n_requests=12, comments_per_video=4))


def test_video_candidates_follow_protocol(prep) -> None:
    c = sample_candidates(prep.splits, prep.catalogue)
    cat, log = prep.catalogue, prep.splits.full
    rows = c.rows("test", "video")
    assert len(rows) == 8
    for r in rows.itertuples():
        cands = np.asarray(r.candidates)
        assert len(cands) == 100 and len(set(cands.tolist())) == 100
        assert r.labels[0] and not any(r.labels[1:])
        u = log.user_rows([r.user_id])[0]
        seen = set(cat.video_ids[log.user_videos(u) - 1].tolist())
        assert cands[0] in seen and not (set(cands[1:].tolist()) & seen)  # negatives never in the history
        assert r.time == log.user_video_times(u)[-1]


def test_comment_candidates_all_or_positives_plus_negatives(prep) -> None:
    c = sample_candidates(prep.splits, prep.catalogue)
    rows = c.rows("valid", "comment")
    assert len(rows) == 8
    for r in rows.itertuples():
        # 4 comments per video <= 100: all of them, the liked one positive
        vid = prep.catalogue.video_index([r.video_id])[0]
        under = prep.catalogue.comment_ids[prep.catalogue.comments_of(vid) - 1]
        assert sorted(r.candidates) == sorted(under.tolist())
        assert sum(r.labels) == 1
    # more than the cap: all positives plus negatives up to the cap
    small = sample_candidates(prep.splits, prep.catalogue, EvalConfig(max_comment_candidates=3))
    for r in small.rows("test", "comment").itertuples():
        assert len(r.candidates) == 3 and sum(r.labels) == 1 and r.labels[0]


def test_candidates_stored_and_identical_across_runs(tmp_path, prep) -> None:
    a = load_or_sample_candidates(prep.splits, prep.catalogue, tmp_path)
    files = list(tmp_path.glob("eval_candidates-*.parquet"))
    assert len(files) == 1 and a.key in files[0].name
    b = load_or_sample_candidates(prep.splits, prep.catalogue, tmp_path)  # read back from the file
    fresh = sample_candidates(prep.splits, prep.catalogue)  # re-drawn from scratch with the same seed
    for other in (b, fresh):
        assert other.table["candidates"].map(list).tolist() == a.table["candidates"].map(list).tolist()
        assert other.table["labels"].map(list).tolist() == a.table["labels"].map(list).tolist()
    other_seed = sample_candidates(prep.splits, prep.catalogue, EvalConfig(seed=1))
    assert other_seed.key != a.key
    assert other_seed.table["candidates"].map(list).tolist() != a.table["candidates"].map(list).tolist()


def test_evaluate_pop_against_direct_rank(prep) -> None:
    c = sample_candidates(prep.splits, prep.catalogue)
    pop = PopRecommender.fit(prep.splits.train, prep.catalogue)
    (video, comment) = evaluate(pop, prep.splits, c, prep.catalogue)
    counts = pop.counts.numpy()
    hits = []
    for r in c.rows("test", "video").itertuples():
        s = counts[prep.catalogue.video_index(r.candidates)]
        rank = (s[1:] >= s[0]).sum() + 1  # pessimistic ties
        hits.append(rank <= 10)
    assert video.metrics["recall@10"] == pytest.approx(np.mean(hits))
    # the fixture likes each video's most-liked comment: the like-count rule is perfect
    assert comment.metrics["recall@1"] == pytest.approx(1.0)
    # per_query=True keeps each query's metrics on the "all" results: the hand-ranked hits, in row order
    (video_q, _) = evaluate(pop, prep.splits, c, prep.catalogue, per_query=True)
    assert video.per_query is None and video_q.metrics == video.metrics
    np.testing.assert_array_equal(video_q.per_query["recall@10"], np.asarray(hits, float))
