"""Step-granular wall-clock budgets (models/budget.py), with a hand-set clock."""

from __future__ import annotations

import pytest

from models.budget import StepBudget


class FakeClock:
    """A clock that moves only when told to, so budget decisions never depend on the machine's load."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_step_fits_counts_one_more_step_and_the_validation_that_follows():
    clock = FakeClock()
    b = StepBudget(10.0, clock=clock)
    clock.now += 5.0  # 5 s used
    assert b.elapsed() == 5.0
    assert b.step_fits()  # the first step always runs, so a model always exists
    b.record_step(1.0)
    # before any validation the reserve is max(5 s, 5% of the budget) = 5 s: 5 + 1 + 5 > 10
    assert not b.step_fits()
    b.record_eval(2.0)  # measured: 5 + 1 + 2 <= 10
    assert b.step_fits()
    b.record_step(3.0)  # running mean of the step time: (1 + 3) / 2 = 2 -> 5 + 2 + 2 <= 10
    assert b.steps == 2 and b.step_seconds == pytest.approx(2.0)
    assert b.step_fits()
    b.record_eval(3.5)  # 5 + 2 + 3.5 > 10
    assert not b.step_fits()


def test_an_explicit_start_counts_from_there():
    clock = FakeClock(50.0)
    b = StepBudget(10.0, start=45.0, clock=clock)  # started 5 s before it was built
    assert b.elapsed() == 5.0


def test_no_budget_always_fits_and_bad_budgets_are_refused():
    clock = FakeClock()
    b = StepBudget(None, clock=clock)
    clock.now += 1e6
    b.record_step(100.0)
    assert b.step_fits()
    with pytest.raises(ValueError, match="max_seconds"):
        StepBudget(0.0)
