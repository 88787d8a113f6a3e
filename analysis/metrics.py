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
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from analysis.errors import AnalysisError

PRE_SUFFIX = "_pre"


def _check_name(value: str, what: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise AnalysisError(f"{what} must be a non-empty string, got {value!r}")


@dataclass(frozen=True)
class MeanMetric:
    """Mean per unit of `column` (defaults to `name`); `covariates` override the automatic `<column>_pre`."""

    name: str
    column: str = ""
    covariates: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_name(self.name, "metric name")
        if not self.column:
            object.__setattr__(self, "column", self.name)
        object.__setattr__(self, "covariates", tuple(self.covariates))
        for c in self.covariates:
            _check_name(c, f"covariate of metric {self.name!r}")

    @property
    def kind(self) -> str:
        return "mean"

    @property
    def value_columns(self) -> tuple[str, ...]:
        """The per-unit columns the estimate is a function of."""
        return (self.column,)

    def own_covariates(self, available: Iterable[str]) -> tuple[str, ...]:
        """Pre-period columns of this metric's own columns that exist in the table (`<col>_pre`)."""
        have = set(available)
        return tuple(c + PRE_SUFFIX for c in self.value_columns if c + PRE_SUFFIX in have)


@dataclass(frozen=True)
class ProportionMetric(MeanMetric):
    """A mean metric whose per-unit values must lie in [0, 1]; checked on the data, not assumed."""

    @property
    def kind(self) -> str:
        return "proportion"


@dataclass(frozen=True)
class RatioMetric:
    """sum(numerator) / sum(denominator) per arm, with a delta-method variance over units."""

    name: str
    numerator: str
    denominator: str
    covariates: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_name(self.name, "metric name")
        _check_name(self.numerator, f"numerator of ratio metric {self.name!r}")
        _check_name(self.denominator, f"denominator of ratio metric {self.name!r}")
        if self.numerator == self.denominator:
            raise AnalysisError(
                f"ratio metric {self.name!r} has the same numerator and denominator "
                f"({self.numerator!r}); a ratio of a column to itself is always 1"
            )
        object.__setattr__(self, "covariates", tuple(self.covariates))
        for c in self.covariates:
            _check_name(c, f"covariate of metric {self.name!r}")

    @property
    def kind(self) -> str:
        return "ratio"

    @property
    def value_columns(self) -> tuple[str, ...]:
        return (self.numerator, self.denominator)

    def own_covariates(self, available: Iterable[str]) -> tuple[str, ...]:
        have = set(available)
        return tuple(c + PRE_SUFFIX for c in self.value_columns if c + PRE_SUFFIX in have)


Metric = MeanMetric | RatioMetric


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
