"""Training loop of `base` (SASRec): full-softmax cross-entropy, AdamW, early stopping on validation NDCG@5.

Training examples are the windows of `models.sasrec` (max_len events, stride max_len // 2) over each
user's training events; every training event j with at least one earlier-in-time event is a target,
read from the state at its last visible event i (time < t_j) in the window the scoring path would read
i from. So an epoch predicts every training event once, with the same context it gets at scoring time.

Loss per target: -log softmax(h_i E^T)[v_j] over all V videos (the pad column excluded), averaged over
the batch's targets. After each epoch the model scores the stored validation candidates; the epoch
with the best validation NDCG@5 is kept and training stops after `patience` epochs without
improvement (LSVCR's protocol). Deterministic given the seed (torch and numpy generators are seeded
here; CPU kernels are deterministic).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from models.adapters import SASRecRecommender
from models.budget import StepBudget
from models.catalogue import Catalogue
from models.evaluation import EvalCandidates, evaluate
from models.histories import EventLog, Splits
from models.sasrec import SASRec, SASRecConfig, n_windows


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
    seqs, win, pos, item = [], [], [], []
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
        w = np.where(src < max_len, 0, src // s - 1)
        win.append(base + w[ok])
        pos.append((src - s * w)[ok])
        item.append(items[ok])
    if not seqs:
        raise ValueError("no user has 2 or more training video events: nothing to train on")
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
    stopped_by: str = "max_epochs"  # or "early_stopping", "time_budget" (as LSVCR's Stage2Result)

    def metrics(self) -> dict:
        return {"best_epoch": self.best_epoch, "best_valid_ndcg@5": self.best_valid_ndcg5,
                "stopped_by": self.stopped_by, "epochs": self.history}


def train_sasrec(
    splits: Splits,
    catalogue: Catalogue,
    candidates: EvalCandidates,
    model_config: SASRecConfig | None = None,
    config: TrainConfig | None = None,
    log: Callable[[str], None] = print,
    name: str = "base",
) -> TrainResult:
    """Train `base` on `splits.train`, select the epoch on validation NDCG@5 (stored candidates)."""
    cfg = config or TrainConfig()
    mcfg = model_config or SASRecConfig(n_items=catalogue.n_videos)
    if mcfg.n_items != catalogue.n_videos:
        raise ValueError(f"model config has {mcfg.n_items} items, catalogue {catalogue.n_videos} videos")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    data = training_windows(splits.train, mcfg.max_len)
    keep = np.flatnonzero(np.diff(data.offsets) > 0)  # windows that carry targets
    model = SASRec(mcfg).to(cfg.device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rec = SASRecRecommender(model, catalogue, name=name, device=cfg.device)
    best_state, best, best_epoch, bad = None, -1.0, 0, 0
    history: list[dict] = []
    budget = StepBudget(cfg.max_seconds)
    stopped_by = "max_epochs"
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        perm = keep[rng.permutation(keep.shape[0])]
        total, count, done, partial = 0.0, 0, 0, False
        steps = range(0, perm.shape[0], cfg.batch_windows)
        for start in tqdm(steps, desc=f"epoch {epoch}", disable=not cfg.progress, leave=False):
            if not budget.step_fits():  # the budget ends inside this epoch: validate what we have
                partial = True
                break
            t_step = time.perf_counter()
            batch = perm[start:start + cfg.batch_windows]
            idx = np.concatenate([np.arange(data.offsets[w], data.offsets[w + 1]) for w in batch])
            local = np.repeat(np.arange(batch.shape[0]), np.diff(data.offsets)[batch])
            h = model.encode(data.seqs[batch].to(cfg.device))  # (Bw, T, d)
            user = h[torch.from_numpy(local).to(cfg.device), data.pos[idx].to(cfg.device)]  # (Nt, d)
            loss = F.cross_entropy(model.logits_all(user), data.item[idx].to(cfg.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                model.item_emb.weight[0].zero_()  # AdamW's weight decay must not move the pad row
            total += float(loss.detach()) * idx.shape[0]
            count += idx.shape[0]
            done += 1
            budget.record_step(time.perf_counter() - t_step)
        model.eval()
        t_eval = time.perf_counter()
        (res,) = evaluate(rec, splits, candidates, catalogue, split="valid", tasks=("video",))
        budget.record_eval(time.perf_counter() - t_eval)
        ndcg5 = res.metrics["ndcg@5"]
        improved = ndcg5 > best
        row = {"epoch": epoch, "loss": total / max(count, 1), "valid_ndcg@5": ndcg5,
               "valid_recall@10": res.metrics["recall@10"], "steps": done, "partial": partial,
               "seconds": time.perf_counter() - t0}
        history.append(row)
        log(f"epoch {epoch:3d}{f' ({done}/{len(steps)} steps)' if partial else ''}  loss {row['loss']:.4f}  valid ndcg@5 {ndcg5:.4f}  "
            f"recall@10 {row['valid_recall@10']:.4f}  {row['seconds']:.1f}s" + ("  *best" if improved else ""))
        if improved:
            best, best_epoch, bad = ndcg5, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
            if bad >= cfg.patience:
                log(f"early stop: no better validation NDCG@5 for {cfg.patience} epochs; best epoch {best_epoch}")
                stopped_by = "early_stopping"
                break
        if partial or not budget.step_fits():
            log(f"time budget: stop after {budget.elapsed():.0f} s of {cfg.max_seconds:.0f} s ({budget.steps} steps); "
                f"best epoch {best_epoch}")
            stopped_by = "time_budget"
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(rec, history, best_epoch, best, stopped_by)


def train_config_dict(mcfg: SASRecConfig, cfg: TrainConfig) -> dict:
    return {"model": asdict(mcfg), "train": asdict(cfg)}
