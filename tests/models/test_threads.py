"""models.threads: the thread count is the faster of the measured ones, a given count is kept, bad values are
refused with the fix; `harness train` records the choice with the checkpoint."""

from __future__ import annotations

import json
import time

import pytest
import torch
from typer.testing import CliRunner

from harness.cli import app
from harness.logs.store import write_logs
from models import threads as T
from tests.models.fixtures import cyclic_world


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    return write_logs(cyclic_world(n_users=10, n_videos=40, n_requests=12), tmp_path_factory.mktemp("w") / "logs")


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(("slow_at", "want"), [(2, 1), (1, 2)])
def test_the_faster_count_is_kept(monkeypatch, slow_at: int, want: int) -> None:
    """A probe that is slow at one thread count (a busy machine slows every-core steps; an idle one rewards
    them): the other count is chosen, and torch is left at it."""
    def probe(*args, **kwargs):
        return lambda: time.sleep(0.03 if torch.get_num_threads() == slow_at else 0.001)

    monkeypatch.setattr(T, "_probe", probe)
    got = T.choose_threads(cores=2, reps=2)
    assert got.threads == want and got.how == "measured" and torch.get_num_threads() == want
    assert got.ms_per_step[slow_at] > 20 > got.ms_per_step[want]
    assert f"{want} thread" in got.describe()


def test_a_given_count_is_not_measured(monkeypatch) -> None:
    monkeypatch.setattr(T, "_probe", lambda *a, **k: pytest.fail("measured"))
    got = T.choose_threads(1)
    assert (got.threads, got.how, torch.get_num_threads()) == (1, "given", 1)


@pytest.mark.parametrize(("value", "want"), [("auto", None), (" AUTO ", None), ("2", 2), ("1", 1)])
def test_parse(value: str, want: int | None) -> None:
    assert T.parse_threads(value) == want


@pytest.mark.parametrize("value", ["0", "-1", "two", ""])
def test_bad_values_name_the_fix(value: str) -> None:
    with pytest.raises(ValueError, match="positive number of torch threads or 'auto'"):
        T.parse_threads(value)


def test_train_records_the_choice_and_refuses_a_bad_count(tmp_path, tiny_world) -> None:
    r = CliRunner().invoke(app, ["train", "--model", "base", "--data", str(tiny_world), "--out", str(tmp_path / "b"),
                                 "--epochs", "1", "--no-progress", "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert "torch threads: 1 (given)" in r.output
    rec = json.loads((tmp_path / "b" / "config.json").read_text())["training_data"]["threads"]
    assert rec["threads"] == 1 and rec["how"] == "given"
    r = CliRunner().invoke(app, ["train", "--model", "base", "--data", str(tiny_world), "--out", str(tmp_path / "c"),
                                 "--threads", "many"])
    assert r.exit_code == 3 and "--threads 'many'" in r.output and not (tmp_path / "c").exists()
