"""`harness train` / `harness evaluate` through CliRunner on a tiny real log folder."""

from __future__ import annotations

import json

import duckdb
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.logs.store import write_logs
from tests.models.fixtures import cyclic_world

runner = CliRunner()


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    return write_logs(cyclic_world(n_users=10, n_videos=40, n_requests=12), tmp_path_factory.mktemp("w") / "logs")


def test_train_and_evaluate(tmp_path, logs) -> None:
    ck = tmp_path / "ck"
    r = runner.invoke(app, ["train", "--model", "base", "--data", str(logs), "--out", str(ck / "base"),
                            "--epochs", "2", "--seed", "1", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "epoch   1  loss" in r.output and "valid ndcg@5" in r.output
    cfg = json.loads((ck / "base" / "config.json").read_text())
    assert cfg["seed"] == 1 and len(cfg["training_metrics"]["epochs"]) == 2
    # base's default patience outlasts its flat validation stretch on world v2 (4-5 epochs); it is recorded
    assert cfg["training_metrics"]["settings"] == {"epochs": 2, "batch_windows": 128, "lr": 1e-3,
                                                   "weight_decay": 0.0, "patience": 10, "seed": 1,
                                                   "max_seconds": None}
    assert len(list(ck.glob("eval_candidates-*.parquet"))) == 1
    r = runner.invoke(app, ["train", "--model", "pop", "--data", str(logs), "--out", str(ck / "pop")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["evaluate", "--models", "base,pop", "--data", str(logs), "--checkpoints", str(ck),
                            "--json", "--no-store"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    got = {(x["model"], x["task"]): x for x in out["results"]}
    assert set(got) == {("base", "video"), ("base", "comment"), ("pop", "video"), ("pop", "comment")}
    assert got[("pop", "video")]["n_queries"] == 10
    # base and pop share the like-count comment rule, hence identical comment metrics
    assert got[("base", "comment")]["metrics"] == got[("pop", "comment")]["metrics"]
    # the table form
    r = runner.invoke(app, ["evaluate", "--models", "pop", "--data", str(logs), "--checkpoints", str(ck),
                            "--no-store"])
    assert r.exit_code == 0, r.output
    assert "ndcg@5" in r.output and "pop" in r.output
    assert len(list(ck.glob("eval_candidates-*.parquet"))) == 1  # the same stored candidates were reused


def test_user_errors(tmp_path, logs) -> None:
    r = runner.invoke(app, ["evaluate", "--models", "base", "--data", str(logs), "--checkpoints", str(tmp_path),
                            "--no-store"])
    assert r.exit_code == 3
    assert "no checkpoint for 'base'" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["train", "--model", "pop", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "p")])
    assert r.exit_code == 3 and "does not exist" in r.output
    r = runner.invoke(app, ["train", "--model", "base", "--data", str(logs), "--out", str(tmp_path / "b"),
                            "--no-comment-prior"])
    assert r.exit_code == 3 and "apply to --model lsvcr only" in r.output
    assert not (tmp_path / "b").exists()
    # an ablation without an alignment stage cannot run --stage align (it once exited 0 writing nothing)
    r = runner.invoke(app, ["train", "--model", "lsvcr", "--stage", "align", "--ablation", "no_align", "--data",
                            str(logs), "--out", str(tmp_path / "l")])
    assert r.exit_code == 3 and "has no alignment stage" in r.output and "Traceback" not in r.output


def test_lsvcr_cli_options_reach_the_checkpoint(tmp_path, logs) -> None:
    out = tmp_path / "ck" / "nt"
    r = runner.invoke(app, ["train", "--model", "lsvcr", "--ablation", "no_text", "--data", str(logs), "--out", str(out),
                            "--epochs", "1", "--no-comment-prior", "--time-budget", "0", "--patience", "2",
                            "--no-progress"])
    assert r.exit_code == 0, r.output
    hp = json.loads((out / "config.json").read_text())["hyperparameters"]
    assert hp["sr"]["comment_prior"] is False and hp["stage2"]["patience"] == 2
    assert hp["stage2"]["max_seconds"] is None and hp["ablation"] == "no_text"
    r = runner.invoke(app, ["train", "--model", "lsvcr", "--ablation", "no_text", "--data", str(logs), "--out",
                            str(out), "--epochs", "1", "--time-budget", "0", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "config.json").read_text())["hyperparameters"]["stage2"]["patience"] == 5  # default


def test_evaluate_stores_ranking_metrics(tmp_path, logs) -> None:
    ck = tmp_path / "ck"
    assert runner.invoke(app, ["train", "--model", "pop", "--data", str(logs), "--out", str(ck / "pop")]).exit_code == 0
    db = tmp_path / "results.duckdb"
    r = runner.invoke(app, ["evaluate", "--models", "pop", "--data", str(logs), "--checkpoints", str(ck),
                            "--json", "--db", str(db)])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT task, metric, value FROM ranking_metrics WHERE model = 'pop'").fetchall()
        kind, digests = con.execute("SELECT kind, checkpoint_digests FROM runs").fetchone()
    assert kind == "evaluate" and len(rows) == 2 * 7
    stored = {(t, m): v for t, m, v in rows}
    for res in out["results"]:
        for m, v in res["metrics"].items():
            assert stored[(res["task"], m)] == v
    assert json.loads((ck / "pop" / "config.json").read_text())["weights_sha256"] in digests


def test_stopped_by_reads_the_checkpoint_and_tolerates_old_ones(tmp_path) -> None:
    """`harness train` warns when a time budget, not early stopping, ended LSVCR's training."""
    from harness.cli.models_cmd import _stopped_by

    ck = tmp_path / "ck"
    ck.mkdir()
    assert _stopped_by(ck) is None  # no config.json
    head = {"kind": "lsvcr", "weights_sha256": "0" * 64, "catalogue_digest": "0" * 64}
    (ck / "config.json").write_text(json.dumps(head | {"training_metrics": {"best_epoch": 2}}))
    assert _stopped_by(ck) is None  # a checkpoint from before the field existed
    (ck / "config.json").write_text(json.dumps(head | {"training_metrics": {"stopped_by": "time_budget"}}))
    assert _stopped_by(ck) == "time_budget"


class _Killed(Exception):
    pass


def _kill_on(monkeypatch, prefix: str) -> None:
    """Make the CLI's own output raise when it prints a line starting with `prefix` (a run killed there)."""
    import typer

    echo = typer.echo

    def echo_or_die(message=None, *args, **kwargs):
        if isinstance(message, str) and message.startswith(prefix):
            raise _Killed(message)
        return echo(message, *args, **kwargs)

    monkeypatch.setattr(typer, "echo", echo_or_die)


def test_train_resume_continues_an_interrupted_base_run_to_the_same_checkpoint(tmp_path, logs, monkeypatch) -> None:
    args = ["train", "--model", "base", "--data", str(logs), "--epochs", "5", "--patience", "5", "--no-progress",
            "--threads", "1"]
    r = runner.invoke(app, [*args, "--out", str(tmp_path / "straight" / "base")])
    assert r.exit_code == 0, r.output
    out = tmp_path / "resumed" / "base"
    state = out.with_name("base.train-state.safetensors")
    with monkeypatch.context() as m:
        _kill_on(m, "epoch   4")
        r = runner.invoke(app, [*args, "--out", str(out)])
    assert r.exit_code != 0 and state.exists() and not out.exists()
    r = runner.invoke(app, [*args, "--out", str(out), "--resume"])
    assert r.exit_code == 0, r.output
    assert "resumed after epoch 3" in r.output and "epoch   1  loss" not in r.output and not state.exists()
    got, want = (json.loads((p / "config.json").read_text()) for p in (out, tmp_path / "straight" / "base"))
    assert got["weights_sha256"] == want["weights_sha256"]
    assert got["training_metrics"]["resumed_after"] == [3] and want["training_metrics"]["resumed_after"] == []
    # without --resume, a state left behind is discarded, and that is said
    with monkeypatch.context() as m:
        _kill_on(m, "epoch   2")
        runner.invoke(app, [*args, "--out", str(out)])
    assert state.exists()
    r = runner.invoke(app, [*args, "--out", str(out)])
    assert r.exit_code == 0 and "discarding the state an interrupted training left" in r.output
    assert "epoch   1  loss" in r.output and not state.exists()


def test_train_resume_of_a_joint_lsvcr_run_killed_in_stage2_keeps_its_stage1(tmp_path, logs, monkeypatch) -> None:
    out = tmp_path / "ck" / "lsvcr"
    args = ["train", "--model", "lsvcr", "--data", str(logs), "--out", str(out), "--epochs", "3", "--patience", "3",
            "--time-budget", "0", "--no-progress", "--threads", "1"]
    with monkeypatch.context() as m:
        _kill_on(m, "stage 2 epoch   2")
        r = runner.invoke(app, args)
    assert r.exit_code != 0 and (tmp_path / "ck" / "lsvcr-stage1").is_dir() and not out.exists()
    state = tmp_path / "ck" / "lsvcr.stage2-state.safetensors"
    assert state.exists()
    r = runner.invoke(app, [*args, "--resume"])
    assert r.exit_code == 0, r.output
    assert "stage 1 is already done" in r.output and "stage 1 done" not in r.output
    assert "stage 2 resumed after epoch 1" in r.output and not state.exists()
    tm = json.loads((out / "config.json").read_text())["training_metrics"]
    assert [row["epoch"] for row in tm["epochs"]] == [1, 2, 3] and tm["stage2_resumed_after"] == [1]
