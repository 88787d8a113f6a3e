"""The replay's tables in the results store (schema v3): replay_estimates and replay_lifts.

Round trip (values, NULLs, booleans, order), validation before writing, one transaction with the run,
replace and delete, and the in-place migration of version-2 and version-1 files.
"""

from __future__ import annotations

import json
import math

import duckdb
import numpy as np
import pandas as pd
import pytest

from harness.store import (
    SCHEMA_VERSION,
    InvalidResultsError,
    ResultsStore,
    SchemaVersionError,
    UnknownRunError,
)
from harness.store.results import ResultsStore as _Store
from harness.store.schema import REPLAY_ESTIMATES, REPLAY_LIFTS

RUN = dict(kind="replay", control="base", treatment="lsvcr", config={"estimators": ["rips", "dm"]}, seed=11,
           data_fingerprint="c" * 64)


def estimates() -> pd.DataFrame:
    """Written out of order on purpose: the reader orders by arm, metric, estimator."""
    return pd.DataFrame([
        {"arm": "lsvcr", "metric": "watch_time_s", "estimator": "rips", "is_default": True, "value": 12.5,
         "se": 0.25, "n_units": 4000, "n_requests": 52000, "ess": 3100.5, "max_weight_share": 0.002,
         "clipped_share": 0.01, "true_value": 12.4, "true_se": 0.0, "weight_cap": 50.0},
        {"arm": "lsvcr", "metric": "watch_time_s", "estimator": "dm", "is_default": False, "value": 12.1,
         "se": 0.2, "n_units": 4000, "n_requests": 52000, "ess": None, "max_weight_share": None,
         "clipped_share": None, "true_value": 12.4, "true_se": 0.0, "weight_cap": 0.0},
        {"arm": "base", "metric": "watch_time_s", "estimator": "rips", "is_default": True, "value": 11.75,
         "se": 0.125, "n_units": 4000, "n_requests": 52000, "ess": 3900.0, "max_weight_share": 0.001,
         "clipped_share": 0.0, "true_value": None, "true_se": None, "weight_cap": 50.0},
    ])


def lifts() -> list[dict]:
    return [
        {"control": "base", "treatment": "lsvcr", "metric": "watch_time_s", "estimator": "rips", "is_default": True,
         "control_value": 11.75, "treatment_value": 12.5, "abs_diff": 0.75, "abs_ci_low": 0.25, "abs_ci_high": 1.25,
         "rel_diff": 0.0638, "rel_ci_low": 0.02, "rel_ci_high": 0.11, "p_value": 0.003, "n_units": 4000,
         "true_control": 11.8, "true_treatment": 12.4, "true_abs_diff": 0.6, "true_rel_diff": 0.0508,
         "covers_abs": True, "covers_rel": True},
        # covers_* left out: derived from the true lift and the interval (0.6 outside [0.7, 0.9]; rel undefined)
        {"control": "base", "treatment": "lsvcr", "metric": "watch_time_s", "estimator": "dm", "is_default": False,
         "control_value": 11.5, "treatment_value": 12.3, "abs_diff": 0.8, "abs_ci_low": 0.7, "abs_ci_high": 0.9,
         "rel_diff": None, "rel_ci_low": None, "rel_ci_high": None, "p_value": 1e-9, "n_units": 4000,
         "true_control": 11.8, "true_treatment": 12.4, "true_abs_diff": 0.6, "true_rel_diff": 0.0508,
         "bootstrap": {"n": 200}},
        # real logs: no oracle, so no true values and no coverage
        {"control": "base", "treatment": "lsvcr", "metric": "comment_clicks", "estimator": "rips",
         "is_default": True, "control_value": 0.5, "treatment_value": 0.5, "abs_diff": 0.0, "abs_ci_low": -0.1,
         "abs_ci_high": 0.1, "rel_diff": 0.0, "rel_ci_low": -0.2, "rel_ci_high": 0.2, "p_value": 1.0,
         "n_units": 3999},
    ]


@pytest.fixture()
def store(tmp_path):
    return ResultsStore(tmp_path / "results.duckdb", lock_timeout_s=5)


def _count(store: ResultsStore, table: str, run_id: str | None = None) -> int:
    with duckdb.connect(str(store.path), read_only=True) as con:
        if run_id is None:
            return int(con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])
        return int(con.execute(f"SELECT count(*) FROM {table} WHERE run_id = ?", [run_id]).fetchall()[0][0])


def test_round_trip_values_nulls_booleans_and_order(store):
    run_id = store.write_run(**RUN, run_id="rep-1", lifts=[{"metric": "watch_time_s", "abs_diff": 0.75}],
                             replay_estimates=estimates(), replay_lifts=lifts(), summary={"n_users": 4000})
    assert store.run(run_id)["status"] == "complete" and len(store.lifts(run_id)) == 1

    est = store.replay_estimates(run_id)
    assert list(est.columns) == REPLAY_ESTIMATES.column_names[1:]
    assert est[["arm", "metric", "estimator"]].values.tolist() == [
        ["base", "watch_time_s", "rips"], ["lsvcr", "watch_time_s", "dm"], ["lsvcr", "watch_time_s", "rips"]]
    assert est["is_default"].tolist() == [True, False, True]
    assert est["value"].tolist() == [11.75, 12.1, 12.5] and est["se"].tolist() == [0.125, 0.2, 0.25]
    assert est["n_units"].tolist() == [4000] * 3 and est["n_requests"].tolist() == [52000] * 3
    assert est["ess"].iloc[2] == 3100.5 and est["true_value"].iloc[1:].tolist() == [12.4, 12.4]
    assert est["true_se"].iloc[1:].tolist() == [0.0, 0.0]  # exact oracle: 0, not NULL
    assert json.loads(est["extra"].iloc[0]) == {"weight_cap": 50.0}
    assert json.loads(est["extra"].iloc[1]) == {"weight_cap": 0.0}

    got = store.replay_lifts(run_id)
    assert list(got.columns) == REPLAY_LIFTS.column_names[1:]
    assert got[["treatment", "metric", "estimator", "is_default"]].values.tolist() == [
        ["lsvcr", "comment_clicks", "rips", True], ["lsvcr", "watch_time_s", "dm", False],
        ["lsvcr", "watch_time_s", "rips", True]]
    by_est = {(r["metric"], r["estimator"]): r for r in lifts()}
    for _, row in got.iterrows():
        want = by_est[(row["metric"], row["estimator"])]
        for name in ("control", "control_value", "treatment_value", "abs_diff", "abs_ci_low", "abs_ci_high",
                     "rel_diff", "p_value", "n_units", "true_abs_diff"):
            if want.get(name) is None:
                assert pd.isna(row[name]), name
            else:
                assert row[name] == want[name], name
    assert got["covers_abs"].tolist()[1:] == [False, True]  # dm derived: 0.6 outside [0.7, 0.9]
    assert got["covers_rel"].isna().tolist() == [True, True, False] and got["covers_rel"].iloc[2]
    assert json.loads(got["extra"].iloc[1]) == {"bootstrap": {"n": 200}} and pd.isna(got["extra"].iloc[0])

    # NULLs are SQL NULL in the file (not NaN), booleans are BOOLEAN
    with duckdb.connect(str(store.path), read_only=True) as con:
        nulls = con.execute(
            "SELECT estimator, ess IS NULL, clipped_share IS NULL, true_value IS NULL, true_se IS NULL "
            "FROM replay_estimates WHERE run_id = ? ORDER BY arm, estimator", [run_id]).fetchall()
        assert nulls == [("rips", False, False, True, True), ("dm", True, True, False, False),
                         ("rips", False, False, False, False)]
        no_oracle = con.execute(
            "SELECT true_control IS NULL, true_abs_diff IS NULL, covers_abs IS NULL, covers_rel IS NULL, "
            "rel_diff IS NULL FROM replay_lifts WHERE run_id = ? AND metric = 'comment_clicks'", [run_id]).fetchall()
        assert no_oracle == [(True, True, True, True, False)]
        dm = con.execute("SELECT covers_abs, covers_rel, rel_diff IS NULL FROM replay_lifts "
                         "WHERE run_id = ? AND estimator = 'dm'", [run_id]).fetchall()
        assert dm == [(False, None, True)]  # no relative interval: coverage unknown
        types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns "
                                 "WHERE table_name = 'replay_lifts'").fetchall())
        assert types["covers_abs"] == "BOOLEAN" and types["n_units"] == "BIGINT" and types["is_default"] == "BOOLEAN"


def test_inputs_as_frames_or_lists_and_write_results(store):
    run_id = store.create_run(**RUN)
    store.write_results(run_id, replay_estimates=estimates().to_dict("records"),
                        replay_lifts=pd.DataFrame(lifts()), status="running")
    assert len(store.replay_estimates(run_id)) == 3 and len(store.replay_lifts(run_id)) == 3
    store.write_results(run_id, replay_lifts=lifts()[:1])  # rewriting one table replaces its rows, keeps the other
    assert len(store.replay_lifts(run_id)) == 1 and len(store.replay_estimates(run_id)) == 3
    store.write_results(run_id, replay_estimates=estimates())  # same keys deleted and re-inserted in one transaction
    assert len(store.replay_estimates(run_id)) == 3


def test_other_runs_have_empty_replay_tables_and_unknown_run_raises(store):
    run_id = store.write_run(**{**RUN, "kind": "analyze"}, lifts=[{"metric": "m", "abs_diff": 1.0}])
    est, lif = store.replay_estimates(run_id), store.replay_lifts(run_id)
    assert est.empty and list(est.columns) == REPLAY_ESTIMATES.column_names[1:]
    assert lif.empty and list(lif.columns) == REPLAY_LIFTS.column_names[1:]
    for read in (store.replay_estimates, store.replay_lifts):
        with pytest.raises(UnknownRunError, match="no run 'nope'.*harness runs list"):
            read("nope")
    with pytest.raises(UnknownRunError):
        ResultsStore(store.path.parent / "absent.duckdb").replay_lifts("x")


def _drop(frame: pd.DataFrame, *cols: str) -> pd.DataFrame:
    return frame.drop(columns=list(cols))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"replay_lifts": _drop(pd.DataFrame(lifts()), "control", "is_default")},
         "replay_lifts: missing required column(s) ['control', 'is_default']"),
        ({"replay_estimates": _drop(estimates(), "estimator")},
         "replay_estimates: missing required column(s) ['estimator']"),
        ({"replay_estimates": [{"arm": "base", "metric": "m", "value": 1.0}]},
         "replay_estimates row 0: required field(s) ['estimator', 'is_default'] missing or empty"),
        ({"replay_lifts": [{**lifts()[0], "treatment": " "}]}, "required field(s) ['treatment'] missing or empty"),
        ({"replay_estimates": [{**estimates().iloc[0].to_dict(), "is_default": "yes"}]}, "must be true or false"),
        ({"replay_estimates": [{**estimates().iloc[0].to_dict(), "n_units": 2.5}]}, "'n_units' must be an integer"),
        ({"replay_lifts": [{**lifts()[0], "abs_ci_low": "low"}]}, "field 'abs_ci_low' must be a number"),
        ({"replay_lifts": [lifts()[0], lifts()[0]]},
         "replay_lifts: rows 0 and 1 both have {'treatment': 'lsvcr', 'metric': 'watch_time_s', 'estimator': 'rips'}"),
        ({"replay_estimates": [estimates().iloc[0].to_dict(), {**estimates().iloc[1].to_dict(), "is_default": True}]},
         "estimators 'rips' and 'dm' are both is_default for {'arm': 'lsvcr', 'metric': 'watch_time_s'}"),
        ({"replay_lifts": {"control": "base"}}, "expected a DataFrame or a list of rows"),
    ],
)
def test_bad_replay_rows_write_no_run(store, kwargs, message):
    kwargs = dict(kwargs)
    with pytest.raises(InvalidResultsError) as err:
        store.write_run(**RUN, run_id="rep-bad", replay_estimates=kwargs.pop("replay_estimates", estimates()),
                        lifts=[{"metric": "m", "abs_diff": 1.0}], **kwargs)
    assert message in str(err.value)
    assert store.runs().empty


def test_failure_inside_the_transaction_leaves_no_run_and_no_rows(store, monkeypatch):
    other = store.write_run(**RUN, run_id="rep-0", replay_estimates=estimates(), replay_lifts=lifts())
    real = _Store._replace_rows

    def failing(self, con, rid, table, rows):  # runs, lifts and replay_estimates are in; then replay_lifts raises
        if table.name == "replay_lifts":
            raise RuntimeError("injected failure")
        return real(self, con, rid, table, rows)

    monkeypatch.setattr(_Store, "_replace_rows", failing)
    with pytest.raises(RuntimeError, match="injected failure"):
        store.write_run(**RUN, run_id="rep-1", lifts=[{"metric": "m", "abs_diff": 1.0}],
                        replay_estimates=estimates(), replay_lifts=lifts())
    assert store.runs()["run_id"].tolist() == [other]
    for table in ("lifts", "replay_estimates", "replay_lifts"):
        assert _count(store, table, "rep-1") == 0, table
    assert _count(store, "replay_estimates") == 3 and _count(store, "replay_lifts") == 3
    with pytest.raises(RuntimeError, match="injected failure"):  # replacing: the old rows survive the failure
        store.write_run(**RUN, run_id=other, replace=True, replay_estimates=estimates().iloc[:1], replay_lifts=[])
    assert len(store.replay_estimates(other)) == 3 and len(store.replay_lifts(other)) == 3


def test_replace_and_delete_remove_replay_rows(store):
    keep = store.write_run(**RUN, run_id="rep-keep", replay_estimates=estimates(), replay_lifts=lifts())
    run_id = store.write_run(**RUN, run_id="rep-1", replay_estimates=estimates(), replay_lifts=lifts())
    store.write_run(**{**RUN, "seed": 12}, run_id=run_id, replace=True,
                    replay_estimates=estimates().iloc[:1])  # no replay_lifts this time
    assert store.run(run_id)["seed"] == 12
    assert store.replay_estimates(run_id)["estimator"].tolist() == ["rips"]
    assert store.replay_lifts(run_id).empty
    store.create_run(**RUN, run_id=run_id, replace=True)
    assert store.replay_estimates(run_id).empty
    store.write_results(run_id, replay_estimates=estimates(), replay_lifts=lifts())
    store.delete_run(run_id)
    assert _count(store, "replay_estimates", run_id) == 0 and _count(store, "replay_lifts", run_id) == 0
    with pytest.raises(UnknownRunError):
        store.replay_estimates(run_id)
    assert len(store.replay_estimates(keep)) == 3 and len(store.replay_lifts(keep)) == 3  # other runs untouched


def _as_version_2(store: ResultsStore) -> None:
    """Turn a fresh file into what version 2 wrote: no replay tables, version 2."""
    with duckdb.connect(str(store.path)) as con:
        con.execute("DROP TABLE replay_estimates")
        con.execute("DROP TABLE replay_lifts")
        con.execute("UPDATE schema_version SET version = 2")


def test_version_2_database_is_read_and_migrated_on_write(store):
    old = store.write_run(**{**RUN, "kind": "analyze"}, run_id="ana-old", lifts=[{"metric": "m", "abs_diff": 1.0}],
                          daily_lifts=[{"metric": "m", "treatment": "lsvcr", "day": "d1", "look": 1, "abs_diff": 1.0}])
    _as_version_2(store)
    assert store.schema_version() == 2
    assert store.replay_estimates(old).empty and store.replay_lifts(old).empty  # readable before any write
    assert store.lifts(old)["abs_diff"].tolist() == [1.0] and len(store.daily_lifts(old)) == 1
    with duckdb.connect(str(store.path), read_only=True) as con:  # reading did not migrate
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert "replay_estimates" not in tables

    run_id = store.write_run(**RUN, replay_estimates=estimates(), replay_lifts=lifts())
    assert store.schema_version() == SCHEMA_VERSION == 6
    assert len(store.replay_estimates(run_id)) == 3 and len(store.replay_lifts(run_id)) == 3
    assert store.lifts(old)["abs_diff"].tolist() == [1.0] and len(store.daily_lifts(old)) == 1
    assert store.runs()["run_id"].tolist() == [old, run_id]
    with duckdb.connect(str(store.path)) as con, pytest.raises(duckdb.ConstraintException):
        con.execute(  # the primary keys came with the tables
            "INSERT INTO replay_lifts (run_id, control, treatment, metric, estimator, is_default) "
            "SELECT run_id, control, treatment, metric, estimator, is_default FROM replay_lifts LIMIT 1")


def test_version_1_database_is_migrated_on_write(store):
    run_id = store.create_run(**RUN)
    _as_version_2(store)
    with duckdb.connect(str(store.path)) as con:  # and on to what version 1 wrote
        con.execute("DROP TABLE daily_lifts")
        for c in ("bayes_prior", "bayes_chance_to_win", "cuped_theta"):
            con.execute(f"ALTER TABLE lifts DROP COLUMN {c}")
        con.execute("ALTER TABLE lifts ALTER COLUMN abs_diff SET NOT NULL")
        con.execute("UPDATE schema_version SET version = 1")
    assert store.schema_version() == 1 and store.replay_lifts(run_id).empty and store.daily_lifts(run_id).empty
    store.write_results(run_id, replay_estimates=estimates(), replay_lifts=lifts(),
                        lifts=[{"metric": "m", "abs_diff": None, "bayes_chance_to_win": 0.5}])
    assert store.schema_version() == SCHEMA_VERSION
    assert store.replay_lifts(run_id)["estimator"].tolist() == ["rips", "dm", "rips"]
    assert len(store.replay_estimates(run_id)) == 3
    got = store.lifts(run_id)
    assert pd.isna(got["abs_diff"].iloc[0]) and got["bayes_chance_to_win"].tolist() == [0.5]


def test_newer_than_known_is_refused(store):
    store.create_run(**RUN)
    with duckdb.connect(str(store.path)) as con:
        con.execute(f"UPDATE schema_version SET version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SchemaVersionError, match=f"version {SCHEMA_VERSION + 1}.*knows versions up to "
                       f"{SCHEMA_VERSION}; upgrade the harness"):
        store.replay_estimates("x")
    with pytest.raises(SchemaVersionError):
        store.write_run(**RUN, replay_estimates=estimates())


def test_nan_and_numpy_values_are_accepted(store):
    frame = estimates()
    frame["n_units"] = frame["n_units"].astype(np.int64)
    frame.loc[0, "se"] = math.nan  # NaN counts as missing: stored as NULL
    run_id = store.write_run(**RUN, replay_estimates=frame)
    with duckdb.connect(str(store.path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM replay_estimates WHERE se IS NULL").fetchall()[0][0] == 1
    assert store.replay_estimates(run_id)["n_units"].dtype.kind == "i"
