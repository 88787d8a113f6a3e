"""KuaiRand import on a 45-row fixture in the published CSV format, mapped numbers checked by hand.

Fixture (tests/harness/fixtures/kuairand, t0 = 2022-04-08 00:00:00 UTC, tab 1 unless said):
  user 1: 7 standard rows at t0+0,5,10,20,30,40,50 s (one minute, K = 6 -> requests of 6 and 1),
          2 at t0+65,70 s (next minute), 1 at t0+2 h (new session); 1 random row at t0+15 s.
  user 2 (t0+1 d): standard rows at +0 (video 107, duration 0), +10 (comment_stay_time 4 s),
          +30 (is_comment = 1) in tab 1 and +20 in tab 2; +600 s tab 1; 1 random row at +15 s.
  user 3 (t0+2 d): standard +0, +1 s; random +30, +31 s; random +3600 s (new session).
  user 4 (t0+3 d): 14 standard rows at +0..+13 s (requests of 6, 6, 2); 5 random rows 2 min apart.
  user 5 (t0+4 d): 4 random rows at +0, 5, 10, 15 s (one request).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.logs import LogStore
from harness.logs.describe import describe
from harness.logs.kuairand import KuaiRandConfig, KuaiRandFormatError, import_kuairand

FIXTURE = Path(__file__).parent / "fixtures" / "kuairand"


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("kr") / "logs"
    summary = import_kuairand(FIXTURE, out, config=KuaiRandConfig(slate_size=6, random_pool_size=100))
    return out, summary


def test_summary_counts_and_lacks(imported: tuple[Path, object]) -> None:
    _, s = imported
    assert (s.rows, s.users, s.videos, s.requests, s.impressions) == (45, 5, 11, 21, 45)
    assert s.random_impressions == 14
    assert s.videos_with_unknown_duration == 1  # video 107: duration_ms 0 and no features
    assert any("candidate sets" in x for x in s.lacks) and any("comment text" in x for x in s.lacks)
    assert "1/100" in s.propensity_rule


def test_requests_sessions_and_positions_by_hand(imported: tuple[Path, object]) -> None:
    out, _ = imported
    with LogStore.open(out) as store:
        rows = store.query("""
            SELECT r.request_id, r.user_id, r.session_id, r.ts, list(i.video_id ORDER BY i.position) AS videos
            FROM requests r JOIN impressions i USING (request_id) GROUP BY ALL ORDER BY r.request_id""").to_pylist()
    got = [(r["user_id"], r["session_id"], r["videos"]) for r in rows]
    assert got == [
        (1, 1, [101, 102, 103, 104, 105, 106]), (1, 1, [109]), (1, 1, [101]), (1, 1, [102, 103]), (1, 2, [104]),
        (2, 3, [107, 101, 103]), (2, 3, [110]), (2, 3, [102]), (2, 3, [105]),
        (3, 4, [106, 108]), (3, 4, [110, 111]), (3, 5, [109]),
        (4, 6, [101, 102, 103, 104, 105, 106]), (4, 6, [101, 102, 103, 104, 105, 106]), (4, 6, [101, 102]),
        (4, 6, [108]), (4, 6, [109]), (4, 6, [110]), (4, 6, [111]), (4, 6, [108]),
        (5, 7, [108, 109, 110, 111]),
    ]
    assert [r["request_id"] for r in rows] == list(range(1, 22))
    assert [r["ts"].isoformat() for r in rows[:5]] == [
        "2022-04-08T00:00:00", "2022-04-08T00:00:15", "2022-04-08T00:00:50", "2022-04-08T00:01:05",
        "2022-04-08T02:00:00"]


def test_impression_fields_by_hand(imported: tuple[Path, object]) -> None:
    out, _ = imported
    with LogStore.open(out) as store:
        imp = store.df("impressions").set_index(["request_id", "position"])
        videos = store.df("videos").set_index("video_id")
        users = store.df("users").set_index("user_id")
    # user 1, request 1: play_time_ms 5000, 12000 (liked), 30000 (is_comment, comment_stay_time 8000)
    assert imp.loc[(1, 0), "watch_time_s"] == pytest.approx(5.0)
    assert bool(imp.loc[(1, 1), "liked"]) and not bool(imp.loc[(1, 0), "liked"])
    assert bool(imp.loc[(1, 2), "opened_comments"])
    assert imp.loc[(1, 2), "comment_watch_time_s"] == pytest.approx(8.0)
    # user 2, request 6: comment_stay_time 4000 without is_comment opens; is_comment without stay opens
    assert bool(imp.loc[(6, 1), "opened_comments"]) and imp.loc[(6, 1), "comment_watch_time_s"] == 4.0
    assert bool(imp.loc[(6, 2), "opened_comments"]) and imp.loc[(6, 2), "comment_watch_time_s"] == 0.0
    assert int(imp["opened_comments"].sum()) == 3 and int(imp["liked"].sum()) == 4
    # propensity 1/100 exactly on the 14 random rows, null on standard traffic
    rand = imp[imp["is_random"]]
    assert len(rand) == 14 and (rand["propensity"] == 0.01).all()
    assert imp.loc[~imp["is_random"], "propensity"].isna().all()
    # videos: features duration wins (101: 10.5 s), else logs (102: 20 s), 107 unknown -> 0; titles null
    assert videos.loc[101, "duration_s"] == 10.5 and videos.loc[102, "duration_s"] == 20.0
    assert videos.loc[107, "duration_s"] == 0.0 and videos["title"].isna().all()
    assert videos.loc[101, "author_id"] == 5001 and videos["author_id"].isna().sum() == 7
    assert users["activity_level"].tolist()[:3] == ["high", "medium", "low"]
    assert users["activity_level"].iloc[3:].isna().all()  # UNKNOWN and absent


def test_describe_on_kuairand(imported: tuple[Path, object]) -> None:
    out, _ = imported
    with LogStore.open(out) as store:
        d = describe(store)
    assert d.random_share == pytest.approx(14 / 45)
    assert d.comment_open_rate == pytest.approx(3 / 45)
    assert d.like_rate == pytest.approx(4 / 45)
    assert d.comment_interaction_rate is None
    assert d.requests_per_user == pytest.approx(21 / 5)
    assert (d.slate_size_min, d.slate_size_max) == (1, 6)
    assert "propensities only on random traffic" in d.absent and "no candidate sets" in d.absent


def test_slate_size_and_no_pool(tmp_path: Path) -> None:
    s = import_kuairand(FIXTURE, tmp_path / "k.duckdb", fmt="duckdb", config=KuaiRandConfig(slate_size=3))
    # user 1 minute 0: 7 rows -> 3 + 3 + 1; user 2 tab 1 minute 0: 3; user 4: 14 -> 3+3+3+3+2; user 5: 4 -> 3+1
    assert s.requests == 21 + 1 + 2 + 1  # one, two and one more than with K = 6
    with LogStore.open(tmp_path / "k.duckdb") as store:
        assert store.query("SELECT count(propensity) FROM impressions").column(0)[0].as_py() == 0
        assert store.query("SELECT max(position) FROM impressions").column(0)[0].as_py() == 2


def _copy_fixture(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(FIXTURE, src)
    return src


def test_watch_time_above_ratio_fails_or_clips(tmp_path: Path) -> None:
    src = _copy_fixture(tmp_path)
    f = src / "log_standard_4_08_to_4_21_1k.csv"
    lines = f.read_text().splitlines()
    parts = lines[1].split(",")  # user 1, video 101 (10.5 s by features): play 200 s > 105 s
    parts[12] = "200000"
    lines[1] = ",".join(parts)
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(KuaiRandFormatError, match=r"log_standard_4_08_to_4_21_1k.csv line 2: play_time_ms"):
        import_kuairand(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    s = import_kuairand(src, tmp_path / "out", config=KuaiRandConfig(clip_watch_time=True))
    assert s.clipped_watch_times == 1
    with LogStore.open(tmp_path / "out") as store:
        w = store.query("SELECT watch_time_s FROM impressions WHERE request_id = 1 AND position = 0")
    assert w.column(0)[0].as_py() == pytest.approx(105.0)


def test_format_errors_write_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="log_"):
        import_kuairand(tmp_path, tmp_path / "out")
    src = _copy_fixture(tmp_path)
    f = src / "log_random_4_22_to_5_08_1k.csv"
    text = f.read_text()
    f.write_text(text.replace("play_time_ms", "play_ms", 1))
    with pytest.raises(KuaiRandFormatError, match="log_random_4_22_to_5_08_1k.csv: missing column.*play_time_ms"):
        import_kuairand(src, tmp_path / "out")
    lines = text.splitlines()
    parts = lines[3].split(",")
    parts[4] = ""  # time_ms empty on line 4
    lines[3] = ",".join(parts)
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(KuaiRandFormatError, match=r"log_random_4_22_to_5_08_1k.csv line 4: time_ms is empty"):
        import_kuairand(src, tmp_path / "out")
    with pytest.raises(ValueError, match="random_pool_size=3"):
        import_kuairand(FIXTURE, tmp_path / "out", config=KuaiRandConfig(random_pool_size=3))
    with pytest.raises(ValueError, match="slate_size"):
        KuaiRandConfig(slate_size=0)
    assert not (tmp_path / "out").exists()
