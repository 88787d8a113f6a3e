"""harness.replay.data.load_window against the same logs read directly (pandas over the Parquet files) on a
small simulated world: window bounds, request order, slates, propensities, rewards, candidates and comment
impressions; and the errors for an empty window and for logs without propensities."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from harness.logs.store import LogStore, write_logs
from harness.logs.window import experiment_start
from harness.replay.data import ReplayData, ReplayDataError, load_window
from harness.simulate.config import WorldConfig
from harness.simulate.generate import simulate

WORLD = WorldConfig(users=120, videos=300, days=4, seed=3)  # ~2,800 requests, ~1 s to simulate


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    path, _ = simulate(WORLD, tmp_path_factory.mktemp("replay_data") / "w")
    return path


@pytest.fixture(scope="module")
def raw(world) -> dict[str, pd.DataFrame]:
    """The logs read straight from their Parquet files (no LogStore)."""
    return {t: pd.read_parquet(world / f"{t}.parquet")
            for t in ("requests", "impressions", "candidates", "comment_impressions")}


@pytest.fixture(scope="module")
def store(world):
    s = LogStore.open(world)
    yield s
    s.close()


def to_us(ts: pd.Series) -> np.ndarray:
    return ts.to_numpy("datetime64[us]").astype(np.int64)


def window_requests(raw, start: np.datetime64, end: np.datetime64 | None) -> pd.DataFrame:
    req = raw["requests"].copy()
    req["ts_us"] = to_us(req["ts"])
    keep = req["ts_us"] >= start.astype("datetime64[us]").astype(np.int64)
    if end is not None:
        keep &= req["ts_us"] < end.astype("datetime64[us]").astype(np.int64)
    return req[keep].sort_values(["user_id", "ts_us", "request_id"]).reset_index(drop=True)


def check_against_raw(d: ReplayData, raw, start, end) -> None:
    """Every array of `d` against a direct reading of the same rows."""
    req = window_requests(raw, start, end)
    R = len(req)
    assert R > 0 and d.n_requests == R
    np.testing.assert_array_equal(d.request_id, req["request_id"])
    np.testing.assert_array_equal(d.user_id, req["user_id"])
    np.testing.assert_array_equal(d.ts_us, req["ts_us"])
    np.testing.assert_allclose(d.seconds(), req["ts_us"] / 1e6)
    row_of = dict(zip(req["request_id"].tolist(), range(R), strict=True))

    # slates: one impressions row per (request, slot)
    imp = raw["impressions"][raw["impressions"]["request_id"].isin(row_of)]
    k = int(imp["position"].max()) + 1
    assert d.k == k == WORLD.slate_size and len(imp) == R * k
    r_idx = imp["request_id"].map(row_of).to_numpy()
    pos = imp["position"].to_numpy()
    np.testing.assert_array_equal(d.video[r_idx, pos], imp["video_id"])
    np.testing.assert_array_equal(d.pscore[r_idx, pos], imp["propensity"])
    assert d.slot_pscore is not None
    np.testing.assert_array_equal(d.slot_pscore[r_idx, pos], imp["slot_propensity"])
    np.testing.assert_array_equal(d.is_random[r_idx, pos], imp["is_random"])
    np.testing.assert_array_equal(d.rewards["watch_time_s"][r_idx, pos], imp["watch_time_s"])
    np.testing.assert_array_equal(d.rewards["video_interactions"][r_idx, pos], imp["liked"].astype(float))
    np.testing.assert_array_equal(d.rewards["comment_watch_time_s"][r_idx, pos], imp["comment_watch_time_s"])
    np.testing.assert_array_equal(d.examined[r_idx, pos], imp["watch_time_s"] > 0)
    assert d.is_random.dtype == bool and d.video.dtype == np.int64

    # comment impressions: liked + replied summed over each section, placed at the section's slot
    ci = raw["comment_impressions"][raw["comment_impressions"]["request_id"].isin(row_of)].copy()
    ci["inter"] = ci["liked"].astype(float) + ci["replied"].astype(float)
    per_section = ci.groupby(["request_id", "video_id"])["inter"].sum()
    want = np.zeros((R, k))
    slot_of = {(a, b): c for a, b, c in zip(imp["request_id"], imp["video_id"], imp["position"], strict=True)}
    for (rid, vid), s in per_section.items():
        want[row_of[rid], slot_of[(rid, vid)]] += s
    np.testing.assert_array_equal(d.rewards["comment_interactions"], want)
    assert want.sum() > 0  # the world has comment likes or replies in the window
    assert set(d.rewards) == {"watch_time_s", "video_interactions", "comment_watch_time_s", "comment_interactions"}

    # each comment impression row points at its request row and the slot of its video
    assert len(d.c_row) == len(d.c_slot) == len(d.c_comment) == len(ci)
    got = pd.DataFrame({
        "request_id": d.request_id[d.c_row], "video_id": d.video[d.c_row, d.c_slot],
        "slot": d.c_slot, "comment_id": d.c_comment, "position": d.c_position, "propensity": d.c_pscore,
        "dwell_s": d.c_rewards["comment_watch_time_s"], "inter": d.c_rewards["comment_interactions"]})
    ref = ci.assign(slot=[slot_of[(a, b)] for a, b in zip(ci["request_id"], ci["video_id"], strict=True)])
    cols = ["request_id", "video_id", "slot", "comment_id", "position", "propensity", "dwell_s", "inter"]
    key = ["request_id", "video_id", "position", "comment_id"]
    pd.testing.assert_frame_equal(got[cols].sort_values(key).reset_index(drop=True),
                                  ref[cols].sort_values(key).reset_index(drop=True), check_dtype=False)

    # candidates: the request's candidate ids ascending, logging scores aligned with them
    cand = raw["candidates"][raw["candidates"]["request_id"].isin(row_of)]
    n = WORLD.candidates
    assert d.candidates.shape == (R, n) and d.logging_score is not None and d.logging_score.shape == (R, n)
    for rid, g in cand.groupby("request_id"):
        g = g.sort_values("video_id")
        np.testing.assert_array_equal(d.candidates[row_of[rid]], g["video_id"])
        np.testing.assert_array_equal(d.logging_score[row_of[rid]], g["logging_score"])
    # the logged non-random videos are candidates, the random-exposure ones (slot mode) are not
    in_cands = (d.video[:, :, None] == d.candidates[:, None, :]).any(axis=2)
    np.testing.assert_array_equal(in_cands, ~d.is_random)

    # users: contiguous rows, in time order within each user
    users, bounds = d.user_bounds()
    np.testing.assert_array_equal(users, np.sort(req["user_id"].unique()))
    sizes = req.groupby("user_id").size().sort_index().to_numpy()
    np.testing.assert_array_equal(np.diff(bounds), sizes)
    for u, a, b in zip(users, bounds[:-1], bounds[1:], strict=True):
        assert np.all(d.user_id[a:b] == u) and np.all(np.diff(d.ts_us[a:b]) >= 0)


def test_window_from_experiment_start_matches_the_logs(store, raw):
    start = experiment_start(store)
    assert start is not None
    d = load_window(store, start)
    check_against_raw(d, raw, start, None)
    assert d.window_start == start and d.window_end is None
    all_ts = to_us(raw["requests"]["ts"])
    assert 0 < d.n_requests < len(all_ts)  # the pre-period is left out
    assert d.is_random.any() and (d.rewards["comment_watch_time_s"] > 0).any()


def test_window_bounds_are_half_open_at_request_times(store, raw):
    """start and end placed exactly on request times: the request at start is in, the one at end is out."""
    ts = np.sort(to_us(raw["requests"]["ts"]))
    start = np.datetime64(int(ts[len(ts) // 2]), "us")
    end = np.datetime64(int(ts[3 * len(ts) // 4]), "us")
    d = load_window(store, start, end)
    check_against_raw(d, raw, start, end)
    assert d.ts_us.min() == ts[len(ts) // 2] and d.ts_us.max() < ts[3 * len(ts) // 4]
    assert d.n_requests == int(((ts >= ts[len(ts) // 2]) & (ts < ts[3 * len(ts) // 4])).sum())
    assert d.window_end == end


def test_empty_window_names_the_logs_time_range(store, raw):
    ts = raw["requests"]["ts"]
    first, last = np.datetime64(ts.min(), "us"), np.datetime64(ts.max(), "us")
    with pytest.raises(ReplayDataError, match="no request") as e:
        load_window(store, last + np.timedelta64(1, "us"))
    assert str(first) in str(e.value) and str(last) in str(e.value)
    with pytest.raises(ReplayDataError, match="no request"):  # an empty [start, end)
        load_window(store, first + np.timedelta64(1, "D"), first + np.timedelta64(1, "D"))


def rewrite(store: LogStore, out: Path, **edits) -> LogStore:
    """A copy of the logs with some tables replaced, the world's extra files kept."""
    tables = store.all_tables()
    tables.update(edits)
    extra = {name: store.extra_file(name) for name in store.extra_file_names}
    write_logs(tables, out, extra_files=extra)
    return LogStore.open(out)


def null_at(table: pa.Table, column: str, mask: np.ndarray) -> pa.Table:
    col = table.column(column)
    arr = pc.if_else(pa.array(mask), pa.nulls(len(mask), col.type), col)
    return table.set_column(table.schema.get_field_index(column), table.schema.field(column), arr)


def test_null_propensity_in_the_window_is_refused(store, tmp_path):
    start = experiment_start(store)
    imp = store.table("impressions")
    req = store.df("requests")
    in_window = set(req.loc[req["ts"] >= pd.Timestamp(start), "request_id"].tolist())
    rid = imp.column("request_id").to_numpy()
    pos = imp.column("position").to_numpy()
    target = min(in_window)
    mask = (rid == target) & (pos == 2)
    assert mask.sum() == 1
    bad = rewrite(store, tmp_path / "nullprop", impressions=null_at(imp, "propensity", mask))
    try:
        with pytest.raises(ReplayDataError, match=rf"impressions\.propensity is null \(first: request {target}, "
                                                  r"position 2\)"):
            load_window(bad, start)
    finally:
        bad.close()


def test_null_comment_propensity_in_the_window_is_refused(store, tmp_path):
    start = experiment_start(store)
    ci = store.table("comment_impressions")
    req = store.df("requests")
    in_window = req.loc[req["ts"] >= pd.Timestamp(start), "request_id"].to_numpy()
    mask = np.zeros(ci.num_rows, dtype=bool)
    mask[np.flatnonzero(np.isin(ci.column("request_id").to_numpy(), in_window))[0]] = True
    bad = rewrite(store, tmp_path / "nullcprop", comment_impressions=null_at(ci, "propensity", mask))
    try:
        with pytest.raises(ReplayDataError, match=r"comment_impressions\.propensity is null"):
            load_window(bad, start)
    finally:
        bad.close()


def test_null_propensity_before_the_window_is_not_read(store, tmp_path):
    start = experiment_start(store)
    imp = store.table("impressions")
    req = store.df("requests")
    before = set(req.loc[req["ts"] < pd.Timestamp(start), "request_id"].tolist())
    mask = np.isin(imp.column("request_id").to_numpy(), list(before))
    assert 0 < mask.sum() < len(mask)
    logs = rewrite(store, tmp_path / "nullpre", impressions=null_at(imp, "propensity", mask))
    try:
        d = load_window(logs, start)
        np.testing.assert_array_equal(d.pscore, load_window(store, start).pscore)
    finally:
        logs.close()


def test_logs_without_the_worlds_extra_columns(store, tmp_path):
    """No slot_propensity or logging_score columns: those fields are None, the rest is unchanged."""
    start = experiment_start(store)
    imp = store.table("impressions")
    cand = store.table("candidates")
    logs = rewrite(store, tmp_path / "plain", impressions=imp.drop_columns(["slot_propensity"]),
                   candidates=cand.drop_columns(["logging_score"]))
    try:
        d = load_window(logs, start)
        full = load_window(store, start)
        assert d.slot_pscore is None and d.logging_score is None
        np.testing.assert_array_equal(d.pscore, full.pscore)
        np.testing.assert_array_equal(d.candidates, full.candidates)
        np.testing.assert_array_equal(d.video, full.video)
    finally:
        logs.close()


def test_world_config_records_the_experiment_start(world, store):
    """The window start used above is the world's own (pre_days after the first day)."""
    meta = json.loads((world / "world" / "config.json").read_text())
    assert np.datetime64(meta["experiment_start"], "us") == experiment_start(store)
