"""A disk cache for the replay's expensive, deterministic steps (scores, comment rankings, the reward
model's predictions, the oracle's truth), so a second run on the same logs and checkpoints takes seconds.

Each entry is one `.npz` file named by the sha256 of everything its content depends on: the logs'
fingerprint, the window, the checkpoint's weights digest, the step's own settings and `VERSION` (bump it
when a cached step's code changes what it computes). A corrupt or unreadable entry is recomputed, never
trusted. `--no-cache` on the command line bypasses it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

VERSION = 1
DEFAULT_DIR = Path(".harness-cache") / "replay"


class Cache:
    def __init__(self, folder: Path | None) -> None:
        self.folder = folder  # None = no cache

    def key(self, step: str, **parts: Any) -> str:
        text = json.dumps({"step": step, "version": VERSION, **parts}, sort_keys=True, default=str)
        return f"{step}-{hashlib.sha256(text.encode()).hexdigest()[:24]}"

    def arrays(self, key: str, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """The arrays stored under `key`, or `compute()`'s, stored for next time."""
        if self.folder is None:
            return compute()
        path = self.folder / f"{key}.npz"
        if path.exists():
            try:
                with np.load(path, allow_pickle=False) as z:
                    return {k: z[k] for k in z.files}
            except (OSError, ValueError):
                pass  # unreadable: recompute and overwrite
        out = compute()
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{os.getpid()}.npz")
        np.savez(tmp, **out)
        os.replace(tmp, path)
        return out
