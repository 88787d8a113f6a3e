"""`describe` figures checked by hand on the fixture (and quantiles against numpy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.logs import LogStore, write_logs
from harness.logs.describe import describe
from tests.harness.logs_fixtures import COMMENT_WATCH, WATCH, valid_tables


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_logs(valid_tables(), tmp_path_factory.mktemp("d") / "logs.duckdb", fmt="duckdb")


def test_describe_full_fixture_by_hand(full: Path) -> None:
    with LogStore.open(full) as store:
        d = describe(store)
        assert d.fingerprint == store.fingerprint()
    assert (d.users, d.active_users, d.videos, d.requests, d.impressions) == (3, 3, 6, 6, 12)
    assert d.counts["candidates"] == 18 and d.counts["comment_impressions"] == 4
    assert (d.ts_min, d.ts_max) == ("2024-01-01T00:00:00", "2024-01-03T12:00:00")
    assert d.days == pytest.approx(2.5)
    assert d.random_share == pytest.approx(2 / 12)          # request 6 is random traffic
    assert d.comment_open_rate == pytest.approx(3 / 12)     # impressions 0, 4, 8 opened comments
    assert d.like_rate == pytest.approx(3 / 12)             # impressions 0, 2, 7 liked
    # comment impressions: likes on rows 0 and 3, one reply on row 0 -> 3 interactions over 3 opens
    assert d.comment_interaction_rate == pytest.approx(3 / 3)
    assert d.comment_watch_time_per_open == pytest.approx(sum(COMMENT_WATCH) / 3)
    # sorted watch times: 0 1 2 3 5 8 12 15 20 30 40 60; linear quantile at h = q * (n - 1)
    assert d.watch_time_mean == pytest.approx(196 / 12)
    assert d.watch_time_p10 == pytest.approx(1.1)   # h = 1.1 -> 1 + 0.1 * (2 - 1)
    assert d.watch_time_p50 == pytest.approx(10.0)  # h = 5.5 -> (8 + 12) / 2
    assert d.watch_time_p90 == pytest.approx(39.0)  # h = 9.9 -> 30 + 0.9 * 10
    assert d.watch_time_p99 == pytest.approx(57.8)  # h = 10.89 -> 40 + 0.89 * 20
    np.testing.assert_allclose([d.watch_time_p10, d.watch_time_p50, d.watch_time_p90, d.watch_time_p99],
                               np.percentile(WATCH, [10, 50, 90, 99]))
    assert d.requests_per_user == pytest.approx(2.0)
    assert (d.slate_size_mean, d.slate_size_min, d.slate_size_max) == (2.0, 2, 2)
    assert d.candidates_per_request == pytest.approx(3.0)
    assert d.propensity_coverage == pytest.approx(1.0)
    assert d.zero_duration_videos == 0
    assert d.absent == []


def test_describe_says_what_is_absent(tmp_path: Path) -> None:
    t = valid_tables()
    for name in ("comments", "candidates", "comment_impressions"):
        del t[name]
    t["videos"]["title"] = None
    t["users"]["activity_level"] = None
    imp = t["impressions"]
    imp["propensity"] = imp["propensity"].where(imp["is_random"], None)
    t["videos"].loc[5, "duration_s"] = 0.0
    with LogStore.open(write_logs(t, tmp_path / "p")) as store:
        d = describe(store)
    assert d.comment_interaction_rate is None and d.candidates_per_request is None
    assert d.propensity_coverage == pytest.approx(2 / 12)
    assert d.zero_duration_videos == 1
    assert d.absent == [
        "no video titles (text)", "no comments table", "no candidate sets",
        "no comment impressions (comment-level metrics cannot be replayed)",
        "propensities only on random traffic", "no user activity levels",
        "1 video(s) with unknown (zero) duration",
    ]


def test_feed_figures_and_targets_against_pandas(full: Path) -> None:
    """The v2 feed figures equal a direct pandas computation; every calibrated rate names its source."""
    with LogStore.open(full) as store:
        d = describe(store)
        imp, req, vid = store.df("impressions"), store.df("requests"), store.df("videos")
    m = imp.merge(vid, on="video_id")
    played = m[(m.watch_time_s > 0) & (m.duration_s > 0)]
    assert d.plays_over_duration == pytest.approx((played.watch_time_s > played.duration_s).mean())
    assert d.comment_time_share == pytest.approx(
        imp.comment_watch_time_s.sum() / (imp.watch_time_s.sum() + imp.comment_watch_time_s.sum()))
    assert d.requests_per_session == pytest.approx(len(req) / req.session_id.nunique())
    user_days = req.assign(day=req.ts.dt.date)[["user_id", "day"]].drop_duplicates()
    assert d.impressions_per_user_day == pytest.approx(len(imp) / len(user_days))
    assert set(d.targets) == {"random_share", "comment_open_rate", "comment_interaction_rate", "comment_time_share",
                              "impressions_per_user_day"}
    assert all(t["source"] and t["value"] > 0 for t in d.targets.values())
