"""Typed results with stable field names.

The CLI table, `--json`, the results database and the dashboard all read these fields, so names are
part of the public API: add fields at the end, never rename. Every field is a scalar (str, int, float,
bool or None) so a row maps one-to-one onto a database row; NaN marks "not computable", and a `*_reason`
or `notes` field says why.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

OVERALL = "all"


def _clean(value: Any) -> Any:
    """JSON-safe scalar: NaN/inf become None (JSON has no NaN), numpy scalars become Python ones."""
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _row(obj: Any) -> dict[str, Any]:
    return {k: _clean(v) for k, v in asdict(obj).items()}


@dataclass(frozen=True)
class LiftResult:
    """One comparison: a metric, a segment level, treatment vs control.

    `abs_*` is treatment minus control; `rel_*` is treatment / control - 1 (None/NaN with
    `rel_undefined_reason` when the control mean is zero or too close to zero to divide by).
    `p_value` is for H0: no difference; `p_value_adjusted` after the configured correction.
    `seq_*` are the always-valid (confidence-sequence) interval and p-value at this look.
    """

    metric: str
    kind: str  # mean | proportion | ratio
    segment: str  # "all" or the segment column
    segment_value: str  # "all" or the level
    control: str
    treatment: str
    n_control: int
    n_treatment: int
    control_mean: float
    treatment_mean: float
    abs_diff: float
    abs_se: float
    abs_ci_low: float
    abs_ci_high: float
    rel_diff: float | None
    rel_ci_low: float | None
    rel_ci_high: float | None
    rel_undefined_reason: str | None
    p_value: float
    p_value_adjusted: float
    significant: bool
    df: float  # degrees of freedom of the t reference (inf for z)
    method: str  # welch | z | paired-t | paired-z
    relative_ci_method: str  # delta | log | fieller
    ci_method: str  # normal | bootstrap-percentile | bootstrap-bca | bootstrap-poisson
    cuped: str  # none | single | multi
    covariates: str  # comma-separated covariate columns actually used
    variance_reduction: float  # 1 - Var(adjusted diff) / Var(unadjusted diff); 0 without CUPED
    alpha: float
    correction: str  # none | holm | bh
    correction_scope: str  # metric | all
    seq_ci_low: float
    seq_ci_high: float
    seq_p_value: float
    winsorized: str  # "" or a description of the caps applied
    notes: str  # "; "-joined remarks (degenerate cases, dropped units, ...)
    # Bayesian view of the relative lift (AnalysisConfig.bayes; overall rows only), NaN/"" otherwise
    bayes_prior: str = ""  # "flat" or "N(0, 0.3^2) on the relative lift"
    bayes_chance_to_win: float = math.nan  # P(relative lift > 0 | data)
    bayes_risk_control: float = math.nan  # expected relative loss of keeping control
    bayes_risk_treatment: float = math.nan  # expected relative loss of shipping treatment
    bayes_ci_low: float = math.nan  # credible interval of the relative lift
    bayes_ci_high: float = math.nan
    cuped_theta: str = ""  # "covariate=theta,..." of the CUPED adjustment ("" without CUPED)
    # the same comparison without CUPED (NaN when no covariate was used), so readers can show both
    unadjusted_control_mean: float = math.nan
    unadjusted_treatment_mean: float = math.nan
    unadjusted_abs_diff: float = math.nan
    unadjusted_abs_ci_low: float = math.nan
    unadjusted_abs_ci_high: float = math.nan
    unadjusted_rel_diff: float = math.nan
    unadjusted_rel_ci_low: float = math.nan
    unadjusted_rel_ci_high: float = math.nan
    unadjusted_p_value: float = math.nan

    @property
    def is_overall(self) -> bool:
        return self.segment == OVERALL

    def to_dict(self) -> dict[str, Any]:
        return _row(self)


@dataclass(frozen=True)
class CheckResult:
    """A trust check (srm, min_sample, heavy_tail, winsorize, proportion_range, pairing)."""

    check: str
    metric: str  # "" when the check is about the whole experiment
    segment: str
    passed: bool
    severity: str  # error | warning | info
    statistic: float
    p_value: float
    threshold: float
    message: str

    def to_dict(self) -> dict[str, Any]:
        return _row(self)


@dataclass(frozen=True)
class HeterogeneityResult:
    """Cochran's Q test that a metric's lift is the same in every level of a segment column."""

    metric: str
    treatment: str
    segment: str
    n_levels: int
    q_stat: float
    df: int
    p_value: float
    i2: float  # Higgins' I^2 = max(0, (Q - df) / Q)
    notes: str

    def to_dict(self) -> dict[str, Any]:
        return _row(self)


@dataclass(frozen=True)
class PowerResult:
    """Minimum detectable effect at the observed sample (two-sided, at `alpha` and `power`)."""

    metric: str
    treatment: str
    n_control: int
    n_treatment: int
    sd: float  # per-unit standard deviation (linearised for ratios), pooled over arms
    variance_reduction: float
    alpha: float
    power: float
    mde_abs: float
    mde_rel: float | None

    def to_dict(self) -> dict[str, Any]:
        return _row(self)


@dataclass(frozen=True)
class DailyLift:
    """The cumulative lift of one metric and treatment after one day of data (`analyze_by_day`).

    `seq_*` are running over the looks so far (intersection of the always-valid intervals, minimum of
    the always-valid p-values), so reading the chart daily never inflates the false-positive rate;
    `p_value` and `abs_ci_*` are the fixed-horizon numbers at that look, which peeking does inflate.
    """

    metric: str
    treatment: str
    day: str
    look: int  # 1 for the first day
    n_control: int
    n_treatment: int
    control_mean: float
    treatment_mean: float
    abs_diff: float
    abs_ci_low: float
    abs_ci_high: float
    rel_diff: float | None
    p_value: float
    seq_ci_low: float
    seq_ci_high: float
    seq_p_value: float

    def to_dict(self) -> dict[str, Any]:
        return _row(self)


@dataclass(frozen=True)
class ExperimentResult:
    """Everything `analyze` found; `to_dicts()` is the stable, JSON-safe view."""

    arm_col: str
    control: str
    treatments: tuple[str, ...]
    arm_counts: dict[str, int]
    config: dict[str, Any]
    lifts: list[LiftResult] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)
    heterogeneity: list[HeterogeneityResult] = field(default_factory=list)
    power: list[PowerResult] = field(default_factory=list)

    @property
    def treatment(self) -> str:
        """The treatment arm when there is exactly one."""
        return self.treatments[0]

    @property
    def variance_reduction(self) -> dict[str, float]:
        """Metric -> variance reduction achieved by CUPED on the overall lift (first treatment)."""
        return {
            r.metric: r.variance_reduction
            for r in self.lifts
            if r.is_overall and r.treatment == self.treatments[0]
        }

    @property
    def srm_passed(self) -> bool:
        return all(c.passed for c in self.checks if c.check == "srm")

    def lift(self, metric: str, segment: str = OVERALL, segment_value: str = OVERALL,
             treatment: str | None = None) -> LiftResult:
        """The lift of one metric (overall by default); KeyError naming what exists otherwise."""
        t = treatment or self.treatments[0]
        for r in self.lifts:
            if (r.metric, r.segment, r.segment_value, r.treatment) == (metric, segment, segment_value, t):
                return r
        have = sorted({r.metric for r in self.lifts})
        raise KeyError(f"no lift for metric={metric!r} segment={segment}={segment_value} treatment={t!r}; "
                       f"metrics analysed: {have}")

    def overall(self) -> list[LiftResult]:
        return [r for r in self.lifts if r.is_overall]

    def to_dicts(self) -> dict[str, list[dict[str, Any]]]:
        """Tables keyed `summary`, `lifts`, `checks`, `heterogeneity`, `power` (lists of flat rows)."""
        summary = {
            "arm_col": self.arm_col,
            "control": self.control,
            "treatments": ",".join(self.treatments),
            "arm_counts": ",".join(f"{k}={v}" for k, v in self.arm_counts.items()),
            "srm_passed": self.srm_passed,
            **{f"config.{k}": _clean(v) if not isinstance(v, dict | list | tuple) else str(v)
               for k, v in self.config.items()},
        }
        return {
            "summary": [summary],
            "lifts": [r.to_dict() for r in self.lifts],
            "checks": [c.to_dict() for c in self.checks],
            "heterogeneity": [h.to_dict() for h in self.heterogeneity],
            "power": [p.to_dict() for p in self.power],
        }


LIFT_FIELDS = tuple(f.name for f in fields(LiftResult))
DAILY_FIELDS = tuple(f.name for f in fields(DailyLift))
CHECK_FIELDS = tuple(f.name for f in fields(CheckResult))
