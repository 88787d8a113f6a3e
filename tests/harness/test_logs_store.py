"""The log store: round trips, byte-identical Parquet, fingerprints, atomic writes, read API."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

import harness.logs.store as store_mod
from harness.logs import LogStore, import_logs, write_logs
from harness.logs.schema import TABLE_ORDER, TABLES
from tests.harness.logs_fixtures import WATCH, valid_tables


def _rows(df: pd.DataFrame) -> list[tuple[Any, ...]]:
    """Rows as plain Python values with None for any kind of null (dtype-independent comparison)."""
    out = []
    for rec in df.astype(object).itertuples(index=False):
        out.append(tuple(None if (v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)))
                         else (v.item() if hasattr(v, "item") else v) for v in rec))
    return out


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("logs")
    t = valid_tables()
    t["impressions"]["debug_score"] = [float(i) for i in range(12)]  # an extra column is kept
    return {
        "parquet": write_logs(t, root / "pq", extra_files={"world.json": b'{"seed": 7}'}),
        "duckdb": write_logs(t, root / "db.duckdb", fmt="duckdb", extra_files={"world.json": b'{"seed": 7}'}),
    }


@pytest.mark.parametrize("fmt", ["parquet", "duckdb"])
def test_round_trip_keeps_content_types_and_extras(written: dict[str, Path], fmt: str) -> None:
    src = valid_tables()
    with LogStore.open(written[fmt]) as store:
        assert store.format == fmt
        assert store.counts() == {"users": 3, "videos": 6, "comments": 4, "requests": 6, "impressions": 12,
                                  "candidates": 18, "comment_impressions": 4}
        for name in TABLE_ORDER:
            table = store.table(name)
            spec = TABLES[name]
            assert table.schema.names[: len(spec.columns)] == spec.column_names
            for col in spec.columns:
                assert table.schema.field(col.name).type == col.type
            got = store.df(name, columns=spec.column_names)
            assert _rows(got) == _rows(src[name]), name
        assert store.table("impressions").column_names[-1] == "debug_score"
        assert store.table("impressions", ["watch_time_s"]).column(0).to_pylist() == WATCH
        assert store.extra_file_names == ("world.json",)
        assert store.extra_file("world.json") == b'{"seed": 7}'


def test_fingerprint_same_across_formats_and_row_order(written: dict[str, Path], tmp_path: Path) -> None:
    with LogStore.open(written["parquet"]) as a, LogStore.open(written["duckdb"]) as b:
        fp = a.fingerprint()
        assert len(fp) == 64 and fp == b.fingerprint()
    t = valid_tables()
    t["impressions"]["debug_score"] = [float(i) for i in range(12)]
    shuffled = {k: v.sample(frac=1.0, random_state=3).reset_index(drop=True) for k, v in t.items()}
    with LogStore.open(write_logs(shuffled, tmp_path / "shuffled")) as s:
        assert s.fingerprint() == fp
    t["impressions"].loc[0, "watch_time_s"] = 5.5
    with LogStore.open(write_logs(t, tmp_path / "changed")) as s:
        assert s.fingerprint() != fp
    t = valid_tables()
    t["impressions"]["debug_score"] = [float(i) for i in range(12)]
    t["videos"].loc[0, "title"] = None  # a null differs from any value
    with LogStore.open(write_logs(t, tmp_path / "nulled")) as s:
        assert s.fingerprint() != fp


def test_fingerprint_does_not_depend_on_batching(written: dict[str, Path],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with LogStore.open(written["duckdb"]) as s:
        fp = s.fingerprint()
    monkeypatch.setattr(store_mod, "FINGERPRINT_BATCH_ROWS", 5)  # 12 impressions -> batches 5, 5, 2
    with LogStore.open(written["duckdb"]) as s:
        assert s.fingerprint() == fp


def test_parquet_is_byte_identical_for_identical_input(tmp_path: Path) -> None:
    a = write_logs(valid_tables(), tmp_path / "a")
    # same data as Arrow tables split into several chunks must give the same bytes too
    chunked = {k: pa.concat_tables([pa.Table.from_pandas(v.iloc[:2], preserve_index=False),
                                    pa.Table.from_pandas(v.iloc[2:], preserve_index=False)])
               for k, v in valid_tables().items()}
    b = write_logs(chunked, tmp_path / "b")
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(f"{n}.parquet" for n in TABLE_ORDER)
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    # parquet -> duckdb -> parquet gives the same bytes again
    db = import_logs(a, tmp_path / "c.duckdb", "duckdb")
    c = import_logs(db, tmp_path / "c", "parquet")
    for name in names:
        assert (a / name).read_bytes() == (c / name).read_bytes(), name


def test_absent_optional_tables_are_written_empty(tmp_path: Path) -> None:
    t = valid_tables()
    for name in ("comments", "candidates", "comment_impressions"):
        del t[name]
    for fmt, out in (("parquet", tmp_path / "p"), ("duckdb", tmp_path / "d.duckdb")):
        with LogStore.open(write_logs(t, out, fmt=fmt)) as store:
            assert store.counts()["comment_impressions"] == 0
            assert store.table("candidates").schema.names == ["request_id", "video_id"]
            assert set(store.present) == set(TABLE_ORDER)


def test_missing_tables_in_foreign_folder_are_empty_views(tmp_path: Path) -> None:
    out = write_logs(valid_tables(), tmp_path / "p")
    (out / "candidates.parquet").unlink()
    with LogStore.open(out) as store:
        assert "candidates" not in store.present
        assert store.counts()["candidates"] == 0
        assert store.table("candidates").schema.field("video_id").type == pa.int64()


def test_query_and_params(written: dict[str, Path]) -> None:
    with LogStore.open(written["parquet"]) as store:
        n = store.query("SELECT count(*) AS n FROM impressions WHERE watch_time_s > ?", [10]).column(0)
        assert n.to_pylist() == [sum(w > 10 for w in WATCH)]
        per_user = store.query("SELECT user_id, count(*) AS n FROM requests GROUP BY 1 ORDER BY 1")
        assert per_user.to_pydict() == {"user_id": [1, 2, 3], "n": [3, 2, 1]}


def test_tables_reads_the_model_tables_by_default(written: dict[str, Path]) -> None:
    with LogStore.open(written["parquet"]) as store:
        got = store.tables()
        assert tuple(got) == store_mod.MODEL_TABLES
        assert all(got[n].equals(store.table(n)) for n in got)
        assert tuple(store.all_tables()) == TABLE_ORDER


def test_two_readers_share_a_duckdb_file(written: dict[str, Path]) -> None:
    with LogStore.open(written["duckdb"]) as a, LogStore.open(written["duckdb"]) as b:
        assert a.counts() == b.counts()


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    out = write_logs(valid_tables(), tmp_path / "p")
    with LogStore.open(out) as s:
        before = s.fingerprint()
    t = valid_tables()
    t["impressions"].loc[0, "watch_time_s"] = 6.0
    with pytest.raises(FileExistsError, match="overwrite"):
        write_logs(t, out)
    with LogStore.open(out) as s:
        assert s.fingerprint() == before
    write_logs(t, out, overwrite=True)
    with LogStore.open(out) as s:
        assert s.fingerprint() != before
        assert s.table("impressions", ["watch_time_s"]).column(0)[0].as_py() == 6.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]


@pytest.mark.parametrize("fmt", ["parquet", "duckdb"])
def test_failure_mid_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    out = tmp_path / ("p" if fmt == "parquet" else "d.duckdb")
    calls = {"n": 0}
    real_pq, real_db = store_mod.pq.write_table, store_mod._write_duckdb_file

    def failing_pq(*args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        real_pq(*args, **kwargs)

    def failing_db(tables: Any, path: Path, extra: Any) -> None:
        real_db(tables, path, extra)
        raise OSError("disk full")

    monkeypatch.setattr(store_mod.pq, "write_table", failing_pq)
    monkeypatch.setattr(store_mod, "_write_duckdb_file", failing_db)
    with pytest.raises(OSError, match="disk full"):
        write_logs(valid_tables(), out, fmt=fmt)
    assert list(tmp_path.iterdir()) == []
    # with overwrite, the old logs survive a failed replacement
    monkeypatch.setattr(store_mod.pq, "write_table", real_pq)
    monkeypatch.setattr(store_mod, "_write_duckdb_file", real_db)
    write_logs(valid_tables(), out, fmt=fmt)
    with LogStore.open(out) as s:
        before = s.fingerprint()
    calls["n"] = 0
    monkeypatch.setattr(store_mod.pq, "write_table", failing_pq)
    monkeypatch.setattr(store_mod, "_write_duckdb_file", failing_db)
    t = valid_tables()
    t["impressions"].loc[0, "watch_time_s"] = 6.0
    with pytest.raises(OSError, match="disk full"):
        write_logs(t, out, fmt=fmt, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == [out.name]
    with LogStore.open(out) as s:
        assert s.fingerprint() == before


def test_bad_paths_and_names(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no logs at"):
        LogStore.open(tmp_path / "nope")
    (tmp_path / "junk.duckdb").write_bytes(b"not a database")
    with pytest.raises(ValueError, match="not a readable DuckDB log file"):
        LogStore.open(tmp_path / "junk.duckdb")
    with pytest.raises(ValueError, match="relative path"):
        write_logs(valid_tables(), tmp_path / "x", extra_files={"../evil": b""})
    with pytest.raises(ValueError, match="fmt"):
        write_logs(valid_tables(), tmp_path / "x", fmt="csv")  # type: ignore[arg-type]
    with LogStore.open(write_logs(valid_tables(), tmp_path / "ok")) as s, pytest.raises(KeyError):
        s.table("impresions")
    assert not (tmp_path / "x").exists()


def test_duckdb_works_under_a_memory_limit_and_spills_to_a_folder_removed_on_close(tmp_path, monkeypatch) -> None:
    """The whole-log checks run under $HARNESS_DUCKDB_MEMORY (default 1GB), so their hash tables and sorts
    spill instead of growing with the logs; a limit far below what a sort needs still gives its result."""
    out = write_logs(valid_tables(), tmp_path / "logs")
    monkeypatch.setenv(store_mod.MEMORY_ENV, "64MB")
    with LogStore.open(out) as s:
        limit, spill = s.con.sql("SELECT current_setting('memory_limit'), current_setting('temp_directory')").fetchall()[0]
        assert limit == "61.0 MiB" and Path(spill).is_dir()
        big = s.query("SELECT i AS k, random() AS x FROM range(4000000) t(i) ORDER BY x")  # ~64 MB to sort
        assert big.num_rows == 4_000_000
    assert not Path(spill).exists()
    monkeypatch.delenv(store_mod.MEMORY_ENV)
    assert store_mod.duckdb_memory_limit() == "1GB"
    monkeypatch.setenv(store_mod.MEMORY_ENV, "lots")
    with pytest.raises(store_mod.LogFileError, match="HARNESS_DUCKDB_MEMORY = 'lots' is not a memory size"):
        LogStore.open(out)
