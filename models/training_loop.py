"""The epoch loop shared by the trainers that select an epoch on validation: `base` (SASRec,
`models/train_sasrec.py`) and LSVCR stage 2 (`models/lsvcr/stage2.py`).

A trainer says what is particular to it (`EpochTrainer`): the batches of an epoch, one optimisation
step on a batch, and the validation of the model after an epoch (a score, higher is better, and what
to record). `run_epochs` owns the rest, the same for every trainer:

- train mode for the steps, eval mode for validation and for the returned model;
- before every step, the time budget (`models.budget.StepBudget`): a step runs only while it and the
  validation that must follow still fit, else the epoch ends early (a *partial* epoch); the first step
  always runs, so a model always exists;
- after every epoch, partial or not, a validation pass and a history row
  `{"epoch", <the trainer's row>, "steps", "partial", "seconds"}`;
- the weights of the best-scoring epoch are kept (a copy of the state dict) and restored at the end;
  an epoch whose score does not compare (NaN) never counts as best, and if no epoch does, the last
  weights stay and `best_epoch` is 0;
- why training ended (`stopped_by`), checked in this order after each validation:
  `"early_stopping"`: `patience` epochs in a row without a better score (converged by the validation
  rule); `"time_budget"`: the budget ended the epoch or leaves no room for another step (possibly
  under-trained, and the log says so); `"max_epochs"`: every epoch ran.

The loop draws no random numbers; trainers draw theirs from generators they own. Module
initialisation and dropout, which read torch's global generator, run inside `seeded_torch`.

With `resume` (`Resume`), the loop writes the run's whole state after every epoch (`models.run_state`:
weights, optimizer, the trainer's generators, torch's, the best epoch's weights, the history and the
early-stopping count), and a later call with the same `resume` continues after the last saved epoch,
bit for bit as if it had never stopped; a state whose run has ended returns that run's result without
training. A state saved by a run with another `key` (config, seed, data) is refused.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

from models.budget import StepBudget
from models.run_state import load_state, save_state

StopReason = Literal["max_epochs", "early_stopping", "time_budget"]
STOP_REASONS: tuple[StopReason, ...] = ("max_epochs", "early_stopping", "time_budget")

B = TypeVar("B")


@contextmanager
def seeded_torch(seed: int) -> Iterator[None]:
    """Run the block with torch's global generators seeded with `seed`, then give the caller back the
    random state it had.

    Parameter initialisation (nn.Linear, nn.Embedding, ...), dropout and a Hugging Face model's
    missing weights draw from torch's global generators and take no generator argument, so a trainer
    must seed them to be deterministic; `torch.random.fork_rng` keeps that seeding inside the trainer."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


@dataclass(frozen=True)
class LoopSettings:
    epochs: int
    patience: int  # epochs in a row without a better validation score before stopping
    label: str = ""  # prefix of log lines and progress bars, e.g. "stage 2"
    score_name: str = "validation NDCG@5"  # what the score is, for the log
    progress: bool = False  # a progress bar per epoch

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.patience < 1:
            raise ValueError(f"LoopSettings: epochs and patience must be >= 1, got {self.epochs}, {self.patience}")

    @property
    def prefix(self) -> str:
        return f"{self.label} " if self.label else ""


@dataclass(frozen=True)
class EpochPass:
    """What an epoch's training pass did, as its validation sees it."""

    epoch: int  # 1-based
    steps: int  # optimisation steps taken
    planned: int  # batches the epoch had
    partial: bool  # the budget ended the epoch before its last batch


@dataclass(frozen=True)
class Validation:
    """A trainer's validation of the model after one epoch."""

    score: float  # selects the epoch: higher is better; NaN never counts as better
    row: dict[str, Any]  # entries of the epoch's history row (training losses, validation metrics)
    summary: str  # the body of the epoch's log line
    metrics: dict[str, float] = field(default_factory=dict)  # reported for the best epoch (LoopResult.best)


@dataclass(frozen=True)
class Resume:
    """Where `run_epochs` keeps the run's state between calls (see the module docstring)."""

    path: Path
    optimizer: torch.optim.Optimizer
    generators: Mapping[str, np.random.Generator]  # every generator the trainer draws from
    key: Mapping[str, Any]  # what the run is (JSON-able): config, seed, data; another run's state is refused


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, default=float))


class EpochTrainer(Protocol[B]):
    def batches(self, epoch: int) -> Sequence[B]:
        """The epoch's batches, in order (called in train mode at the start of each epoch)."""
        ...

    def step(self, batch: B) -> None:
        """One optimisation step on `batch`."""
        ...

    def validate(self, run: EpochPass) -> Validation:
        """Score the model (called in eval mode after each epoch, partial ones included)."""
        ...


@dataclass
class LoopResult:
    history: list[dict[str, Any]]  # one row per epoch run
    best_epoch: int  # 0 when no epoch had a comparable score
    best: Validation | None  # the best epoch's validation
    stopped_by: StopReason
    budget: StepBudget  # steps taken, mean step time, last validation time
    seconds_before: float = 0.0  # wall seconds of earlier calls this run resumed from (`Resume`)
    resumed_after: list[int] = field(default_factory=list)  # the epochs after which earlier calls stopped

    @property
    def best_score(self) -> float:
        return self.best.score if self.best is not None else math.nan


def run_epochs(model: torch.nn.Module, trainer: EpochTrainer[B], settings: LoopSettings, *,
               budget: StepBudget | None = None, log: Callable[[str], None] = print,
               resume: Resume | None = None) -> LoopResult:
    """Train `model` epoch by epoch (see the module docstring); returns with the best epoch's weights
    loaded and the model in eval mode. `budget`: None = no time budget; `resume`: None = nothing kept."""
    budget = budget if budget is not None else StepBudget(None)
    clock, pre = budget.clock, settings.prefix
    t_call = clock()
    history: list[dict[str, Any]] = []
    best: Validation | None = None
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch, bad, first, seconds_before = 0, 0, 1, 0.0
    resumed_after: list[int] = []
    stopped_by: StopReason = "max_epochs"
    if resume is not None:
        saved = load_state(resume.path, model=model, optimizer=resume.optimizer, np_generators=resume.generators,
                           extra=True)
        if saved is not None:
            key = _jsonable(resume.key)
            if saved["key"] != key:
                differ = sorted(k for k in set(saved["key"]) | set(key) if saved["key"].get(k) != key.get(k))
                raise ValueError(f"{resume.path} holds the training state of another run (differs in: "
                                 f"{', '.join(differ)}); delete it to train from the start")
            history, best_epoch, bad = saved["history"], saved["best_epoch"], saved["bad"]
            best = Validation(**saved["best"]) if saved["best"] is not None else None
            best_state = saved["extra"] or None
            first, seconds_before = saved["epoch"] + 1, saved["seconds"]
            resumed_after = [*saved["resumed_after"], saved["epoch"]]
            if saved["stopped_by"] is not None:  # that run had ended: nothing left to train
                stopped_by, first = saved["stopped_by"], settings.epochs + 1
            log(f"{pre}resumed after epoch {saved['epoch']} from {resume.path} (best epoch {best_epoch}, "
                f"{seconds_before:.0f} s so far)" + ("; that run had ended" if saved["stopped_by"] else ""))
    for epoch in range(first, settings.epochs + 1):
        t_epoch = clock()
        model.train()
        batches = trainer.batches(epoch)
        done, partial = 0, False
        for batch in tqdm(batches, desc=f"{pre}epoch {epoch}", disable=not settings.progress, leave=False):
            if not budget.step_fits():  # the budget ends inside this epoch: validate what we have
                partial = True
                break
            t_step = clock()
            trainer.step(batch)
            done += 1
            budget.record_step(clock() - t_step)
        model.eval()
        run = EpochPass(epoch, done, len(batches), partial)
        t_eval = clock()
        val = trainer.validate(run)
        budget.record_eval(clock() - t_eval)
        improved = val.score > (best.score if best is not None else -math.inf)
        row = {"epoch": epoch, **val.row, "steps": done, "partial": partial, "seconds": clock() - t_epoch}
        history.append(row)
        log(f"{pre}epoch {epoch:3d}{f' ({done}/{len(batches)} steps)' if partial else ''}  {val.summary}  "
            f"{row['seconds']:.1f}s" + ("  *best" if improved else ""))
        stop: StopReason | None = None
        if improved:
            best, best_epoch, bad = val, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
            if bad >= settings.patience:
                log(f"{pre}early stop: no better {settings.score_name} for {settings.patience} epochs; "
                    f"best epoch {best_epoch}")
                stop = "early_stopping"
        if stop is None and (partial or not budget.step_fits()):
            log(f"{pre}time budget: training stops at its time budget ({budget.max_seconds:.0f} s; "
                f"{budget.elapsed():.0f} s used, {budget.steps} steps of {budget.step_seconds:.2f} s, validation "
                f"{budget.eval_seconds:.1f} s); best epoch {best_epoch}; early stopping had not ended training, "
                "so the model may be under-trained")
            stop = "time_budget"
        if resume is not None:
            save_state(resume.path, model=model, optimizer=resume.optimizer, np_generators=resume.generators,
                       extra=best_state, counters=_jsonable({
                           "key": resume.key, "epoch": epoch, "history": history, "best_epoch": best_epoch,
                           "bad": bad, "best": asdict(best) if best is not None else None, "stopped_by": stop,
                           "seconds": seconds_before + clock() - t_call, "resumed_after": resumed_after}))
        if stop is not None:
            stopped_by = stop
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return LoopResult(history, best_epoch, best, stopped_by, budget, seconds_before, resumed_after)
