"""Catalogue, history rules, leave-one-out splits and the ML-100k loader on hand-built tables."""

from __future__ import annotations

import zipfile

import numpy as np
import pandas as pd
import pytest

from models.catalogue import Catalogue
from models.histories import HistoryConfig, build_event_log, leave_one_out, prepare_data
from models.movielens import INTER_MEMBER, load_ml100k, read_inter
from tests.models.fixtures import INTER_SAMPLE, T0, cyclic_world


def test_catalogue_indices_and_popular_comment() -> None:
    videos = pd.DataFrame({"video_id": [30, 10, 20], "title": ["c", "a", None]})
    comments = pd.DataFrame({"comment_id": [7, 5, 9, 8], "video_id": [10, 10, 30, 10],
                             "text": ["x", "y", "z", None], "like_count": [3, 3, 1, 2]})
    cat = Catalogue.from_tables(videos, comments)
    assert cat.video_ids.tolist() == [10, 20, 30]
    assert cat.titles == [None, "a", None, "c"]
    assert cat.video_index([20, 99, 10]).tolist() == [2, 0, 1]
    assert cat.comment_index([5, 7, 8, 9, 1]).tolist() == [1, 2, 3, 4, 0]
    assert cat.comment_video.tolist() == [0, 1, 1, 1, 3]
    # video 10 has comments 5 (3 likes), 7 (3 likes), 8 (2): tie -> smallest id 5 -> index 1
    assert cat.popular_comment.tolist() == [0, 1, 0, 4]
    assert cat.comment_likes.tolist() == [0, 3, 3, 2, 1]
    # row order does not change the identity
    shuffled = Catalogue.from_tables(videos.iloc[::-1], comments.iloc[::-1])
    assert shuffled.digest() == cat.digest()
    other = Catalogue.from_tables(videos.iloc[:2], None)
    assert "only in the first" in cat.describe_difference(other)


def test_catalogue_bad_input() -> None:
    with pytest.raises(ValueError, match="duplicate video_id 1"):
        Catalogue.from_tables(pd.DataFrame({"video_id": [1, 1]}))
    with pytest.raises(ValueError, match="video_id 5, which is not in table 'videos'"):
        Catalogue.from_tables(pd.DataFrame({"video_id": [1]}),
                              pd.DataFrame({"comment_id": [1], "video_id": [5], "like_count": [0]}))
    with pytest.raises(ValueError, match="lacks column"):
        Catalogue.from_tables(pd.DataFrame({"id": [1]}))


def _tiny_logs():
    videos = pd.DataFrame({"video_id": [1, 2, 3], "duration_s": [5.0, 60.0, 60.0]})
    comments = pd.DataFrame({"comment_id": [11, 12, 13], "video_id": [2, 2, 2], "like_count": [0, 0, 0]})
    ts = [T0 + pd.Timedelta(seconds=s) for s in (0, 10, 20)]
    requests = pd.DataFrame({"request_id": [1, 2, 3], "user_id": [7, 7, 7], "ts": ts, "session_id": 1})
    impressions = pd.DataFrame({
        "request_id": [1, 1, 2, 2, 3],
        "video_id": [1, 2, 3, 2, 1],
        "position": [0, 1, 1, 0, 0],
        # v1: 5 s of a 5 s video -> engaged; v2: 9 s of 60 -> no; v3: liked -> yes;
        # v2 (req 2): 10 s of 60 -> engaged; v1 again (req 3): 4 s of 5 -> no
        "watch_time_s": [5.0, 9.0, 0.0, 10.0, 4.0],
        "liked": [False, False, True, False, False],
    })
    cimp = pd.DataFrame({"request_id": [2, 2, 2, 3], "video_id": [2, 2, 2, 2], "comment_id": [11, 12, 13, 11],
                         "dwell_s": [1.0, 4.0, 0.5, 0.0], "liked": [True, False, False, False],
                         "replied": [False, False, True, False]})
    return videos, comments, requests, impressions, cimp


def test_history_rules() -> None:
    videos, comments, requests, impressions, cimp = _tiny_logs()
    cat = Catalogue.from_tables(videos, comments)
    log = build_event_log(cat, requests, impressions, videos, cimp)
    assert log.user_ids.tolist() == [7]
    # request 1: v1 (pos 0); request 2: v2 (pos 0) then v3 (pos 1); request 3: nothing engaged
    assert log.user_videos(0).tolist() == [1, 2, 3]
    t0 = T0.value / 1e9
    assert log.user_video_times(0).tolist() == [t0, t0 + 10, t0 + 10]
    # one comment record (request 2, video 2): replied 13 > liked 11 > dwell 12; request 3 not engaged
    assert log.comment_video.tolist() == [2]
    assert log.comment_top.tolist() == [[3, 1, 2]]
    assert sorted(log.record_positives(0).tolist()) == [1, 2, 3]
    strict = build_event_log(cat, requests, impressions, videos, cimp, HistoryConfig(min_watch_s=30, min_dwell_s=10))
    assert strict.user_videos(0).tolist() == [1, 3]
    assert sorted(strict.record_positives(0).tolist()) == [1, 3]
    hist = log.histories([0])
    assert hist.video_ids.tolist() == [[1, 2, 3]]
    assert hist.comment_ids.shape == (1, 1, 3)


def test_leave_one_out_split() -> None:
    prep = prepare_data(cyclic_world(n_users=3, n_videos=60, n_requests=8))
    sp = prep.splits
    full = sp.full
    for u in range(3):
        vids = full.user_videos(u)
        assert sp.test.video["target"].iloc[u] == vids[-1]
        assert sp.valid.video["target"].iloc[u] == vids[-2]
        assert sp.test.video["time"].iloc[u] == full.user_video_times(u)[-1]
        # training ends at the user's first held-out query of either task: the validation comment query at
        # request 3 (below), so requests 0..2 train, not 0..5 (the video task's own cut, which left the
        # requests after the comment query in training)
        assert sp.train.user_videos(u).tolist() == vids[:3].tolist()
    # comment records every 3rd request: t = 0, 3, 6 -> 3 records; the last two are held out
    assert full.n_comment_records().tolist() == [3, 3, 3]
    assert sp.train.n_comment_records().tolist() == [1, 1, 1]
    assert (sp.test.comment["record"].to_numpy() == full.comment_offsets[1:] - 1).all()
    # a user with 2 video events has no video query, but its comment queries still cut its training at request 3
    short = leave_one_out(full.head(np.array([2, 8, 8]), full.n_comment_records()))
    assert short.test.video["user_row"].tolist() == [1, 2]
    assert short.train.n_video_events().tolist() == [2, 3, 3]
    # without comment queries, the video task alone cuts: all but the last two video events train
    video_only = leave_one_out(full.head(full.n_video_events(), np.array([1, 1, 1])))
    assert video_only.test.comment.empty and video_only.train.n_video_events().tolist() == [6, 6, 6]


def test_movielens_loader(tmp_path) -> None:
    inter = tmp_path / "tiny.inter"
    inter.write_text(INTER_SAMPLE)
    df = read_inter(inter)
    assert df.columns.tolist() == ["user_id", "item_id", "rating", "timestamp"]
    assert len(df) == 6
    whl = tmp_path / "fake.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr(INTER_MEMBER, INTER_SAMPLE)
    tables = load_ml100k(whl)
    prep = prepare_data(tables)
    log = prep.splits.full
    assert log.user_ids.tolist() == [22, 186, 196]
    # user 196: 377 (878887116), then 242 and 51 at the same second in file order; ties broken by 1 us
    idx = prep.catalogue.video_index
    assert log.user_videos(2).tolist() == idx([377, 242, 51]).tolist()
    t = log.user_video_times(2)
    assert t[2] - t[1] == pytest.approx(1e-6, abs=1e-7) and t[1] > t[0]
    with pytest.raises(ValueError, match="not a RecBole .inter"):
        bad = tmp_path / "bad.inter"
        bad.write_text("a\tb\n1\t2\n")
        read_inter(bad)
