"""harness.replay.parts: the window split by user batch gives each batch exactly the rows a filtered read of
the whole log gives (window arrays and the models' histories), is reused when complete, is never trusted
half-built, and a temporary one is removed."""

from __future__ import annotations

import shutil
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from harness.logs.store import LogStore
from harness.logs.window import experiment_start
from harness.replay import batches as B
from harness.replay.data import ReplayDataError, load_window, window_users
from harness.replay.parts import WindowParts
from harness.simulate.config import WorldConfig
from harness.simulate.generate import simulate
from models.catalogue import Catalogue
from models.histories import event_log_from_tables

WORLD = WorldConfig(users=120, videos=300, days=4, seed=5)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path, _ = simulate(WORLD, tmp_path_factory.mktemp("parts") / "w", progress=False)
    s = LogStore.open(path)
    yield s
    s.close()


def _window(store, end_day: int | None = None):
    start = experiment_start(store)
    end = None if end_day is None else start + np.timedelta64(end_day * 86400 // 2, "s")
    users = window_users(store, start, end)
    return start, end, users, B.batch_of(users, 4)


def _same(a, b, where: str) -> None:
    for f in fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, dict):
            assert x.keys() == y.keys(), where
            for k in x:
                np.testing.assert_array_equal(x[k], y[k], err_msg=f"{where}: {f.name}[{k}]")
        elif isinstance(x, np.ndarray) or x is None:
            np.testing.assert_array_equal(x, y, err_msg=f"{where}: {f.name}")
        else:
            assert x == y, f"{where}: {f.name}"


@pytest.mark.parametrize("end_day", [None, 1])
def test_each_batch_reads_what_a_filtered_read_of_the_whole_log_reads(store, tmp_path, end_day) -> None:
    start, end, users, batch = _window(store, end_day)
    parts = WindowParts.ensure(store, start, end, users, batch, folder=tmp_path, fingerprint=store.fingerprint())
    cat = Catalogue.from_tables(store.table("videos"), store.table("comments"))
    full = event_log_from_tables(cat, store.tables())
    seen = 0
    for b in range(4):
        mine = users[batch == b]
        with parts.source(b) as src:
            got = load_window(src, start, end, users=mine)
            _same(got, load_window(store, start, end, users=mine), f"batch {b}")
            log = event_log_from_tables(cat, {**src.tables(), "videos": store.table("videos")})
        seen += len(np.unique(got.user_id))
        rows_full, rows_batch = full.user_rows(mine), log.user_rows(mine)
        cut = np.inf if end is None else end.astype("datetime64[us]").astype(np.int64) / 1e6
        known = rows_full >= 0
        a = full.histories(rows_full[known], before=np.full(known.sum(), cut))  # what the batch's log holds
        empty = ((a.video_ids == 0).all(1) & (a.comment_video_ids == 0).all(1)).numpy()
        assert ((rows_batch[known] >= 0) == ~empty).all()  # only events at or after the end are left out
        assert (rows_batch[~known] < 0).all()
        h = log.histories(rows_batch[known][~empty])
        for name in ("video_ids", "video_time", "comment_video_ids", "comment_ids", "comment_time"):
            x = getattr(a, name).numpy()[~empty]
            x = x[:, :getattr(h, name).shape[1]]  # L is the longest history of the rows packed
            np.testing.assert_array_equal(x, getattr(h, name).numpy(), err_msg=f"batch {b}: {name}")
    assert seen == len(users)


def test_a_complete_partition_is_reused_and_a_half_built_one_ignored(store, tmp_path, monkeypatch) -> None:
    start, end, users, batch = _window(store)
    fp = store.fingerprint()
    first = WindowParts.ensure(store, start, end, users, batch, folder=tmp_path, fingerprint=fp)
    (tmp_path / f".{first.root.name}.tmp-dead").mkdir()  # what a killed build leaves: never read
    monkeypatch.setattr(WindowParts, "_build", classmethod(lambda *a, **k: pytest.fail("rebuilt")))
    again = WindowParts.ensure(store, start, end, users, batch, folder=tmp_path, fingerprint=fp)
    assert again == first and again.rows["candidates"] > 0
    with pytest.raises(pytest.fail.Exception):  # another batching is another partition
        WindowParts.ensure(store, start, end, users, B.batch_of(users, 3), folder=tmp_path, fingerprint=fp)


def test_a_partition_without_its_manifest_is_rebuilt(store, tmp_path) -> None:
    start, end, users, batch = _window(store)
    first = WindowParts.ensure(store, start, end, users, batch, folder=tmp_path, fingerprint=store.fingerprint())
    (first.root / "manifest.json").unlink()  # the manifest is written last: without it the folder is incomplete
    shutil.rmtree(first.root / "candidates")
    again = WindowParts.ensure(store, start, end, users, batch, folder=tmp_path, fingerprint=store.fingerprint())
    assert again.rows == first.rows and (again.root / "candidates").exists()


def test_a_temporary_partition_is_removed(store) -> None:
    start, end, users, batch = _window(store)
    parts = WindowParts.ensure(store, start, end, users, batch, folder=None, fingerprint=store.fingerprint())
    top = Path(parts.root).parent
    assert parts.owned and top.exists()
    parts.discard()
    assert not top.exists()


def test_a_partition_a_worker_cannot_see_is_a_clear_error(store, tmp_path) -> None:
    """A Ray worker on another node given a temporary (driver-local) partition: the message says what to do."""
    start, end, users, batch = _window(store)
    parts = WindowParts.ensure(store, start, end, users, batch, folder=tmp_path, fingerprint=store.fingerprint())
    elsewhere = WindowParts(tmp_path / "not-mounted-here", parts.n_batches, parts.rows, parts.bytes)
    with pytest.raises(ReplayDataError, match="not readable at .*not-mounted-here.*shared storage"):
        elsewhere.source(0)
