"""LSVCR on logs without any text (e.g. imported KuaiRand) refuses clearly instead of inventing text."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from harness.cli import app

FIXTURE = Path(__file__).resolve().parents[1] / "harness" / "fixtures" / "kuairand"


def test_lsvcr_refuses_textless_logs_and_points_to_the_id_only_variant(tmp_path: Path) -> None:
    runner = CliRunner()
    logs = tmp_path / "kr"
    res = runner.invoke(app, ["logs", "import-kuairand", str(FIXTURE), str(logs)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "ck" / "lsvcr"
    res = runner.invoke(app, ["train", "--model", "lsvcr", "--data", str(logs), "--out", str(out), "--epochs", "1"])
    assert res.exit_code != 0
    assert "no text" in res.output and "--ablation no_text" in res.output
    assert "Traceback" not in res.output
    assert not out.exists()


def test_lsvcr_train_rejects_textless_catalogue_in_python() -> None:
    import numpy as np

    from models.catalogue import Catalogue
    from models.lsvcr.train import _has_any_text

    bare = Catalogue(np.arange(1, 4), [None] * 4, np.zeros(0, np.int64), np.zeros(1, np.int64), [None], np.zeros(4, np.int64))
    assert not _has_any_text(bare)
    titled = Catalogue(np.arange(1, 4), [None, "funny cat", None, None], np.zeros(0, np.int64), np.zeros(1, np.int64),
                       [None], np.zeros(4, np.int64))
    assert _has_any_text(titled)
