"""Small synthetic worlds with `base` and `pop` trained on their pre-period, for the replay's end-to-end tests."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from harness.cli import app
from harness.simulate.config import WorldConfig
from harness.simulate.generate import simulate


def pre_period_world(root: Path, *, users: int, videos: int, comments_per_video: float, seed: int,
                     base_epochs: int, days: int = 4) -> tuple[Path, Path]:
    """(logs folder, checkpoints folder): the world, and `base` / `pop` trained with --until experiment-start."""
    data, ck = root / "world", root / "ck"
    simulate(WorldConfig(users=users, videos=videos, comments_per_video=comments_per_video, days=days, seed=seed),
             data, progress=False)
    for model, extra in (("base", ["--epochs", str(base_epochs)]), ("pop", [])):
        r = CliRunner().invoke(app, ["train", "--model", model, "--data", str(data), "--out", str(ck / model),
                                     "--until", "experiment-start", "--no-progress", *extra])
        assert r.exit_code == 0, r.output
    return data, ck
