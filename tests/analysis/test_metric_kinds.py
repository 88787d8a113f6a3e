"""A new metric kind is one class: the orchestrator, CUPED, the delta method, the bootstrap and the
checks only call what `analysis.metrics.Metric` declares. This file adds one (the docs/statistics.md
example) and checks it against the same quantity computed as a plain mean."""

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from analysis import AnalysisConfig, analyze
from analysis.metrics import Metric


@dataclass(frozen=True)
class DifferenceMetric(Metric):
    """mean(a) - mean(b) per unit, e.g. watch time minus the time a user skipped in."""

    name: str
    a: str
    b: str
    covariates: tuple[str, ...] = ()
    kind: ClassVar[str] = "difference"

    @property
    def value_columns(self) -> tuple[str, ...]:
        return (self.a, self.b)

    def linearize(self, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return mean[..., 0] - mean[..., 1], np.broadcast_to(np.array([1.0, -1.0]), mean.shape).copy()


@pytest.fixture
def frame():
    rng = np.random.default_rng(0)
    n = 3000
    a, b = rng.gamma(2.0, 10.0, 2 * n), rng.gamma(2.0, 3.0, 2 * n)
    a[n:] *= 1.05
    return pd.DataFrame({"arm": np.repeat(["c", "t"], n), "a": a, "b": b, "a_minus_b": a - b})


@pytest.mark.parametrize("cfg", [AnalysisConfig(cuped="none"), AnalysisConfig(cuped="none", bootstrap="poisson",
                                                                              n_boot=500, seed=1)])
def test_new_kind_equals_the_precomputed_column(frame, cfg):
    new = analyze(frame, arm_col="arm", control="c", metrics=[DifferenceMetric("d", "a", "b")], config=cfg).lift("d")
    plain = analyze(frame, arm_col="arm", control="c", metrics=["a_minus_b"], config=cfg).lift("a_minus_b")
    assert new.kind == "difference"
    for field in ("control_mean", "treatment_mean", "abs_diff", "abs_se", "abs_ci_low", "abs_ci_high", "p_value",
                  "rel_diff", "rel_ci_low", "rel_ci_high", "seq_ci_low", "seq_ci_high"):
        assert getattr(new, field) == pytest.approx(getattr(plain, field), rel=1e-9), field


def test_new_kind_with_cuped_and_paired(frame):
    df = frame.assign(a_pre=frame.a / 1.02 + 1.0, b_pre=frame.b + 0.5)
    res = analyze(df, arm_col="arm", control="c", metrics=[DifferenceMetric("d", "a", "b")])
    lift = res.lift("d")
    assert lift.cuped == "single" and lift.covariates == "a_pre,b_pre" and lift.variance_reduction > 0.5
    paired = pd.concat([frame.assign(arm="c", u=np.arange(6000)), frame.assign(arm="t", u=np.arange(6000),
                                                                                a=frame.a * 1.01)])
    r = analyze(paired, arm_col="arm", control="c", metrics=[DifferenceMetric("d", "a", "b")], unit_col="u",
                config=AnalysisConfig(paired=True)).lift("d")
    assert r.abs_diff == pytest.approx(0.01 * frame.a.mean(), rel=1e-9) and r.method == "paired-t"
