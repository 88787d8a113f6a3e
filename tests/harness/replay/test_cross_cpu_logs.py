"""One seed of the synthetic world written on two kinds of CPU: the float columns differ in their last bits
(NumPy's float64 exp, log and power run Intel's SVML kernels where AVX-512 is present and glibc's
elsewhere), every id, time and draw is equal. A checkpoint trained on one copy is trained on the other's
events, so the replay and the temporal protocol accept it there (and still refuse other worlds:
test_replay_resume.py::test_checkpoint_of_other_logs_is_refused).

The other CPU is stood in for by nudging NumPy's float64 exp, log and log1p results up by one ulp in
about half the elements while the world is simulated: a different last-bit rounding of the same maths.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.logs.store import LogStore
from harness.logs.window import (
    experiment_start,
    same_training_events,
    training_events_fingerprints,
    training_window_problem,
)
from harness.simulate.config import WorldConfig
from harness.simulate.generate import simulate
from harness.store import ResultsStore

runner = CliRunner()


def _one_ulp_up_in_half(f):
    def nudged(*args, **kwargs):
        r = f(*args, **kwargs)
        if isinstance(r, np.ndarray) and r.dtype == np.float64 and r.size:
            half = ((r.view(np.int64) & 0x400) != 0) & np.isfinite(r) & (r != 0)
            r = np.where(half, np.nextafter(r, np.inf), r)
        return r
    return nudged


@pytest.fixture(scope="module")
def other_cpu(small_world, tmp_path_factory) -> Path:
    """small_world's config and seed (tests/harness/replay/conftest.py), written by the 'other CPU'."""
    out = tmp_path_factory.mktemp("other-cpu") / "world"
    with pytest.MonkeyPatch.context() as mp:
        for name in ("exp", "log", "log1p"):
            mp.setattr(np, name, _one_ulp_up_in_half(getattr(np, name)))
        simulate(WorldConfig(users=90, videos=200, comments_per_video=6.0, days=4, seed=8), out, progress=False)
    return out


def test_only_float_bits_differ(small_world, other_cpu) -> None:
    data, _ = small_world
    with LogStore.open(data) as a, LogStore.open(other_cpu) as b:
        assert a.fingerprint() != b.fingerprint()
        assert a.fingerprint(floats=False) == b.fingerprint(floats=False)  # every id, time, position, choice
        cut = experiment_start(a)
        assert cut is not None and training_events_fingerprints(a, cut) == training_events_fingerprints(b, cut)
        for name in ("impressions", "candidates", "comment_impressions"):
            ta, tb = a.table(name), b.table(name)
            floats = [c for c in ta.column_names if ta.schema.field(c).type == "double"]
            assert floats and ta.drop_columns(floats).equals(tb.drop_columns(floats))
            for c in floats:  # the same numbers up to a few ulps
                assert np.allclose(ta[c].to_numpy(), tb[c].to_numpy(), rtol=1e-13, atol=0), (name, c)


def test_replay_accepts_checkpoints_trained_on_the_other_copy(small_world, other_cpu, tmp_path) -> None:
    _, ck = small_world
    db = tmp_path / "r.duckdb"
    r = runner.invoke(app, ["replay", "--data", str(other_cpu), "--checkpoints", str(ck), "--db", str(db),
                            "--control", "pop", "--treatment", "base", "--batch-users", "30", "--no-progress",
                            "--no-cache"])
    assert r.exit_code == 0, r.output[-3000:]
    said = " ".join(r.output.split())
    assert "OVERLAP" not in said  # not marked: the models did not see the window
    assert "base: trained on logs with fingerprint" in said and "the logs differ in float bits only" in said
    config = json.loads(ResultsStore(db).runs()["config"].iloc[0])
    assert config["training_logs"] == {"pop": "events", "base": "events"}
    assert not [w for w in config["warnings"] if "OVERLAP" in w]


def test_temporal_evaluation_accepts_them(small_world, other_cpu) -> None:
    _, ck = small_world
    r = runner.invoke(app, ["evaluate", "--models", "pop,base", "--data", str(other_cpu), "--checkpoints", str(ck),
                            "--protocol", "temporal", "--until", "experiment-start", "--no-store"])
    assert r.exit_code == 0, r.output[-3000:]


CUT = np.datetime64("2024-01-06T05:00:00", "us")
TD = {"logs_fingerprint": "a" * 64, "until": "2024-01-06T00:00:00.000000", "last_request": "2024-01-05T23:00:00"}


def test_the_events_decide_only_when_the_logs_fingerprint_differs() -> None:
    asked: list[np.datetime64] = []

    def events(at):
        asked.append(at)
        return {"d" * 64}

    assert training_window_problem(TD, CUT, "a" * 64, data_fingerprint="x", events=events) is None
    assert asked == []  # same logs: nothing rebuilt
    assert training_window_problem(TD, CUT, "b" * 64, data_fingerprint="d" * 64, events=events) is None
    assert asked == [np.datetime64("2024-01-06T00:00:00", "us")]  # the checkpoint's own cut, not the window's
    for data_fp, ev in (("e" * 64, events), ("d" * 64, None), (None, events)):
        problem = training_window_problem(TD, CUT, "b" * 64, data_fingerprint=data_fp, events=ev)
        assert problem is not None and "trained on other logs (fingerprint aaaaaaaaaaaa..." in problem
    # the same events do not excuse a checkpoint that trained past the cut
    late = {**TD, "until": "2024-01-07T00:00:00.000000"}
    problem = training_window_problem(late, CUT, "b" * 64, data_fingerprint="d" * 64, events=events)
    assert problem is not None and "after the cut" in problem
    assert not same_training_events({"logs_fingerprint": "a" * 64, "until": None}, "d" * 64, events)
