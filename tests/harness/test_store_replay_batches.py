"""Schema v4: a replay's batches (stored with their units in one transaction, for resuming) and its test plan."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from harness.store import InvalidResultsError, ResultsStore, RunExistsError
from harness.store.schema import REPLAY_BATCHES, SCHEMA_VERSION

RUN = dict(kind="replay", control="base", treatment="lsvcr", config={"x": 1}, seed=3, data_fingerprint="d" * 64)


def stats(value: float) -> list[dict]:
    common = dict(users=2, requests=5, slot_rows=30, sum_total=value, sum_total_sq=value**2, sum_n_total=3 * value,
                  sum_n_sq=13.0)
    return [{"arm": "base", "metric": "watch_time_s", "estimator": "rips", **common, "w_sum": 30.0, "w_sq": 45.0,
             "w_max": 4.0, "w_raw_sum": 30.0, "w_removed": 0.0, "rare_mass": 0.1, "true_sum": 9.0, "true_var": 0.0},
            {"arm": "base", "metric": "watch_time_s", "estimator": "dm", **common}]


def units(ids: list[str], value: float) -> pd.DataFrame:
    return pd.DataFrame({"unit_id": ids, "arm": "base", "watch_time_s": value, "activity_level": "high"})


def test_batches_round_trip_and_overwrite(tmp_path):
    store = ResultsStore(tmp_path / "r.duckdb")
    rid = store.create_run(**RUN)
    store.append_replay_batch(rid, 0, units(["1", "2"], 1.0), stats(4.0))
    store.append_replay_batch(rid, 1, units(["3"], 2.0), stats(5.0))
    store.append_replay_batch(rid, 0, units(["1", "2"], 1.5), stats(6.0))  # a re-sent batch replaces itself
    assert store.replay_batch_ids(rid) == {0, 1}
    b = store.replay_batches(rid)
    assert len(b) == 4 and list(b["batch"]) == [0, 0, 1, 1]
    assert b.loc[(b["batch"] == 0) & (b["estimator"] == "rips"), "sum_total"].item() == 6.0
    assert b.loc[b["estimator"] == "dm", "w_sum"].isna().all()
    u = store.unit_metrics(rid)
    assert sorted(u["unit_id"]) == ["1", "2", "3"]  # never duplicated
    assert u.set_index("unit_id").loc["1", "watch_time_s"] == 1.5


def test_batch_is_atomic_and_validated(tmp_path):
    store = ResultsStore(tmp_path / "r.duckdb")
    rid = store.create_run(**RUN)
    bad = stats(1.0)
    del bad[0]["requests"]
    with pytest.raises(InvalidResultsError, match="requests"):
        store.append_replay_batch(rid, 0, units(["1"], 1.0), bad)
    assert store.replay_batch_ids(rid) == set() and store.unit_metrics(rid).empty
    store.write_results(rid)  # complete
    with pytest.raises(RunExistsError, match="complete"):
        store.append_replay_batch(rid, 1, units(["1"], 1.0), stats(1.0))


def test_test_plan_round_trip(tmp_path):
    store = ResultsStore(tmp_path / "r.duckdb")
    rid = store.create_run(**RUN)
    row = dict(treatment="lsvcr", metric="watch_time_s", estimator="cascade_dr", lift_abs=0.5, lift_rel=0.01,
               control_mean=50.0, sd=40.0, users_per_arm=100_000.0, alpha=0.05, power=0.8, users_per_day=1000.0,
               days=200.0, window_days=7.0, note="longer than the window")
    store.write_results(rid, test_plan=[{**row, "cuped": True, "rho": 0.6, "sd": 32.0},
                                        {**row, "cuped": False, "rho": None}])
    plan = store.test_plan(rid)
    assert list(plan["cuped"]) == [False, True]
    assert plan.loc[plan["cuped"], "sd"].item() == 32.0


def test_version_3_file_gains_the_tables(tmp_path):
    path = tmp_path / "old.duckdb"
    store = ResultsStore(path)
    rid = store.create_run(**RUN)
    with duckdb.connect(str(path)) as con:  # make it a version-3 file
        con.execute(f"DROP TABLE {REPLAY_BATCHES.name}")
        con.execute("DROP TABLE replay_test_plan")
        con.execute("DELETE FROM schema_version")
        con.execute("INSERT INTO schema_version VALUES (3, now())")
    assert store.replay_batches(rid).empty and store.test_plan(rid).empty  # readable before the migration
    store.append_replay_batch(rid, 0, units(["1"], 1.0), stats(1.0))
    assert store.schema_version() == SCHEMA_VERSION == 6
    assert store.replay_batch_ids(rid) == {0}
