"""Torch's thread count for a run, chosen by measuring at the time of the run.

Why measure instead of a fixed default: on the 2-core development machine two threads were faster than one
for every training and scoring step at load ~2, while at load 6-10 two threads spun against the other
processes and were several times slower than one (BENCHMARKS.md, "Thread count"). The right count is a
property of the machine at that moment, so `choose_threads` times a short workload shaped like the models'
(a transformer encoder layer's forward and backward over a batch of histories) at one thread and at every
core, best of a few repetitions each, and keeps the faster; the comparison costs about a second. The
choice and its timings are printed and recorded with the checkpoint (`training_data.threads`).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    how: str  # "measured" or "given"
    ms_per_step: dict[int, float]  # threads -> best of `reps` (empty when given)
    load_avg: float

    def describe(self) -> str:
        if self.how == "given":
            return f"torch threads: {self.threads} (given)"
        timed = ", ".join(f"{t} thread{'s' if t > 1 else ''} {ms:.1f} ms" for t, ms in sorted(self.ms_per_step.items()))
        return f"torch threads: {self.threads} (measured a probe step: {timed}; load average {self.load_avg:.1f})"

    def record(self) -> dict:
        return {**asdict(self), "ms_per_step": {str(k): v for k, v in self.ms_per_step.items()}}


def parse_threads(value: str) -> int | None:
    """`auto` -> None (measure); a positive integer -> itself; anything else -> ValueError naming the fix."""
    v = value.strip().lower()
    if v == "auto":
        return None
    if v.isdigit() and int(v) >= 1:
        return int(v)
    raise ValueError(f"--threads {value!r}: give a positive number of torch threads or 'auto' (measure 1 against "
                     "every core at the start of the run and keep the faster)")


def _probe(hidden: int, seq: int, batch: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    layer = torch.nn.TransformerEncoderLayer(hidden, nhead=2, dim_feedforward=4 * hidden, batch_first=True,
                                             dropout=0.0)
    x = torch.randn(batch, seq, hidden, generator=g)

    def step() -> None:
        layer.zero_grad(set_to_none=True)
        layer(x).square().mean().backward()

    return step


def choose_threads(given: int | None = None, *, cores: int | None = None, hidden: int = 64, seq: int = 50,
                   batch: int = 256, reps: int = 3) -> ThreadChoice:
    """Set torch's threads to `given`, or to the faster of 1 and every core for a probe step (see the module
    docstring); returns what was chosen and the timings."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if given is not None:
        torch.set_num_threads(given)
        return ThreadChoice(given, "given", {}, load)
    n = cores or os.cpu_count() or 1
    if n <= 1:
        torch.set_num_threads(1)
        return ThreadChoice(1, "measured", {}, load)
    step = _probe(hidden, seq, batch, seed=0)
    best: dict[int, float] = {}
    for t in (1, n):
        torch.set_num_threads(t)
        step()  # warm-up: allocations and the thread pool's start
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        best[t] = 1000 * min(times)
    chosen = min(best, key=lambda t: (best[t], t))
    torch.set_num_threads(chosen)
    return ThreadChoice(chosen, "measured", {t: round(v, 2) for t, v in best.items()}, load)
