"""The shared epoch loop (models/training_loop.py): early stopping, the time budget and `stopped_by`,
with a scripted trainer and a fake clock, so every assertion is on counts and orderings, never on how
fast the machine is; and the trainers' manners: no change to the caller's config, random state or
environment."""

from __future__ import annotations

import math
import os
from dataclasses import asdict

import numpy as np
import pytest
import torch

from models.budget import StepBudget
from models.training_loop import EpochPass, LoopSettings, Validation, run_epochs, seeded_torch
from tests.models.test_budget import FakeClock


class Scripted:
    """Each step adds 1 to the weight and takes `step_s` on the clock; validation returns the next
    scripted score and takes `eval_s`."""

    def __init__(self, scores: list[float], n_batches: int = 4, step_s: float = 1.0, eval_s: float = 2.0,
                 clock: FakeClock | None = None) -> None:
        self.model = torch.nn.Linear(1, 1, bias=False)
        torch.nn.init.zeros_(self.model.weight)
        self.scores, self.n_batches, self.step_s, self.eval_s = list(scores), n_batches, step_s, eval_s
        self.clock = clock or FakeClock()
        self.modes: list[str] = []  # what mode the model was in at each call
        self.passes: list[EpochPass] = []

    def _mode(self, what: str) -> None:
        self.modes.append(f"{what}:{'train' if self.model.training else 'eval'}")

    def batches(self, epoch: int) -> list[int]:
        self._mode("batches")
        return list(range(self.n_batches))

    def step(self, batch: int) -> None:
        self._mode("step")
        with torch.no_grad():
            self.model.weight += 1.0
        self.clock.now += self.step_s

    def validate(self, run: EpochPass) -> Validation:
        self._mode("validate")
        self.passes.append(run)
        self.clock.now += self.eval_s
        score = self.scores.pop(0)
        return Validation(score, {"score": score}, f"score {score}", {"ndcg@5": score})

    def weight(self) -> float:
        return float(self.model.weight.detach())


def _run(t: Scripted, epochs: int, patience: int, max_seconds: float | None = None, label: str = ""):
    logs: list[str] = []
    res = run_epochs(t.model, t, LoopSettings(epochs, patience, label=label),
                     budget=StepBudget(max_seconds, clock=t.clock), log=logs.append)
    return res, logs


def test_early_stopping_keeps_the_best_epoch():
    t = Scripted([0.1, 0.3, 0.2, 0.25, 0.9])
    res, logs = _run(t, epochs=10, patience=2)
    assert res.stopped_by == "early_stopping" and len(res.history) == 4  # epochs 3 and 4 did not beat 0.3
    assert res.best_epoch == 2 and res.best_score == 0.3 and res.best.metrics == {"ndcg@5": 0.3}
    assert t.weight() == 8.0  # the weights after epoch 2 (4 steps an epoch), not after epoch 4 (16)
    assert not t.model.training
    assert [list(h) for h in res.history[:1]] == [["epoch", "score", "steps", "partial", "seconds"]]
    assert [h["seconds"] for h in res.history] == [6.0] * 4  # 4 steps of 1 s + validation 2 s (fake clock)
    assert [line.endswith("*best") for line in logs[:4]] == [True, True, False, False]
    assert logs[-1] == "early stop: no better validation NDCG@5 for 2 epochs; best epoch 2"
    # steps run in train mode, batches are drawn in train mode, validation runs in eval mode
    assert set(t.modes) == {"batches:train", "step:train", "validate:eval"}


def test_max_epochs_when_nothing_else_ends_training():
    t = Scripted([0.1, 0.2, 0.3])
    res, logs = _run(t, epochs=3, patience=1, label="stage 2")
    assert res.stopped_by == "max_epochs" and res.best_epoch == 3 and t.weight() == 12.0
    assert all(line.startswith("stage 2 epoch") for line in logs)


def test_time_budget_validates_a_partial_epoch_and_says_the_model_may_be_under_trained():
    """Budget 10 s, steps of 1 s, validation 2 s. Epoch 1: 4 steps (before any validation the reserve
    is 5 s: 3 + 1 + 5 <= 10), validation ends at 6 s. Epoch 2: 6 + 1 + 2 and 7 + 1 + 2 fit, 8 + 1 + 2 does
    not: a partial epoch of 2 steps, validated (and best), then training stops."""
    t = Scripted([0.1, 0.2, 0.3])
    res, logs = _run(t, epochs=5, patience=5, max_seconds=10.0)
    assert res.stopped_by == "time_budget" and res.best_epoch == 2
    assert [(h["steps"], h["partial"]) for h in res.history] == [(4, False), (2, True)]
    assert [(p.steps, p.planned, p.partial) for p in t.passes] == [(4, 4, False), (2, 4, True)]
    assert res.budget.steps == 6 and t.weight() == 6.0
    assert "epoch   2 (2/4 steps)" in logs[1]
    assert logs[-1].startswith("time budget: training stops at its time budget (10 s; 10 s used, 6 steps")
    assert logs[-1].endswith("best epoch 2; early stopping had not ended training, so the model may be under-trained")


def test_time_budget_also_ends_training_between_epochs():
    """Epoch 1 ends at 4 + 6 = 10 s (validation 6 s): no room for another step, so no epoch 2 starts."""
    t = Scripted([0.1, 0.2], eval_s=6.0)
    res, _ = _run(t, epochs=5, patience=5, max_seconds=10.0)
    assert res.stopped_by == "time_budget" and len(res.history) == 1 and not res.history[0]["partial"]


def test_early_stopping_wins_when_both_rules_end_the_same_epoch():
    t = Scripted([0.5, 0.1])
    res, logs = _run(t, epochs=5, patience=1, max_seconds=10.0)
    assert res.history[-1]["partial"] and res.stopped_by == "early_stopping"
    assert not any("time budget" in line for line in logs)


def test_incomparable_scores_never_count_as_best():
    t = Scripted([math.nan, math.nan])
    res, _ = _run(t, epochs=2, patience=5)
    assert res.best_epoch == 0 and res.best is None and math.isnan(res.best_score)
    assert t.weight() == 8.0 and res.stopped_by == "max_epochs"  # no epoch to restore: the last weights


def test_settings_are_checked():
    with pytest.raises(ValueError, match="patience"):
        LoopSettings(epochs=1, patience=0)


def test_seeded_torch_is_deterministic_and_restores_the_callers_state():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    expected_next = torch.rand(3)
    torch.set_rng_state(before)
    with seeded_torch(7):
        a = torch.rand(3)
    with seeded_torch(7):
        b = torch.rand(3)
    assert torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), before) and torch.equal(torch.rand(3), expected_next)


def _env() -> dict[str, str]:
    """The environment, less what torch itself records on first use of its compiler caches
    (TORCHINDUCTOR_CACHE_DIR, torch/_inductor/runtime/cache_dir_utils.py)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TORCHINDUCTOR_")}


def test_train_sasrec_leaves_the_callers_config_random_state_and_environment_alone(tmp_path):
    from models.evaluation import load_or_sample_candidates
    from models.histories import prepare_data
    from models.sasrec import SASRecConfig
    from models.train_sasrec import TrainConfig, train_sasrec
    from tests.models.fixtures import cyclic_world

    prep = prepare_data(cyclic_world(n_users=6, n_videos=12, n_requests=8))
    cands = load_or_sample_candidates(prep.splits, prep.catalogue, tmp_path)
    mcfg = SASRecConfig(prep.catalogue.n_videos, hidden=16, ffn=32, max_len=8)
    cfg = TrainConfig(epochs=2, batch_windows=4, progress=False, seed=3)
    mcfg0, cfg0, env0 = asdict(mcfg), asdict(cfg), _env()
    torch.manual_seed(99)
    state0 = torch.get_rng_state()
    res = train_sasrec(prep.splits, prep.catalogue, cands, mcfg, cfg, log=lambda s: None)
    assert torch.equal(torch.get_rng_state(), state0)
    assert asdict(mcfg) == mcfg0 and asdict(cfg) == cfg0
    assert _env() == env0
    again = train_sasrec(prep.splits, prep.catalogue, cands, mcfg, cfg, log=lambda s: None)
    assert [h["loss"] for h in again.history] == [h["loss"] for h in res.history]  # whatever the caller's state


class _Noisy:
    """A real little trainer: Adam, dropout (torch's global generator), batch order and noise from a
    NumPy Generator, and a validation score that depends on all of them. `crash_at`: raise in that
    epoch's validation, after its steps (a run killed mid-epoch)."""

    def __init__(self, seed: int = 0, crash_at: int | None = None) -> None:
        torch.manual_seed(seed)
        self.model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.3), torch.nn.Linear(8, 1))
        self.opt = torch.optim.Adam(self.model.parameters(), lr=0.05)
        self.rng = np.random.default_rng([seed, 2])
        data = np.random.default_rng(7)
        self.x = torch.from_numpy(data.normal(size=(64, 4))).float()
        self.y = self.x @ torch.tensor([[1.0], [-2.0], [0.5], [0.0]]) + 0.3
        self.crash_at, self.steps = crash_at, 0

    def batches(self, epoch: int) -> list[np.ndarray]:
        return np.array_split(self.rng.permutation(48), 4)

    def step(self, batch: np.ndarray) -> None:
        self.steps += 1
        noise = torch.from_numpy(self.rng.normal(scale=0.1, size=(len(batch), 1))).float()
        loss = ((self.model(self.x[batch]) - self.y[batch] - noise) ** 2).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()

    def validate(self, run: EpochPass) -> Validation:
        if run.epoch == self.crash_at:
            raise KeyboardInterrupt("killed")
        with torch.no_grad():
            mse = float(((self.model(self.x[48:]) - self.y[48:]) ** 2).mean())
        score = -round(mse, 2)  # coarse, so that some epochs do not improve and patience counts
        return Validation(score, {"mse": mse}, f"mse {mse:.4f}", {"mse": mse})


def _noisy_run(tmp_path, crash_at: int | None = None, key: dict | None = None):
    from models.training_loop import Resume

    t = _Noisy(crash_at=crash_at)
    resume = Resume(tmp_path / "state.safetensors", t.opt, {"batches": t.rng}, key or {"seed": 0, "lr": 0.05})
    logs: list[str] = []
    with seeded_torch(0):
        res = run_epochs(t.model, t, LoopSettings(40, 3), log=logs.append, resume=resume)
    return t, res, logs


def _without_seconds(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def test_a_run_killed_mid_epoch_resumes_bit_identical(tmp_path):
    straight, want, _ = _noisy_run(tmp_path / "straight")
    assert want.stopped_by == "early_stopping" and 4 < len(want.history) < 40 and want.best_epoch < len(want.history)
    with pytest.raises(KeyboardInterrupt):
        _noisy_run(tmp_path / "resumed", crash_at=3)
    with pytest.raises(KeyboardInterrupt):  # killed again, later
        _noisy_run(tmp_path / "resumed", crash_at=5)
    t, got, logs = _noisy_run(tmp_path / "resumed")
    assert "resumed after epoch 4" in logs[0]
    assert _without_seconds(got.history) == _without_seconds(want.history)
    assert (got.best_epoch, got.stopped_by, got.best.metrics) == (want.best_epoch, want.stopped_by, want.best.metrics)
    assert got.resumed_after == [2, 4] and got.seconds_before > 0
    assert t.steps == 4 * (len(want.history) - 4)  # only the epochs after the last saved one were trained
    for k, v in straight.model.state_dict().items():  # the best epoch's weights, restored
        assert torch.equal(t.model.state_dict()[k], v), k


def test_an_ended_run_returns_its_result_without_training_and_another_runs_state_is_refused(tmp_path):
    _, want, _ = _noisy_run(tmp_path)
    t, got, logs = _noisy_run(tmp_path)
    assert t.steps == 0 and "that run had ended" in logs[0]
    assert (got.best_epoch, got.stopped_by) == (want.best_epoch, want.stopped_by)
    assert _without_seconds(got.history) == _without_seconds(want.history)
    with pytest.raises(ValueError, match=r"another run \(differs in: lr\); delete it"):
        _noisy_run(tmp_path, key={"seed": 0, "lr": 0.01})
