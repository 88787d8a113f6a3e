"""The per-task LSVCR pair (models/lsvcr/pair.py): each task is answered by the model trained for it, bit
for bit; like counts reach the comment model; the checkpoint loads through the registry, keeps the replay's
fields, and refuses a part of the wrong task, a swapped part, or parts trained on different data."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from models.adapters import load_recommender
from models.checkpoint import CheckpointError, read_config, record_training_data
from models.lsvcr.adapter import LSVCRRecommender
from models.lsvcr.config import LSVCRConfig, Stage2Config
from models.lsvcr.pair import KIND, TaskPairRecommender, save_pair
from tests.models.test_lsvcr_export import TRAINING_DATA, catalogue, queries, source_model, tables
from tests.models.test_lsvcr_support import one_thread, random_histories  # noqa: F401


def _part(folder, task: str, seed: int, metrics: dict | None = None, training_data: dict | None = TRAINING_DATA):
    model = source_model(seed)
    cfg = LSVCRConfig(sr=model.cfg, seed=seed, stage2=Stage2Config(task=task))
    LSVCRRecommender(model, catalogue(), tables(), config=cfg).save(
        folder, data_fingerprint="fp-world", seed=seed, metrics=metrics or {"stopped_by": "early_stopping"})
    if training_data is not None:
        record_training_data(folder, training_data)
    return folder


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("pair")
    return _part(root / "v", "video", 1), _part(root / "c", "comment", 2), root


@pytest.mark.usefixtures("one_thread")
def test_each_task_is_scored_by_its_own_model(parts, tmp_path) -> None:
    video, comment, _ = parts
    pair = load_recommender(save_pair(tmp_path / "lsvcr", video, comment), catalogue=catalogue())
    assert isinstance(pair, TaskPairRecommender) and pair.kind == KIND
    v, c = (LSVCRRecommender.from_checkpoint(f, catalogue=catalogue()) for f in (video, comment))
    hist = random_histories(4, 30, 12, 3, 50, 160, seed=5, lengths=[30, 20, 7, 0], clengths=[12, 5, 0, 3])
    vq, cq = queries(hist, 6, 10, seed=6)
    assert torch.equal(pair.score_videos(hist, vq), v.score_videos(hist, vq))
    assert torch.equal(pair.score_comments(hist, cq), c.score_comments(hist, cq))
    assert not torch.equal(pair.score_videos(hist, vq), c.score_videos(hist, vq))  # the parts differ
    # like counts as of query time reach the comment model's prior, as they reach a single model's
    likes = np.asarray(catalogue().comment_likes) * 3 + 1
    pair.set_comment_likes(likes)
    c.model.set_comment_likes(torch.from_numpy(likes.astype(np.int64)))
    assert torch.equal(pair.score_comments(hist, cq), c.score_comments(hist, cq))


def test_checkpoint_fields_for_the_replay(parts, tmp_path) -> None:
    video, comment, root = parts
    slow = _part(root / "slow", "comment", 3, metrics={"stopped_by": "time_budget"})
    cfg = read_config(save_pair(tmp_path / "lsvcr", video, slow))
    assert cfg["kind"] == KIND and cfg["training_data"] == TRAINING_DATA and cfg["data_fingerprint"] == "fp-world"
    assert cfg["training_metrics"]["stopped_by"] == "time_budget"  # the replay's under-training warning
    assert cfg["catalogue_digest"] == read_config(video)["catalogue_digest"]
    assert {p: x["weights_sha256"] for p, x in cfg["parts"].items()} == {
        "video": read_config(video)["weights_sha256"], "comment": read_config(slow)["weights_sha256"]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lsvcr"]  # no temporary folder left


def test_refuses_wrong_parts(parts, tmp_path) -> None:
    video, comment, root = parts
    with pytest.raises(CheckpointError, match="fine-tuned for task 'video', not 'comment'"):
        save_pair(tmp_path / "a", video, video)
    joint = _part(root / "joint", "both", 4)
    with pytest.raises(CheckpointError, match="fine-tuned for task 'both', not 'video'"):
        save_pair(tmp_path / "b", joint, comment)
    other = _part(root / "other", "comment", 5, training_data={**TRAINING_DATA, "until": "2024-02-01T00:00:00"})
    with pytest.raises(CheckpointError, match="differ in training_data"):
        save_pair(tmp_path / "c", video, other)
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()

    # a part swapped after assembly (another comment model's files) is refused at load
    pair = save_pair(tmp_path / "d", video, comment)
    shutil.rmtree(pair / "comment")
    shutil.copytree(_part(root / "swap", "comment", 6), pair / "comment")
    with pytest.raises(CheckpointError, match="not the comment model this pair was made of"):
        load_recommender(pair, catalogue=catalogue())
    # a config whose parts are edited no longer matches its digest
    pair = save_pair(tmp_path / "e", video, comment)
    cfg = json.loads((pair / "config.json").read_text())
    cfg["parts"]["video"]["weights_sha256"] = cfg["parts"]["comment"]["weights_sha256"]
    (pair / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="not the video model"):
        load_recommender(pair, catalogue=catalogue())


def test_cli_trains_the_pair_from_one_stage1(tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from harness.cli import app
    from harness.logs.store import write_logs
    from tests.models.fixtures import cyclic_world

    logs = write_logs(cyclic_world(n_users=8, n_videos=30, n_requests=10), tmp_path / "logs")
    out = tmp_path / "ck" / "lsvcr"
    runner = CliRunner()
    r = runner.invoke(app, ["train", "--model", "lsvcr", "--per-task", "--data", str(logs), "--out", str(out),
                            "--epochs", "1", "--no-progress", "--threads", "1"])
    assert r.exit_code == 3 and "--per-task trains every stage to convergence" in r.output and not out.exists()
    r = runner.invoke(app, ["train", "--model", "lsvcr", "--per-task", "--time-budget", "0", "--data", str(logs),
                            "--out", str(out), "--epochs", "2", "--patience", "2", "--no-progress", "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert r.output.count("stage 1 done") == 1  # one alignment, shared by both tasks
    cfg = read_config(out)
    assert cfg["kind"] == KIND and cfg["training_data"]["logs_fingerprint"]
    for task in ("video", "comment"):
        part = read_config(out / task)
        assert part["hyperparameters"]["stage2"]["task"] == task
        assert part["stage1"] == read_config(out / "video")["stage1"]  # both parts record the same stage 1
    # the parts' training folders are gone (the pair holds them); the shared stage 1 stays, as the joint model's
    assert sorted(p.name for p in out.parent.iterdir() if not p.name.startswith((".", "eval_candidates"))) == [
        "lsvcr", "lsvcr-stage1"]
    r = runner.invoke(app, ["evaluate", "--models", "lsvcr", "--data", str(logs), "--checkpoints", str(out.parent),
                            "--json", "--no-store", "--threads", "1"])
    assert r.exit_code == 0, r.output
    got = {(x["model"], x["task"]) for x in json.loads(r.stdout.strip().splitlines()[-1])["results"]}
    assert got == {("lsvcr", "video"), ("lsvcr", "comment")}

    # killed in the comment model's second epoch, then --resume: stage 1 and the video model are kept, the
    # comment model continues after its first epoch, and the pair is the one the uninterrupted call saved
    import typer

    echo, seen = typer.echo, []

    def killed_in_the_comment_models_second_epoch(message=None, *args, **kwargs):
        if isinstance(message, str) and message.startswith("stage 2 epoch   2"):
            seen.append(message)
            if len(seen) == 2:
                raise KeyboardInterrupt
        return echo(message, *args, **kwargs)

    again = tmp_path / "again" / "lsvcr"
    args = ["train", "--model", "lsvcr", "--per-task", "--time-budget", "0", "--data", str(logs), "--out", str(again),
            "--epochs", "2", "--patience", "2", "--no-progress", "--threads", "1"]
    with monkeypatch.context() as m:
        m.setattr(typer, "echo", killed_in_the_comment_models_second_epoch)
        r = runner.invoke(app, args)
    assert r.exit_code != 0 and len(seen) == 2, r.output
    assert not again.exists() and again.with_name("lsvcr-comment.stage2-state.safetensors").exists()
    r = runner.invoke(app, [*args, "--resume"])
    assert r.exit_code == 0, r.output
    assert "stage 1 already done" in r.output and "the video model is already trained" in r.output
    assert "stage 2 resumed after epoch 1" in r.output and "stage 1 done" not in r.output
    assert read_config(again)["weights_sha256"] == read_config(out)["weights_sha256"]
    assert not list(again.parent.glob("*.stage2-state.safetensors"))


@pytest.mark.usefixtures("one_thread")
def test_serving_export_of_a_pair(tmp_path) -> None:
    from models.lsvcr.export import export_serving
    from tests.models.test_lsvcr_export import SCORE_TOL

    # as `harness train --per-task` leaves it: the window is recorded on the pair, not on its parts
    src = save_pair(tmp_path / "src", _part(tmp_path / "v", "video", 1, training_data=None),
                    _part(tmp_path / "c", "comment", 2, training_data=None))
    record_training_data(src, TRAINING_DATA)
    dest = export_serving(src, tmp_path / "serving")
    cfg = read_config(dest)
    assert cfg["kind"] == KIND and cfg["training_data"] == TRAINING_DATA
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "serving", "src", "v"]  # no temporary folder left
    a, b = (load_recommender(f, catalogue=catalogue()) for f in (src, dest))
    assert all(b.parts[p].model.cfg.text_projected for p in ("video", "comment"))
    hist = random_histories(4, 30, 12, 3, 50, 160, seed=5, lengths=[30, 20, 7, 0], clengths=[12, 5, 0, 3])
    vq, cq = queries(hist, 6, 10, seed=6)
    for got, want in ((b.score_videos(hist, vq), a.score_videos(hist, vq)),
                      (b.score_comments(hist, cq), a.score_comments(hist, cq))):
        fin = torch.isfinite(want)
        assert torch.equal(fin, torch.isfinite(got))
        assert float((got[fin] - want[fin]).abs().max()) < SCORE_TOL
