"""bench/quality.py on a tiny log: the temporal protocol gives the figures `harness evaluate --protocol temporal`
gives for the same checkpoints, leave-one-out those of `harness evaluate`, each protocol keeps its checkpoints
in its own folder, and the paired intervals are the mean per-query difference with its clustered interval."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.logs.store import write_logs
from tests.models.fixtures import cyclic_world

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
# cyclic_world: user u's 12 requests lie at T0 + u * 100,000 s + 0..660 s; the cut leaves users 0-4 before it
CUT = "2024-01-06T05:00:00"


@pytest.fixture
def quality(monkeypatch):
    # appended, not prepended: bench/analysis.py must not shadow the analysis package
    monkeypatch.setattr(sys, "path", [*sys.path, str(ROOT / "bench")])
    import quality

    return quality


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    return write_logs(cyclic_world(n_users=10, n_videos=40, n_requests=12), tmp_path_factory.mktemp("q") / "logs")


def _bench(quality, capsys, *argv) -> dict:
    quality.main([str(a) for a in argv])
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _cli_eval(*argv) -> dict[tuple[str, str, str], dict]:
    r = runner.invoke(app, ["evaluate", *map(str, argv), "--json", "--no-store", "--threads", "1"])
    assert r.exit_code == 0, r.output
    return {(x["model"], x["task"], x["slice"]): x for x in json.loads(r.stdout.strip().splitlines()[-1])["results"]}


def test_protocols_match_harness_evaluate_in_separate_folders(quality, logs, tmp_path, capsys) -> None:
    work, ck = tmp_path / "work", tmp_path / "ck"
    r = runner.invoke(app, ["train", "--model", "pop", "--data", str(logs), "--until", CUT, "--out", str(ck / "pop")])
    assert r.exit_code == 0, r.output
    common = ("--data", logs, "--workdir", work, "--models", "base,pop", "--seeds", "0", "--epochs", "1")
    out = _bench(quality, capsys, *common, "--protocol", "temporal", "--until", CUT)
    folder = work / "temporal-2024-01-06T050000"
    assert out["protocol"] == "temporal" and out["until"].startswith("2024-01-06T05:00:00")
    assert out["workdir"] == str(folder) and (folder / "base-0" / "config.json").exists()
    for task, n in out["test_queries"].items():
        assert n["all"] == n["warm"] + n["cold"] > 0, task
    # the bench's base checkpoint passes the CLI's trained-before-the-cut check and ranks the same there
    cli = _cli_eval("--models", f"base-0,{ck / 'pop'}", "--checkpoints", folder, "--data", logs,
                    "--protocol", "temporal", "--until", CUT)
    for (model, task, sl), x in cli.items():
        got = out["slices"]["base" if model == "base-0" else model][task][sl]
        for m in ("ndcg@10", "recall@10"):
            assert (got[m]["mean"] is None) if x["n_queries"] == 0 else got[m]["mean"] == pytest.approx(x["metrics"][m])
        if sl == "all":
            assert out["results"]["base" if model == "base-0" else model][task]["ndcg@10"]["mean"] == \
                pytest.approx(x["metrics"]["ndcg@10"])

    loo = _bench(quality, capsys, *common)
    assert loo["protocol"] == "leave_one_out" and loo["until"] is None
    assert (work / "leave_one_out" / "base-0" / "config.json").exists()
    cli = _cli_eval("--models", "base-0", "--checkpoints", work / "leave_one_out", "--data", logs)
    for (_, task, _), x in cli.items():
        assert loo["results"]["base"][task]["ndcg@10"]["mean"] == pytest.approx(x["metrics"]["ndcg@10"])
        assert set(loo["slices"]["base"][task]) == {"all"}

    again = _bench(quality, capsys, *common, "--protocol", "temporal", "--until", CUT, "--resume")
    base = [r for r in again["runs"] if r["model"] == "base"][0]
    assert base.get("resumed") is True  # its own protocol's checkpoint, not leave-one-out's
    assert again["slices"]["base"] == out["slices"]["base"]


def test_paired_intervals_pair_queries_and_average_seeds(quality) -> None:
    rng = np.random.default_rng(0)
    n = 400
    users = {"video": np.arange(n) // 2}  # two queries per user
    slices = {"video": np.where(np.arange(n) % 4 == 0, "cold", "warm")}
    base = rng.random(n)
    per_query = {("lsvcr", s): {"video": base + 0.1 + 0.01 * s} for s in (0, 1)}
    per_query |= {("base", s): {"video": base} for s in (0, 1, 2)} | {("no_text", 0): {"video": base + 0.2}}
    out = quality.paired_intervals(per_query, users, slices)
    assert set(out) == {"lsvcr_vs_base", "lsvcr_vs_no_text"}
    b = out["lsvcr_vs_base"]
    assert b["seeds"] == [0, 1] and set(b) == {"seeds", "video_all", "video_warm", "video_cold"}
    assert b["video_all"]["diff"] == pytest.approx(0.105) and b["video_all"]["queries"] == n
    assert b["video_cold"]["queries"] == n // 4 and b["video_all"]["users"] == n // 2
    assert b["video_all"]["hi"] - b["video_all"]["lo"] == pytest.approx(0, abs=1e-9)  # a constant difference
    assert out["lsvcr_vs_no_text"]["video_all"]["diff"] == pytest.approx(-0.1)
    noisy = {k: {"video": v["video"] + rng.normal(0, 0.1, n)} for k, v in per_query.items()}
    w = quality.paired_intervals(noisy, users, slices)["lsvcr_vs_base"]["video_all"]
    assert w["lo"] < w["diff"] < w["hi"] and 0.0 < w["hi"] - w["lo"] < 0.1


def test_resume_after_stage1_trains_only_stage2(quality, logs, tmp_path, capsys) -> None:
    """An LSVCR run killed in stage 2 left its finished stage 1; `--resume` fine-tunes from it."""
    work = tmp_path / "work"
    r = runner.invoke(app, ["train", "--model", "lsvcr", "--stage", "align", "--data", str(logs), "--out",
                            str(work / "leave_one_out" / "lsvcr-0"), "--time-budget", "0", "--no-progress",
                            "--threads", "1"])
    assert r.exit_code == 0, r.output
    quality.main([str(a) for a in ("--data", logs, "--workdir", work, "--models", "lsvcr", "--seeds", "0",
                                   "--epochs", "1", "--lsvcr-budget", "0", "--resume")])
    cap = capsys.readouterr()
    assert "lsvcr/0: resuming from the stage 1 in" in cap.err and "stage 1 done" not in cap.err
    out = json.loads(cap.out.strip().splitlines()[-1])
    assert out["results"]["lsvcr"]["video"]["ndcg@10"]["n"] == 1
    stage1 = json.loads((work / "leave_one_out" / "lsvcr-0" / "config.json").read_text())["stage1"]
    assert stage1["seed"] == 0 and stage1["ablation"] is None  # the stage 2 records the stage 1 it started from
    # stage 2 kept its state after every epoch (models.training_loop.Resume) and deleted it with the model saved
    assert not list((work / "leave_one_out").glob("*.stage2-state.safetensors"))


def test_stored_results_stand_in_for_runs_and_refuse_other_settings(quality, logs, tmp_path, capsys) -> None:
    """`--results` keeps each finished run (figures and per-query NDCG@10); with `--resume` a later call in a
    fresh work folder (another machine's) reuses them, giving the same output, and one with other settings
    is refused by name."""
    results = tmp_path / "results"
    common = ("--data", logs, "--models", "base,pop", "--seeds", "0,1", "--epochs", "1", "--results", results)
    first = _bench(quality, capsys, *common, "--workdir", tmp_path / "w1")
    stored = sorted(p.name for p in (results / "leave_one_out").iterdir())
    assert stored == ["base-0.json", "base-1.json", "pop-0.json", "pop-1.json"]
    doc = json.loads((results / "leave_one_out" / "base-1.json").read_text())
    assert doc["key"]["seed"] == 1 and doc["key"]["epochs"] == 1 and len(doc["per_query"]["video"]) == 10

    again = _bench(quality, capsys, *common, "--workdir", tmp_path / "w2", "--resume")
    assert all(r.get("stored") for r in again["runs"]) and not (tmp_path / "w2" / "leave_one_out" / "base-0").exists()
    for k in ("results", "slices", "paired", "checks", "test_queries"):
        assert again[k] == first[k], k
    # every run was trained by this checkout's code: one commit, nothing changed since
    assert [sorted(v) for v in again["code"]["runs_by_commit"].values()] == [["base/0", "base/1", "pop/0", "pop/1"]]
    assert again["code"]["training_code_changed_since"] == {}
    with pytest.raises(SystemExit, match=r"base-0.json holds a result for other data or settings \(differs in: epochs\)"):
        quality.main([str(a) for a in (*common[:-4], "--epochs", "2", "--results", results, "--workdir",
                                       tmp_path / "w3", "--resume")])
    # without --resume the runs are measured again and their stored results replaced
    _bench(quality, capsys, *common[:-4], "--epochs", "2", "--results", results, "--workdir", tmp_path / "w3")
    assert json.loads((results / "leave_one_out" / "base-0.json").read_text())["key"]["epochs"] == 2


def test_quality_table_renders_the_bench_output(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.setattr(sys, "path", [*sys.path, str(ROOT / "bench")])
    import quality_table

    stat = lambda m, s: {"ndcg@10": {"mean": m, "std": s, "n": 2}, "recall@10": {"mean": 0.9, "std": 0.0, "n": 2}}  # noqa: E731
    out = {"protocol": "leave_one_out", "seeds": [0, 1], "test_queries": {"video": {"all": 5}, "comment": {"all": 4}},
           "slices": {"pop": {"video": {"all": stat(0.3, 0.0)}, "comment": {"all": stat(0.5, 0.0)}},
                      "lsvcr": {"video": {"all": stat(0.54321, 0.0049)}, "comment": {"all": stat(0.6, 0.01)}}},
           "runs": [{"model": "lsvcr", "seed": 1, "epochs_run": 14, "best_epoch": 11},
                    {"model": "lsvcr", "seed": 0, "epochs_run": 12, "best_epoch": 9}, {"model": "pop", "seed": 0}],
           "paired": {"lsvcr_vs_pop": {"seeds": [0, 1], "video_all": {"diff": 0.24321, "lo": 0.2, "hi": 0.28651}}}}
    (tmp_path / "out.json").write_text("a log line\n" + json.dumps(out) + "\n")
    quality_table.main([str(tmp_path / "out.json")])
    text = capsys.readouterr().out
    assert "| pop | - | 0.300 ± 0.000 | 0.500 ± 0.000 |" in text
    assert "| lsvcr | 12 (9) / 14 (11) | 0.543 ± 0.005 | 0.600 ± 0.010 |" in text
    assert "| pop | +0.243 [+0.200, +0.287] | - |" in text
    assert text.index("| pop | -") < text.index("| lsvcr | 12")  # base and pop first, then LSVCR
