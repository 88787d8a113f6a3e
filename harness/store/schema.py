"""The results-database schema: every table and column with its meaning, in one place.

The store (`harness.store.results`), the CLI and the dashboard take their column lists from here, so
the contract in docs/architecture.md ("Contract 3: results") has one source of truth. Bump `SCHEMA_VERSION` and add a
migration in `ResultsStore` whenever a table changes; a database written by a newer harness is refused
rather than misread.

Layout choices (see docs/results-store.md):
- `unit_metrics` is *long* (run_id, unit_id, arm, metric, value): runs carry different metric sets
  (analyze takes any table, replay its four metrics plus covariates), and a long table needs no DDL per
  run. Non-numeric per-unit columns (segments) go to `unit_attributes` in the same long form. Unit ids
  are stored as text so integer and string ids share one column.
- `lifts`, `checks`, `heterogeneity` and `power` mirror the analysis layer's result dataclasses
  (analysis/results.py) field for field, so the CLI, `--json`, the database and the dashboard read the
  same names; fields the analysis layer adds later are kept, losslessly, in the JSON column `extra`.
- `replay_estimates` and `replay_lifts` (v3) hold `harness replay`'s off-policy results per estimator:
  one row per (arm, metric, estimator) and per (treatment, metric, estimator), with the oracle's true
  values beside them when the logs come from the synthetic world. `is_default` marks the estimator
  whose numbers the run's `lifts` and gate use.
- `replay_batches` (v4) holds a replay's work in progress: per user batch, the sufficient statistics of
  every estimate (sums over users and weights), written in the same transaction as the batch's unit
  rows, so a killed run resumes at the first missing batch and the final estimates merge the batches
  exactly. `replay_test_plan` (v4) holds the users and days an online test needs to detect the
  replay's estimated lift.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = 6  # 2: daily_lifts; lifts.bayes_*, cuped_theta. 3: replay_estimates, replay_lifts.
# 4: replay_batches, replay_test_plan. 5: ranking_metrics.protocol, slice, n_queries.
# 6: lifts.unadjusted_* (the comparison without CUPED); gate_decisions' numbers (estimate, CI, limit, margin, p)

RUN_KINDS = ("analyze", "replay", "evaluate")
RUN_STATUSES = ("running", "complete", "failed")
GATE_DECISIONS = ("SHIP", "NO_SHIP", "INCONCLUSIVE")


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str
    meaning: str


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    meaning: str
    primary_key: tuple[str, ...] = ()
    since: int = 1  # schema version that added the table: readers of an older, unmigrated file get no rows


    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def ddl(self) -> str:
        cols = [f"\"{c.name}\" {c.sql_type}" for c in self.columns]
        if self.primary_key:
            cols.append(f"PRIMARY KEY ({', '.join(self.primary_key)})")
        return f"CREATE TABLE IF NOT EXISTS {self.name} (\n  " + ",\n  ".join(cols) + "\n)"


C = Column

RUNS = Table(
    "runs",
    (
        C("run_id", "VARCHAR NOT NULL", "short readable id, e.g. 'ana-20250301-142501-3fa2'"),
        C("created_at", "TIMESTAMP NOT NULL", "UTC time the run was created"),
        C("updated_at", "TIMESTAMP NOT NULL", "UTC time of the last status change"),
        C("kind", "VARCHAR NOT NULL", "'analyze' | 'replay' | 'evaluate'"),
        C("control", "VARCHAR", "control arm / model name"),
        C("treatment", "VARCHAR", "treatment arm / model name"),
        C("checkpoint_digests", "VARCHAR", "JSON object: model name -> sha256 of its checkpoint"),
        C("data_fingerprint", "VARCHAR NOT NULL", "sha256 of the input data (file bytes or log tables)"),
        C("seed", "BIGINT NOT NULL", "seed of every random choice in the run"),
        C("config", "VARCHAR NOT NULL", "JSON object: the full configuration the run used"),
        C("summary", "VARCHAR", "JSON object: run-level results (arm counts, treatments, SRM passed, ...)"),
        C("status", "VARCHAR NOT NULL", "'running' | 'complete' | 'failed'"),
        C("code_version", "VARCHAR", "package version plus git commit ('+dirty' if uncommitted changes)"),
        C("notes", "VARCHAR", "free text from the analyst"),
        C("error", "VARCHAR", "why the run failed (null unless status = 'failed')"),
    ),
    "one row per analysis / replay / evaluation run",
    primary_key=("run_id",),
)

UNIT_METRICS = Table(
    "unit_metrics",
    (
        C("run_id", "VARCHAR NOT NULL", "the run"),
        C("unit_id", "VARCHAR NOT NULL", "randomisation unit (user) id, as text"),
        C("arm", "VARCHAR NOT NULL", "the arm the unit was in"),
        C("metric", "VARCHAR NOT NULL", "metric or covariate name (e.g. watch_time_s, watch_time_s_pre)"),
        C("value", "DOUBLE", "the unit's value (booleans as 0/1)"),
    ),
    "per-unit metric values, long: one row per (run, unit, arm, metric)",
)

UNIT_ATTRIBUTES = Table(
    "unit_attributes",
    (
        C("run_id", "VARCHAR NOT NULL", "the run"),
        C("unit_id", "VARCHAR NOT NULL", "randomisation unit id, as text"),
        C("arm", "VARCHAR NOT NULL", "the arm the unit was in"),
        C("attribute", "VARCHAR NOT NULL", "non-numeric per-unit column, e.g. a segment (activity_level)"),
        C("value", "VARCHAR", "the unit's value, as text"),
    ),
    "per-unit non-numeric columns (segments), long: one row per (run, unit, arm, attribute)",
)

# Mirrors analysis.results.LiftResult field for field (same names everywhere: CLI, --json, database,
# dashboard). Fields the analysis layer adds later land in `extra` until the schema version is bumped;
# tests/harness/test_store.py checks that every LiftResult field has a home here.
LIFTS = Table(
    "lifts",
    (
        C("run_id", "VARCHAR NOT NULL", "the run"),
        C("metric", "VARCHAR NOT NULL", "metric name"),
        C("kind", "VARCHAR", "'mean' | 'proportion' | 'ratio'"),
        C("segment", "VARCHAR NOT NULL", "'all' or the segment column"),
        C("segment_value", "VARCHAR NOT NULL", "'all' or the segment level"),
        C("control", "VARCHAR", "control arm"),
        C("treatment", "VARCHAR", "treatment arm"),
        C("n_control", "BIGINT", "units in control"),
        C("n_treatment", "BIGINT", "units in treatment"),
        C("control_mean", "DOUBLE", "metric value in control"),
        C("treatment_mean", "DOUBLE", "metric value in treatment"),
        C("abs_diff", "DOUBLE", "absolute lift: treatment - control (null when undefined, e.g. a zero denominator; v2)"),
        C("abs_se", "DOUBLE", "standard error of the absolute lift"),
        C("abs_ci_low", "DOUBLE", "lower confidence bound of the absolute lift"),
        C("abs_ci_high", "DOUBLE", "upper confidence bound of the absolute lift"),
        C("rel_diff", "DOUBLE", "relative lift: treatment / control - 1 (null when undefined)"),
        C("rel_ci_low", "DOUBLE", "lower confidence bound of the relative lift"),
        C("rel_ci_high", "DOUBLE", "upper confidence bound of the relative lift"),
        C("rel_undefined_reason", "VARCHAR", "why the relative lift is null"),
        C("p_value", "DOUBLE", "two-sided p-value for no difference"),
        C("p_value_adjusted", "DOUBLE", "p-value after the multiple-testing correction"),
        C("significant", "BOOLEAN", "adjusted p-value below alpha"),
        C("df", "DOUBLE", "degrees of freedom of the t reference (inf for z)"),
        C("method", "VARCHAR", "'welch' | 'z' | 'paired-t' | 'paired-z'"),
        C("relative_ci_method", "VARCHAR", "'delta' | 'log' | 'fieller'"),
        C("ci_method", "VARCHAR", "'normal' | 'bootstrap-percentile' | 'bootstrap-bca' | 'bootstrap-poisson'"),
        C("cuped", "VARCHAR", "'none' | 'single' | 'multi'"),
        C("covariates", "VARCHAR", "comma-separated covariate columns used"),
        C("variance_reduction", "DOUBLE", "1 - Var(adjusted diff) / Var(unadjusted diff); 0 without CUPED"),
        C("alpha", "DOUBLE", "significance level"),
        C("correction", "VARCHAR", "'none' | 'holm' | 'bh'"),
        C("correction_scope", "VARCHAR", "'metric' | 'all'"),
        C("seq_ci_low", "DOUBLE", "always-valid (confidence-sequence) lower bound at this look"),
        C("seq_ci_high", "DOUBLE", "always-valid upper bound"),
        C("seq_p_value", "DOUBLE", "always-valid p-value"),
        C("winsorized", "VARCHAR", "'' or a description of the caps applied"),
        C("notes", "VARCHAR", "remarks (degenerate cases, dropped units, ...)"),
        C("extra", "VARCHAR", "JSON object with any further fields"),
        C("bayes_prior", "VARCHAR", "Bayesian view: 'flat' or the prior on the relative lift (v2)"),
        C("bayes_chance_to_win", "DOUBLE", "P(relative lift > 0 | data) (v2)"),
        C("bayes_risk_control", "DOUBLE", "expected relative loss of keeping control (v2)"),
        C("bayes_risk_treatment", "DOUBLE", "expected relative loss of shipping treatment (v2)"),
        C("bayes_ci_low", "DOUBLE", "credible interval of the relative lift, low (v2)"),
        C("bayes_ci_high", "DOUBLE", "credible interval of the relative lift, high (v2)"),
        C("cuped_theta", "VARCHAR", "'covariate=theta,...' of the CUPED adjustment (v2)"),
        C("unadjusted_control_mean", "DOUBLE", "control mean without CUPED (null when no covariate was used; v6)"),
        C("unadjusted_treatment_mean", "DOUBLE", "treatment mean without CUPED (v6)"),
        C("unadjusted_abs_diff", "DOUBLE", "absolute lift without CUPED (v6)"),
        C("unadjusted_abs_ci_low", "DOUBLE", "its lower confidence bound (v6)"),
        C("unadjusted_abs_ci_high", "DOUBLE", "its upper confidence bound (v6)"),
        C("unadjusted_rel_diff", "DOUBLE", "relative lift without CUPED (v6)"),
        C("unadjusted_rel_ci_low", "DOUBLE", "its lower confidence bound (v6)"),
        C("unadjusted_rel_ci_high", "DOUBLE", "its upper confidence bound (v6)"),
        C("unadjusted_p_value", "DOUBLE", "p-value without CUPED (v6)"),
    ),
    "one row per (run, metric, segment level, treatment): the analysis layer's LiftResult",
)

# Mirrors analysis.results.CheckResult, plus `status` ('pass' | 'warn' | 'fail') derived from
# `passed` and `severity` so readers need not re-derive it.
CHECKS = Table(
    "checks",
    (
        C("run_id", "VARCHAR NOT NULL", "the run"),
        C("check", "VARCHAR NOT NULL", "trust check name, e.g. 'srm', 'min_sample', 'heavy_tail'"),
        C("status", "VARCHAR NOT NULL", "'pass' | 'warn' (failed, severity below error) | 'fail'"),
        C("metric", "VARCHAR", "metric the check is about; '' for the whole experiment"),
        C("segment", "VARCHAR", "segment the check is about"),
        C("passed", "BOOLEAN", "whether the check passed"),
        C("severity", "VARCHAR", "'error' | 'warning' | 'info'"),
        C("statistic", "DOUBLE", "test statistic"),
        C("p_value", "DOUBLE", "p-value, where the check is a test"),
        C("threshold", "DOUBLE", "threshold the statistic or p-value is compared with"),
        C("message", "VARCHAR", "human-readable explanation"),
        C("extra", "VARCHAR", "JSON object with any further fields"),
    ),
    "trust checks of a run (sample-ratio mismatch, minimum sample, heavy tails, ...)",
)

# Mirrors analysis.results.HeterogeneityResult.
HETEROGENEITY = Table(
    "heterogeneity",
    (
        C("run_id", "VARCHAR NOT NULL", "the run"),
        C("metric", "VARCHAR NOT NULL", "metric name"),
        C("treatment", "VARCHAR", "treatment arm"),
        C("segment", "VARCHAR NOT NULL", "segment column"),
        C("n_levels", "BIGINT", "levels compared"),
        C("q_stat", "DOUBLE", "Cochran's Q"),
        C("df", "BIGINT", "degrees of freedom (levels - 1)"),
        C("p_value", "DOUBLE", "p-value of Q against chi-square(df)"),
        C("i2", "DOUBLE", "Higgins' I^2 = max(0, (Q - df) / Q)"),
        C("notes", "VARCHAR", "remarks"),
        C("extra", "VARCHAR", "JSON object with any further fields"),
    ),
    "one row per (run, metric, segment column): does the lift differ between levels?",
)

# Mirrors analysis.results.PowerResult.
POWER = Table(
    "power",
    (
        C("run_id", "VARCHAR NOT NULL", "the run"),
        C("metric", "VARCHAR NOT NULL", "metric name"),
        C("treatment", "VARCHAR", "treatment arm"),
        C("n_control", "BIGINT", "units in control"),
        C("n_treatment", "BIGINT", "units in treatment"),
        C("sd", "DOUBLE", "per-unit standard deviation (linearised for ratios), pooled over arms"),
        C("variance_reduction", "DOUBLE", "variance removed by CUPED"),
        C("alpha", "DOUBLE", "two-sided level"),
        C("power", "DOUBLE", "target power"),
        C("mde_abs", "DOUBLE", "minimum detectable absolute effect"),
        C("mde_rel", "DOUBLE", "minimum detectable relative effect"),
        C("extra", "VARCHAR", "JSON object with any further fields"),
    ),
    "minimum detectable effect per metric at the observed sample",
)

GATE_DECISIONS_TABLE = Table(
    "gate_decisions",
    (
        C("run_id", "VARCHAR NOT NULL", "the run"),
        C("decision", "VARCHAR NOT NULL", "'SHIP' | 'NO_SHIP' | 'INCONCLUSIVE' (repeated on each rule row)"),
        C("treatment", "VARCHAR", "the treatment arm the gate judged"),
        C("rule", "VARCHAR", "'primary' | 'guardrail' | 'srm' | 'min_sample' | 'weight_ess'; null on the row of a gate without rules"),
        C("metric", "VARCHAR", "metric the rule reads ('' for srm / min_sample)"),
        C("passed", "BOOLEAN", "whether the rule passed"),
        C("outcome", "VARCHAR", "'pass' | 'fail' | 'inconclusive'"),
        C("reason", "VARCHAR", "why, in words"),
        C("estimate", "DOUBLE", "the lift the rule judged, in the rule's units (relative for a relative margin; v6)"),
        C("ci_low", "DOUBLE", "its lower confidence bound (v6)"),
        C("ci_high", "DOUBLE", "its upper confidence bound (v6)"),
        C("harm_bound", "DOUBLE", "guardrails: the CI end on the harmful side (v6)"),
        C("limit", "DOUBLE", "guardrails: the signed margin the harm bound is held against (v6)"),
        C("margin", "DOUBLE", "guardrails: the margin as written in the gate file (v6)"),
        C("margin_type", "VARCHAR", "guardrails: 'relative' | 'absolute' (v6)"),
        C("p_value", "DOUBLE", "primary: the test's p-value (v6)"),
        C("p_adjusted", "DOUBLE", "primary: after the gate's correction (v6)"),
        C("gate_digest", "VARCHAR", "sha256 of the gate config that was evaluated"),
        C("evaluated_at", "TIMESTAMP NOT NULL", "UTC time of the evaluation"),
    ),
    "the launch-gate decision of a run, one row per rule; re-evaluating replaces it",
)

RANKING_METRICS = Table(
    "ranking_metrics",
    (
        C("run_id", "VARCHAR NOT NULL", "the run ('evaluate' kind)"),
        C("model", "VARCHAR NOT NULL", "model name"),
        C("task", "VARCHAR NOT NULL", "'video' | 'comment'"),
        C("split", "VARCHAR NOT NULL", "'valid' | 'test'"),
        C("metric", "VARCHAR NOT NULL", "e.g. 'ndcg@5', 'recall@10', 'mrr@10'"),
        C("value", "DOUBLE", "metric value"),
        C("seed", "BIGINT", "seed of the evaluation (negative sampling)"),
        C("protocol", "VARCHAR", "'leave-one-out' | 'temporal' (v5; rows written before hold null and read as "
                                 "'leave-one-out')"),
        C("slice", "VARCHAR", "the test queries averaged: 'all', or under the temporal protocol 'warm' / 'cold' "
                              "(target published before / after the cut) (v5; null before, read as 'all')"),
        C("n_queries", "BIGINT", "queries the value averages over (v5; null before)"),
    ),
    "offline ranking metrics of the models",
)

# Mirrors analysis.results.DailyLift: cumulative lifts per day (`harness analyze --by-day`).
DAILY_LIFTS = Table(
    "daily_lifts",
    (
        C("run_id", "VARCHAR NOT NULL", "the run"),
        C("metric", "VARCHAR NOT NULL", "metric name"),
        C("treatment", "VARCHAR NOT NULL", "treatment arm"),
        C("day", "VARCHAR NOT NULL", "the day (level of the day column) up to which data is included"),
        C("look", "INTEGER NOT NULL", "1 for the first day"),
        C("n_control", "BIGINT", "units in control so far"),
        C("n_treatment", "BIGINT", "units in treatment so far"),
        C("control_mean", "DOUBLE", "metric value in control so far"),
        C("treatment_mean", "DOUBLE", "metric value in treatment so far"),
        C("abs_diff", "DOUBLE", "cumulative absolute lift"),
        C("abs_ci_low", "DOUBLE", "fixed-horizon lower bound at this look (not safe to peek at)"),
        C("abs_ci_high", "DOUBLE", "fixed-horizon upper bound at this look"),
        C("rel_diff", "DOUBLE", "cumulative relative lift (null when undefined)"),
        C("p_value", "DOUBLE", "fixed-horizon p-value at this look"),
        C("seq_ci_low", "DOUBLE", "always-valid lower bound, running intersection over looks"),
        C("seq_ci_high", "DOUBLE", "always-valid upper bound, running intersection over looks"),
        C("seq_p_value", "DOUBLE", "always-valid p-value, running minimum over looks"),
    ),
    "cumulative lift per day with the always-valid band (the dashboard's 'over time' chart)",
    since=2,
)

# `harness replay`'s off-policy estimates (v3): the value of each policy (arm) under each estimator.
REPLAY_ESTIMATES = Table(
    "replay_estimates",
    (
        C("run_id", "VARCHAR NOT NULL", "the run ('replay' kind)"),
        C("arm", "VARCHAR NOT NULL", "the policy whose value is estimated, e.g. 'base', 'lsvcr', 'logging'"),
        C("metric", "VARCHAR NOT NULL", "metric name"),
        C("estimator", "VARCHAR NOT NULL", "off-policy estimator, e.g. 'rips', 'cascade_dr', 'iips', 'pbm', 'dm', 'snips'"),
        C("is_default", "BOOLEAN NOT NULL", "the estimator the run's lifts and gate use for this metric"),
        C("value", "DOUBLE", "estimated per-user mean of the metric under the policy"),
        C("se", "DOUBLE", "standard error of the estimate"),
        C("n_units", "BIGINT", "users (randomisation units) in the logs"),
        C("n_requests", "BIGINT", "logged requests (feed pages) the estimate uses"),
        C("ess", "DOUBLE", "effective sample size of the importance weights (null for dm)"),
        C("max_weight_share", "DOUBLE", "largest single weight's share of the weight total"),
        C("clipped_share", "DOUBLE", "share of weights that were clipped"),
        C("true_value", "DOUBLE", "the oracle's value of the policy (synthetic-world logs only; null otherwise)"),
        C("true_se", "DOUBLE", "Monte-Carlo standard error of true_value (0 when exact; null without an oracle)"),
        C("extra", "VARCHAR", "JSON object with any further fields"),
    ),
    "one row per (run, arm, metric, estimator): the off-policy estimate of one policy's value",
    primary_key=("run_id", "arm", "metric", "estimator"),
    since=3,
)

# `harness replay`'s paired lifts (v3): a treatment policy over the control under each estimator.
REPLAY_LIFTS = Table(
    "replay_lifts",
    (
        C("run_id", "VARCHAR NOT NULL", "the run ('replay' kind)"),
        C("control", "VARCHAR NOT NULL", "control policy (arm)"),
        C("treatment", "VARCHAR NOT NULL", "treatment policy (arm)"),
        C("metric", "VARCHAR NOT NULL", "metric name"),
        C("estimator", "VARCHAR NOT NULL", "off-policy estimator, as in replay_estimates"),
        C("is_default", "BOOLEAN NOT NULL", "the estimator the run's lifts and gate use for this metric"),
        C("control_value", "DOUBLE", "estimated metric value of the control"),
        C("treatment_value", "DOUBLE", "estimated metric value of the treatment"),
        C("abs_diff", "DOUBLE", "absolute lift: treatment_value - control_value"),
        C("abs_ci_low", "DOUBLE", "lower confidence bound of the absolute lift (paired over users)"),
        C("abs_ci_high", "DOUBLE", "upper confidence bound of the absolute lift"),
        C("rel_diff", "DOUBLE", "relative lift: treatment_value / control_value - 1 (null when undefined)"),
        C("rel_ci_low", "DOUBLE", "lower confidence bound of the relative lift"),
        C("rel_ci_high", "DOUBLE", "upper confidence bound of the relative lift"),
        C("p_value", "DOUBLE", "two-sided p-value for no difference"),
        C("n_units", "BIGINT", "users the paired comparison uses"),
        C("true_control", "DOUBLE", "the oracle's value of the control (synthetic-world logs only)"),
        C("true_treatment", "DOUBLE", "the oracle's value of the treatment"),
        C("true_abs_diff", "DOUBLE", "true absolute lift: true_treatment - true_control"),
        C("true_rel_diff", "DOUBLE", "true relative lift: true_treatment / true_control - 1"),
        C("covers_abs", "BOOLEAN", "true_abs_diff inside [abs_ci_low, abs_ci_high] (null without an oracle)"),
        C("covers_rel", "BOOLEAN", "true_rel_diff inside [rel_ci_low, rel_ci_high] (null without an oracle)"),
        C("extra", "VARCHAR", "JSON object with any further fields"),
    ),
    "one row per (run, treatment, metric, estimator): the paired off-policy lift over the control",
    primary_key=("run_id", "treatment", "metric", "estimator"),
    since=3,
)

# `harness replay`'s batches (v4): sufficient statistics of each (arm, metric, estimator) over one user batch.
# Value and clustered SE: with per-user totals S_g over n_g requests, value = sum S_g / sum n_g and
# CR1 var = G/(G-1) (sum S_g^2 - 2 v sum n_g S_g + v^2 sum n_g^2) / N^2; ESS and weight shares from the weight sums.
REPLAY_BATCHES = Table(
    "replay_batches",
    (
        C("run_id", "VARCHAR NOT NULL", "the run ('replay' kind)"),
        C("batch", "INTEGER NOT NULL", "user batch (users are assigned by a stable hash of their id)"),
        C("arm", "VARCHAR NOT NULL", "the policy"),
        C("metric", "VARCHAR NOT NULL", "metric name"),
        C("estimator", "VARCHAR NOT NULL", "off-policy estimator"),
        C("users", "BIGINT NOT NULL", "users in the batch (G)"),
        C("requests", "BIGINT NOT NULL", "logged requests of those users (N)"),
        C("slot_rows", "BIGINT NOT NULL", "slot rows (requests x slots) behind the weights"),
        C("sum_total", "DOUBLE NOT NULL", "sum over users of the per-user total S_g"),
        C("sum_total_sq", "DOUBLE NOT NULL", "sum of S_g^2"),
        C("sum_n_total", "DOUBLE NOT NULL", "sum of n_g S_g"),
        C("sum_n_sq", "DOUBLE NOT NULL", "sum of n_g^2"),
        C("w_sum", "DOUBLE", "sum of the (clipped) weights (null for dm)"),
        C("w_sq", "DOUBLE", "sum of the squared weights"),
        C("w_max", "DOUBLE", "largest weight"),
        C("w_raw_sum", "DOUBLE", "sum of the raw (unclipped) weights"),
        C("w_removed", "DOUBLE", "raw weight mass removed by clipping"),
        C("rare_mass", "DOUBLE", "target probability mass on slot rows the logging policy almost never shows"),
        C("true_sum", "DOUBLE", "sum over requests of the oracle's value (null without an oracle)"),
        C("true_var", "DOUBLE", "sum over requests of the truth's Monte-Carlo variance"),
    ),
    "one row per (run, batch, arm, metric, estimator): what a replay batch adds to each estimate",
    primary_key=("run_id", "batch", "arm", "metric", "estimator"),
    since=4,
)

# The online test a replay's estimated lift would need (v4).
REPLAY_TEST_PLAN = Table(
    "replay_test_plan",
    (
        C("run_id", "VARCHAR NOT NULL", "the run ('replay' kind)"),
        C("treatment", "VARCHAR NOT NULL", "treatment policy"),
        C("metric", "VARCHAR NOT NULL", "metric name"),
        C("estimator", "VARCHAR NOT NULL", "estimator whose lift is to be detected (the run's default)"),
        C("cuped", "BOOLEAN NOT NULL", "with CUPED on the pre-period (variance times 1 - rho^2)"),
        C("lift_abs", "DOUBLE", "absolute lift to detect (the replay's point estimate)"),
        C("lift_rel", "DOUBLE", "relative lift to detect"),
        C("control_mean", "DOUBLE", "per-user mean of the metric over the window (logged traffic)"),
        C("sd", "DOUBLE", "per-user standard deviation (after CUPED when cuped)"),
        C("rho", "DOUBLE", "correlation of the window's per-user values with the pre-period's (null without CUPED)"),
        C("users_per_arm", "DOUBLE", "users per arm for the power asked (null when the lift is 0 or undefined)"),
        C("alpha", "DOUBLE NOT NULL", "two-sided significance level"),
        C("power", "DOUBLE NOT NULL", "power asked"),
        C("users_per_day", "DOUBLE", "new users entering the test per day (both arms)"),
        C("days", "DOUBLE", "days to enrol 2 x users_per_arm at users_per_day"),
        C("window_days", "DOUBLE", "length of the replayed window in days (the horizon sd was measured over)"),
        C("note", "VARCHAR", "what limits the plan (e.g. a test longer than the window)"),
        C("extra", "VARCHAR", "JSON object with any further fields"),
    ),
    "one row per (run, treatment, metric, cuped): users and days an online A/B test needs at the asked power",
    primary_key=("run_id", "treatment", "metric", "cuped"),
    since=4,
)

SCHEMA_VERSION_TABLE = Table(
    "schema_version",
    (
        C("version", "INTEGER NOT NULL", "schema version of this database"),
        C("applied_at", "TIMESTAMP NOT NULL", "UTC time it was created or migrated"),
    ),
    "the schema version (one row)",
)

# Tables holding a run's results: deleted together when a run is replaced.
RESULT_TABLES: tuple[Table, ...] = (
    UNIT_METRICS,
    UNIT_ATTRIBUTES,
    LIFTS,
    CHECKS,
    HETEROGENEITY,
    POWER,
    GATE_DECISIONS_TABLE,
    RANKING_METRICS,
    DAILY_LIFTS,
    REPLAY_ESTIMATES,
    REPLAY_LIFTS,
    REPLAY_BATCHES,
    REPLAY_TEST_PLAN,
)
ALL_TABLES: tuple[Table, ...] = (RUNS, *RESULT_TABLES, SCHEMA_VERSION_TABLE)


def sql_kind(column: Column) -> str:
    """'text' | 'float' | 'int' | 'bool' | 'timestamp': how the store validates a value for the column."""
    base = column.sql_type.split()[0]
    return {"VARCHAR": "text", "DOUBLE": "float", "BIGINT": "int", "INTEGER": "int", "BOOLEAN": "bool",
            "TIMESTAMP": "timestamp"}[base]


def is_required(column: Column) -> bool:
    return "NOT NULL" in column.sql_type
