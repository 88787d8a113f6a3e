"""Every validation check: one mutation of the valid fixture, the message, and nothing written."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.logs import LogStore, LogValidationError, import_logs, validate, write_logs
from tests.harness.logs_fixtures import valid_tables

Tables = dict[str, pd.DataFrame]


def _set(table: str, col: str, rows: list[int], values: list[Any]) -> Callable[[Tables], None]:
    def mutate(t: Tables) -> None:
        df = t[table]
        if df[col].dtype != object and any(isinstance(v, str) for v in values):
            df[col] = df[col].astype(object)
        for r, v in zip(rows, values, strict=True):
            df.loc[r, col] = v
    return mutate


def _drop_table(name: str) -> Callable[[Tables], None]:
    def mutate(t: Tables) -> None:
        del t[name]
    return mutate


def _drop_col(table: str, col: str) -> Callable[[Tables], None]:
    return lambda t: t.__setitem__(table, t[table].drop(columns=[col]))


def _astype(table: str, col: str, dtype: Any) -> Callable[[Tables], None]:
    return lambda t: t[table].__setitem__(col, t[table][col].astype(dtype))


def _null_request_id(t: Tables) -> None:
    t["requests"]["request_id"] = pd.array([1, None, 3, 4, 5, 6], dtype="Int64")


def _ts_back(t: Tables) -> None:
    t["requests"].loc[2, "ts"] = pd.Timestamp("2023-12-31 23:00")  # request 3 of user 1 before 1 and 2


def _watch_in_ms(t: Tables) -> None:
    t["impressions"]["watch_time_s"] = t["impressions"]["watch_time_s"] * 1000


def _rename(t: Tables) -> None:
    t["impresions"] = t.pop("impressions")


@dataclass(frozen=True)
class Case:
    id: str
    mutate: Callable[[Tables], None]
    check: str
    table: str
    column: str | None
    count: int
    first: dict[str, Any] | None
    text: tuple[str, ...] = ()


CASES = [
    Case("missing_table", _drop_table("users"), "missing_table", "users", None, 0, None, ("required table",)),
    Case("unknown_table", _rename, "unknown_table", "impresions", None, 0, None, ("unknown table",)),
    Case("missing_column", _drop_col("impressions", "liked"), "missing_column", "impressions", "liked", 0,
         None, ("column is missing",)),
    Case("wrong_type_str_for_int", _astype("impressions", "position", str), "wrong_type", "impressions",
         "position", 0, None, ("cannot be stored as int32",)),
    Case("wrong_type_overflow", _set("impressions", "position", [0], [2**40]), "wrong_type", "impressions",
         "position", 0, None, ("not in range",)),
    Case("wrong_type_str_for_float", _astype("videos", "duration_s", str), "wrong_type", "videos",
         "duration_s", 0, None, ("cannot be stored as double",)),
    Case("null", _set("videos", "duration_s", [2, 4], [None, None]), "null", "videos", "duration_s", 2,
         {"video_id": 12}),
    Case("null_key", _null_request_id, "null", "requests", "request_id", 1, {"request_id": None}),
    Case("duplicate_key", _set("impressions", "position", [1], [0]), "duplicate_key", "impressions",
         "request_id,position", 2, {"request_id": 1, "position": 0}, ("1 duplicated key",)),
    Case("duplicate_video", _set("videos", "video_id", [1], [10]), "duplicate_key", "videos", "video_id", 2,
         {"video_id": 10}),
    Case("negative_duration", _set("videos", "duration_s", [1], [-20.0]), "negative", "videos", "duration_s",
         1, {"video_id": 11, "duration_s": -20.0}),
    Case("negative_watch", _set("impressions", "watch_time_s", [3, 7], [-1.0, -2.0]), "negative",
         "impressions", "watch_time_s", 2, {"request_id": 2, "position": 1, "watch_time_s": -1.0}),
    Case("infinite_watch", _set("impressions", "watch_time_s", [0], [float("inf")]), "negative",
         "impressions", "watch_time_s", 1, {"request_id": 1, "position": 0}),
    Case("negative_comment_watch", _set("impressions", "comment_watch_time_s", [5], [-3.0]), "negative",
         "impressions", "comment_watch_time_s", 1, {"request_id": 3, "position": 1}),
    Case("negative_dwell", _set("comment_impressions", "dwell_s", [2], [-1.0]), "negative",
         "comment_impressions", "dwell_s", 1, {"request_id": 3, "video_id": 14, "comment_id": 103}),
    # watch time in milliseconds: the median watch / duration is in the hundreds; 11 of 12 rows (one
    # watched 0) are above 10x, the first is request 1 slot 0 (5000 on video 10 of 10 s)
    Case("watch_time_in_ms", _watch_in_ms, "watch_time_units", "impressions", "watch_time_s", 11,
         {"request_id": 1, "position": 0, "watch_time_s": 5000.0, "duration_s": 10.0},
         ("median watch / duration", "milliseconds")),
    Case("propensity", _set("impressions", "propensity", [0, 3, 4], [0.0, 1.5, 1.0]), "propensity_range",
         "impressions", "propensity", 2, {"request_id": 1, "position": 0, "propensity": 0.0}),
    Case("unknown_user", _set("requests", "user_id", [5], [99]), "unknown_reference", "requests", "user_id", 1,
         {"request_id": 6, "user_id": 99}, ("not in users",)),
    Case("impression_unknown_request", _set("impressions", "request_id", [10, 11], [77, 77]),
         "unknown_reference", "impressions", "request_id", 2, {"request_id": 77, "position": 0}),
    Case("impression_unknown_video", _set("impressions", "video_id", [2], [99]), "unknown_reference",
         "impressions", "video_id", 1, {"request_id": 2, "position": 0, "video_id": 99}),
    Case("candidate_unknown_request", _set("candidates", "request_id", [0], [50]), "unknown_reference",
         "candidates", "request_id", 1, {"request_id": 50, "video_id": 10}),
    Case("candidate_unknown_video", _set("candidates", "video_id", [17], [98]), "unknown_reference",
         "candidates", "video_id", 1, {"request_id": 6, "video_id": 98}),
    Case("comment_imp_unknown_request", _set("comment_impressions", "request_id", [3], [42]),
         "unknown_reference", "comment_impressions", "request_id", 1,
         {"request_id": 42, "video_id": 14, "comment_id": 103}),
    Case("comment_imp_unknown_video", _set("comment_impressions", "video_id", [0], [99]), "unknown_reference",
         "comment_impressions", "video_id", 1, {"request_id": 1, "video_id": 99, "comment_id": 100}),
    Case("comment_imp_unknown_comment", _set("comment_impressions", "comment_id", [1], [555]),
         "unknown_reference", "comment_impressions", "comment_id", 1,
         {"request_id": 1, "video_id": 10, "comment_id": 555}),
    Case("comment_unknown_video", _set("comments", "video_id", [3], [97]), "unknown_reference", "comments",
         "video_id", 1, {"comment_id": 103, "video_id": 97}),
    Case("comment_video_mismatch", _set("comment_impressions", "comment_id", [1], [102]),
         "comment_video_mismatch", "comment_impressions", "comment_id", 1,
         {"request_id": 1, "video_id": 10, "comment_id": 102, "comment_video_id": 12}),
    Case("comment_not_shown", _set("comment_impressions", "request_id", [0], [2]), "comment_not_shown",
         "comment_impressions", "video_id", 1, {"request_id": 2, "video_id": 10, "comment_id": 100}),
    Case("ts_order", _ts_back, "ts_order", "requests", "ts", 1,
         {"user_id": 1, "request_id": 3, "prev_request_id": 2, "ts": "2023-12-31T23:00:00"}),
    Case("negative_position", _set("impressions", "position", [1], [-1]), "negative_position", "impressions",
         "position", 1, {"request_id": 1, "position": -1}),
    Case("negative_comment_position", _set("comment_impressions", "position", [1], [-2]), "negative_position",
         "comment_impressions", "position", 1, {"request_id": 1, "video_id": 10, "comment_id": 101}),
]


def _find(issues: list, case: Case):
    found = [i for i in issues if (i.check, i.table, i.column) == (case.check, case.table, case.column)]
    assert len(found) == 1, f"expected one {case.check} on {case.table}.{case.column}, got {issues}"
    return found[0]


def _check_issue(issue, case: Case) -> None:
    assert issue.count == case.count
    where = f"{case.table}.{case.column}" if case.column else case.table
    assert issue.message.startswith(where)
    assert "Fix:" in issue.message
    if case.first is None:
        assert issue.first_row is None
    else:
        assert issue.first_row is not None
        assert {k: issue.first_row[k] for k in case.first} == case.first
        for k, v in case.first.items():  # the message names the first offending row
            assert (f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}") in issue.message
        assert f"{case.count} row(s)" in issue.message
    for text in case.text:
        assert text in issue.message


def test_valid_fixture_has_no_issues() -> None:
    report = validate(valid_tables())
    assert report.ok, report.format()
    assert report.counts == {"users": 3, "videos": 6, "comments": 4, "requests": 6, "impressions": 12,
                             "candidates": 18, "comment_impressions": 4}


def test_optional_tables_may_be_absent_and_types_may_widen() -> None:
    t = valid_tables()
    for name in ("comments", "candidates", "comment_impressions"):
        del t[name]
    t["requests"]["user_id"] = t["requests"]["user_id"].astype("int32")
    t["impressions"]["watch_time_s"] = t["impressions"]["watch_time_s"].astype("float32")
    t["impressions"]["position"] = t["impressions"]["position"].astype("int64")
    report = validate(t)
    assert report.ok, report.format()
    assert report.counts["comments"] == 0


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_each_check_reports_and_write_writes_nothing(case: Case, tmp_path: Path) -> None:
    t = valid_tables()
    case.mutate(t)
    out = tmp_path / "logs"
    with pytest.raises(LogValidationError) as ei:
        write_logs(t, out)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary leftovers either
    issue = _find(ei.value.report.issues, case)
    _check_issue(issue, case)
    assert issue.message in str(ei.value)  # the exception lists every issue
    assert "nothing was written" in str(ei.value)


def test_loops_above_the_duration_are_valid() -> None:
    """Loops: any single watch above the duration passes (video 15 lasts 5 s, video 11 lasts 20 s)."""
    t = valid_tables()
    _set("impressions", "watch_time_s", [5, 1, 9], [51.0, 200.0, 20_000.0])(t)
    report = validate(t)
    assert report.ok, report.format()


def test_all_errors_are_collected() -> None:
    t = valid_tables()
    for case in (CASES[10], CASES[16], CASES[28]):  # negative duration, propensity, ts order
        case.mutate(t)
    checks = {i.check for i in validate(t).issues}
    assert {"negative", "propensity_range", "ts_order"} <= checks


STORE_CASES = [c for c in CASES if c.id in {
    "null", "duplicate_key", "watch_time_in_ms", "impression_unknown_video", "ts_order",
    "wrong_type_str_for_float"}]


def _write_raw(tables: Tables, folder: Path) -> None:
    """Parquet files written directly (bypassing write_logs), as a foreign producer might."""
    folder.mkdir()
    for name, df in tables.items():
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), folder / f"{name}.parquet")


@pytest.mark.parametrize("case", STORE_CASES, ids=[c.id for c in STORE_CASES])
def test_stored_logs_are_validated_on_open_and_import(case: Case, tmp_path: Path) -> None:
    t = valid_tables()
    case.mutate(t)
    src = tmp_path / "bad"
    _write_raw(t, src)
    with pytest.raises(LogValidationError) as ei:
        LogStore.open(src)
    _check_issue(_find(ei.value.report.issues, case), case)
    with LogStore.open(src, validate=False) as store:  # inspection without validation still works
        assert not store.validation().ok
    out = tmp_path / "out.duckdb"
    with pytest.raises(LogValidationError):
        import_logs(src, out, "duckdb")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]


def test_missing_required_table_file_is_reported(tmp_path: Path) -> None:
    t = valid_tables()
    del t["impressions"]
    _write_raw(t, tmp_path / "logs")
    with pytest.raises(LogValidationError, match=r"impressions: required table is missing"):
        LogStore.open(tmp_path / "logs")
