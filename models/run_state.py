"""A training run's state between working sessions, in one safetensors file: the model's and the
optimizer's tensors, every random generator the run draws from, any further tensors the trainer keeps
(the best epoch's weights), and the trainer's counters as JSON metadata.

Why: LSVCR's stage 2 and RecBole's SASRec train for hours on two cores, longer than a working session,
and a run killed mid-way used to start again from its first epoch. A run resumed from this state
continues bit for bit as if it had never stopped. One file, replaced atomically, so a run killed while
saving keeps the previous epoch's state; safetensors + JSON because the project never writes pickle.

Random streams kept: torch's global generator (initialisation, dropout), NumPy's and Python's legacy
global generators (RecBole's negatives), named `torch.Generator`s and named `numpy.random.Generator`s
(our trainers' shuffling and negatives).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

FORMAT = "resumable-v1"


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for idx, slots in sd["state"].items():
        for key, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for idx, slots in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(slots)
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def save_state(path: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               generators: Mapping[str, torch.Generator] | None = None, counters: dict,
               np_generators: Mapping[str, np.random.Generator] | None = None,
               extra: Mapping[str, torch.Tensor] | None = None) -> None:
    """Write the run's state after an epoch; `counters` is the trainer's JSON-able bookkeeping, `extra`
    further tensors it needs back (read with `load_state(..., extra=True)`)."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_tensors, opt_meta = _optimizer_tensors(optimizer)
    tensors |= opt_tensors
    tensors |= {f"extra.{k}": v.detach().cpu().contiguous() for k, v in (extra or {}).items()}
    tensors["rng.torch"] = torch.get_rng_state()
    for name, gen in (generators or {}).items():
        tensors[f"rng.generator.{name}"] = gen.get_state()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(np_keys, np.int64))
    py_version, py_keys, py_gauss = random.getstate()
    tensors["rng.python"] = torch.tensor(py_keys, dtype=torch.int64)
    meta = {"format": FORMAT, "counters": counters, "optimizer": opt_meta,
            "numpy": [np_kind, int(np_pos), int(np_has_gauss), float(np_gauss)],
            "python": [py_version, py_gauss],
            # a Generator's state is a dict of (128-bit) ints: JSON keeps them exactly
            "np_generators": {k: g.bit_generator.state for k, g in (np_generators or {}).items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"state": json.dumps(meta)})
    os.replace(tmp, path)


def _meta(path: Path) -> dict | None:
    """The state's JSON metadata (None when there is no file), after checking its format."""
    if not path.exists():
        return None
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get("state", "{}"))
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} training state (format {meta.get('format')!r}); "
                         "delete it to train from the start")
    return meta


def read_counters(path: Path) -> dict | None:
    """The counters saved in `path` (None when there is no file), without loading any tensor."""
    meta = _meta(path)
    return None if meta is None else meta["counters"]


def load_state(path: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               generators: Mapping[str, torch.Generator] | None = None,
               np_generators: Mapping[str, np.random.Generator] | None = None,
               extra: bool = False) -> dict | None:
    """Restore model, optimizer and every generator from `path`; the counters (with the `extra` tensors
    under the key "extra" when asked), or None when there is no file."""
    meta = _meta(path)
    if meta is None:
        return None
    tensors = load_file(str(path))
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    optimizer.load_state_dict(_optimizer_state(tensors, meta["optimizer"]))
    torch.set_rng_state(tensors["rng.torch"])
    for name, gen in (generators or {}).items():
        gen.set_state(tensors[f"rng.generator.{name}"])
    saved_np = meta.get("np_generators", {})
    for name, npg in (np_generators or {}).items():
        if name not in saved_np:
            raise ValueError(f"{path} holds no state for the generator {name!r}; delete it to train from the start")
        npg.bit_generator.state = saved_np[name]
    np_kind, np_pos, np_has_gauss, np_gauss = meta["numpy"]
    np.random.set_state((np_kind, tensors["rng.numpy"].numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    py_version, py_gauss = meta["python"]
    random.setstate((py_version, tuple(int(x) for x in tensors["rng.python"].tolist()), py_gauss))
    counters = dict(meta["counters"])
    if extra:
        counters["extra"] = {k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")}
    return counters
