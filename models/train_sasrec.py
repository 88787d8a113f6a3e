"""Training loop of `base` (SASRec): full-softmax cross-entropy, AdamW, early stopping on validation NDCG@5.

Training examples are the windows of `models.sasrec` (max_len events, stride max_len // 2) over each
user's training events; every training event j with at least one earlier-in-time event is a target,
read from the state at its last visible event i (time < t_j) in the window the scoring path would read
i from. So an epoch predicts every training event once, with the same context it gets at scoring time.

Loss per target: -log softmax(h_i E^T)[v_j] over all V videos (the pad column excluded), averaged over
the batch's targets; on data cut before later uploads (`Splits.available`), over the videos published by
then: an upload after the cut is no negative, so its row stays as initialised until the model meets it.
After each epoch the model scores the stored validation candidates; the epoch with the best validation
NDCG@5 is kept and training stops after `patience` epochs without improvement (LSVCR's protocol), or at the time budget (`max_seconds`, step granularity); the epoch
loop, its budget and `stopped_by` are `models.training_loop`'s, shared with LSVCR stage 2.
Deterministic given the seed: batches come from a numpy generator seeded here, initialisation and
dropout from torch's global generator seeded inside `seeded_torch` (the caller's random state is
restored afterwards); CPU kernels are deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models.adapters import SASRecRecommender
from models.budget import StepBudget
from models.catalogue import Catalogue
from models.errors import ModelInputError
from models.evaluation import EvalCandidates, evaluate
from models.histories import EventLog, Splits
from models.sasrec import SASRec, SASRecConfig, n_windows
from models.training_loop import (
    EpochPass,
    LoopSettings,
    Resume,
    StopReason,
    Validation,
    run_epochs,
    seeded_torch,
)


@dataclass
class TrainConfig:
    epochs: int = 50
    batch_windows: int = 128  # windows per step (each holds up to max_len targets)
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 5  # epochs without a better validation NDCG@5 before stopping
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
    max_seconds: float | None = None  # wall-clock cap (fair comparisons with budgeted models); None = none

    def __post_init__(self) -> None:
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError("TrainConfig.max_seconds must be > 0 (or None)")
        if self.epochs < 1 or self.batch_windows < 1 or self.patience < 1:
            raise ValueError("TrainConfig: epochs, batch_windows and patience must be >= 1")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError("TrainConfig: lr must be > 0 and weight_decay >= 0")


@dataclass
class TrainingWindows:
    seqs: torch.Tensor  # (NW, T) item indices, 0 = pad
    offsets: np.ndarray  # (NW+1,) CSR over targets
    pos: torch.Tensor  # (Nt,) position inside its window of the state that predicts the target
    item: torch.Tensor  # (Nt,) the target video index

    @property
    def n_targets(self) -> int:
        return int(self.item.shape[0])


def training_windows(train: EventLog, max_len: int) -> TrainingWindows:
    """Cut each user's training events into windows and attach every target to its reading window."""
    s = max_len // 2
    seqs: list[np.ndarray] = []
    win: list[np.ndarray] = []
    pos: list[np.ndarray] = []
    item: list[np.ndarray] = []
    for u in range(train.n_users):
        items, t = train.user_videos(u), train.user_video_times(u)
        n = items.shape[0]
        if n < 2:
            continue
        base = len(seqs)
        for w in range(int(n_windows(n, max_len))):
            seq = np.zeros(max_len, np.int64)
            chunk = items[s * w:s * w + max_len]
            seq[:chunk.shape[0]] = chunk
            seqs.append(seq)
        src = np.searchsorted(t, t, side="left") - 1  # last event strictly before each event's time
        ok = src >= 0
        wi = np.where(src < max_len, 0, src // s - 1)  # the window each state is read from
        win.append(base + wi[ok])
        pos.append((src - s * wi)[ok])
        item.append(items[ok])
    if not seqs:
        raise ModelInputError("no user has 2 or more training video events: nothing to train on")
    win_a, pos_a, item_a = np.concatenate(win), np.concatenate(pos), np.concatenate(item)
    order = np.argsort(win_a, kind="stable")
    offsets = np.concatenate([[0], np.cumsum(np.bincount(win_a, minlength=len(seqs)))]).astype(np.int64)
    return TrainingWindows(torch.from_numpy(np.stack(seqs)), offsets, torch.from_numpy(pos_a[order]),
                           torch.from_numpy(item_a[order]))


@dataclass
class TrainResult:
    recommender: SASRecRecommender
    history: list[dict] = field(default_factory=list)  # one dict per epoch
    best_epoch: int = 0
    best_valid_ndcg5: float = float("nan")
    stopped_by: StopReason = "max_epochs"  # or "early_stopping", "time_budget" (models.training_loop)
    settings: dict = field(default_factory=dict)  # the TrainConfig it ran with, for the checkpoint's record
    resumed_after: list[int] = field(default_factory=list)  # epochs after which earlier calls stopped (resume)

    def metrics(self) -> dict:
        return {"best_epoch": self.best_epoch, "best_valid_ndcg@5": self.best_valid_ndcg5,
                "stopped_by": self.stopped_by, "epochs": self.history, "settings": self.settings,
                "resumed_after": self.resumed_after}


@dataclass
class _SASRecEpochs:
    """`base`'s part of the shared epoch loop: window batches, the full-softmax step, validation NDCG@5."""

    model: SASRec
    rec: SASRecRecommender
    opt: torch.optim.Optimizer
    data: TrainingWindows
    keep: np.ndarray  # windows that carry targets
    rng: np.random.Generator
    cfg: TrainConfig
    splits: Splits
    candidates: EvalCandidates
    catalogue: Catalogue
    total: float = 0.0  # the epoch's summed target losses
    count: int = 0  # and targets
    unavailable: torch.Tensor | None = None  # (V+1,) videos published after the data's end: no negatives

    def batches(self, epoch: int) -> list[np.ndarray]:
        self.total, self.count = 0.0, 0
        perm = self.keep[self.rng.permutation(self.keep.shape[0])]
        return [perm[s:s + self.cfg.batch_windows] for s in range(0, perm.shape[0], self.cfg.batch_windows)]

    def step(self, batch: np.ndarray) -> None:
        data, dev, model = self.data, self.cfg.device, self.model
        idx = np.concatenate([np.arange(data.offsets[w], data.offsets[w + 1]) for w in batch])
        local = np.repeat(np.arange(batch.shape[0]), np.diff(data.offsets)[batch])
        h = model.encode(data.seqs[batch].to(dev))  # (Bw, T, d)
        user = h[torch.from_numpy(local).to(dev), data.pos[idx].to(dev)]  # (Nt, d)
        logits = model.logits_all(user)
        if self.unavailable is not None:
            logits = logits.masked_fill(self.unavailable, float("-inf"))
        loss = F.cross_entropy(logits, data.item[idx].to(dev))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            model.item_emb.weight[0].zero_()  # AdamW's weight decay must not move the pad row
        self.total += float(loss.detach()) * idx.shape[0]
        self.count += idx.shape[0]

    def validate(self, run: EpochPass) -> Validation:
        (res,) = evaluate(self.rec, self.splits, self.candidates, self.catalogue, split="valid", tasks=("video",))
        ndcg5, recall10, loss = res.metrics["ndcg@5"], res.metrics["recall@10"], self.total / max(self.count, 1)
        return Validation(ndcg5, {"loss": loss, "valid_ndcg@5": ndcg5, "valid_recall@10": recall10},
                          f"loss {loss:.4f}  valid ndcg@5 {ndcg5:.4f}  recall@10 {recall10:.4f}")


def train_state_path(out_dir: Path) -> Path:
    """Where base keeps its training state between epochs (`train_sasrec(resume=...)`), beside the checkpoint."""
    return out_dir.with_name(out_dir.name + ".train-state.safetensors")


def train_sasrec(
    splits: Splits,
    catalogue: Catalogue,
    candidates: EvalCandidates,
    model_config: SASRecConfig | None = None,
    config: TrainConfig | None = None,
    log: Callable[[str], None] = print,
    name: str = "base",
    resume: Path | None = None,
) -> TrainResult:
    """Train `base` on `splits.train`, select the epoch on validation NDCG@5 (stored candidates).
    `resume`: a file where the run's state is kept after every epoch, so a killed run continues from its
    last finished epoch (models.training_loop.Resume; the caller deletes it once the model is saved)."""
    cfg = config or TrainConfig()
    mcfg = model_config or SASRecConfig(n_items=catalogue.n_videos)
    if mcfg.n_items != catalogue.n_videos:
        raise ValueError(f"model config has {mcfg.n_items} items, catalogue {catalogue.n_videos} videos")
    with seeded_torch(cfg.seed):  # initialisation and dropout; the caller's torch random state is kept
        rng = np.random.default_rng(cfg.seed)
        data = training_windows(splits.train, mcfg.max_len)
        model = SASRec(mcfg).to(cfg.device)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        rec = SASRecRecommender(model, catalogue, name=name, device=cfg.device)
        trainer = _SASRecEpochs(model, rec, opt, data, np.flatnonzero(np.diff(data.offsets) > 0), rng, cfg,
                                splits, candidates, catalogue, unavailable=splits.later_uploads(cfg.device))
        key = {"config": {k: v for k, v in asdict(cfg).items() if k not in ("device", "progress", "max_seconds")},
               "model": asdict(mcfg), "train": splits.train.fingerprint(), "catalogue": catalogue.digest(),
               "candidates": candidates.key}
        keep = None if resume is None else Resume(resume, opt, {"batches": rng}, key)
        loop = run_epochs(model, trainer, LoopSettings(cfg.epochs, cfg.patience, progress=cfg.progress),
                          budget=StepBudget(cfg.max_seconds), log=log, resume=keep)
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("device", "progress")}
    return TrainResult(rec, loop.history, loop.best_epoch, loop.best_score, loop.stopped_by, settings,
                       loop.resumed_after)
