"""models/run_state.py: a run stopped after any epoch and resumed from the saved state ends bit-identical
to the run that never stopped (weights, Adam moments, and every random stream it draws from: dropout
through torch's global generator, shuffling through a private one, negatives through NumPy's and
Python's legacy generators, as RecBole's Trainer does, and a NumPy Generator, as our trainers do)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from models import run_state as resumable


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(20, 8)
        self.drop = torch.nn.Dropout(0.3)
        self.out = torch.nn.Linear(8, 20)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(self.emb(x)))


def _fresh(seed: int = 3):
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    net = _Net()
    opt = torch.optim.Adam(net.parameters(), lr=0.01, betas=(0.8, 0.95))
    shuffle = torch.Generator().manual_seed(seed)
    return net, opt, shuffle


def _epoch(net, opt, shuffle) -> float:
    order = torch.randperm(20, generator=shuffle)
    total = 0.0
    for batch in order.split(5):
        negatives = torch.from_numpy(np.random.randint(0, 20, batch.numel()))  # NumPy's global stream
        target = (batch + random.randint(0, 3)) % 20  # Python's global stream
        loss = torch.nn.functional.cross_entropy(net(batch), target) + 0.1 * net(negatives).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item()
    return total


def test_resumed_run_is_bit_identical(tmp_path) -> None:
    net, opt, shuffle = _fresh()
    straight = [_epoch(net, opt, shuffle) for _ in range(4)]
    want_weights = {k: v.clone() for k, v in net.state_dict().items()}
    want_moments = opt.state_dict()["state"]

    path = tmp_path / "state" / "resume.safetensors"
    net, opt, shuffle = _fresh()
    losses = [_epoch(net, opt, shuffle) for _ in range(2)]
    resumable.save_state(path, model=net, optimizer=opt, generators={"shuffle": shuffle},
                         counters={"epoch": 1, "best": losses[-1], "losses": losses})
    # a new process: everything re-created and re-seeded, then the state laid over it
    net, opt, shuffle = _fresh(seed=99)
    counters = resumable.load_state(path, model=net, optimizer=opt, generators={"shuffle": shuffle})
    assert counters == {"epoch": 1, "best": losses[-1], "losses": losses}
    losses += [_epoch(net, opt, shuffle) for _ in range(2)]

    assert losses == straight
    for k, v in net.state_dict().items():
        assert torch.equal(v, want_weights[k]), k
    got = opt.state_dict()["state"]
    for idx, slots in want_moments.items():
        for key, value in slots.items():
            assert torch.equal(got[idx][key], value), (idx, key)
    assert opt.param_groups[0]["betas"] == (0.8, 0.95)
    assert not path.with_name(path.name + ".tmp").exists()


def test_missing_state_is_none_and_foreign_file_is_refused(tmp_path) -> None:
    net, opt, shuffle = _fresh()
    assert resumable.load_state(tmp_path / "none.safetensors", model=net, optimizer=opt, generators={}) is None
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(1)}, str(other))
    with pytest.raises(ValueError, match="not a resumable-v1 training state.*delete it"):
        resumable.load_state(other, model=net, optimizer=opt, generators={})


def test_numpy_generators_and_extra_tensors_come_back(tmp_path) -> None:
    net, opt, _ = _fresh()
    batches = np.random.default_rng([5, 2])
    batches.random(7)
    best = {"w": torch.arange(6.0).reshape(2, 3)}
    path = tmp_path / "resume.safetensors"
    resumable.save_state(path, model=net, optimizer=opt, counters={"epoch": 3}, np_generators={"batches": batches},
                         extra=best)
    want = batches.random(5)
    net, opt, _ = _fresh(seed=99)
    other = np.random.default_rng(0)
    counters = resumable.load_state(path, model=net, optimizer=opt, np_generators={"batches": other}, extra=True)
    assert np.array_equal(other.random(5), want)
    assert counters["epoch"] == 3 and torch.equal(counters["extra"]["w"], best["w"])
    assert resumable.read_counters(path) == {"epoch": 3}
    with pytest.raises(ValueError, match="no state for the generator 'negatives'"):
        resumable.load_state(path, model=net, optimizer=opt, np_generators={"negatives": other})
