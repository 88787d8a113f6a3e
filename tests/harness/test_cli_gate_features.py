"""`harness analyze` / `harness gate`: every analysis setting reachable, the gate file's [analysis]
table, several treatments, the sequential gate, --by-day, the Bayesian view and 80-column output.

Numbers are checked against the analysis layer called directly (tested against scipy/statsmodels and
gbstats in tests/analysis).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from analysis import AnalysisConfig, analyze
from harness.cli import app
from harness.store import ResultsStore


def run(*args: str, columns: int = 200):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": str(columns)})


@pytest.fixture(scope="module")
def three_arms(tmp_path_factory) -> Path:
    rng = np.random.default_rng(11)
    n = 6000
    arm = rng.choice(["base", "lsvcr", "no_text"], n, p=[0.5, 0.25, 0.25])
    pre = rng.gamma(4.0, 5.0, n)
    frame = pd.DataFrame({
        "user_id": np.arange(n), "arm": arm, "day": rng.integers(1, 6, n),
        "watch_time_s": 0.8 * pre + rng.normal(0, 4.0, n) + 1.0 * (arm == "lsvcr"), "watch_time_s_pre": pre,
        "video_interactions": rng.poisson(2.0, n) * np.where(arm == "no_text", 0.8, 1.0),
    })
    path = tmp_path_factory.mktemp("d") / "ab3.csv"
    frame.to_csv(path, index=False)
    return path


BASE = ["--arm-col", "arm", "--control", "base", "-m", "watch_time_s", "-m", "video_interactions"]
GATE = ('alpha = 0.05\nmin_units = 100\n[[primary]]\nmetric = "watch_time_s"\n'
        '[[guardrail]]\nmetric = "video_interactions"\nmargin = 0.05\n')


def _gate(tmp_path: Path, extra: str = "") -> Path:
    p = tmp_path / "gate.toml"
    p.write_text(GATE + extra)
    return p


def test_every_treatment_judged_with_declared_split(three_arms, tmp_path):
    db = tmp_path / "r.duckdb"
    # a 50/25/25 design fails the equal-split SRM check: the gate cannot be better than INCONCLUSIVE
    res = run("analyze", str(three_arms), *BASE, "--gate", str(_gate(tmp_path)), "--db", str(db), "--json")
    doc = json.loads(res.stdout)
    assert not doc["summary"][0]["srm_passed"] and res.exit_code == doc["gate"]["exit_code"] != 0
    assert {r["outcome"] for r in doc["gate"]["rules"] if r["rule"] == "srm"} == {"inconclusive"}
    # declared in the gate file's [analysis] table: the split passes and each arm gets its own verdict
    gate = _gate(tmp_path, '[analysis]\nexpected_split = {base = 2, lsvcr = 1, no_text = 1}\n')
    res = run("analyze", str(three_arms), *BASE, "--gate", str(gate), "--db", str(db), "--json")
    doc = json.loads(res.stdout)
    assert doc["gate"]["arms"] == {"lsvcr": "SHIP", "no_text": "NO_SHIP"}, doc["gate"]["reason"]
    assert res.exit_code == 1 and doc["gate"]["decision"] == "NO_SHIP"
    assert {r["treatment"] for r in doc["gate"]["rules"]} == {"lsvcr", "no_text"}
    g = next(r for r in doc["gate"]["rules"] if r["rule"] == "guardrail" and r["treatment"] == "no_text")
    want = analyze(three_arms, arm_col="arm", control="base", metrics=["watch_time_s", "video_interactions"],
                   config=AnalysisConfig(expected_split={"base": 2, "lsvcr": 1, "no_text": 1})
                   ).lift("video_interactions", treatment="no_text")
    assert g["harm_bound"] == pytest.approx(want.rel_ci_low, rel=1e-12) and g["limit"] == -0.05
    assert g["margin"] == 0.05 and g["margin_type"] == "relative"
    # the same split as a flag; re-gating one arm of the stored run exits 0
    res = run("analyze", str(three_arms), *BASE, "--expected-split", "base=0.5,lsvcr=0.25,no_text=0.25",
              "--db", str(db), "--run-id", "split", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["summary"][0]["srm_passed"]
    res = run("gate", "split", "--config", str(_gate(tmp_path)), "--treatment", "lsvcr", "--db", str(db), "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["arms"] == {"lsvcr": "SHIP"}
    stored = ResultsStore(db).gate_decisions("split")
    assert set(stored["treatment"]) == {"lsvcr"}


def test_flags_reach_every_setting(three_arms, tmp_path):
    db = tmp_path / "r.duckdb"
    res = run("analyze", str(three_arms), *BASE, "--winsorize", "0.99", "--correction-scope", "all",
              "--sequential-rho", "0.05", "--srm-alpha", "0.01", "--power", "0.9", "--rel-min-control-se", "2",
              "--heavy-tail-factor", "100", "--relative-ci", "log", "--test", "z", "--correction", "bh",
              "--bayes", "--bayes-prior-sd", "0.3", "--db", str(db), "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    summary = doc["summary"][0]
    for key, value in {"winsorize": 0.99, "correction_scope": "all", "sequential_rho": 0.05, "srm_alpha": 0.01,
                       "power": 0.9, "rel_min_control_se": 2.0, "heavy_tail_factor": 100.0, "relative_ci": "log",
                       "test": "z", "correction": "bh", "bayes": True, "bayes_prior_sd": 0.3}.items():
        assert summary[f"config.{key}"] == value, key
    lift = next(r for r in doc["lifts"] if r["metric"] == "watch_time_s" and r["treatment"] == "lsvcr"
                and r["segment"] == "all")
    assert lift["bayes_prior"] == "N(0, 0.3^2) on the relative lift" and 0.99 < lift["bayes_chance_to_win"] <= 1
    assert lift["winsorized"].startswith("capped at pooled q0.99")
    # messages name flags, not Python arguments
    res = run("analyze", str(three_arms), *BASE, "--winsorize", "2", "--db", str(db))
    assert res.exit_code == 3 and "--winsorize 2" in res.stderr and "AnalysisConfig" not in res.stderr


def test_sequential_gate_mode_and_by_day(three_arms, tmp_path):
    db = tmp_path / "r.duckdb"
    gate = _gate(tmp_path, 'mode = "sequential"\n')
    gate.write_text('mode = "sequential"\n' + GATE)
    res = run("analyze", str(three_arms), *BASE, "--treatment", "lsvcr", "--gate", str(gate),
              "--expected-split", "base=2,lsvcr=1,no_text=1", "--by-day", "day", "--db", str(db),
              "--run-id", "seq", "--json")
    doc = json.loads(res.stdout)
    assert doc["gate"]["mode"] == "sequential"
    primary = next(r for r in doc["gate"]["rules"] if r["rule"] == "primary")
    lift = next(r for r in doc["lifts"] if r["metric"] == "watch_time_s" and r["segment"] == "all")
    assert primary["p_value"] == lift["seq_p_value"] and "always-valid" in primary["reason"]
    daily = ResultsStore(db).daily_lifts("seq")
    assert daily["day"].tolist()[:5] == ["1", "2", "3", "4", "5"] and daily["look"].max() == 5
    wt = daily[daily.metric == "watch_time_s"]
    assert wt["seq_p_value"].is_monotonic_decreasing  # running minimum over looks
    assert (wt["seq_ci_high"].diff().dropna() <= 0).all()  # running intersection
    assert wt["abs_diff"].iloc[-1] == pytest.approx(lift["abs_diff"], rel=1e-12)  # last look = whole table
    shown = run("runs", "show", "seq", "--db", str(db))
    assert shown.exit_code == 0 and "cumulative lift by day" in shown.stdout


def test_terminal_tables_fit_80_columns_and_keep_numbers_whole(three_arms, tmp_path):
    res = run("analyze", str(three_arms), *BASE, "--segment", "day", "--gate", str(_gate(tmp_path)), "--bayes",
              "--db", str(tmp_path / "r.duckdb"), columns=80)
    out = res.stdout
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "…" not in out
    doc = analyze(three_arms, arm_col="arm", control="base", metrics=["watch_time_s", "video_interactions"],
                  segments=["day"])
    words = set(re.split(r"[\s\[\],()]+", out))
    for lift in doc.overall():
        for value, fmt in ((lift.abs_diff, "+.4g"), (lift.abs_ci_low, "+.4g"), (lift.abs_ci_high, "+.4g"),
                           (lift.p_value_adjusted, ".3g")):
            assert format(value, fmt) in words, (lift.metric, lift.treatment, format(value, fmt))
    assert "launch gate: NO_SHIP (lsvcr: INCONCLUSIVE, no_text: NO_SHIP)" in " ".join(out.split())
