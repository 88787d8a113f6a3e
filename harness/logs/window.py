"""Time windows over logs: the training period before a cut and the replayed period after it.

The replay's promise is that no model saw what it is scored on. One cut time `T` splits the logs:
training reads requests with `ts < T` (and their impressions, candidates and comment impressions), the
replay reads requests with `ts >= T`. Catalogue tables (`videos`, `comments`, `users`) are not cut: a
video uploaded after `T` is still in the catalogue, as a production catalogue holds items before
anyone engaged with them.

The synthetic world records its experiment start (`world/config.json`), the default cut; any other
logs need an explicit timestamp.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from harness.logs.store import LogStore

WORLD_CONFIG_FILE = "world/config.json"  # written by harness.simulate.world (kept in step by a test)
REQUEST_TABLES = ("requests", "impressions", "candidates", "comment_impressions")
WINDOW_KEYWORD = "experiment-start"


class WindowError(ValueError):
    """A cut time that cannot be used with these logs (the message says what to pass instead)."""


def experiment_start(store: LogStore) -> np.datetime64 | None:
    """The synthetic world's experiment start, None for logs that do not record one."""
    if WORLD_CONFIG_FILE not in store.extra_file_names:
        return None
    meta = json.loads(store.extra_file(WORLD_CONFIG_FILE))
    start = meta.get("experiment_start")
    return None if start is None else np.datetime64(start, "us")


def parse_cut(text: str, store: LogStore) -> np.datetime64:
    """`experiment-start` (the world's) or an ISO timestamp such as `2023-10-03` or `2023-10-03T12:00`."""
    if text == WINDOW_KEYWORD:
        start = experiment_start(store)
        if start is None:
            raise WindowError(f"{store.path} records no experiment start (only `harness simulate` logs do); pass "
                              "an ISO timestamp instead, e.g. --until 2023-10-03")
        return start
    try:
        return np.datetime64(datetime.fromisoformat(text), "us")
    except ValueError:
        raise WindowError(f"{text!r} is not a time: pass an ISO timestamp such as 2023-10-03 or 2023-10-03T12:00, "
                          f"or {WINDOW_KEYWORD!r} for the synthetic world's experiment start") from None


@dataclass(frozen=True)
class EventRange:
    """What a cut keeps: its bounds and the requests inside."""

    first: np.datetime64 | None
    last: np.datetime64 | None
    requests: int

    def to_dict(self) -> dict[str, str | int | None]:
        return {"first_request": None if self.first is None else str(self.first),
                "last_request": None if self.last is None else str(self.last), "requests": self.requests}


def _where(before: np.datetime64 | None, start: np.datetime64 | None) -> tuple[str, list]:
    conds, params = [], []
    if before is not None:
        conds.append("ts < ?")
        params.append(_py(before))
    if start is not None:
        conds.append("ts >= ?")
        params.append(_py(start))
    return (" AND ".join(conds) or "TRUE"), params


def _py(t: np.datetime64) -> datetime:
    return t.astype("datetime64[us]").item()


def event_range(store: LogStore, *, before: np.datetime64 | None = None,
                start: np.datetime64 | None = None) -> EventRange:
    """First and last request time and the request count in [start, before)."""
    where, params = _where(before, start)
    row = store.query(f"SELECT min(ts) AS first, max(ts) AS last, count(*) AS n FROM requests WHERE {where}",
                      params).to_pylist()[0]
    first, last, n = row["first"], row["last"], row["n"]
    return EventRange(None if first is None else np.datetime64(first, "us"),
                      None if last is None else np.datetime64(last, "us"), int(n))


def cut_tables(store: LogStore, names: tuple[str, ...], *, before: np.datetime64 | None = None,
               start: np.datetime64 | None = None) -> dict[str, pa.Table]:
    """The tables `names` with request-level tables limited to requests in [start, before)."""
    where, params = _where(before, start)
    out = {}
    for name in names:
        table = store.table(name)
        if name in REQUEST_TABLES and (before is not None or start is not None) and table.num_rows:
            keep = store.query(f"SELECT request_id FROM requests WHERE {where}", params)
            table = table.filter(pc.is_in(table.column("request_id"), value_set=keep.column("request_id")))
        out[name] = table
    return out


def training_events_fingerprints(store: LogStore, until: np.datetime64) -> frozenset[str]:
    """The data fingerprints a model trained on these logs' requests before `until` records: its event
    histories (which videos, comments and times; no float column) with and without the catalogue digest
    (`harness train` writes the first, the LSVCR trainer and the benches the second)."""
    from harness.logs.store import MODEL_TABLES
    from models.histories import prepare_data  # lazily: the log layer itself needs no model code

    prep = prepare_data(cut_tables(store, MODEL_TABLES, before=until))
    return frozenset({prep.fingerprint, prep.splits.full.fingerprint()})


EventsFingerprints = Callable[[np.datetime64], Collection[str]]


def events_of(source: LogStore | Path) -> EventsFingerprints:
    """`training_events_fingerprints` of an open store or of the logs at a path (opened only when called:
    the check reads the events only when the logs' fingerprint differs from a checkpoint's record)."""
    def events(until: np.datetime64) -> frozenset[str]:
        if not isinstance(source, Path):
            return training_events_fingerprints(source, until)
        from harness.logs.store import LogStore

        with LogStore.open(source) as store:
            return training_events_fingerprints(store, until)
    return events


def same_training_events(training_data: dict, data_fingerprint: str | None, events: EventsFingerprints | None
                         ) -> bool:
    """Whether a checkpoint whose logs fingerprint differs from these logs' read the same events before its cut.

    `LogStore.fingerprint` hashes float columns bit for bit, and one seed writes float columns that differ
    in their last bits on different CPUs (NumPy's float64 exp, log and power run Intel's SVML kernels where
    AVX-512 is present and glibc's elsewhere): ids, times and every draw are equal, propensities, scores and
    watch times are not (docs/synthetic-world.md, "Reproducibility across CPUs"). A model reads no
    propensity: what it trained on is its event histories, which the checkpoint records as
    `data_fingerprint`, so equal histories before its cut are the same training data. `events(until)`
    gives these logs' fingerprints (`training_events_fingerprints`).
    """
    until = training_data.get("until")
    if events is None or not data_fingerprint or until is None:
        return False
    return data_fingerprint in events(np.datetime64(until, "us"))


def training_window(training_data: dict | None, cut: np.datetime64, fingerprint: str, *,
                    data_fingerprint: str | None = None, events: EventsFingerprints | None = None,
                    cut_name: str = "the cut") -> tuple[str, str | None]:
    """How a checkpoint's `training_data` record (written by `harness train`) matches these logs, and why it
    does not show that its model was trained only on requests before `cut` of the logs with this
    `fingerprint` (None when it does): `("logs", None)` for the same logs, `("events", None)` for logs whose
    fingerprint differs while the events before the checkpoint's cut are its `data_fingerprint` (another
    CPU's copy, `same_training_events`), `("other", why)` otherwise. `cut_name` names the cut in the reason.
    The one rule of the replay, `harness evaluate --protocol temporal` and the quality bench."""
    td = training_data or {}
    if not td:
        return "other", ("it records no training window (trained without `--until`), so nothing shows it did not "
                         f"see the requests after {cut_name}")
    matched = "logs"
    if td.get("logs_fingerprint") != fingerprint:
        if not same_training_events(td, data_fingerprint, events):
            return "other", (f"it was trained on other logs (fingerprint {str(td.get('logs_fingerprint'))[:12]}..., "
                             f"these are {fingerprint[:12]}...); if these logs are a default world written by an "
                             "older version, regenerate them with `harness simulate --out data/world --seed 0 "
                             "--overwrite`")
        matched = "events"
    if td.get("until") is None:
        return matched, (f"it was trained on every request of these logs (up to {td.get('last_request')}), after "
                         f"{cut_name} {cut}")
    if np.datetime64(td["until"], "us") > cut:
        return matched, f"it was trained on requests up to {td['until']}, after {cut_name} {cut}"
    return matched, None


def training_window_problem(training_data: dict | None, cut: np.datetime64, fingerprint: str, *,
                            data_fingerprint: str | None = None, events: EventsFingerprints | None = None
                            ) -> str | None:
    """Why a checkpoint's `training_data` does not show training only before `cut` (`training_window`'s
    reason; None when it does)."""
    return training_window(training_data, cut, fingerprint, data_fingerprint=data_fingerprint, events=events)[1]
