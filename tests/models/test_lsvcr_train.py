"""LSVCR end to end on a tiny world with tiny LMs: both stages learn, checkpoints round-trip and are
validated, ablations run, cold videos fall back to text."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from models.adapters import load_recommender
from models.batch import CommentQuery, VideoQuery
from models.checkpoint import CheckpointError
from models.evaluation import evaluate, load_or_sample_candidates
from models.lsvcr.adapter import LSVCRRecommender
from models.lsvcr.config import LSVCRConfig, Stage1Config, Stage2Config
from models.lsvcr.train import prepare_data, stage1_dir, train_lsvcr
from tests.models.fixtures import cyclic_world
from tests.models.test_lsvcr_support import one_thread, save_tiny_lm  # noqa: F401


def small_config(**s2) -> LSVCRConfig:
    return LSVCRConfig(stage1=Stage1Config(n_samples=96, batch_size=16, epochs=3, n_video_items=4, n_comment_items=2,
                                           lr_lm=1e-3, embed_batch=256),
                       stage2=Stage2Config(**({"epochs": 8, "batch_users": 8, "patience": 8} | s2)))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("lsvcr")
    tables = cyclic_world(n_users=16, n_videos=30, n_requests=24, comments_per_video=4)
    catalogue, splits = prepare_data(tables)
    lm = save_tiny_lm(root / "tiny-encoder", "encoder")
    logs: list[str] = []
    out = train_lsvcr(None, root / "ck" / "lsvcr", catalogue=catalogue, splits=splits, llm_path=str(lm),
                      config=small_config(), progress=False, log=logs.append)
    return {"root": root, "tables": tables, "catalogue": catalogue, "splits": splits, "lm": lm, "out": out,
            "logs": logs}


def test_both_stages_learn(world):
    info = json.loads((stage1_dir(world["out"]) / "stage1.json").read_text())
    assert info["loss_last"] < info["loss_first"]  # stage 1 total loss goes down
    cfg = json.loads((world["out"] / "config.json").read_text())
    epochs = cfg["training_metrics"]["epochs"]
    assert epochs[-1]["total"] < epochs[0]["total"]  # stage 2 loss goes down
    assert epochs[-1]["video"] < epochs[0]["video"]
    # the cyclic world is learnable: validation video NDCG@5 well above chance (5/100 candidates)
    assert cfg["training_metrics"]["valid_video_ndcg@5"] > 0.3
    assert any(line.startswith("stage 2 epoch") for line in world["logs"])
    assert cfg["training_metrics"]["stopped_by"] == "max_epochs"  # 8 epochs, patience 8, no budget hit
    # under the default whole-pipeline budget (540 s) stage 1's steps got 40% of what was left after the
    # pre-trained embedding pass: orderings of the recorded timings, not a guess of how fast this machine is
    tm = cfg["training_metrics"]
    assert (0.4 * max(1.0, 540 - tm["total_s"]) <= cfg["hyperparameters"]["stage1"]["max_seconds"]
            <= 0.4 * (540 - tm["pretrained_embedding_s"]))


@pytest.mark.usefixtures("one_thread")
def test_checkpoint_round_trip_identical_scores(world):
    rec = load_recommender(world["out"], catalogue=world["catalogue"])
    assert isinstance(rec, LSVCRRecommender) and rec.name == "lsvcr"
    again = LSVCRRecommender.from_checkpoint(world["out"])
    splits = world["splits"]
    hist = splits.full.histories(np.arange(4))
    t = torch.tensor([[float(hist.video_time[b, 5]), float(hist.video_time[b, 12])] for b in range(4)],
                     dtype=torch.float64)
    vq = VideoQuery(t, torch.randint(1, 31, (4, 2, 5)))
    cq = CommentQuery(t, torch.randint(1, 31, (4, 2)), torch.randint(1, 121, (4, 2, 6)))
    assert torch.equal(rec.score_videos(hist, vq), again.score_videos(hist, vq))
    assert torch.equal(rec.score_comments(hist, cq), again.score_comments(hist, cq))
    # the stored validation metric is reproduced by the loaded model on the stored candidates
    cands = load_or_sample_candidates(splits, world["catalogue"], world["out"].parent)
    (res,) = evaluate(rec, splits, cands, world["catalogue"], split="valid", tasks=("video",))
    cfg = json.loads((world["out"] / "config.json").read_text())
    assert res.metrics["ndcg@5"] == pytest.approx(cfg["training_metrics"]["valid_video_ndcg@5"], abs=1e-9)


def test_mismatched_checkpoints_are_refused(world, tmp_path):
    # a catalogue without some trained videos (a later one that adds videos is served: test_lsvcr_unseen_items.py)
    other_cat, _ = prepare_data(cyclic_world(n_users=4, n_videos=29, n_requests=5))
    with pytest.raises(CheckpointError, match="different catalogue"):
        LSVCRRecommender.from_checkpoint(world["out"], catalogue=other_cat)
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(world["out"], bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["hyperparameters"]["sr"]["ffn"] = 128
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="shape mismatch"):
        LSVCRRecommender.from_checkpoint(bad)
    (bad / "text_embeddings.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="text_embeddings.safetensors is missing or corrupted"):
        LSVCRRecommender.from_checkpoint(bad)


def test_cold_video_falls_back_to_text(world):
    rec = LSVCRRecommender.from_checkpoint(world["out"])
    m = rec.model
    known = set(world["splits"].train.video.tolist()) | set(world["splits"].train.comment_video.tolist())
    cold = [v for v in range(1, 31) if v not in known]
    warm = sorted(known)[0]
    assert float(m.video_id.weight[warm].detach().abs().sum()) > 0
    if cold:  # never in training: zero ID row, text-only item vector
        v = torch.tensor(cold)
        assert torch.count_nonzero(m.video_id.weight[v]) == 0
        torch.testing.assert_close(m.video_item(v), m.title_vec(v))
    # index 0 (a video unknown to the catalogue) scores by nothing but its (absent) text: -inf as padding
    hist = world["splits"].full.histories(np.arange(1))
    s = rec.score_videos(hist, VideoQuery(torch.tensor([[2e9]], dtype=torch.float64), torch.tensor([[[0, warm]]])))
    assert torch.isinf(s[0, 0, 0]) and torch.isfinite(s[0, 0, 1])


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("ablation", ["no_align", "no_comments", "no_text"])
def test_ablations_train_and_load(world, ablation):
    out = world["root"] / "ck" / f"lsvcr-{ablation}"
    cfg = small_config(epochs=2)
    if ablation == "no_comments":
        cfg.stage1 = Stage1Config(n_samples=32, batch_size=16, epochs=1, n_video_items=3)
    train_lsvcr(None, out, catalogue=world["catalogue"], splits=world["splits"], llm_path=str(world["lm"]),
                ablation=ablation, config=cfg, progress=False, log=lambda s: None)
    rec = LSVCRRecommender.from_checkpoint(out, catalogue=world["catalogue"])
    sr = rec.model.cfg
    assert sr.use_comments == (ablation != "no_comments") and sr.use_text == (ablation != "no_text")
    assert stage1_dir(out).exists() == (ablation == "no_comments")
    cfg_json = json.loads((out / "config.json").read_text())
    assert cfg_json["ablation"] == ablation and cfg_json["training_metrics"]["best_epoch"] >= 1
    # the LM part that embeds new texts: tuned blocks (no_comments has a stage 1), the pre-trained LM as is
    # (no_align: no file to store), none at all (no_text)
    tuned = cfg_json.get("tuned_lm")
    expect = {"no_comments": ("top", "tuned_lm.safetensors"), "no_align": ("frozen", None), "no_text": None}[ablation]
    assert (tuned if tuned is None else (tuned["tuning"], tuned["file"])) == expect
    assert (rec.tuned_lm is None) == (ablation == "no_text")


@pytest.mark.usefixtures("one_thread")
def test_stage2_budget_validates_a_partial_last_epoch(world):
    """A budget that ends inside an epoch: stage 2 stops at step granularity, validates the partial
    epoch and keeps it as a checkpoint (no budget second is wasted waiting for a whole epoch)."""
    from models.lsvcr.stage2 import run_stage2

    cfg = small_config(epochs=5, batch_users=2, max_seconds=1e-6)
    cfg.sr.n_videos, cfg.sr.n_comments = world["catalogue"].n_videos, world["catalogue"].n_comments
    cfg.sr.use_ids, cfg.sr.use_text, cfg.sr.lm_dim = True, False, 8
    from models.lsvcr.text import TextTables

    logs: list[str] = []
    cands = load_or_sample_candidates(world["splits"], world["catalogue"], world["root"] / "ck")
    res = run_stage2(world["splits"], world["catalogue"], cands, TextTables.empty(world["catalogue"], 8), cfg,
                     log=logs.append)
    (row,) = res.history
    assert row["steps"] == 1 and row["partial"] and res.best_epoch == 1
    assert any("stops at its time budget" in s for s in logs)
    assert res.stopped_by == "time_budget"  # recorded, so a comparison can flag a budget-cut model


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("task", ["video", "comment"])
def test_one_stage2_model_per_task_selects_on_its_task(world, task):
    """Stage2Config.task: validation scores this task only, and the kept epoch is the one with its best
    NDCG@5 (the joint model's score is the mean of both tasks)."""
    from models.lsvcr.stage2 import run_stage2
    from models.lsvcr.text import TextTables

    cfg = small_config(epochs=4, batch_users=4, patience=4, task=task)
    cfg.sr.n_videos, cfg.sr.n_comments = world["catalogue"].n_videos, world["catalogue"].n_comments
    cfg.sr.use_ids, cfg.sr.use_text, cfg.sr.lm_dim = True, False, 8
    cands = load_or_sample_candidates(world["splits"], world["catalogue"], world["root"] / "ck")
    logs: list[str] = []
    res = run_stage2(world["splits"], world["catalogue"], cands, TextTables.empty(world["catalogue"], 8), cfg,
                     log=logs.append)
    other = "comment" if task == "video" else "video"
    scores = [row[f"{task}_ndcg@5"] for row in res.history]
    assert len(scores) == 4 and not any(f"{other}_ndcg@5" in row for row in res.history)
    assert all(row["valid_score"] == row[f"{task}_ndcg@5"] for row in res.history)
    assert res.best_epoch == 1 + int(np.argmax(scores))  # the first of equal bests
    assert all(row[other] == 0.0 for row in res.history)  # the other task's loss is not trained


@pytest.mark.usefixtures("one_thread")
def test_stage2_records_early_stopping(world):
    """With a zero learning rate validation never improves after epoch 1, so patience 1 stops at epoch 2."""
    from models.lsvcr.stage2 import run_stage2
    from models.lsvcr.text import TextTables

    cfg = small_config(epochs=5, batch_users=8, patience=1)
    cfg.stage2.lr = 0.0  # set past the config's check (lr > 0): the weights never move
    cfg.sr.n_videos, cfg.sr.n_comments = world["catalogue"].n_videos, world["catalogue"].n_comments
    cfg.sr.use_ids, cfg.sr.use_text, cfg.sr.lm_dim = True, False, 8
    cands = load_or_sample_candidates(world["splits"], world["catalogue"], world["root"] / "ck")
    res = run_stage2(world["splits"], world["catalogue"], cands, TextTables.empty(world["catalogue"], 8), cfg,
                     log=lambda s: None)
    assert res.stopped_by == "early_stopping" and len(res.history) == 2 and res.best_epoch == 1


@pytest.mark.usefixtures("one_thread")
def test_decoder_llm_stage1_then_separate_finetune(world, tmp_path):
    lm = save_tiny_lm(tmp_path / "tiny-decoder", "decoder")
    out = tmp_path / "ck" / "lsvcr"
    cfg = LSVCRConfig(stage1=Stage1Config(n_samples=64, batch_size=16, epochs=2, lm_tuning="full", lr_lm=3e-3),
                      stage2=Stage2Config(epochs=1, batch_users=8))
    s1 = train_lsvcr(None, out, stage="align", catalogue=world["catalogue"], splits=world["splits"],
                     llm_path=str(lm), config=cfg, progress=False, log=lambda s: None)
    info = json.loads((s1 / "stage1.json").read_text())
    lm_losses = [h["lm"] for h in info["history"]]
    assert all(x > 0 for x in lm_losses) and np.mean(lm_losses[-2:]) < np.mean(lm_losses[:2])
    assert not out.exists()
    with pytest.raises(FileNotFoundError, match="stage='align'"):
        train_lsvcr(None, tmp_path / "ck" / "other", stage="finetune", catalogue=world["catalogue"],
                    splits=world["splits"], progress=False, log=lambda s: None)
    train_lsvcr(None, out, stage="finetune", catalogue=world["catalogue"], splits=world["splits"], config=cfg,
                progress=False, log=lambda s: None)
    rec = LSVCRRecommender.from_checkpoint(out)
    assert rec.model.cfg.lm_dim == 32  # the tiny decoder's hidden size


def test_training_segments_predict_every_event_once_with_context(world):
    from models.lsvcr.stage2 import make_segments, segment_histories

    train = world["splits"].train
    seg = make_segments(train, segment_len=5, context=3)
    hist, vmask, cmask = segment_histories(train, seg, np.arange(len(seg)))
    # every training event is a prediction target in exactly one segment
    assert int(vmask.sum()) == len(train.video) and int(cmask.sum()) == len(train.comment_video)
    for i in np.flatnonzero(seg.vq > 0)[:5]:  # later segments carry 3 events of context before the targets
        assert seg.vq[i] - seg.v0[i] == 3 and not vmask[i, :3].any() and vmask[i, 3]
        u = seg.user[i]
        full = train.user_videos(u)
        assert torch.equal(hist.video_ids[i, :seg.v1[i] - seg.v0[i]], torch.from_numpy(full[seg.v0[i]:seg.v1[i]]))


@pytest.mark.usefixtures("one_thread")
def test_stage1_budget_stops_at_step_granularity(world):
    """A stage-1 budget that ends after the first step: one step is taken (a model always exists),
    the rest of the epochs are skipped, the final re-embedding still runs, and the log says why."""
    from models.lsvcr.llm import load_llm
    from models.lsvcr.stage1 import run_stage1
    from models.lsvcr.text import embed_catalogue

    cat, splits = world["catalogue"], world["splits"]
    cfg = small_config()
    cfg.stage1.max_seconds = 1e-6
    cfg.sr.n_videos, cfg.sr.n_comments = cat.n_videos, cat.n_comments
    lm = load_llm(str(world["lm"]))
    cfg.sr.lm_dim = lm.hidden_size
    cfg.sr.__post_init__()
    pre = embed_catalogue(lm, cat, max_tokens=cfg.stage1.text_max_tokens)
    logs: list[str] = []
    res = run_stage1(splits.train, cat, lm, pre, cfg.sr, cfg.stage1, log=logs.append)
    assert len(res.history) == 1  # 3 epochs of 96 samples would be 6+ steps
    assert res.truncated and res.steps == 1 and res.planned_steps >= 6  # the result knows it was cut
    assert any("stage 1 stops at its time budget" in s for s in logs)
    assert not torch.equal(res.tables.title_emb, pre.title_emb)  # the tuned blocks re-embedded the catalogue
    unbudgeted = run_stage1(splits.train, cat, load_llm(str(world["lm"])), pre, cfg.sr,
                            Stage1Config(**(cfg.stage1.to_dict() | {"max_seconds": None})), log=logs.append)
    assert len(unbudgeted.history) >= 3 * 2
    assert not unbudgeted.truncated and unbudgeted.steps == unbudgeted.planned_steps


@pytest.mark.usefixtures("one_thread")
def test_a_truncated_stage1_is_recorded_and_said_loudly(world, tmp_path):
    """A time budget that cuts alignment short no longer passes silently: the checkpoint records the
    steps run and planned, and the log warns."""
    from dataclasses import replace

    cfg = small_config(epochs=1)
    cfg = replace(cfg, stage1=replace(cfg.stage1, max_seconds=1e-6))
    logs: list[str] = []
    out = train_lsvcr(None, tmp_path / "ck" / "cut", catalogue=world["catalogue"], splits=world["splits"],
                      llm_path=str(world["lm"]), config=cfg, progress=False, log=logs.append)
    tm = json.loads((out / "config.json").read_text())["training_metrics"]
    assert tm["stage1_truncated"] and tm["stage1_steps"] == 1 and tm["stage1_planned_steps"] >= 6
    assert any(line.startswith("WARNING: stage 1 (alignment) ran 1 of") for line in logs)
    whole = json.loads((world["out"] / "config.json").read_text())
    assert not whole["training_metrics"]["stage1_truncated"]
    assert whole["stage1"]["steps"] == whole["stage1"]["planned_steps"]  # provenance of stage 1 in stage 2


@pytest.mark.usefixtures("one_thread")
def test_stage_and_ablation_combinations_are_checked(world, tmp_path):
    from models.errors import ModelInputError

    for ablation in ("no_align", "no_text"):  # no alignment stage to run
        with pytest.raises(ModelInputError, match="has no alignment stage"):
            train_lsvcr(None, tmp_path / "x", stage="align", ablation=ablation, catalogue=world["catalogue"],
                        splits=world["splits"], llm_path=str(world["lm"]), config=small_config(), progress=False)
    # a stage-1 result of another seed (or ablation) cannot seed stage 2
    with pytest.raises(ModelInputError, match="aligned with a different setting: seed 0"):
        train_lsvcr(None, world["out"], stage="finetune", seed=1, catalogue=world["catalogue"],
                    splits=world["splits"], llm_path=str(world["lm"]), config=small_config(), progress=False)
    with pytest.raises(ModelInputError, match="ablation None"):
        train_lsvcr(None, world["out"], stage="finetune", ablation="no_comments", catalogue=world["catalogue"],
                    splits=world["splits"], llm_path=str(world["lm"]), config=small_config(), progress=False)


@pytest.mark.usefixtures("one_thread")
def test_train_lsvcr_leaves_the_callers_config_random_state_and_environment_alone(world, tmp_path, monkeypatch):
    """The pipeline derives its stage configs with dataclasses.replace (the budget shares, the SR
    model's sizes), seeds torch inside `seeded_torch` only, and sets no environment variable."""
    from tests.models.test_training_loop import _env

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # load_llm once set it; it reads local files only now
    cfg = small_config(epochs=1)
    cfg.stage1 = Stage1Config(n_samples=32, batch_size=16, epochs=1, n_video_items=3)
    before, env0 = cfg.to_dict(), _env()
    torch.manual_seed(99)
    state0 = torch.get_rng_state()
    train_lsvcr(None, tmp_path / "lsvcr", catalogue=world["catalogue"], splits=world["splits"], seed=4,
                llm_path=str(world["lm"]), epochs=1, stage1_epochs=1, config=cfg, progress=False, log=lambda s: None)
    assert cfg.to_dict() == before  # still seed 0, stage-1 max_seconds None, SR sizes as given
    assert torch.equal(torch.get_rng_state(), state0)
    assert _env() == env0
    saved = json.loads((tmp_path / "lsvcr" / "config.json").read_text())["hyperparameters"]
    assert saved["seed"] == 4 and saved["stage1"]["max_seconds"] is not None and saved["sr"]["use_ids"]


@pytest.mark.usefixtures("one_thread")
def test_stage2_killed_mid_run_resumes_to_the_same_checkpoint(world, tmp_path):
    """A fine-tune killed after epoch 3 and made again with the same resume file ends with the weights,
    history and best epoch of a run that never stopped; the file is gone once the checkpoint is saved."""
    import shutil

    cfg = small_config(epochs=6, patience=6)
    runs = {}
    for name in ("straight", "resumed"):
        out = tmp_path / name / "lsvcr"
        out.parent.mkdir()
        shutil.copytree(stage1_dir(world["out"]), stage1_dir(out))
        runs[name] = out
    kw = dict(stage="finetune", catalogue=world["catalogue"], splits=world["splits"], config=cfg, progress=False)
    train_lsvcr(None, runs["straight"], log=lambda s: None, **kw)
    state = tmp_path / "resumed" / "stage2.safetensors"

    def killed_in_epoch_4(line: str) -> None:
        if line.startswith("stage 2 epoch   4"):
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        train_lsvcr(None, runs["resumed"], log=killed_in_epoch_4, resume_state=state, **kw)
    assert state.exists() and not runs["resumed"].exists()
    logs: list[str] = []
    train_lsvcr(None, runs["resumed"], log=logs.append, resume_state=state, **kw)
    assert not state.exists()
    assert any(line.startswith("stage 2 resumed after epoch 3") for line in logs)
    got, want = (json.loads((runs[n] / "config.json").read_text()) for n in ("resumed", "straight"))
    assert got["weights_sha256"] == want["weights_sha256"]
    gm, wm = got["training_metrics"], want["training_metrics"]
    drop = lambda h: [{k: v for k, v in row.items() if k != "seconds"} for row in h]  # noqa: E731
    assert drop(gm["epochs"]) == drop(wm["epochs"]) and gm["best_epoch"] == wm["best_epoch"]
    assert gm["stage2_resumed_after"] == [3] and wm["stage2_resumed_after"] == []
