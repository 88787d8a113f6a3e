"""`AnalysisConfig`: every statistical choice of an analysis, explicit, validated and recorded.

Defaults follow common practice for online experiments: Welch t, symmetric delta-method relative CI,
CUPED on the metric's own pre-period column, SRM alpha 0.001 (Kohavi, Tang and Xu 2020, ch. 21), Holm
across segments within a metric.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from analysis.errors import AnalysisError

TESTS = ("welch", "z")
RELATIVE_CI = ("delta", "log", "fieller")
CUPED = ("none", "single", "multi")
BOOTSTRAP = (None, "percentile", "bca", "poisson")
CORRECTIONS = ("none", "holm", "bh")
SCOPES = ("metric", "all")


def _one_of(name: str, value: Any, allowed: tuple[Any, ...]) -> None:
    if value not in allowed:
        raise AnalysisError(f"AnalysisConfig.{name}={value!r} is not one of {list(allowed)}")


def _in_open_unit(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and 0.0 < value < 1.0):
        raise AnalysisError(f"AnalysisConfig.{name}={value!r} must be a number strictly between 0 and 1")


@dataclass(frozen=True)
class AnalysisConfig:
    """Statistical settings of one analysis.

    alpha: two-sided level of every CI and test.
    test: "welch" (t with Welch-Satterthwaite df) or "z" (normal reference).
    relative_ci: "delta" (symmetric, delta method), "log" (delta method on log ratio, asymmetric) or
        "fieller" (Fieller's exact-under-normality interval for a ratio of means).
    cuped: "none", "single" (each metric's own `<column>_pre` columns) or "multi" (regression on every
        `*_pre` column of the table plus the `covariates` passed to `analyze`).
    paired: same units measured under both arms (a replay); needs `unit_col`.
    bootstrap: None, "percentile", "bca" (scipy.stats.bootstrap) or "poisson" (Poisson(1) weights,
        one pass per chunk, for large data); replaces the normal CI of the overall lifts.
    expected_split: arm -> share (normalised); None means equal shares.
    srm_alpha: p-value below which the sample-ratio check fails.
    min_units: minimum units per arm (per segment level for segment lifts) for a lift to count.
    winsorize: None, or the upper quantile q (e.g. 0.999) at which metric and covariate values are capped
        (pooled over arms, recorded in the result); applies to non-negative heavy tails.
    correction / correction_scope: multiple-testing adjustment; "metric" adjusts within a metric across
        its segment levels (the overall lift is its own family), "all" adjusts every lift together.
    sequential_rho: mixture standard deviation of the normal-mixture confidence sequence, in units of
        the per-unit standard deviation (a standardised effect size, Cohen's d). Johari et al. (2017):
        tau = rho * sd. The sequence is tightest near n per arm ~ 2 / rho^2 (rho=0.01 -> ~20k).
    power: target power for the reported MDE.
    bayes: add the Bayesian view of each overall relative lift (`bayes.py`: chance to beat control,
        expected loss of either choice, credible interval; the maths of GrowthBook's engine).
    bayes_prior_sd: None for a flat prior (gbstats' default), else the sd of a N(0, sd^2) prior on the
        relative lift (0.3: lifts beyond +/-60% are a priori unlikely).
    rel_min_control_se: relative lift is undefined when |control mean| < this many standard errors of
        the control mean (a control mean that is not clearly non-zero).
    """

    alpha: float = 0.05
    test: str = "welch"
    relative_ci: str = "delta"
    cuped: str = "single"
    paired: bool = False
    bootstrap: str | None = None
    n_boot: int = 2000
    seed: int = 0
    expected_split: dict[str, float] | None = None
    srm_alpha: float = 0.001
    min_units: int = 100
    winsorize: float | None = None
    correction: str = "holm"
    correction_scope: str = "metric"
    sequential_rho: float = 0.01
    power: float = 0.8
    rel_min_control_se: float = 3.0
    heavy_tail_factor: float = 355.0
    bayes: bool = False
    bayes_prior_sd: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _in_open_unit("alpha", self.alpha)
        _in_open_unit("srm_alpha", self.srm_alpha)
        _in_open_unit("power", self.power)
        _one_of("test", self.test, TESTS)
        _one_of("relative_ci", self.relative_ci, RELATIVE_CI)
        _one_of("cuped", self.cuped, CUPED)
        _one_of("bootstrap", self.bootstrap, BOOTSTRAP)
        _one_of("correction", self.correction, CORRECTIONS)
        _one_of("correction_scope", self.correction_scope, SCOPES)
        if not isinstance(self.paired, bool):
            raise AnalysisError(f"AnalysisConfig.paired must be True or False, got {self.paired!r}")
        if not isinstance(self.n_boot, int) or self.n_boot < 100:
            raise AnalysisError(f"AnalysisConfig.n_boot={self.n_boot!r} must be an integer >= 100")
        if not isinstance(self.seed, int):
            raise AnalysisError(f"AnalysisConfig.seed={self.seed!r} must be an integer")
        if not isinstance(self.min_units, int) or self.min_units < 2:
            raise AnalysisError(f"AnalysisConfig.min_units={self.min_units!r} must be an integer >= 2")
        if self.winsorize is not None:
            if not (isinstance(self.winsorize, float | int) and 0.5 < self.winsorize < 1.0):
                raise AnalysisError(
                    f"AnalysisConfig.winsorize={self.winsorize!r} must be None or an upper quantile in "
                    "(0.5, 1), e.g. 0.999"
                )
        if not (isinstance(self.sequential_rho, float | int) and self.sequential_rho > 0
                and math.isfinite(self.sequential_rho)):
            raise AnalysisError(f"AnalysisConfig.sequential_rho={self.sequential_rho!r} must be > 0")
        if not (self.rel_min_control_se >= 0):
            raise AnalysisError("AnalysisConfig.rel_min_control_se must be >= 0")
        if not (self.heavy_tail_factor > 0):
            raise AnalysisError("AnalysisConfig.heavy_tail_factor must be > 0")
        if not isinstance(self.bayes, bool):
            raise AnalysisError(f"AnalysisConfig.bayes must be True or False, got {self.bayes!r}")
        if self.bayes_prior_sd is not None and not (isinstance(self.bayes_prior_sd, int | float)
                                                    and math.isfinite(self.bayes_prior_sd) and self.bayes_prior_sd > 0):
            raise AnalysisError(f"AnalysisConfig.bayes_prior_sd={self.bayes_prior_sd!r} must be None (flat prior) "
                                "or a positive number, e.g. 0.3")
        if self.expected_split is not None:
            split = dict(self.expected_split)
            bad = {k: v for k, v in split.items()
                   if not (isinstance(v, int | float) and math.isfinite(v) and v > 0)}
            if not split or bad:
                raise AnalysisError(
                    f"AnalysisConfig.expected_split={self.expected_split!r}: give every arm a positive "
                    "share, e.g. {'control': 0.5, 'treatment': 0.5}"
                )
            total = sum(split.values())
            object.__setattr__(self, "expected_split", {str(k): v / total for k, v in split.items()})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
