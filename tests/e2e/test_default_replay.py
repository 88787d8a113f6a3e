"""The README's first command, as a fresh clone runs it: `harness replay --control base --treatment lsvcr`
in an empty working directory creates the default world, replays it through the shipped checkpoints and
stores the run, with the true lift beside every estimate.

It also ties the shipped checkpoints to the default world: they record its log fingerprint, and the
replay refuses checkpoints trained on other logs, so a change to the default world fails here until
`scripts/ship_checkpoints.sh` retrains them.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.cli.replay_cmd import SHIPPED
from harness.store import ResultsStore

runner = CliRunner()
METRICS = {"watch_time_s", "video_interactions", "comment_watch_time_s", "comment_interactions"}


def test_shipped_checkpoints_are_converged_and_cut_at_the_window() -> None:
    for name in ("base", "lsvcr"):
        meta = json.loads((SHIPPED / name / "config.json").read_text())
        assert meta["training_metrics"]["stopped_by"] == "early_stopping", name
        assert meta["training_data"]["until"].startswith("2023-10-08"), name  # the default world's experiment start
        assert meta["training_data"]["last_request"] < meta["training_data"]["until"]
    # LSVCR ships as the per-task pair (one stage-2 model per task over one stage 1): the joint model is
    # worse on video on this world (BENCHMARKS.md, temporal protocol)
    assert json.loads((SHIPPED / "lsvcr" / "config.json").read_text())["kind"] == "lsvcr_per_task"
    stage1 = set()
    for task in ("video", "comment"):
        part = json.loads((SHIPPED / "lsvcr" / task / "config.json").read_text())
        assert part["hyperparameters"]["stage2"]["task"] == task and part["hyperparameters"]["sr"]["text_projected"]
        # the tuned LM part (14 MB) is what lets the shipped LSVCR embed the videos uploaded after its cut
        assert part.get("tuned_lm") and (SHIPPED / "lsvcr" / task / "tuned_lm.safetensors").is_file()
        assert part["training_metrics"]["stage1_truncated"] is False
        assert part["training_metrics"]["stopped_by"] == "early_stopping", task
        stage1.add(json.dumps(part["stage1"], sort_keys=True))
    assert len(stage1) == 1  # both parts fine-tuned from the same stage 1
    # git stores a file once however often it occurs (the parts share their tuned LM and catalogue)
    unique = {hashlib.sha256(p.read_bytes()).hexdigest(): p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file()}
    size = sum(unique.values())
    assert size < 45e6, f"shipped checkpoints hold {size / 1e6:.1f} MB of distinct files; keep them small"


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_default_replay_from_an_empty_directory(tmp_path: Path) -> None:
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        r = runner.invoke(app, ["replay", "--control", "base", "--treatment", "lsvcr", "--json", "--no-progress"])
    finally:
        os.chdir(cwd)
    assert r.exit_code == 0, r.output[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["warnings"] == []  # no overlap with the window, nothing under-trained
    assert (tmp_path / "data" / "world").is_dir() and (tmp_path / "harness.duckdb").is_file()
    lifts = [x for x in out["lifts"] if x["is_default"]]
    assert {x["metric"] for x in lifts} == METRICS
    for x in lifts:
        assert x["true_rel_diff"] is not None
        assert x["true_rel_diff"] == pytest.approx(x["true_treatment"] / x["true_control"] - 1)
    assert out["gate"]["decision"] in ("SHIP", "NO_SHIP", "INCONCLUSIVE")
    runs = ResultsStore(tmp_path / "harness.duckdb").runs()
    assert list(runs["kind"]) == ["replay"] and runs["run_id"].iloc[0] == out["run_id"]
