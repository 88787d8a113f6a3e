"""A corpus of bad and odd inputs for `harness analyze` / `gate` / `runs`: every case ends with a
documented exit code (0-3, harness/cli/shared.py), never a traceback, and never a partial or failed run.

Exit 3 (error) must leave no run at all; 0-2 leave exactly one complete run. A database that is
corrupt, a folder or read-only is refused before the analysis (`ResultsStore.check_writable`); one
truncated past the pages that opening reads is found when the run is written, and refused the same way
(one transaction: nothing is stored).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from harness.cli import app

ARGS = ["--arm-col", "arm", "--control", "c", "--metric", "y"]
GATE = 'alpha = 0.05\nmin_units = 2\n[[primary]]\nmetric = "y"\n'


def _frame(n=300, seed=0, **cols):
    rng = np.random.default_rng(seed)
    base = {"arm": np.repeat(["c", "t"], n), "y": rng.exponential(10.0, 2 * n)}
    base.update(cols)
    return pd.DataFrame(base)


def _write(tmp: Path, name: str, frame: pd.DataFrame | None = None, text: str | bytes | None = None) -> Path:
    path = tmp / name
    if frame is not None:
        frame.to_parquet(path) if name.endswith(".parquet") else frame.to_csv(path, index=False)
    elif isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text)
    return path


def _case_files(tmp: Path, case: str) -> tuple[list[str], set[int], str]:
    """(command line, allowed exit codes, text that must be in the output) for one corpus case."""
    good = _write(tmp, "good.csv", _frame())
    gate = _write(tmp, "gate.toml", text=GATE)
    f = _frame()
    cases: dict[str, tuple[list[str], set[int], str]] = {
        "empty_csv": (["analyze", str(_write(tmp, "e.csv", text="")), *ARGS], {3}, "empty file"),
        "header_only_csv": (["analyze", str(_write(tmp, "h.csv", text="arm,y\n")), *ARGS], {3}, "no rows"),
        "nan_values": (["analyze", str(_write(tmp, "n.parquet", f.assign(y=np.r_[[np.nan], f.y[1:]]))), *ARGS],
                       {3}, "missing"),
        "inf_values": (["analyze", str(_write(tmp, "i.parquet", f.assign(y=np.r_[[np.inf], f.y[1:]]))), *ARGS],
                       {3}, "infinite"),
        "zero_variance": (["analyze", str(_write(tmp, "z.csv", f.assign(y=1.0))), *ARGS, "--gate", str(gate)],
                          {2}, "INCONCLUSIVE"),
        "one_unit_per_arm": (["analyze", str(_write(tmp, "o.csv", pd.DataFrame({"arm": ["c", "t"], "y": [1.0, 2.0]}))),
                              *ARGS, "--gate", str(gate)], {2}, "INCONCLUSIVE"),
        "absent_control": (["analyze", str(good), "--arm-col", "arm", "--control", "ctrl", "--metric", "y"], {3},
                           "control arm 'ctrl' not found"),
        "absent_treatment": (["analyze", str(good), *ARGS, "--treatment", "x"], {3}, "treatment arm 'x' not found"),
        "null_unit_ids": (["analyze", str(_write(tmp, "u.parquet", f.assign(uid=[None] * 3 + list(range(597))))),
                           *ARGS, "--unit-col", "uid"], {3}, "missing (NULL) on 3 row(s)"),
        "unequal_split": (["analyze", str(_write(tmp, "s.csv", _frame().iloc[:450])), *ARGS, "--gate", str(gate)],
                          {2}, "sample ratio mismatch"),
        "unequal_split_declared": (["analyze", str(_write(tmp, "s2.csv", _frame().iloc[:450])), *ARGS,
                                    "--expected-split", "c=2,t=1", "--gate", str(gate)], {0, 1, 2}, "srm"),
        "latin1_csv": (["analyze", str(_write(tmp, "l.csv", text="arm,y,caf\xe9\nc,1,1\n".encode("latin-1"))),
                        *ARGS], {3}, "--encoding"),
        "utf16_csv": (["analyze", str(_write(tmp, "w.csv", text="arm,y\nc,1\nt,2\n".encode("utf-16"))), *ARGS],
                      {3}, "--encoding"),
        "latin1_csv_declared": (["analyze", str(_write(tmp, "l2.csv", text=("arm,y,caf\xe9\n" + "".join(
            f"{a},{v},1\n" for a, v in zip(f.arm, f.y, strict=True))).encode("latin-1"))), *ARGS,
            "--encoding", "latin-1"], {0}, "stored as run"),
        "gate_not_utf8": (["analyze", str(good), *ARGS, "--gate", str(_write(tmp, "g1.toml", text=b"alpha = 0.05\n# \xff\xfe\n"))],
                          {3}, "not UTF-8"),
        "gate_bad_toml": (["analyze", str(good), *ARGS, "--gate", str(_write(tmp, "g2.toml", text="alpha = ["))],
                          {3}, "not valid TOML"),
        "gate_no_primary": (["analyze", str(good), *ARGS, "--gate", str(_write(tmp, "g3.toml", text="alpha = 0.05\n"))],
                            {3}, "[[primary]]"),
        "gate_unknown_analysis_key": (["analyze", str(good), *ARGS, "--gate",
                                       str(_write(tmp, "g4.toml", text=GATE + "[analysis]\nwinsorise = 0.99\n"))],
                                      {3}, "winsorise"),
        "flag_contradicts_gate": (["analyze", str(good), *ARGS, "--alpha", "0.1", "--gate", str(gate)], {3},
                                  "contradicts the gate"),
        "alpha_out_of_range": (["analyze", str(good), *ARGS, "--alpha", "0"], {3}, "--alpha"),
        "bad_expected_split": (["analyze", str(good), *ARGS, "--expected-split", "c:0.5"], {3}, "--expected-split"),
        "non_numeric_metric": (["analyze", str(_write(tmp, "t.csv", f.assign(y="x"))), *ARGS], {3}, "not numeric"),
        "zero_denominator": (["analyze", str(_write(tmp, "d.csv", f.assign(d=np.r_[np.ones(300), np.zeros(300)]))),
                              "--arm-col", "arm", "--control", "c", "--ratio", "y/d", "--gate",
                              str(_write(tmp, "g5.toml", text=GATE.replace('"y"', '"y_per_d"')))], {2}, "INCONCLUSIVE"),
        "missing_table": (["analyze", str(tmp / "nope.csv"), *ARGS], {3}, "not found"),
        "table_is_folder": (["analyze", str(tmp), *ARGS], {3}, "must be a .parquet or .csv"),
        "garbage_parquet": (["analyze", str(_write(tmp, "g.parquet", text=b"PAR1garbage")), *ARGS], {3},
                            "cannot read the table"),
        "repeated_ids": (["analyze", str(_write(tmp, "r.csv", f.assign(user_id=np.arange(600) % 250))), *ARGS],
                         {0}, "--unit-col user_id"),
        "gate_unknown_run": (["gate", "nope", "--config", str(gate)], {3}, "no run 'nope'"),
        "runs_show_unknown": (["runs", "show", "nope"], {3}, "no run 'nope'"),
        "treatment_not_analysed_in_gate": (["analyze", str(good), *ARGS, "--gate",
                                            str(_write(tmp, "g6.toml", text=GATE.replace('"y"', '"revenue"')))],
                                           {3}, "not analysed"),
    }
    return cases[case]


CASES = ["empty_csv", "header_only_csv", "nan_values", "inf_values", "zero_variance", "one_unit_per_arm",
         "absent_control", "absent_treatment", "null_unit_ids", "unequal_split", "unequal_split_declared",
         "latin1_csv", "utf16_csv", "latin1_csv_declared", "gate_not_utf8", "gate_bad_toml", "gate_no_primary",
         "gate_unknown_analysis_key", "flag_contradicts_gate", "alpha_out_of_range", "bad_expected_split",
         "non_numeric_metric", "zero_denominator", "missing_table", "table_is_folder", "garbage_parquet",
         "repeated_ids", "gate_unknown_run", "runs_show_unknown", "treatment_not_analysed_in_gate"]


def _runs(db: Path) -> pd.DataFrame:
    if not db.exists():
        return pd.DataFrame(columns=["status"])
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT run_id, status FROM runs").df()


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_as_documented_and_stores_nothing_partial(tmp_path, case):
    args, codes, text = _case_files(tmp_path, case)
    db = tmp_path / "results.duckdb"
    res = CliRunner().invoke(app, [*args, "--db", str(db)], env={"COLUMNS": "100"})
    assert res.exit_code in codes, (res.exit_code, res.output)
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    assert text in res.output, res.output
    runs = _runs(db)
    if res.exit_code == 3:
        assert runs.empty, runs
    elif args[0] == "analyze":
        assert runs["status"].tolist() == ["complete"], runs


@pytest.fixture
def analysed(tmp_path) -> tuple[Path, Path]:
    table = _write(tmp_path, "good.csv", _frame())
    db = tmp_path / "results.duckdb"
    res = CliRunner().invoke(app, ["analyze", str(table), *ARGS, "--db", str(db), "--run-id", "ab"])
    assert res.exit_code == 0, res.output
    return table, db


def _immutable(path: Path) -> bool:
    """chattr +i makes a file read-only even for root (CI runs as root); False where unsupported."""
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0


@pytest.mark.parametrize("damage", ["corrupt", "truncated", "folder", "read_only"])
@pytest.mark.parametrize("command", ["analyze", "gate", "runs_list", "runs_show"])
def test_unusable_database_exits_3_before_any_work(analysed, tmp_path, damage, command):
    table, good_db = analysed
    db = tmp_path / f"{damage}.duckdb"
    if damage == "corrupt":
        db.write_bytes(b"not a database" * 1000)
    elif damage == "truncated":
        data = good_db.read_bytes()
        db.write_bytes(data[: len(data) // 3])
    elif damage == "folder":
        db.mkdir()
    else:
        shutil.copy(good_db, db)
        if not _immutable(db):
            pytest.skip("cannot make a file read-only for this user (chattr unavailable)")
    gate = _write(tmp_path, "gate.toml", text=GATE)
    args = {"analyze": ["analyze", str(table), *ARGS], "gate": ["gate", "ab", "--config", str(gate)],
            "runs_list": ["runs", "list"], "runs_show": ["runs", "show", "ab"]}[command]
    try:
        res = CliRunner().invoke(app, [*args, "--db", str(db)])
    finally:
        if damage == "read_only":
            subprocess.run(["chattr", "-i", str(db)], capture_output=True)
    if damage == "read_only" and command in ("runs_list", "runs_show"):
        assert res.exit_code == 0, res.output  # reading a read-only database is fine
        return
    assert res.exit_code == 3, res.output
    assert "Traceback" not in res.output and "results database" in res.output
    assert "stored as run" not in res.output
    if damage != "folder":
        with duckdb.connect(str(good_db), read_only=True) as con:  # the healthy copy is untouched
            assert con.execute("SELECT count(*) FROM runs").fetchall() == [(1,)]
