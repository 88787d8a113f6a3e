"""LSVCR as the paper deploys it: one model per task, fine-tuned (stage 2) from one stage 1, behind one
`Recommender`: video scores from the video model, comment scores from the comment model.

Why: on the default world the joint model (one stage 2 for both tasks) is worse on video than the video
model alone (-0.003 NDCG@10 on all queries, -0.048 on cold videos, 3 seeds, paired intervals excluding
zero) and level on comments (BENCHMARKS.md, temporal protocol), and the rule is to keep the joint model
only when it is at least as good on both.

A pair checkpoint is a folder with `video/` and `comment/`, each a complete LSVCR checkpoint (its own
digest, catalogue, text tables and tuned LM part), and a `config.json` of kind "lsvcr_per_task" that
names them, records each part's weights digest, and carries the fields every checkpoint has
(`weights_sha256`: a digest of the two parts' digests, so a swapped part is refused; the shared
`catalogue_digest`, `data_fingerprint`; `training_data` for the replay's window check). The two parts'
identical files (the tuned LM part, the text tables) are stored once by git.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from torch import Tensor

from models.batch import CommentQuery, UserHistories, VideoQuery
from models.catalogue import Catalogue
from models.checkpoint import CONFIG_FILE, FORMAT_VERSION, CheckpointError, code_version, read_config
from models.errors import ModelInputError
from models.lsvcr.adapter import KIND as PART_KIND
from models.lsvcr.adapter import LSVCRRecommender
from models.lsvcr.config import LSVCRConfig

KIND = "lsvcr_per_task"
PARTS = ("video", "comment")


def pair_digest(digests: dict[str, str]) -> str:
    return hashlib.sha256("\n".join(f"{p}:{digests[p]}" for p in PARTS).encode()).hexdigest()


class TaskPairRecommender:
    """Two LSVCR models behind the `Recommender` interface, each answering the task it was trained for."""

    kind = KIND

    def __init__(self, video: LSVCRRecommender, comment: LSVCRRecommender, *, name: str = "lsvcr") -> None:
        if video.catalogue.digest() != comment.catalogue.digest():
            raise ValueError("the video and comment models were loaded with different catalogues")
        self.parts = {"video": video, "comment": comment}
        self.catalogue = video.catalogue
        self.name = name
        self.digest = pair_digest({p: r.digest for p, r in self.parts.items()})

    def score_videos(self, hist: UserHistories, query: VideoQuery) -> Tensor:
        return self.parts["video"].score_videos(hist, query)

    def score_comments(self, hist: UserHistories, query: CommentQuery) -> Tensor:
        return self.parts["comment"].score_comments(hist, query)

    def set_comment_likes(self, likes: np.ndarray | None) -> None:
        """Like counts reach comment scores through the comment model's like-count prior only."""
        from models.adapters import comment_likes_setter

        setter = comment_likes_setter(self.parts["comment"])
        if setter is not None:
            setter(likes)


def save_pair(folder: Path | str, video: Path | str, comment: Path | str) -> Path:
    """Assemble a pair checkpoint from two LSVCR checkpoint folders (copied, not moved): `video` trained
    with `Stage2Config.task` "video", `comment` with "comment", on the same data and catalogue. Written to
    a sibling temporary folder and renamed into place, as every checkpoint."""
    folder, sources = Path(folder), {"video": Path(video), "comment": Path(comment)}
    configs = {p: read_config(src) for p, src in sources.items()}
    for part, cfg in configs.items():
        if cfg["kind"] != PART_KIND:
            raise CheckpointError(f"{sources[part]} holds a {cfg['kind']!r} model; a pair is made of LSVCR models")
        task = cfg.get("hyperparameters", {}).get("stage2", {}).get("task", "both")
        if task != part:
            raise CheckpointError(f"{sources[part]} was fine-tuned for task {task!r}, not {part!r}: train it with "
                                  f"Stage2Config.task={part!r}")
    for key in ("catalogue_digest", "data_fingerprint", "training_data"):
        if configs["video"].get(key) != configs["comment"].get(key):
            raise CheckpointError(f"the video and comment models differ in {key}; train both on the same data")
    digests = {p: str(c["weights_sha256"]) for p, c in configs.items()}
    video_cfg = configs["video"]
    stopped = [c.get("training_metrics", {}).get("stopped_by") for c in configs.values()]
    config = {
        "format_version": FORMAT_VERSION, "kind": KIND, "code_version": code_version(),
        "parts": {p: {"folder": p, "weights_sha256": digests[p]} for p in PARTS},
        "weights_sha256": pair_digest(digests), "catalogue_digest": video_cfg["catalogue_digest"],
        "data_fingerprint": video_cfg.get("data_fingerprint"), "seed": video_cfg.get("seed"),
        # the replay warns about an under-trained model from this field: the worse of the two parts
        "training_metrics": {"stopped_by": "time_budget" if "time_budget" in stopped else stopped[0],
                             "parts": {p: c.get("training_metrics") for p, c in configs.items()}},
    }
    if video_cfg.get("training_data") is not None:
        config["training_data"] = video_cfg["training_data"]
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        for part, src in sources.items():
            shutil.copytree(src, tmp / part)
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def load_pair(folder: Path | str, *, catalogue: Catalogue | None = None, name: str = "lsvcr",
              device: str = "cpu") -> TaskPairRecommender:
    """Loader registered in `models.adapters.KIND_LOADERS` for kind "lsvcr_per_task"."""
    folder = Path(folder)
    config = read_config(folder)
    if config["kind"] != KIND:
        raise CheckpointError(f"{folder} holds a {config['kind']!r} model, expected {KIND!r}")
    parts = config.get("parts") or {}
    if sorted(parts) != sorted(PARTS):
        raise CheckpointError(f"{folder}/{CONFIG_FILE} names parts {sorted(parts)}, expected {list(PARTS)}; "
                              "re-assemble it with models.lsvcr.pair.save_pair")
    recs = {}
    for part in PARTS:
        rec = LSVCRRecommender.from_checkpoint(folder / parts[part]["folder"], catalogue=catalogue,
                                               name=f"{name}:{part}", device=device)
        if rec.digest != parts[part]["weights_sha256"]:
            raise CheckpointError(f"{folder}/{parts[part]['folder']} is not the {part} model this pair was made "
                                  "of (its weights digest differs); re-assemble the pair")
        task = rec.config.stage2.task if rec.config is not None else "both"
        if task != part:
            raise CheckpointError(f"{folder}/{parts[part]['folder']} was fine-tuned for task {task!r}, not {part!r}")
        recs[part] = rec
    pair = TaskPairRecommender(recs["video"], recs["comment"], name=name)
    if pair.digest != config["weights_sha256"]:
        raise CheckpointError(f"{folder}/{CONFIG_FILE}: weights_sha256 is not the digest of its parts; re-assemble")
    return pair


def train_pair(out_dir: Path | str, *, config: LSVCRConfig | None = None, ablation: str | None = None,
               log: Callable[[str], None] = print, resume: bool = False, **kwargs) -> Path:
    """Train the per-task pair: stage 1 once (at `stage1_dir(out_dir)`, as the joint model keeps it), then
    stage 2 for each task from that stage 1, assembled at `out_dir`. `kwargs` go to `train_lsvcr` (data or
    catalogue + splits, seed, epochs, device, candidates_dir, ...), never a time budget: the pair trains to
    convergence (a budget split across three trainings would cover less than it claims).
    `resume`: continue an interrupted call with the same settings: a finished stage 1 and a finished part
    are kept, a part killed in stage 2 continues from its last finished epoch (`stage2_state_path`)."""
    from models.lsvcr.train import stage1_dir, stage2_state_path, train_lsvcr

    out_dir = Path(out_dir)
    base = config or LSVCRConfig()
    own_stage1 = ablation not in ("no_align", "no_text")
    if own_stage1:
        if resume and stage1_dir(out_dir).is_dir():  # written atomically: a folder there is a finished stage 1
            log(f"per-task pair: stage 1 already done, in {stage1_dir(out_dir)}")
        else:
            log("per-task pair: stage 1 (shared by both tasks)")
            train_lsvcr(None, out_dir, stage="align", ablation=ablation, config=base, time_budget_s=None, log=log,
                        **kwargs)
    parts = {}
    for task in PARTS:
        folder = out_dir.with_name(f"{out_dir.name}-{task}")
        cfg = replace(base, stage2=replace(base.stage2, task=task))
        if resume and _finished_part(folder, cfg, ablation, kwargs):
            log(f"per-task pair: the {task} model is already trained, in {folder}")
            parts[task] = folder
            continue
        if own_stage1:  # the part's stage-1 folder is the shared one
            link = stage1_dir(folder)
            if link.exists() and not link.is_symlink():
                raise ModelInputError(f"{link} exists and is not the link to the shared stage 1; remove it")
            link.unlink(missing_ok=True)  # a link an interrupted call left
            link.symlink_to(stage1_dir(out_dir).resolve(), target_is_directory=True)
        state = stage2_state_path(folder)
        if not resume:
            state.unlink(missing_ok=True)
        log(f"per-task pair: stage 2 for the {task} task")
        parts[task] = train_lsvcr(None, folder, stage="finetune" if own_stage1 else "all", ablation=ablation,
                                  config=cfg, time_budget_s=None, name=f"lsvcr-{task}", log=log,
                                  resume_state=state, **kwargs)
    save_pair(out_dir, parts["video"], parts["comment"])
    for folder in parts.values():  # the pair holds copies; its stage 1 stays beside it
        shutil.rmtree(folder)
        if own_stage1:
            stage1_dir(folder).unlink()
    log(f"per-task pair saved to {out_dir}")
    return out_dir


def _finished_part(folder: Path, cfg: LSVCRConfig, ablation: str | None, kwargs: dict) -> bool:
    """Whether `folder` holds a part an interrupted `train_pair` finished with these settings."""
    try:
        ck = read_config(folder)
    except CheckpointError:
        return False
    hp = ck.get("hyperparameters", {})
    want = cfg.to_dict()
    if kwargs.get("epochs") is not None:
        want["stage2"]["epochs"] = kwargs["epochs"]
    same = lambda d: {k: v for k, v in d.items() if k != "max_seconds"}  # noqa: E731
    return (ck.get("kind") == PART_KIND and ck.get("seed") == kwargs.get("seed", 0) and ck.get("ablation") == ablation
            and same(hp.get("stage2", {})) == same(want["stage2"])
            and hp.get("sr", {}).get("comment_prior") == want["sr"]["comment_prior"]
            and hp.get("llm_path") == (kwargs.get("llm_path") or want["llm_path"]))
