"""KuaiRand import: a 45-row fixture in the published CSV format with mapped numbers checked by hand, and
small KuaiRand-format folders built here from the documented columns for the request, time and loop rules.

Fixture (tests/harness/fixtures/kuairand, t0 = 2022-04-08 08:00:00 Beijing = 00:00:00 UTC, tab 1 unless
said; every hourmin is a whole hour, so date/hourmin are checked to the hour):
  user 1: 7 standard rows at t0+0,5,10,20,30,40,50 s (one minute, K = 6 -> requests of 6 and 1),
          2 at t0+65,70 s (next minute), 1 at t0+2 h (new session); 1 random row at t0+15 s, inside the
          span of the first request, so it joins it at position 3 (7 rows).
  user 2 (t0+1 d): standard rows at +0 (video 107, duration 0), +10 (comment_stay_time 4 s),
          +30 (is_comment = 1) in tab 1 and +20 in tab 2; +600 s tab 1; 1 random row at +15 s: inside the
          tab-1 request's span, so it joins it at position 2.
  user 3 (t0+2 d): standard +0, +1 s; random +30, +31 s (29 and 30 s after that request: joined);
          random +3600 s (no feed within 60 s: a random-only request, new session).
  user 4 (t0+3 d): 14 standard rows at +0..+13 s (requests of 6, 6, 2); 5 random rows 2 min apart, the
          first 107 s after the last standard row: none joins, five random-only requests.
  user 5 (t0+4 d): 4 random rows at +0, 5, 10, 15 s and no standard rows (one random-only request).
"""

from __future__ import annotations

import csv
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.logs import LogStore
from harness.logs.describe import describe
from harness.logs.kuairand import LOG_COLUMNS, KuaiRandConfig, KuaiRandFormatError, import_kuairand

FIXTURE = Path(__file__).parent / "fixtures" / "kuairand"
ROOT = Path(__file__).resolve().parents[2]
BEIJING = timedelta(hours=8)
EPOCH = datetime(1970, 1, 1)


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("kr") / "logs"
    summary = import_kuairand(FIXTURE, out, config=KuaiRandConfig(slate_size=6, random_pool_size=100))
    return out, summary


def test_summary_counts_and_lacks(imported: tuple[Path, object]) -> None:
    _, s = imported
    assert (s.rows, s.users, s.videos, s.requests, s.impressions) == (45, 5, 11, 18, 45)
    assert s.random_impressions == 14 and (s.random_joined, s.random_unmatched) == (4, 10)
    assert s.videos_with_unknown_duration == 1  # video 107: duration_ms 0 and no features
    assert any("candidate sets" in x for x in s.lacks) and any("comment text" in x for x in s.lacks)
    assert "1/100" in s.propensity_rule and "4 joined, 10 with no feed near" in s.request_rule
    # loops: video 106 (5 s) played 15, 6 and 12 s, video 101 (10.5 s by features) played 13 s
    assert s.plays_above_duration == 4 and s.clipped_watch_times == 0
    assert s.hourmin_resolution_min == 60 and s.times_from_date_hourmin == 0  # every hourmin is hh00
    assert s.comment_stay_time_median_nonzero == 6000.0  # 8000 and 4000


def test_requests_sessions_and_positions_by_hand(imported: tuple[Path, object]) -> None:
    out, _ = imported
    with LogStore.open(out) as store:
        rows = store.query("""
            SELECT r.request_id, r.user_id, r.session_id, r.ts, list(i.video_id ORDER BY i.position) AS videos,
                   list(i.is_random ORDER BY i.position) AS rand
            FROM requests r JOIN impressions i USING (request_id) GROUP BY ALL ORDER BY r.request_id""").to_pylist()
    got = [(r["user_id"], r["session_id"], r["videos"]) for r in rows]
    assert got == [
        (1, 1, [101, 102, 103, 109, 104, 105, 106]), (1, 1, [101]), (1, 1, [102, 103]), (1, 2, [104]),
        (2, 3, [107, 101, 110, 103]), (2, 3, [102]), (2, 3, [105]),
        (3, 4, [106, 108, 110, 111]), (3, 5, [109]),
        (4, 6, [101, 102, 103, 104, 105, 106]), (4, 6, [101, 102, 103, 104, 105, 106]), (4, 6, [101, 102]),
        (4, 6, [108]), (4, 6, [109]), (4, 6, [110]), (4, 6, [111]), (4, 6, [108]),
        (5, 7, [108, 109, 110, 111]),
    ]
    assert rows[0]["rand"] == [False, False, False, True, False, False, False]
    assert rows[4]["rand"] == [False, False, True, False] and rows[7]["rand"] == [False, False, True, True]
    assert [r["request_id"] for r in rows] == list(range(1, 19))
    # ts is the Beijing clock (time_ms 1649376000000 = 00:00 UTC = 08:00 Beijing, date 20220408 hourmin 800)
    assert [r["ts"].isoformat() for r in rows[:4]] == [
        "2022-04-08T08:00:00", "2022-04-08T08:00:50", "2022-04-08T08:01:05", "2022-04-08T10:00:00"]


def test_impression_fields_by_hand(imported: tuple[Path, object]) -> None:
    out, _ = imported
    with LogStore.open(out) as store:
        imp = store.df("impressions").set_index(["request_id", "position"])
        videos = store.df("videos").set_index("video_id")
        users = store.df("users").set_index("user_id")
    # user 1, request 1: play_time_ms 5000, 12000 (liked), 30000 (is_comment, comment_stay_time 8000)
    assert imp.loc[(1, 0), "watch_time_s"] == pytest.approx(5.0)
    assert bool(imp.loc[(1, 1), "liked"]) and not bool(imp.loc[(1, 0), "liked"])
    assert bool(imp.loc[(1, 2), "opened_comments"]) and bool(imp.loc[(1, 2), "wrote_comment"])
    assert imp.loc[(1, 2), "comment_watch_time_s"] == pytest.approx(8.0)
    assert imp.loc[(1, 2), "comment_stay_time_raw"] == 8000.0
    assert imp.loc[(1, 3), "time_ms"] == 1649376015000 and bool(imp.loc[(1, 3), "is_random"])
    # user 2, request 5: comment_stay_time 4000 without is_comment opens (but wrote nothing);
    # is_comment without stay time opens (writing happens in the comment panel)
    assert bool(imp.loc[(5, 1), "opened_comments"]) and imp.loc[(5, 1), "comment_watch_time_s"] == 4.0
    assert not bool(imp.loc[(5, 1), "wrote_comment"])
    assert bool(imp.loc[(5, 3), "opened_comments"]) and imp.loc[(5, 3), "comment_watch_time_s"] == 0.0
    assert int(imp["opened_comments"].sum()) == 3 and int(imp["liked"].sum()) == 4
    assert int(imp["wrote_comment"].sum()) == 2
    # propensity 1/100 exactly on the 14 random rows, null on standard traffic
    rand = imp[imp["is_random"]]
    assert len(rand) == 14 and (rand["propensity"] == 0.01).all()
    assert imp.loc[~imp["is_random"], "propensity"].isna().all()
    # loops kept as logged: video 106 lasts 5 s, played 15 s in request 1
    assert imp.loc[(1, 6), "watch_time_s"] == 15.0 and videos.loc[106, "duration_s"] == 5.0
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
    assert d.requests_per_user == pytest.approx(18 / 5)
    assert (d.slate_size_min, d.slate_size_max) == (1, 7)  # 6 standard rows + the random one inserted
    assert "propensities only on random traffic" in d.absent and "no candidate sets" in d.absent


def test_slate_size_and_no_pool(tmp_path: Path) -> None:
    s = import_kuairand(FIXTURE, tmp_path / "k.duckdb", fmt="duckdb", config=KuaiRandConfig(slate_size=3))
    # K = 3 splits standard rows only: user 1 minute 0: 3 + 3 + 1 (the random row at +15 s is 5 s from
    # the first chunk [0, 10 s] and 5 s from the second [20, 40 s]: the earlier wins); user 2 tab 1: 3;
    # user 4: 3+3+3+3+2; user 5's four random-only rows: 3 + 1
    assert s.requests == 18 + 1 + 2 + 1
    with LogStore.open(tmp_path / "k.duckdb") as store:
        assert store.query("SELECT count(propensity) FROM impressions").column(0)[0].as_py() == 0
        first = store.query("SELECT list(video_id ORDER BY position) FROM impressions WHERE request_id = 1")
        assert first.column(0)[0].as_py() == [101, 102, 103, 109]
        assert store.query("SELECT max(position) FROM impressions").column(0)[0].as_py() == 3


def _copy_fixture(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(FIXTURE, src)
    return src


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
    parts[3] = parts[4] = ""  # hourmin and time_ms empty on line 4: no time at all
    lines[3] = ",".join(parts)
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(KuaiRandFormatError, match=r"log_random_4_22_to_5_08_1k.csv line 4: time_ms is empty and "
                                                  r"there is no date/hourmin"):
        import_kuairand(src, tmp_path / "out")
    parts[3] = "975"  # 09:75 is no time of day
    lines[3] = ",".join(parts)
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(KuaiRandFormatError, match=r"line 4: hourmin is not a time of day"):
        import_kuairand(src, tmp_path / "out")
    with pytest.raises(ValueError, match="random_pool_size=3"):
        import_kuairand(FIXTURE, tmp_path / "out", config=KuaiRandConfig(random_pool_size=3))
    with pytest.raises(ValueError, match="slate_size"):
        KuaiRandConfig(slate_size=0)
    with pytest.raises(ValueError, match="random_join_window_s"):
        KuaiRandConfig(random_join_window_s=-1)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------
# KuaiRand-format folders built from the documented columns


def _row(user: int, video: int, beijing: str, *, rand: int = 0, tab: int = 1, play_ms: float = 5000,
         duration_ms: float = 10000, **extra: Any) -> dict[str, Any]:
    """One log row at a Beijing wall-clock time: time_ms = that instant, date/hourmin = the Beijing clock."""
    local = datetime.fromisoformat(beijing)
    time_ms = round((local - BEIJING - EPOCH).total_seconds() * 1000)
    row = {c: 0 for c in LOG_COLUMNS}
    row.update(user_id=user, video_id=video, date=local.strftime("%Y%m%d"), hourmin=local.hour * 100 + local.minute,
               time_ms=time_ms, play_time_ms=play_ms, duration_ms=duration_ms, is_rand=rand, tab=tab, is_click=1)
    row.update(extra)
    return row


def _write(folder: Path, standard: list[dict[str, Any]], random: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("log_standard_4_22_to_5_08_pure.csv", standard), ("log_random_4_22_to_5_08_pure.csv", random)):
        with (folder / name).open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(LOG_COLUMNS))
            w.writeheader()
            w.writerows(rows)
    return folder


def _requests(out: Path) -> list[dict[str, Any]]:
    with LogStore.open(out) as store:
        return store.query("""
            SELECT r.request_id, r.user_id, r.ts, list(i.video_id ORDER BY i.position) AS videos,
                   list(i.is_random ORDER BY i.position) AS rand
            FROM requests r JOIN impressions i USING (request_id) GROUP BY ALL ORDER BY r.request_id""").to_pylist()


def test_random_rows_land_in_the_request_of_the_feed_they_were_inserted_into(tmp_path: Path) -> None:
    d = "2022-04-25 "
    standard = [
        # feed A, tab 1: 12:00:00..12:00:31; its random slot at 12:00:14 (between the 2nd and 3rd rows)
        *[_row(7, v, d + t) for v, t in ((1, "12:00:00"), (2, "12:00:08"), (3, "12:00:20"), (4, "12:00:31"))],
        # feed B, tab 1: 12:05:00..12:05:30; a random row 40 s after its last row
        *[_row(7, v, d + t) for v, t in ((5, "12:05:00"), (6, "12:05:30"))],
        # at 13:00: tab 2 feed 13:00:00..13:00:10, tab 1 feed 13:00:40..13:00:50; a tab-1 random row at
        # 13:00:12 is 2 s from the tab-2 feed but belongs to the tab-1 one (28 s away)
        _row(7, 7, d + "13:00:00", tab=2), _row(7, 8, d + "13:00:10", tab=2),
        _row(7, 9, d + "13:00:40"), _row(7, 10, d + "13:00:50"),
        # another user's feed at 12:30:00: user 7's random row then must not join it
        _row(8, 1, d + "12:30:00"), _row(8, 2, d + "12:30:05"),
    ]
    random = [
        _row(7, 900, d + "12:00:14", rand=1), _row(7, 901, d + "12:06:10", rand=1),
        _row(7, 902, d + "13:00:12", rand=1),
        _row(7, 903, d + "12:30:02", rand=1),  # no feed of user 7 within 60 s: a random-only request
    ]
    src = _write(tmp_path / "src", standard, random)
    s = import_kuairand(src, tmp_path / "out", config=KuaiRandConfig(random_pool_size=7583))
    assert (s.random_impressions, s.random_joined, s.random_unmatched) == (4, 3, 1)
    assert s.hourmin_resolution_min == 1  # minute-level hourmin: times checked to the minute
    got = [(r["user_id"], r["ts"].isoformat(), r["videos"], r["rand"]) for r in _requests(tmp_path / "out")]
    assert got == [
        (7, "2022-04-25T12:00:00", [1, 2, 900, 3, 4], [False, False, True, False, False]),
        (7, "2022-04-25T12:05:00", [5, 6, 901], [False, False, True]),
        (7, "2022-04-25T12:30:02", [903], [True]),
        (7, "2022-04-25T13:00:00", [7, 8], [False, False]),
        (7, "2022-04-25T13:00:12", [902, 9, 10], [True, False, False]),  # ts: the random row came first
        (8, "2022-04-25T12:30:00", [1, 2], [False, False]),
    ]
    with LogStore.open(tmp_path / "out") as store:
        prop = store.query("SELECT DISTINCT propensity FROM impressions WHERE is_random").column(0).to_pylist()
    assert prop == [1 / 7583]
    # window 0: only rows inside a feed's span join (900); the others keep random-only requests
    s0 = import_kuairand(src, tmp_path / "w0", config=KuaiRandConfig(random_join_window_s=0))
    assert (s0.random_joined, s0.random_unmatched) == (1, 3)
    # the random file alone (no standard file of those days): every random row is unmatched, none dropped
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(src / "log_random_4_22_to_5_08_pure.csv", alone)
    sa = import_kuairand(alone, tmp_path / "alone_out")
    assert (sa.rows, sa.random_joined, sa.random_unmatched, sa.impressions) == (4, 0, 4, 4)


def test_beijing_dates_round_trip(tmp_path: Path) -> None:
    # across Beijing midnight (16:00 UTC): the rows keep KuaiRand's Beijing date and hourmin in ts
    stamps = ["2022-04-25 23:59:30", "2022-04-26 00:00:30", "2022-04-26 00:59:59", "2022-04-26 08:07:45"]
    rows = [_row(3, i + 1, t) for i, t in enumerate(stamps)]
    assert (rows[1]["date"], rows[1]["hourmin"], rows[1]["time_ms"]) == ("20220426", 0, 1650902430000)
    src = _write(tmp_path / "src", rows, [])
    s = import_kuairand(src, tmp_path / "out", config=KuaiRandConfig(session_gap_min=600))
    assert "Beijing" in s.time_rule
    with LogStore.open(tmp_path / "out") as store:
        req = store.query("SELECT ts FROM requests ORDER BY request_id").column(0).to_pylist()
        imp = store.query("SELECT time_ms FROM impressions ORDER BY request_id, position").column(0).to_pylist()
    assert [t.isoformat(sep=" ") for t in req] == stamps  # one request per minute here
    for ts, row in zip(req, rows, strict=True):
        assert (ts.strftime("%Y%m%d"), ts.hour * 100 + ts.minute) == (row["date"], row["hourmin"])
    assert imp == [r["time_ms"] for r in rows]
    # a row without time_ms takes its date/hourmin on the Beijing clock (start of the minute)
    rows[3]["time_ms"] = ""
    src = _write(tmp_path / "src2", rows, [])
    s = import_kuairand(src, tmp_path / "out2")
    assert s.times_from_date_hourmin == 1
    with LogStore.open(tmp_path / "out2") as store:
        last = store.query("SELECT max(ts) FROM requests").column(0)[0].as_py()
    assert last.isoformat(sep=" ") == "2022-04-26 08:07:00"


def test_date_hourmin_that_disagree_with_time_ms_fail(tmp_path: Path) -> None:
    rows = [_row(3, 1, "2022-04-26 00:00:30"), _row(3, 2, "2022-04-26 10:15:00")]
    rows[1].update(date="20220426", hourmin=215)  # written on the UTC clock: 8 h behind Beijing
    src = _write(tmp_path / "src", rows, [])
    with pytest.raises(KuaiRandFormatError, match=r"log_standard_4_22_to_5_08_pure.csv line 3: time_ms 1650939300000 "
                                                  r"is 2022-04-26 10:15:00 Beijing time \(2022-04-26 02:15:00 UTC\) "
                                                  r"but date/hourmin say 20220426 0215.*\+8.00 h apart"):
        import_kuairand(src, tmp_path / "out")
    rows[1].update(hourmin=1014)  # one minute off at minute resolution: still an error
    _write(tmp_path / "src", rows, [])
    with pytest.raises(KuaiRandFormatError, match=r"\+0.02 h apart.*agree to the minute"):
        import_kuairand(src, tmp_path / "out")
    rows[1].update(hourmin=1015)
    _write(tmp_path / "src", rows, [])
    import_kuairand(src, tmp_path / "out")


def test_play_time_above_the_duration_is_kept_as_is(tmp_path: Path) -> None:
    # a 3 s video looped for 45 s (15x: above the old 10x cap) and a 10 s one for 12.5 s
    rows = [_row(1, 1, "2022-04-25 09:00:00", play_ms=45000, duration_ms=3000),
            _row(1, 2, "2022-04-25 09:00:45", play_ms=12500, duration_ms=10000),
            _row(1, 3, "2022-04-25 09:00:58", play_ms=4000, duration_ms=10000)]
    src = _write(tmp_path / "src", rows, [])
    s = import_kuairand(src, tmp_path / "out")  # no clip flag needed; write_logs validated it
    assert (s.plays_above_duration, s.clipped_watch_times) == (2, 0)
    with LogStore.open(tmp_path / "out") as store:  # validated again on open
        w = store.query("SELECT watch_time_s FROM impressions ORDER BY position").column(0).to_pylist()
        assert store.validation().ok
    assert w == [45.0, 12.5, 4.0]
    s = import_kuairand(src, tmp_path / "clip", config=KuaiRandConfig(clip_watch_time=True))  # optional cap
    assert s.clipped_watch_times == 1
    with LogStore.open(tmp_path / "clip") as store:
        w = store.query("SELECT watch_time_s FROM impressions ORDER BY position").column(0).to_pylist()
    assert w == [30.0, 12.5, 4.0]


def test_uncertain_semantics_are_documented(tmp_path: Path) -> None:
    from harness.logs import kuairand

    doc = kuairand.__doc__ or ""
    arch = " ".join((ROOT / "docs" / "architecture.md").read_text().split())
    for text in (doc, arch):
        flat = " ".join(text.split())
        assert "wrote a comment" in flat and "is_comment" in flat
        assert "comment_stay_time" in flat and "not documented" in flat
        assert "Beijing" in flat and "UTC+8" in flat
        assert "loop" in flat
    assert "harness logs import-kuairand" in arch
    lacks = " ".join(kuairand.LACKS)
    assert "is_comment means the user wrote a comment" in lacks and "unit for comment_stay_time" in lacks
    r = CliRunner().invoke(app, ["logs", "import-kuairand", str(FIXTURE), str(tmp_path / "out")])
    assert r.exit_code == 0, r.output  # the CLI prints the caveats with what the format lacks
    flat = " ".join(r.output.split())
    assert "wrote a comment" in flat and "unit for comment_stay_time" in flat
