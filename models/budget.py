"""Wall-clock training budgets that stop at step granularity.

Comparing models "at equal training time" (bench/quality.py, the 10-minute LSVCR pipeline) needs each
trainer to use its budget, not to stop before an epoch that might overrun it: with epochs of ~170 s
(LSVCR stage 2 on 2 shared cores) that rule left up to a third of a 600 s budget unused. Here a trainer
asks before every optimisation step whether one more step plus the validation pass that must follow
still fits; if not, it ends the epoch early (a partial epoch), validates and stops. The validation
cost is the last one measured (before the first, a guess of 5% of the budget, at least 5 s).

`clock` is the time source (seconds, monotonic; `time.perf_counter` by default). Tests pass a fake
clock so that budget decisions depend on counted steps, not on how busy the machine is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class StepBudget:
    max_seconds: float | None  # None = no budget: every check passes
    start: float | None = None  # clock reading the budget counts from; None = now
    eval_seconds: float | None = None  # last measured validation pass
    steps: int = 0  # optimisation steps taken so far (all epochs)
    step_seconds: float = 0.0  # running mean of a step's wall time
    clock: Callable[[], float] = field(default=time.perf_counter, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError(f"StepBudget.max_seconds must be > 0 or None, got {self.max_seconds}")
        if self.start is None:
            self.start = self.clock()

    def elapsed(self) -> float:
        assert self.start is not None  # set in __post_init__
        return self.clock() - self.start

    def _reserve(self) -> float:
        if self.eval_seconds is not None:
            return self.eval_seconds
        return max(5.0, 0.05 * (self.max_seconds or 0.0))

    def step_fits(self) -> bool:
        """May another step run? Always true for the first step, so a model always exists."""
        if self.max_seconds is None or self.steps == 0:
            return True
        return self.elapsed() + self.step_seconds + self._reserve() <= self.max_seconds

    def record_step(self, seconds: float) -> None:
        self.steps += 1
        self.step_seconds += (seconds - self.step_seconds) / self.steps

    def record_eval(self, seconds: float) -> None:
        self.eval_seconds = seconds
