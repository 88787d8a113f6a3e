"""Metric definitions: what to compare, declared once, independent of where the data lives.

Units are the randomisation units (users). A metric is a per-unit quantity; session- or request-level
rows are summed to the unit before any statistic is computed (see `aggregates.py`), so sessions of one
user are never treated as independent replicates (no pseudo-replication).

* `MeanMetric`: the mean over units of a per-unit value (watch time per user, interactions per user).
* `ProportionMetric`: a `MeanMetric` whose per-unit value must lie in [0, 1] (e.g. "opened any comment
  section"); analysed with the same Welch/z machinery (the unpooled Wald interval for two proportions).
* `RatioMetric`: sum(numerator) / sum(denominator) over units of an arm (e.g. comment watch time per video
  view). Numerator and denominator are per-unit sums; the variance comes from the delta method over
  units (Deng, Knoblich and Lu 2018, "Applying the Delta Method in Metric Analytics", KDD), never from
  treating views as independent.

Covariates (for CUPED) are per-unit pre-period columns, by convention named `<column>_pre`.

Each kind is a small class (as tea-tasting's metric classes) carrying its own behaviour: the columns it
needs, its estimate and its linearisation, its data checks. The orchestrator loops over metrics and
calls only `Metric`'s methods, so a new kind is one subclass (docs/statistics.md, "Adding a metric kind").
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from analysis.errors import AnalysisError

if TYPE_CHECKING:
    from analysis.aggregates import Moments
    from analysis.results import CheckResult

PRE_SUFFIX = "_pre"


def _check_name(value: str, what: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise AnalysisError(f"{what} must be a non-empty string, got {value!r}")


class Metric(ABC):
    """What a metric kind declares; the orchestrator (`experiment.py`) only calls these.

    * `value_columns`: the per-unit columns whose means and co-moments (the sufficient statistics, read
      in the one aggregation query) the estimate is a function of.
    * `estimate(mean)`: g(mean), the arm's value from the means of `value_columns` (trailing axis; any
      leading batch axes, for simulations and the bootstrap).
    * `linearize(mean)`: (g, grad of g) at the means. The delta-method variance grad^T Sigma grad / n,
      CUPED's adjustment of the linearised metric and the paired covariance all follow from it.
    * `range_columns` / `checks(arms)`: columns that need min/max in the query, and data checks on
      the overall moments of every arm.
    * `undefined_reason(arms)`: why the estimate is not finite in those arms.
    Adding a kind is one subclass (a frozen dataclass) of this in one file; see docs/statistics.md.
    """

    name: str
    covariates: tuple[str, ...]
    kind: ClassVar[str]

    @property
    @abstractmethod
    def value_columns(self) -> tuple[str, ...]:
        """The per-unit columns the estimate is a function of."""

    @abstractmethod
    def linearize(self, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(g, grad): g (...) and grad (..., len(value_columns)) at the arm means (..., len(value_columns))."""

    def estimate(self, mean: np.ndarray) -> np.ndarray:
        return self.linearize(mean)[0]

    @property
    def range_columns(self) -> tuple[str, ...]:
        return ()

    def checks(self, arms: Mapping[str, Moments]) -> list[CheckResult]:
        return []

    def undefined_reason(self, arms: Sequence[str]) -> str:
        return f"mean undefined in arm(s) {list(arms)}"

    def own_covariates(self, available: Iterable[str]) -> tuple[str, ...]:
        """Pre-period columns of this metric's own columns that exist in the table (`<col>_pre`)."""
        have = set(available)
        return tuple(c + PRE_SUFFIX for c in self.value_columns if c + PRE_SUFFIX in have)

    def _check_covariates(self) -> None:
        object.__setattr__(self, "covariates", tuple(self.covariates))
        for c in self.covariates:
            _check_name(c, f"covariate of metric {self.name!r}")


@dataclass(frozen=True)
class MeanMetric(Metric):
    """Mean per unit of `column` (defaults to `name`); `covariates` override the automatic `<column>_pre`."""

    name: str
    column: str = ""
    covariates: tuple[str, ...] = ()
    kind: ClassVar[str] = "mean"

    def __post_init__(self) -> None:
        _check_name(self.name, "metric name")
        if not self.column:
            object.__setattr__(self, "column", self.name)
        self._check_covariates()

    @property
    def value_columns(self) -> tuple[str, ...]:
        return (self.column,)

    def linearize(self, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return mean[..., 0], np.ones_like(mean[..., :1])


@dataclass(frozen=True)
class ProportionMetric(MeanMetric):
    """A mean metric whose per-unit values must lie in [0, 1]; checked on the data, not assumed."""

    kind: ClassVar[str] = "proportion"

    @property
    def range_columns(self) -> tuple[str, ...]:
        return (self.column,)

    def checks(self, arms: Mapping[str, Moments]) -> list[CheckResult]:
        from analysis.checks import proportion_check

        return [proportion_check(self.name, self.column, arms)]


@dataclass(frozen=True)
class RatioMetric(Metric):
    """sum(numerator) / sum(denominator) per arm, with a delta-method variance over units:
    g = mu_Y / mu_X, grad = (1 / mu_X, -mu_Y / mu_X^2) (Deng, Knoblich and Lu 2018)."""

    name: str
    numerator: str
    denominator: str
    covariates: tuple[str, ...] = ()
    kind: ClassVar[str] = "ratio"

    def __post_init__(self) -> None:
        _check_name(self.name, "metric name")
        _check_name(self.numerator, f"numerator of ratio metric {self.name!r}")
        _check_name(self.denominator, f"denominator of ratio metric {self.name!r}")
        if self.numerator == self.denominator:
            raise AnalysisError(
                f"ratio metric {self.name!r} has the same numerator and denominator "
                f"({self.numerator!r}); a ratio of a column to itself is always 1"
            )
        self._check_covariates()

    @property
    def value_columns(self) -> tuple[str, ...]:
        return (self.numerator, self.denominator)

    def linearize(self, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        num, den = mean[..., 0], mean[..., 1]
        with np.errstate(invalid="ignore", divide="ignore"):
            return num / den, np.stack([1.0 / den, -num / den**2], axis=-1)

    def undefined_reason(self, arms: Sequence[str]) -> str:
        return f"ratio undefined: denominator {self.denominator!r} sums to zero in arm(s) {list(arms)}"


def parse_metric(spec: str) -> Metric:
    """Parse a command-line metric spec.

    `watch_time_s` -> MeanMetric; `num/den` -> RatioMetric named `num_per_den`;
    `name=num/den` -> RatioMetric named `name`; `name=column` -> MeanMetric on `column`.
    """
    text = spec.strip()
    if not text:
        raise AnalysisError("empty metric spec; give a column name, NUM/DEN or NAME=NUM/DEN")
    name, _, body = text.rpartition("=") if "=" in text else ("", "", text)
    if "/" in body:
        num, _, den = body.partition("/")
        num, den = num.strip(), den.strip()
        if not num or not den or "/" in den:
            raise AnalysisError(f"bad ratio spec {spec!r}; write NUM/DEN, e.g. comment_watch_time_s/requests")
        return RatioMetric(name=name.strip() or f"{num}_per_{den}", numerator=num, denominator=den)
    return MeanMetric(name=name.strip() or body.strip(), column=body.strip())


def metric_columns(metrics: Sequence[Metric]) -> tuple[str, ...]:
    """All value columns the metrics need, in first-seen order."""
    out: dict[str, None] = {}
    for m in metrics:
        for c in m.value_columns:
            out.setdefault(c, None)
    return tuple(out)


def check_unique_names(metrics: Sequence[Metric]) -> None:
    seen: set[str] = set()
    for m in metrics:
        if m.name in seen:
            raise AnalysisError(f"metric name {m.name!r} is declared twice; give each metric a unique name")
        seen.add(m.name)
