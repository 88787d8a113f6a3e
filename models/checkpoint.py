"""Checkpoint folders: `config.json` + `model.safetensors` + `catalogue.safetensors` (never pickle).

Layout of a folder (one model):
- `config.json`: {"kind", "hyperparameters", "catalogue_digest", "data_fingerprint", "seed",
  "training_metrics", "code_version", "environment" (Python, library versions, CPU vector extensions),
  "weights_sha256", "format_version", ...}
- `model.safetensors`: the state dict
- `catalogue.safetensors`: the catalogue ids (see `models.catalogue`)
- optional extra safetensors files (e.g. LSVCR's `text_embeddings.safetensors`), listed with digests
  under "files".

Writing goes to a sibling temporary folder that is renamed into place, so a failed save never leaves
a half-written checkpoint. Loading checks, in order: the folder and config exist and parse, the weights
file's sha256 equals the recorded one (a corrupted or swapped file is refused), the catalogue digest
matches the recorded one and, when the caller passes the data's catalogue, that too (ids and texts; a
model that embeds new texts, LSVCR, also accepts a later catalogue that adds items); each failure says
what does not match and what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from models.catalogue import Catalogue

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be used, with the reason and the remedy in the message."""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def code_version() -> str:
    """Package version plus a digest of the models/ sources, so a checkpoint names the code it came from."""
    try:
        version = metadata.version("lsvcr-harness")
    except metadata.PackageNotFoundError:
        version = "unknown"
    h = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for p in sorted(root.rglob("*.py")):
        h.update(p.relative_to(root).as_posix().encode())
        h.update(p.read_bytes())
    return f"{version}+src.{h.hexdigest()[:12]}"


# what moves trained weights or the logs they came from in their last bits (docs/models.md, "Checkpoints")
ENV_PACKAGES = ("numpy", "scipy", "torch", "transformers", "peft", "safetensors", "pandas", "pyarrow", "duckdb")


def environment() -> dict[str, Any]:
    """Python, the library versions and the CPU's vector extensions a checkpoint was trained with: torch's and
    NumPy's kernels differ by CPU (AVX-512 or not) and by version, so a retrained model is close, not equal."""
    import platform

    packages = {}
    for name in ENV_PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
        simd = [k for k in ("AVX2", "FMA3", "AVX512F", "AVX512_SKX") if features.get(k)]
    except ImportError:  # a NumPy without the private table: the versions still say most
        simd = []
    return {"python": platform.python_version(), "machine": platform.machine(), "cpu_simd": simd,
            "torch_threads": torch.get_num_threads(), "packages": packages}


@dataclass
class Checkpoint:
    folder: Path
    config: dict[str, Any]
    state: dict[str, torch.Tensor]
    catalogue: Catalogue

    @property
    def kind(self) -> str:
        return str(self.config["kind"])

    @property
    def digest(self) -> str:
        """The weights' sha256: identifies this checkpoint in run records."""
        return str(self.config["weights_sha256"])


def save_checkpoint(
    folder: Path | str,
    *,
    kind: str,
    hyperparameters: dict[str, Any],
    state: dict[str, torch.Tensor],
    catalogue: Catalogue,
    data_fingerprint: str,
    seed: int,
    training_metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    extra_tensors: dict[str, dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Write a checkpoint folder atomically (replacing an existing one); returns the folder."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        save_file(tensors, str(tmp / WEIGHTS_FILE))
        catalogue.save(tmp)
        files = {}
        for name, ts in (extra_tensors or {}).items():
            save_file({k: v.detach().cpu().contiguous() for k, v in ts.items()}, str(tmp / name))
            files[name] = file_sha256(tmp / name)
        config = {
            "format_version": FORMAT_VERSION,
            "kind": kind,
            "hyperparameters": hyperparameters,
            "catalogue_digest": catalogue.digest(),
            "text_digest": catalogue.text_digest(),
            "n_videos": catalogue.n_videos,
            "n_comments": catalogue.n_comments,
            "data_fingerprint": data_fingerprint,
            "seed": int(seed),
            "training_metrics": training_metrics or {},
            "code_version": code_version(),
            "environment": environment(),
            "weights_sha256": file_sha256(tmp / WEIGHTS_FILE),
            "files": files,
            **(extra or {}),
        }
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True, default=float))
        if folder.exists():
            old = folder.parent / f".{folder.name}.old-{os.getpid()}"
            folder.rename(old)
            tmp.rename(folder)
            shutil.rmtree(old)
        else:
            tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def record_training_data(folder: Path | str, info: dict[str, Any]) -> None:
    """Add `training_data` (which logs, which time range) to a saved checkpoint's config.json.

    Why after saving: the trainers see tables, not where they came from; the caller that cut the logs
    knows the logs' fingerprint and the cut, which the replay checks against its window. The weights and
    their digest are untouched; config.json is replaced atomically."""
    folder = Path(folder)
    config = read_config(folder)
    config["training_data"] = info
    tmp = folder / f".{CONFIG_FILE}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(config, indent=2, sort_keys=True, default=float))
    os.replace(tmp, folder / CONFIG_FILE)


def read_config(folder: Path | str) -> dict[str, Any]:
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist; train it with `harness train`")
    path = folder / CONFIG_FILE
    if not path.exists():
        raise CheckpointError(f"{path} is missing: {folder} is not a checkpoint folder")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); re-train or re-copy the checkpoint") from e
    for key in ("kind", "weights_sha256", "catalogue_digest"):
        if key not in config:
            raise CheckpointError(f"{path} lacks the field {key!r}; re-train the checkpoint")
    return config


def load_checkpoint(
    folder: Path | str,
    *,
    kind: str | None = None,
    catalogue: Catalogue | None = None,
    allow_new_items: bool = False,
) -> Checkpoint:
    """Load and validate a checkpoint folder (see the module docstring for the checks). `allow_new_items`:
    the data's catalogue may add videos and comments to the stored one (`check_data_catalogue`)."""
    folder = Path(folder)
    config = read_config(folder)
    if kind is not None and config["kind"] != kind:
        raise CheckpointError(f"{folder} holds a {config['kind']!r} model, expected {kind!r}")
    weights = folder / WEIGHTS_FILE
    if not weights.exists():
        raise CheckpointError(f"{weights} is missing; re-train or re-copy the checkpoint")
    got = file_sha256(weights)
    if got != config["weights_sha256"]:
        raise CheckpointError(
            f"{weights} is corrupted or was replaced: its sha256 is {got[:12]}..., config.json records "
            f"{config['weights_sha256'][:12]}...; re-train or re-copy the checkpoint"
        )
    for name, digest in config.get("files", {}).items():
        p = folder / name
        if not p.exists() or file_sha256(p) != digest:
            raise CheckpointError(f"{p} is missing or corrupted (sha256 differs from config.json)")
    try:
        state = load_file(str(weights))
    except Exception as e:
        raise CheckpointError(f"{weights} cannot be read as safetensors ({e})") from e
    try:
        cat = Catalogue.load(folder)
    except (ValueError, FileNotFoundError) as e:
        raise CheckpointError(str(e)) from e
    if cat.digest() != config["catalogue_digest"]:
        raise CheckpointError(f"{folder}: the stored catalogue does not match the digest in config.json")
    if catalogue is not None:
        check_data_catalogue(folder, config, cat, catalogue, allow_new_items=allow_new_items)
    return Checkpoint(folder, config, state, cat)


def check_data_catalogue(folder: Path, config: dict[str, Any], stored: Catalogue, data: Catalogue, *,
                         allow_new_items: bool = False) -> None:
    """Refuse data whose catalogue is not the one the checkpoint was trained on.

    The ids must be the same (`catalogue_digest`), and so must the texts (`text_digest`, absent in
    checkpoints written before text was checked): worlds that share every id but not the titles are other
    worlds. With `allow_new_items` (a model that can embed new texts: LSVCR), the data may also be a later
    snapshot: every trained id still there, under the same video and with the same text, plus new ones."""
    stored_text = config.get("text_digest")
    if data.digest() == stored.digest():
        same_text = stored_text is None or data.text_digest() == stored_text
    else:
        known = data.superset_of(stored) if allow_new_items else None
        if known is None:
            raise CheckpointError(
                f"{folder} was trained on a different catalogue than the data's: {stored.describe_difference(data)}. "
                "Train a model on this data (`harness train`) or evaluate on the data it was trained on."
            )
        same_text = stored_text is None or data.text_digest(*known) == stored_text
    if not same_text:
        raise CheckpointError(
            f"{folder} was trained on a catalogue with the same ids but different titles or comment texts (another "
            "world, e.g. another seed of the synthetic world): its ids mean other videos here. Train a model on "
            "this data (`harness train`) or evaluate on the data it was trained on."
        )


def check_state_shapes(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], where: Path) -> None:
    """Refuse a state dict whose tensor names or shapes differ from the model built from config.json."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
             for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing tensors {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected tensors {unexpected[:5]}")
        if wrong:
            parts.append("shape mismatch " + "; ".join(wrong[:5]))
        raise CheckpointError(f"{where}: weights do not fit the model in config.json: {', '.join(parts)}")
