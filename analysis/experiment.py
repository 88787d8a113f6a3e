"""The orchestrator: read the data once, compute every metric's lifts, checks and gate inputs.

Design (tea-tasting's "one orchestrator, small statistic objects"): `analyze` issues one DuckDB
aggregation query over the table for all metrics, covariates, arms and segment levels
(`aggregates.py`), then hands the mergeable sufficient statistics to small pure functions (`ratio.py`,
`cuped.py`, `lifts.py`, ...). The statistics never see the storage backend, so the same numbers come out
of a Parquet file, a pandas frame, an Arrow table or sufficient statistics computed elsewhere.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TypeAlias

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from analysis.aggregates import (
    AggregateSpec,
    GroupKey,
    Moments,
    _literal,
    _quote,
    compute_moments,
    open_source,
)
from analysis.bayes import bayesian_lift
from analysis.bootstrap import ArmData, poisson_bootstrap, scipy_bootstrap
from analysis.checks import (
    balance_check,
    heavy_tail_check,
    skewed_difference_check,
)
from analysis.config import AnalysisConfig
from analysis.cuped import ArmPair, cuped_min_units, independent_estimates, paired_estimates
from analysis.errors import AnalysisError
from analysis.lifts import compare
from analysis.metrics import (
    MeanMetric,
    Metric,
    ProportionMetric,
    RatioMetric,
    check_unique_names,
    metric_columns,
    parse_metric,
)
from analysis.multitest import adjust_families
from analysis.power import mde
from analysis.results import (
    OVERALL,
    CheckResult,
    ExperimentResult,
    HeterogeneityResult,
    LiftResult,
    PowerResult,
)
from analysis.segments import cochran_q
from analysis.sequential import always_valid_p, confidence_sequence
from analysis.source import AnalysisInputs, _Source

TableLike: TypeAlias = pa.Table | pd.DataFrame | str | Path

__all__ = [
    "OVERALL",
    "AnalysisConfig",
    "AnalysisInputs",
    "AnalysisError",
    "CheckResult",
    "ExperimentResult",
    "HeterogeneityResult",
    "LiftResult",
    "MeanMetric",
    "Metric",
    "PowerResult",
    "ProportionMetric",
    "RatioMetric",
    "TableLike",
    "analyze",
    "parse_metric",
]


def analyze(
    table: TableLike,
    *,
    arm_col: str,
    control: str,
    treatment: str | Sequence[str] | None = None,
    metrics: Sequence[Metric | str],
    segments: Sequence[str] = (),
    unit_col: str | None = None,
    covariates: Sequence[str] = (),
    config: AnalysisConfig | None = None,
    encoding: str = "utf-8",
) -> ExperimentResult:
    """Analyse an A/B test from a per-unit table.

    table: Arrow table, pandas frame, or a path to a Parquet/CSV file (or a folder of Parquet files).
    arm_col / control / treatment: the arm column, the control arm, and the treatment arm(s); None means
        every other arm in the table.
    metrics: metric definitions, or specs parsed by `parse_metric` ("watch_time_s", "num/den").
    segments: columns whose levels get their own lifts and a Cochran's Q heterogeneity test.
    unit_col: unit id column. When given, rows are summed to one row per (arm, unit) first (session-level
        exports); a unit found in two arms is an error unless `config.paired`, which requires it.
    covariates: extra pre-period columns for `cuped="multi"`.
    encoding: text encoding of a CSV file ("utf-8", "utf-16" or "latin-1").
    """
    cfg = config or AnalysisConfig()
    mets = [parse_metric(m) if isinstance(m, str) else m for m in metrics]
    if not mets:
        raise AnalysisError("no metrics given; name at least one metric column")
    for m in mets:
        if not isinstance(m, Metric):
            raise AnalysisError(f"metric {m!r} must be a Metric (MeanMetric, RatioMetric, ...) or a spec string")
    check_unique_names(mets)
    segments = list(dict.fromkeys(segments))
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")  # a library must not draw on the caller's stdout
    try:
        inputs = AnalysisInputs(src=open_source(con, table, encoding), arm_col=arm_col, control=str(control),
                                treatment=treatment if treatment is None or isinstance(treatment, str)
                                else tuple(str(t) for t in treatment),
                                metrics=tuple(mets), segments=tuple(segments), unit_col=unit_col,
                                covariates=tuple(covariates), config=cfg)
        return _Analysis(con, inputs).run()
    finally:
        con.close()


class _Analysis(_Source):
    """One run of `analyze` over frozen `AnalysisInputs`: the statistics, on the source `_Source` checked
    and reshaped (winsorised, summed to units), with the checks and notes found along the way. Not API."""

    # -- main ---------------------------------------------------------------------------------------
    def run(self) -> ExperimentResult:
        cfg = self.cfg
        self._require([self.arm_col], "arm")
        self._has_rows()
        if self.unit_col is not None:
            self._require([self.unit_col], "unit")
            self._unit_ids()
        elif cfg.paired:
            raise AnalysisError("a paired analysis needs unit_col: the column that matches each unit's "
                                "control row to its treatment row")
        else:
            self._repeated_ids()
        value_cols = list(metric_columns(self.metrics))
        self._require(value_cols, "metric")
        self._numeric(value_cols, "metric")
        self._require(self.segments, "segment")
        covs = {m.name: self._covariates(m) for m in self.metrics}
        all_covs = list(dict.fromkeys(c for cs in covs.values() for c in cs))
        self._require(all_covs, "covariate")
        self._numeric(all_covs, "covariate")
        overlap = set(all_covs) & set(value_cols)
        if overlap:
            raise AnalysisError(f"column(s) {sorted(overlap)} are used as both a metric and a covariate")
        self.covs = covs
        # One scan does everything when the table is read as is: the moments of every arm, whose
        # group sizes are the arm counts. Winsorising and unit-level sums need the arms (or change the
        # rows) first, so they count arms in a query of their own.
        single_scan = self.unit_col is None and cfg.winsorize is None and not cfg.paired
        pre = None
        if single_scan:
            pre = self._moments(value_cols, arms=None)
            self.arm_counts = self._counts_from(pre[0])
        else:
            self.arm_counts = self._arm_counts()
        self._resolve_arms()
        self._winsorize(value_cols, all_covs)
        if self.unit_col is not None:
            self._unit_level(value_cols, [*all_covs, *self.segments])
        lifts: list[LiftResult] = []
        if cfg.paired:
            for t in self.treatments:
                lifts += self._paired(t, value_cols)
        else:
            lifts += self._independent(value_cols, all_covs, pre)
        lifts = self._adjust(lifts)
        het = self._heterogeneity(lifts)
        return ExperimentResult(
            arm_col=self.arm_col, control=self.control, treatments=tuple(self.treatments),
            arm_counts=self.arm_counts, config=cfg.to_dict(), lifts=lifts, checks=self.checks,
            heterogeneity=het, power=self.power,
        )

    # -- independent arms ---------------------------------------------------------------------------
    def _moments(self, value_cols: list[str], arms: Sequence[str] | None
                 ) -> tuple[dict[GroupKey, Moments], dict[GroupKey, np.ndarray]]:
        """The one aggregation query of an independent-arms analysis (all arms when `arms` is None)."""
        blocks = [list(m.value_columns) + list(self.covs[m.name]) for m in self.metrics]
        ranges = [c for m in self.metrics for c in m.range_columns]
        spec = AggregateSpec.from_blocks(blocks, tail_columns=value_cols, range_columns=ranges)
        return compute_moments(self.con, self.src, arm_col=self.arm_col, arms=arms, segments=self.segments,
                               spec=spec, sample_shift=self.unit_col is None)

    def _independent(self, value_cols: list[str], all_covs: list[str],
                     pre: tuple[dict[GroupKey, Moments], dict[GroupKey, np.ndarray]] | None = None
                     ) -> list[LiftResult]:
        moments, counts = pre if pre is not None else self._moments(value_cols, self.arms)
        self._validate(moments, counts, self.arms)
        overall = {a: moments[GroupKey(a, OVERALL, OVERALL)] for a in self.arms}
        self._metric_checks(overall)
        for cov in all_covs:  # CUPED diagnostics: was the pre-period balanced?
            for t in self.treatments:
                self.checks.append(balance_check(cov, t, overall[self.control], overall[t], self.cfg.srm_alpha))
        self.power = []
        out: list[LiftResult] = []
        for t in self.treatments:
            for m in self.metrics:
                covs = self.covs[m.name]
                keys = [(OVERALL, OVERALL)] + sorted(
                    {(k.segment, k.level) for k in moments if k.segment != OVERALL})
                for seg, lev in keys:
                    kc, kt = GroupKey(self.control, seg, lev), GroupKey(t, seg, lev)
                    if kc not in moments or kt not in moments:
                        continue
                    mc, mt = moments[kc], moments[kt]
                    notes: list[str] = []
                    use_covs = covs
                    if covs and min(float(mc.n), float(mt.n)) < cuped_min_units(len(covs)):
                        use_covs, notes = (), [*notes, f"too few units for CUPED; unadjusted (CUPED with "
                                               f"{len(covs)} covariate(s) needs {cuped_min_units(len(covs))} "
                                               "units per arm to keep its CI's coverage)"]
                    pair = independent_estimates(mc, mt, m, use_covs)
                    row = self._row(m, t, seg, lev, pair, use_covs, notes)
                    if use_covs:
                        row = self._unadjusted(row, independent_estimates(mc, mt, m, ()))
                    if seg == OVERALL and self.cfg.bootstrap:
                        row = self._bootstrap(row, m, t, use_covs, pair)
                    if seg == OVERALL and self.cfg.bayes:
                        row = self._bayes(row, pair)
                    if seg == OVERALL:
                        self.power.append(self._power(m, t, pair))
                    out.append(row)
        return out

    def _metric_checks(self, overall: dict[str, Moments]) -> None:
        for m in self.metrics:
            self.checks += m.checks(overall)
            for col in m.value_columns:
                self.checks.append(heavy_tail_check(m.name, col, overall, self.cfg.heavy_tail_factor,
                                                    self.cfg.relative_ci))
                for t in self.treatments:
                    self.checks.append(skewed_difference_check(m.name, col, self.control, t, overall[self.control],
                                                               overall[t], self.cfg.heavy_tail_factor))

    # -- paired -------------------------------------------------------------------------------------
    def _paired(self, t: str, value_cols: list[str]) -> list[LiftResult]:
        u, a = _quote(self._unit()), _quote(self.arm_col)

        def side(arm: str, prefix: str, with_segments: bool) -> str:
            sums = ", ".join(f"sum({_quote(c)}) AS {_quote(prefix + c)}" for c in value_cols)
            segs = "".join(f", any_value({_quote(s)}) AS {_quote(s)}" for s in self.segments) if with_segments else ""
            return (f"(SELECT {u} AS __unit, {sums}{segs} FROM {self.src} "
                    f"WHERE CAST({a} AS VARCHAR) = {_literal(arm)} GROUP BY {u})")

        joined = (f"(SELECT 'paired' AS __pair_arm, * FROM {side(self.control, 'c::', True)} "
                  f"JOIN {side(t, 't::', False)} USING (__unit))")
        n_c, n_t = self.arm_counts[self.control], self.arm_counts[t]
        cols_c = [f"c::{c}" for c in value_cols]
        cols_t = [f"t::{c}" for c in value_cols]
        blocks = [[f"c::{c}" for c in m.value_columns] + [f"t::{c}" for c in m.value_columns] for m in self.metrics]
        spec = AggregateSpec.from_blocks(blocks, tail_columns=cols_c + cols_t)
        moments, counts = compute_moments(self.con, joined, arm_col="__pair_arm", arms=["paired"],
                                          segments=self.segments, spec=spec, sample_shift=False)
        key = GroupKey("paired", OVERALL, OVERALL)
        n_pairs = int(moments[key].n) if key in moments else 0
        if n_pairs == 0:
            raise AnalysisError(f"paired analysis: no unit of {self.unit_col!r} appears in both arm "
                                f"{self.control!r} and arm {t!r}; check unit_col and the arm names")
        self._validate(moments, counts, ["paired"], label=lambda c: c.split("::", 1)[1])
        unmatched = n_c + n_t - 2 * n_pairs
        msg = (f"{n_pairs} units matched across {self.control!r} ({n_c}) and {t!r} ({n_t}); "
               f"{unmatched} unmatched unit(s) dropped")
        self.checks.append(CheckResult("pairing", "", OVERALL, unmatched == 0, "info" if unmatched == 0 else "warning",
                                       float(unmatched), float("nan"), 0.0, msg))
        if self.cfg.cuped != "none":
            self.notes.append("paired design: CUPED not applied (pre-period covariates are identical in both arms)")
        self.power = getattr(self, "power", [])
        out = []
        for m in self.metrics:
            cc = tuple(f"c::{c}" for c in m.value_columns)
            tt = tuple(f"t::{c}" for c in m.value_columns)
            keys = [(OVERALL, OVERALL)] + sorted({(k.segment, k.level) for k in moments if k.segment != OVERALL})
            for seg, lev in keys:
                pm = moments[GroupKey("paired", seg, lev)]
                pair = paired_estimates(pm, cc, tt, m)
                notes = [] if not unmatched else [f"{unmatched} unmatched unit(s) dropped"]
                row = self._row(m, t, seg, lev, pair, (), notes, paired=True)
                out.append(self._bayes(row, pair) if seg == OVERALL and self.cfg.bayes else row)
            self.power.append(self._power(m, t, paired_estimates(moments[key], cc, tt, m)))
        return out

    # -- one lift row -------------------------------------------------------------------------------
    def _row(self, m: Metric, t: str, seg: str, lev: str, pair: ArmPair, covs: Sequence[str],
             notes: list[str], paired: bool = False) -> LiftResult:
        cfg = self.cfg
        notes = list(notes)
        n_c, n_t = int(pair.n_c), int(pair.n_t)
        undefined = [a for a, v in ((self.control, pair.m_c), (t, pair.m_t)) if not np.isfinite(v)]
        if undefined:  # e.g. a ratio whose denominator is zero in an arm: no estimate, no lift, no test
            nan = np.asarray(np.nan)
            pair = replace(pair, m_c=np.where(np.isfinite(pair.m_c), pair.m_c, nan),
                           m_t=np.where(np.isfinite(pair.m_t), pair.m_t, nan))
        lift = compare(pair.m_t, pair.m_c, pair.v_t, pair.v_c, n_t=pair.n_t, n_c=pair.n_c, cov=pair.cov,
                       alpha=cfg.alpha, test=cfg.test, paired=paired, relative_method=cfg.relative_ci,
                       min_control_se=cfg.rel_min_control_se)
        if min(n_c, n_t) < 2:
            notes.append("fewer than 2 units in an arm: no variance, CI and p-value undefined")
        elif float(lift.abs_se) == 0:
            notes.append("zero variance in both arms: no sampling variability, test undefined")
        if undefined:
            notes.append(m.undefined_reason(undefined))
        if seg != OVERALL and min(n_c, n_t) < cfg.min_units:
            notes.append(f"below min_units={cfg.min_units}")
        tau = cfg.sequential_rho * np.sqrt(pair.unit_var)
        var = float(lift.abs_se) ** 2
        if var > 0 and np.isfinite(var):
            s_lo, s_hi = confidence_sequence(lift.abs_diff, var, tau=tau, alpha=cfg.alpha)
            s_p = always_valid_p(lift.abs_diff, var, tau=tau)
        else:
            s_lo = s_hi = s_p = np.asarray(np.nan)
        reason = lift.rel_reason.item() if isinstance(lift.rel_reason, np.ndarray) else lift.rel_reason
        if undefined:
            reason = notes[-1]
        method = ("paired-" if paired else "") + ("z" if cfg.test == "z" else ("t" if paired else "welch"))

        def f(x) -> float:
            return float(np.asarray(x))

        def opt(x) -> float | None:
            v = f(x)
            return v if np.isfinite(v) else None

        return LiftResult(
            metric=m.name, kind=m.kind, segment=seg, segment_value=lev, control=self.control, treatment=t,
            n_control=n_c, n_treatment=n_t, control_mean=f(pair.m_c), treatment_mean=f(pair.m_t),
            abs_diff=f(lift.abs_diff), abs_se=f(lift.abs_se), abs_ci_low=f(lift.abs_ci_low),
            abs_ci_high=f(lift.abs_ci_high), rel_diff=opt(lift.rel_diff), rel_ci_low=opt(lift.rel_ci_low),
            rel_ci_high=opt(lift.rel_ci_high), rel_undefined_reason=reason, p_value=f(lift.p_value),
            p_value_adjusted=f(lift.p_value), significant=False, df=f(lift.df), method=method,
            relative_ci_method=cfg.relative_ci, ci_method="normal",
            cuped=cfg.cuped if covs else "none", covariates=",".join(covs),
            cuped_theta=(",".join(f"{c}={float(v):.6g}" for c, v in zip(covs, np.atleast_1d(pair.theta), strict=True))
                         if covs and pair.theta is not None else ""),
            variance_reduction=f(pair.variance_reduction) if covs else 0.0, alpha=cfg.alpha,
            correction=cfg.correction, correction_scope=cfg.correction_scope,
            seq_ci_low=f(s_lo), seq_ci_high=f(s_hi), seq_p_value=f(s_p), winsorized=self.winsor,
            notes="; ".join([*self.notes, *notes]),
        )

    def _unadjusted(self, row: LiftResult, pair: ArmPair) -> LiftResult:
        """The row's comparison without CUPED, beside the adjusted one (the same test and relative CI)."""
        cfg = self.cfg
        lift = compare(pair.m_t, pair.m_c, pair.v_t, pair.v_c, n_t=pair.n_t, n_c=pair.n_c, cov=pair.cov,
                       alpha=cfg.alpha, test=cfg.test, relative_method=cfg.relative_ci,
                       min_control_se=cfg.rel_min_control_se)

        def f(x) -> float:
            v = float(np.asarray(x, dtype=float))
            return v if np.isfinite(v) else float("nan")

        return replace(row, unadjusted_control_mean=f(pair.m_c), unadjusted_treatment_mean=f(pair.m_t),
                       unadjusted_abs_diff=f(lift.abs_diff), unadjusted_abs_ci_low=f(lift.abs_ci_low),
                       unadjusted_abs_ci_high=f(lift.abs_ci_high), unadjusted_rel_diff=f(lift.rel_diff),
                       unadjusted_rel_ci_low=f(lift.rel_ci_low), unadjusted_rel_ci_high=f(lift.rel_ci_high),
                       unadjusted_p_value=f(lift.p_value))

    # -- Bayesian view ------------------------------------------------------------------------------
    def _bayes(self, row: LiftResult, pair: ArmPair) -> LiftResult:
        sd = self.cfg.bayes_prior_sd
        b = bayesian_lift(pair.m_t, pair.m_c, pair.v_t, pair.v_c, cov=pair.cov, difference="relative",
                          proper=sd is not None, prior_sd=sd if sd is not None else 0.3, alpha=self.cfg.alpha)
        if b.reason is not None:
            return replace(row, bayes_prior=b.prior, notes="; ".join(filter(None, [row.notes, f"Bayesian view: {b.reason}"])))
        return replace(row, bayes_prior=b.prior, bayes_chance_to_win=float(b.chance_to_win),
                       bayes_risk_control=float(b.risk_control), bayes_risk_treatment=float(b.risk_treatment),
                       bayes_ci_low=float(b.ci_low), bayes_ci_high=float(b.ci_high))

    # -- bootstrap ----------------------------------------------------------------------------------
    def _bootstrap(self, row: LiftResult, m: Metric, t: str, covs: Sequence[str], pair: ArmPair) -> LiftResult:
        cols = list(m.value_columns) + list(covs)
        sel = ", ".join(f"CAST({_quote(c)} AS DOUBLE)" for c in cols)
        a = _quote(self.arm_col)

        def fetch(arm: str) -> ArmData:
            x = self.con.execute(f"SELECT {sel} FROM {self.src} WHERE CAST({a} AS VARCHAR) = "
                                 f"{_literal(arm)}").fetchnumpy()
            return ArmData(np.column_stack([np.asarray(v, dtype=float) for v in x.values()]), len(m.value_columns))

        dt, dc = fetch(t), fetch(self.control)
        theta = pair.theta
        xbar = None
        if theta is not None:
            kv = len(m.value_columns)
            xbar = np.concatenate([dt.x[:, kv:], dc.x[:, kv:]]).mean(axis=0)
        if self.cfg.bootstrap == "poisson":
            (alo, ahi), (rlo, rhi) = poisson_bootstrap(dt, dc, m, theta, xbar, n_boot=self.cfg.n_boot,
                                                       alpha=self.cfg.alpha, seed=self.cfg.seed)
        else:
            (alo, ahi), (rlo, rhi) = scipy_bootstrap(dt, dc, m, theta, xbar, method=str(self.cfg.bootstrap),
                                                     n_boot=self.cfg.n_boot, alpha=self.cfg.alpha,
                                                     seed=self.cfg.seed)
        rel_ok = row.rel_diff is not None
        notes = "; ".join(filter(None, [row.notes, "p-value from the normal approximation"]))
        return replace(row, abs_ci_low=alo, abs_ci_high=ahi,
                       rel_ci_low=rlo if rel_ok and np.isfinite(rlo) else None,
                       rel_ci_high=rhi if rel_ok and np.isfinite(rhi) else None,
                       ci_method=f"bootstrap-{self.cfg.bootstrap}", notes=notes)

    # -- power --------------------------------------------------------------------------------------
    def _power(self, m: Metric, t: str, pair: ArmPair) -> PowerResult:
        cfg = self.cfg
        n_c, n_t = int(pair.n_c), int(pair.n_t)
        sd = float(np.sqrt(pair.unit_var)) if np.isfinite(pair.unit_var) else float("nan")
        vr = float(pair.variance_reduction) if np.isfinite(pair.variance_reduction) else 0.0
        vr = min(max(vr, 0.0), 0.999999)
        if min(n_c, n_t) >= 2 and np.isfinite(sd):
            if cfg.paired:
                # paired: Var(D) = v_t + v_c - 2 cov; express as an equivalent reduction vs independent arms
                var_ind = float(pair.v_t + pair.v_c)
                vr = min(max(1.0 - float(pair.v_t + pair.v_c - 2 * pair.cov) / var_ind, 0.0), 0.999999) \
                    if var_ind > 0 else 0.0
            mde_abs = mde(n_c, sd, ratio=n_t / n_c, alpha=cfg.alpha, power=cfg.power,
                          test="z" if cfg.test == "z" else "welch", variance_reduction=vr) if sd > 0 else 0.0
        else:
            mde_abs = float("nan")
        mc = float(pair.m_c)
        mde_rel = mde_abs / abs(mc) if mc != 0 and np.isfinite(mc) and np.isfinite(mde_abs) else None
        return PowerResult(m.name, t, n_c, n_t, sd, vr, cfg.alpha, cfg.power, mde_abs, mde_rel)

    # -- multiple testing, heterogeneity ------------------------------------------------------------
    def _adjust(self, lifts: list[LiftResult]) -> list[LiftResult]:
        fams: list[Hashable]
        if self.cfg.correction_scope == "all":
            fams = ["all"] * len(lifts)
        else:
            fams = [(r.metric, r.treatment, "overall" if r.is_overall else "segments") for r in lifts]
        adj = adjust_families([r.p_value for r in lifts], fams, self.cfg.correction)
        return [replace(r, p_value_adjusted=p, significant=bool(np.isfinite(p) and p < self.cfg.alpha))
                for r, p in zip(lifts, adj, strict=True)]

    def _heterogeneity(self, lifts: list[LiftResult]) -> list[HeterogeneityResult]:
        out = []
        for t in self.treatments:
            for m in self.metrics:
                for s in self.segments:
                    rows = [r for r in lifts if r.metric == m.name and r.treatment == t and r.segment == s]
                    q, df, p, i2, k = cochran_q([r.abs_diff for r in rows], [r.abs_se**2 for r in rows])
                    note = "" if k == len(rows) else f"{len(rows) - k} level(s) without a usable variance left out"
                    if k < 2:
                        note = "fewer than two levels with a usable variance: no test"
                    out.append(HeterogeneityResult(m.name, t, s, k, q, df, p, i2, note))
        return out
