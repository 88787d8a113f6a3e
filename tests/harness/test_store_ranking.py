"""`ranking_metrics` v5: protocol, slice and n_queries stored and read back; older rows read as leave-one-out
over all queries, before and after a version-4 file is migrated."""

from __future__ import annotations

import duckdb
import pytest

from harness.store import SCHEMA_VERSION, InvalidResultsError, ResultsStore

RUN = dict(kind="evaluate", control=None, treatment=None, config={"models": ["base"]}, seed=0,
           data_fingerprint="f" * 64)


def row(**kw) -> dict:
    return {"model": "base", "task": "video", "split": "test", "metric": "ndcg@10", "value": 0.5, "seed": 0, **kw}


@pytest.fixture
def store(tmp_path):
    return ResultsStore(tmp_path / "r.duckdb")


def test_protocol_slice_round_trip_and_defaults(store) -> None:
    run_id = store.create_run(**RUN)
    store.write_results(run_id, ranking_metrics=[
        row(),  # a caller that predates the protocol: leave-one-out over all queries
        row(protocol="temporal", slice="cold", value=0.25, n_queries=12),
        row(protocol="temporal", slice="warm", value=0.75, n_queries=30),
    ])
    got = store.ranking_metrics(run_id).sort_values("value")
    assert got[["protocol", "slice", "value"]].values.tolist() == [
        ["temporal", "cold", 0.25], ["leave-one-out", "all", 0.5], ["temporal", "warm", 0.75]]
    assert got["n_queries"].tolist()[0] == 12 and got["n_queries"].isna().tolist()[1]
    assert store.schema_version() == SCHEMA_VERSION == 6


def test_unknown_field_still_refused(store) -> None:
    run_id = store.create_run(**RUN)
    with pytest.raises(InvalidResultsError, match=r"unknown field\(s\) \['protocl'\]"):
        store.write_results(run_id, ranking_metrics=[row(protocl="temporal")])


def test_version_4_file_read_then_migrated(store) -> None:
    run_id = store.create_run(**RUN)
    store.write_results(run_id, ranking_metrics=[row()])
    with duckdb.connect(str(store.path)) as con:  # the file as version 4 wrote it
        for c in ("protocol", "slice", "n_queries"):
            con.execute(f'ALTER TABLE ranking_metrics DROP COLUMN "{c}"')
        con.execute("UPDATE schema_version SET version = 4")
    old = store.ranking_metrics(run_id)
    assert store.schema_version() == 4
    assert old[["protocol", "slice"]].values.tolist() == [["leave-one-out", "all"]]
    assert store.ranking_metrics()[["run_id", "protocol"]].values.tolist() == [[run_id, "leave-one-out"]]
    other = store.create_run(**{**RUN, "seed": 1})  # the first write migrates the file in place
    store.write_results(other, ranking_metrics=[row(protocol="temporal", slice="cold", n_queries=3)])
    assert store.schema_version() == SCHEMA_VERSION
    both = store.ranking_metrics().sort_values("seed")
    assert both[["protocol", "slice"]].values.tolist() == [["leave-one-out", "all"], ["temporal", "cold"]]
