"""The launch gate: a TOML file of rules turned into SHIP / NO_SHIP / INCONCLUSIVE with reasons.

Format (see `gate_default.toml` and docs/statistics.md):

    alpha = 0.05                 # two-sided level; must equal the analysis' alpha
    correction = "holm"          # across the primary metrics: none | holm | bh
    srm_policy = "inconclusive"  # on a failed SRM check: inconclusive | no_ship | ignore
    min_units = 1000             # per arm, overall
    min_weight_ess = 1000        # off-policy runs: least effective sample size of the importance weights

    [[primary]]                  # must improve, significantly
    metric = "watch_time_s"
    direction = "increase"       # increase | decrease (the preferred direction)

    [[guardrail]]                # must not get worse by more than the margin (non-inferiority)
    metric = "video_interactions"
    direction = "increase"       # preferred direction; a move the other way is the harm
    margin = 0.01                # 1% (relative) or metric units (absolute)
    margin_type = "relative"     # relative | absolute

Rules (each yields pass / fail / inconclusive with a reason):
* primary: p_adjusted < alpha with the estimate in the preferred direction -> pass; significant in the
  wrong direction -> fail; otherwise inconclusive.
* guardrail: the CI bound on the harmful side lies within the margin -> pass (non-inferior at
  alpha/2 one-sided); the point estimate itself is beyond the margin -> fail (breach); otherwise
  inconclusive (non-inferiority not shown).
* srm, min_sample: per policy.
* weight_ess (off-policy estimates only, when `min_weight_ess` is set): every gated metric's estimate, in
  the control and the treatment, must rest on importance weights with an effective sample size (Kish,
  (sum w)^2 / sum w^2) of at least `min_weight_ess`, else inconclusive: with few effective rows an
  importance-weighted mean's standard error is estimated from the few rows that carry weight, and its
  interval under-covers. The caller passes the ESS (`weight_ess`); on-policy data has no such rule. A
  primary or guardrail that would fail on such an estimate is inconclusive instead (its reason says what
  it would have said): a breach read from a few effective rows is no more reliable than a win.
Decision: any fail -> NO_SHIP; else any inconclusive -> INCONCLUSIVE; else SHIP. Exit codes 0 / 1 / 2.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from analysis.config import AnalysisConfig
from analysis.errors import AnalysisError
from analysis.multitest import adjust
from analysis.results import ExperimentResult, LiftResult

SHIP, NO_SHIP, INCONCLUSIVE = "SHIP", "NO_SHIP", "INCONCLUSIVE"
EXIT_CODES = {SHIP: 0, NO_SHIP: 1, INCONCLUSIVE: 2}
DIRECTIONS = ("increase", "decrease")
SRM_POLICIES = ("inconclusive", "no_ship", "ignore")
MODES = ("fixed", "sequential")
_TOP_KEYS = {"alpha", "correction", "srm_policy", "min_units", "min_weight_ess", "mode", "primary", "guardrail",
             "analysis", "name", "description"}


@dataclass(frozen=True)
class PrimaryRule:
    metric: str
    direction: str = "increase"

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise AnalysisError(f"gate: primary metric {self.metric!r} has direction {self.direction!r}; "
                                f"use one of {list(DIRECTIONS)}")


@dataclass(frozen=True)
class GuardrailRule:
    metric: str
    margin: float
    direction: str = "increase"
    margin_type: str = "relative"

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise AnalysisError(f"gate: guardrail {self.metric!r} has direction {self.direction!r}; "
                                f"use one of {list(DIRECTIONS)}")
        if self.margin_type not in ("relative", "absolute"):
            raise AnalysisError(f"gate: guardrail {self.metric!r} has margin_type {self.margin_type!r}; "
                                "use 'relative' or 'absolute'")
        if isinstance(self.margin, bool) or not isinstance(self.margin, int | float) \
                or not math.isfinite(self.margin) or self.margin < 0:
            raise AnalysisError(f"gate: guardrail {self.metric!r} has margin {self.margin!r}; give a "
                                "non-negative number (e.g. 0.01 for 1% when margin_type = 'relative')")
        if self.margin_type == "relative" and self.margin >= 1:
            raise AnalysisError(f"gate: guardrail {self.metric!r} has relative margin {self.margin!r} >= 1 "
                                "(100%); write 1% as 0.01")


@dataclass(frozen=True)
class GateConfig:
    primary: tuple[PrimaryRule, ...]
    guardrails: tuple[GuardrailRule, ...] = ()
    alpha: float = 0.05
    correction: str = "holm"
    srm_policy: str = "inconclusive"
    min_units: int = 1000
    min_weight_ess: float | None = None
    mode: str = "fixed"
    analysis: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        where = f" in {self.source}" if self.source else ""
        if self.mode not in MODES:
            raise AnalysisError(f"gate{where}: mode = {self.mode!r}; use one of {list(MODES)}")
        if not isinstance(self.analysis, dict):
            raise AnalysisError(f"gate{where}: [analysis] must be a table of AnalysisConfig settings")
        known = {f.name for f in fields(AnalysisConfig)} - {"extra"}
        bad = sorted(set(self.analysis) - known)
        if bad:
            raise AnalysisError(f"gate{where}: [analysis] has unknown key(s) {bad}; allowed: {sorted(known)}")
        if "alpha" in self.analysis:
            raise AnalysisError(f"gate{where}: set alpha at the top of the gate file, not in [analysis]")
        try:
            AnalysisConfig(**{**self.analysis, "alpha": self.alpha})
        except AnalysisError as exc:
            raise AnalysisError(f"gate{where}: [analysis]: {exc}") from None
        if not (isinstance(self.alpha, float | int) and 0 < self.alpha < 1):
            raise AnalysisError(f"gate{where}: alpha = {self.alpha!r} must be between 0 and 1")
        if self.correction not in ("none", "holm", "bh"):
            raise AnalysisError(f"gate{where}: correction = {self.correction!r}; use none, holm or bh")
        if self.srm_policy not in SRM_POLICIES:
            raise AnalysisError(f"gate{where}: srm_policy = {self.srm_policy!r}; use one of {list(SRM_POLICIES)}")
        if not isinstance(self.min_units, int) or isinstance(self.min_units, bool) or self.min_units < 0:
            raise AnalysisError(f"gate{where}: min_units = {self.min_units!r} must be a non-negative integer")
        if self.min_weight_ess is not None and (isinstance(self.min_weight_ess, bool) or not isinstance(
                self.min_weight_ess, int | float) or not self.min_weight_ess >= 0):
            raise AnalysisError(f"gate{where}: min_weight_ess = {self.min_weight_ess!r} must be a non-negative number")
        if not self.primary:
            raise AnalysisError(f"gate{where}: declare at least one [[primary]] metric")
        names = [r.metric for r in self.primary] + [g.metric for g in self.guardrails]
        dup = sorted({m for m in names if names.count(m) > 1})
        if dup:
            raise AnalysisError(f"gate{where}: metric(s) {dup} appear in more than one rule")

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(r.metric for r in self.primary) + tuple(g.metric for g in self.guardrails)


@dataclass(frozen=True)
class RuleOutcome:
    """One rule's verdict for one treatment arm, with the numbers it was judged on.

    `estimate`, `ci_low`, `ci_high` are in the rule's units (relative for a relative margin, else
    absolute); `harm_bound` is the CI end on the harmful side and `limit` the signed margin it is held
    against (guardrails); `p_value` / `p_adjusted` are the primary test's (fixed-horizon or always-valid,
    per `mode`). NaN where a number does not apply.
    """

    rule: str  # primary | guardrail | srm | min_sample | weight_ess
    metric: str
    passed: bool
    outcome: str  # pass | fail | inconclusive
    reason: str
    treatment: str = ""
    estimate: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    harm_bound: float = math.nan
    limit: float = math.nan
    margin: float = math.nan
    margin_type: str = ""
    p_value: float = math.nan
    p_adjusted: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = None if isinstance(v, float) and not math.isfinite(v) else v
        return out


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict: `decision` over every judged treatment, `arms` per treatment.

    With several treatments the decision is the worst arm's (NO_SHIP > INCONCLUSIVE > SHIP): exit 0
    means every judged treatment may ship. Judge one arm with `evaluate_gate(..., treatment=NAME)`.
    """

    decision: str  # SHIP | NO_SHIP | INCONCLUSIVE
    rules: list[RuleOutcome] = field(default_factory=list)
    treatment: str = ""  # the judged treatments, comma-separated
    arms: dict[str, str] = field(default_factory=dict)  # treatment -> its decision
    mode: str = "fixed"

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.decision]

    @property
    def reason(self) -> str:
        bad = [r for r in self.rules if r.outcome != "pass"]
        if not bad:
            return "all rules pass"
        many = len(self.arms) > 1
        return "; ".join((f"[{r.treatment}] " if many else "") + f"{r.rule} {r.metric}: {r.reason}".replace("  ", " ")
                         for r in bad)

    def to_dicts(self) -> list[dict[str, Any]]:
        return [{"decision": self.decision, **r.to_dict()} for r in self.rules]

    def to_json(self) -> dict[str, Any]:
        """The JSON view: decision, exit code, per-arm decisions and every rule with its numbers."""
        return {"decision": self.decision, "exit_code": self.exit_code, "mode": self.mode,
                "treatments": list(self.arms), "arms": dict(self.arms), "reason": self.reason,
                "rules": [r.to_dict() for r in self.rules]}


Decision = GateDecision


def _expect(table: dict, key: str, kind: type | tuple, where: str) -> Any:
    value = table[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise AnalysisError(f"gate {where}: {key} = {value!r} has the wrong type")
    return value


def parse_gate(data: dict[str, Any], source: str = "") -> GateConfig:
    """Build a GateConfig from parsed TOML, rejecting unknown keys with the allowed ones listed."""
    where = source or "<dict>"
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise AnalysisError(f"gate {where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}")

    def rules(section: str, allowed: set[str], cls: type) -> tuple:
        items = data.get(section, [])
        if isinstance(items, dict):
            items = [items]
        if not isinstance(items, list):
            raise AnalysisError(f"gate {where}: [[{section}]] must be an array of tables")
        out = []
        for i, item in enumerate(items):
            if not isinstance(item, dict) or "metric" not in item:
                raise AnalysisError(f"gate {where}: [[{section}]] entry {i + 1} needs a metric = \"...\"")
            bad = set(item) - allowed
            if bad:
                raise AnalysisError(f"gate {where}: [[{section}]] {item.get('metric')!r}: unknown key(s) "
                                    f"{sorted(bad)}; allowed: {sorted(allowed)}")
            if section == "guardrail" and "margin" not in item:
                raise AnalysisError(f"gate {where}: guardrail {item['metric']!r} needs a margin "
                                    "(e.g. margin = 0.01 for 1%)")
            out.append(cls(**item))
        return tuple(out)

    top = {k: data[k] for k in ("alpha", "correction", "srm_policy", "min_units", "min_weight_ess", "mode", "analysis")
           if k in data}
    return GateConfig(
        primary=rules("primary", {"metric", "direction"}, PrimaryRule),
        guardrails=rules("guardrail", {"metric", "direction", "margin", "margin_type"}, GuardrailRule),
        source=where,
        **top,
    )


def load_gate(path: str | Path) -> GateConfig:
    """Read and validate a gate TOML file; errors name the file and the offending key."""
    p = Path(path)
    if not p.is_file():
        raise AnalysisError(f"gate file {str(p)!r} not found; see analysis/gate_default.toml for the format")
    try:
        data = tomllib.loads(p.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise AnalysisError(f"gate file {str(p)!r} is not UTF-8 text (byte {exc.start}: {exc.reason}); "
                            "TOML files must be UTF-8: re-save it as UTF-8") from None
    except OSError as exc:
        raise AnalysisError(f"gate file {str(p)!r} cannot be read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise AnalysisError(f"gate file {str(p)!r} is not valid TOML: {exc}") from exc
    return parse_gate(data, str(p))


def default_gate_path() -> Path:
    return Path(__file__).with_name("gate_default.toml")


def _sign(direction: str) -> int:
    return 1 if direction == "increase" else -1


def _finite(*values: Any) -> bool:
    return all(v is not None and isinstance(v, int | float) and math.isfinite(v) for v in values)


def _primary(rule: PrimaryRule, lift: LiftResult, p_raw: float, p_adj: float, alpha: float, mode: str
             ) -> RuleOutcome:
    s = _sign(rule.direction)
    t = lift.treatment
    rel = lift.rel_diff if _finite(lift.rel_diff) else None
    est = f"{lift.abs_diff:+.4g}" + (f" ({rel:+.2%})" if rel is not None else "")
    which = "always-valid p_adj" if mode == "sequential" else "p_adj"
    low, high = (lift.seq_ci_low, lift.seq_ci_high) if mode == "sequential" else (lift.abs_ci_low, lift.abs_ci_high)
    nums: dict[str, Any] = dict(treatment=t, estimate=lift.abs_diff, ci_low=low, ci_high=high, p_value=p_raw,
                                p_adjusted=p_adj)
    if not _finite(p_adj, lift.abs_diff):
        why = lift.rel_undefined_reason if lift.rel_undefined_reason and not _finite(lift.abs_diff) else lift.notes
        return RuleOutcome("primary", rule.metric, False, "inconclusive",
                           f"no p-value ({why or 'degenerate data'})", **nums)
    if p_adj < alpha and s * lift.abs_diff > 0:
        return RuleOutcome("primary", rule.metric, True, "pass",
                           f"{rule.direction}s significantly: {est}, {which}={p_adj:.3g} < {alpha:g}", **nums)
    if p_adj < alpha:
        return RuleOutcome("primary", rule.metric, False, "fail",
                           f"moves significantly the wrong way: {est}, {which}={p_adj:.3g}", **nums)
    return RuleOutcome("primary", rule.metric, False, "inconclusive",
                       f"not significant: {est}, {which}={p_adj:.3g} >= {alpha:g}", **nums)


def _guardrail_interval(rule: GuardrailRule, lift: LiftResult, mode: str
                        ) -> tuple[float | None, float | None, float | None, float, str]:
    """(estimate, low, high, limit, unit) in the rule's units; low/high are None when undefined.

    Sequential mode holds the always-valid interval of the absolute lift against the margin; a relative
    margin is turned into metric units with the control mean (its own error, O(1/sqrt(n)) relative, is
    small beside the margin at launch sample sizes; noted in docs/statistics.md).
    """
    s = _sign(rule.direction)
    if mode == "sequential":
        est, low, high = lift.abs_diff, lift.seq_ci_low, lift.seq_ci_high
        if rule.margin_type == "relative":
            return est, low, high, -s * rule.margin * abs(lift.control_mean), "absolute (always-valid)"
        return est, low, high, -s * rule.margin, "absolute (always-valid)"
    if rule.margin_type == "relative":
        return lift.rel_diff, lift.rel_ci_low, lift.rel_ci_high, -s * rule.margin, "relative"
    return lift.abs_diff, lift.abs_ci_low, lift.abs_ci_high, -s * rule.margin, "absolute"


def _guardrail(rule: GuardrailRule, lift: LiftResult, mode: str) -> RuleOutcome:
    s = _sign(rule.direction)
    base: dict[str, Any] = dict(treatment=lift.treatment, margin=float(rule.margin), margin_type=rule.margin_type)
    if rule.margin_type == "relative" and not _finite(lift.rel_diff):
        return RuleOutcome("guardrail", rule.metric, False, "inconclusive",
                           f"relative lift undefined ({lift.rel_undefined_reason}); use an absolute margin", **base)
    est, low, high, limit, unit = _guardrail_interval(rule, lift, mode)
    if not _finite(est, low, high, limit):
        return RuleOutcome("guardrail", rule.metric, False, "inconclusive",
                           f"no CI ({lift.notes or lift.rel_undefined_reason or 'degenerate data'})", **base)
    assert est is not None and low is not None and high is not None
    harm_bound = low if s > 0 else high  # the CI end on the harmful side
    fmt = "{:+.2%}" if unit == "relative" else "{:+.4g}"
    text = (f"{unit} lift {fmt.format(est)}, CI [{fmt.format(low)}, {fmt.format(high)}], "
            f"margin {fmt.format(limit)}")
    nums: dict[str, Any] = dict(base, estimate=est, ci_low=low, ci_high=high, harm_bound=harm_bound, limit=limit)
    if s * harm_bound > limit * s:
        return RuleOutcome("guardrail", rule.metric, True, "pass", f"non-inferior: {text}", **nums)
    if s * est < s * limit:
        return RuleOutcome("guardrail", rule.metric, False, "fail", f"breach: {text}", **nums)
    return RuleOutcome("guardrail", rule.metric, False, "inconclusive", f"non-inferiority not shown: {text}", **nums)


def _least_ess(weight_ess: Mapping[tuple[str, str], float], metrics: Iterable[str], arms: tuple[str, str]
               ) -> dict[str, tuple[float, str]]:
    """metric -> (least ESS over the arms, that arm), for the metrics with importance weights behind them
    (arms or metrics without weights, e.g. the logging policy itself or `dm`, have none)."""
    least: dict[str, tuple[float, str]] = {}
    for m in metrics:
        seen = [(float(weight_ess[(a, m)]), a) for a in arms
                if (a, m) in weight_ess and weight_ess[(a, m)] is not None and math.isfinite(weight_ess[(a, m)])]
        if seen:
            least[m] = min(seen)
    return least


def _weight_ess(gate: GateConfig, least: Mapping[str, tuple[float, str]], treatment: str) -> RuleOutcome:
    """Inconclusive when any gated metric's estimate in either arm rests on fewer effective weighted rows
    than min_weight_ess (`least`: `_least_ess` over the gated metrics and the two arms)."""
    assert gate.min_weight_ess is not None
    if not least:
        return RuleOutcome("weight_ess", "", True, "pass", "no importance weights behind these estimates",
                           treatment=treatment)
    ess, arm, metric = min((e, a, m) for m, (e, a) in least.items())
    if ess < gate.min_weight_ess:
        return RuleOutcome("weight_ess", metric, False, "inconclusive",
                           f"importance-weight ESS {ess:,.0f} ({arm}, {metric}) < min_weight_ess="
                           f"{gate.min_weight_ess:,.0f}: the off-policy intervals are not reliable at this "
                           "overlap", treatment=treatment)
    return RuleOutcome("weight_ess", metric, True, "pass",
                       f"least importance-weight ESS {ess:,.0f} ({arm}, {metric}) >= {gate.min_weight_ess:,.0f}",
                       treatment=treatment)


def _unreliable_fail(rule: RuleOutcome, low: Mapping[str, tuple[float, str]], min_ess: float | None) -> RuleOutcome:
    """A fail judged on an estimate the weight_ess rule calls unreliable becomes inconclusive.

    A breach or a significant wrong-way move read from an importance-weighted mean on a handful of
    effective rows is as unreliable as a win would be (its interval under-covers), so it must not decide
    NO_SHIP any more than a pass may decide SHIP: the honest verdict is that the run cannot tell. The
    numbers stay on the row; the reason says what the rule would have said."""
    if rule.outcome != "fail" or rule.metric not in low:
        return rule
    ess, arm = low[rule.metric]
    return replace(rule, outcome="inconclusive",
                   reason=f"would fail ({rule.reason}), but the estimate rests on an importance-weight ESS of "
                          f"{ess:,.0f} ({arm}) < min_weight_ess={min_ess:,.0f}: not reliable either way")


def _decide(outcomes: set[str]) -> str:
    return NO_SHIP if "fail" in outcomes else INCONCLUSIVE if "inconclusive" in outcomes else SHIP


def _arm_decision(rules: list[RuleOutcome]) -> str:
    return _decide({r.outcome for r in rules})


def decisions_by_arm(rules: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Each treatment's decision from stored rule rows (`treatment`, `outcome`), as `evaluate_gate` decides."""
    outcomes: dict[str, set[str]] = {}
    for r in rules:
        if r.get("treatment") and r.get("outcome"):
            outcomes.setdefault(str(r["treatment"]), set()).add(str(r["outcome"]))
    return {arm: _decide(o) for arm, o in outcomes.items()}


def _check_analysis(result: ExperimentResult, gate: GateConfig) -> None:
    """The run must have been analysed as the gate requires (alpha and every [analysis] setting)."""
    if not math.isclose(result.config.get("alpha", gate.alpha), gate.alpha):
        raise AnalysisError(f"gate alpha {gate.alpha:g} differs from the analysis alpha "
                            f"{result.config.get('alpha'):g}; re-run the analysis with --alpha {gate.alpha:g} "
                            "(or pass the gate to `harness analyze --gate`, which applies it)")
    want = AnalysisConfig(**{**gate.analysis, "alpha": gate.alpha}).to_dict()
    for key in gate.analysis:
        have = result.config.get(key)
        if have != want[key] and not (isinstance(have, float) and isinstance(want[key], float)
                                      and math.isclose(have, want[key])):
            raise AnalysisError(f"gate {gate.source}: [analysis] {key} = {want[key]!r} but the run was analysed "
                                f"with {key} = {have!r}; re-run `harness analyze ... --gate` with this gate file")


def evaluate_gate(result: ExperimentResult, gate: GateConfig, treatment: str | None = None, *,
                  weight_ess: Mapping[tuple[str, str], float] | None = None) -> GateDecision:
    """Apply the gate to the overall lifts of every treatment arm (or only `treatment`).

    `weight_ess` maps (arm, metric) to the importance weights' effective sample size behind that arm's
    estimate of the metric, for off-policy results (a replay); with the gate's `min_weight_ess` it adds
    the weight_ess rule. Leave it None for on-policy data (an A/B test): the rule does not apply.

    Primary p-values are adjusted with the gate's correction over every (treatment, primary metric) of
    the analysis, whichever arms are judged: picking the best of several arms is itself a multiple
    comparison. Guardrails are judged per arm at the analysis alpha (to ship an arm all of its
    guardrails must pass: an intersection-union test, which needs no correction within the arm).
    """
    _check_analysis(result, gate)
    judged = list(result.treatments) if treatment is None else [treatment]
    for t in judged:
        if t not in result.treatments:
            raise AnalysisError(f"treatment {t!r} is not an arm of this analysis; arms: {list(result.treatments)}")
        have = {r.metric for r in result.lifts if r.is_overall and r.treatment == t}
        missing = [m for m in gate.metrics if m not in have]
        if missing:
            raise AnalysisError(f"gate {gate.source}: metric(s) {missing} were not analysed for treatment {t!r} "
                                f"(analysed: {sorted(have)}); add them to the analysis or remove them from the gate")
    seq = gate.mode == "sequential"
    family = [(t, r.metric) for t in result.treatments for r in gate.primary
              if any(x.is_overall and x.treatment == t and x.metric == r.metric for x in result.lifts)]
    raw = {}
    for t, metric in family:
        lift = result.lift(metric, treatment=t)
        raw[(t, metric)] = lift.seq_p_value if seq else lift.p_value
    adj = dict(zip(family, adjust([raw[k] for k in family], gate.correction), strict=True))
    srm = [c for c in result.checks if c.check == "srm"]
    out: list[RuleOutcome] = []
    arms: dict[str, str] = {}
    for t in judged:
        rules: list[RuleOutcome] = []
        if srm and gate.srm_policy != "ignore":
            c = srm[0]
            if c.passed:
                rules.append(RuleOutcome("srm", "", True, "pass", c.message, treatment=t, p_value=c.p_value))
            else:
                outcome = "fail" if gate.srm_policy == "no_ship" else "inconclusive"
                rules.append(RuleOutcome("srm", "", False, outcome, f"sample ratio mismatch: {c.message}",
                                         treatment=t, p_value=c.p_value))
        counts = {a: n for a, n in result.arm_counts.items() if a in (result.control, t)}
        small = {a: n for a, n in counts.items() if n < gate.min_units}
        if small:
            rules.append(RuleOutcome("min_sample", "", False, "inconclusive",
                                     f"arms below min_units={gate.min_units}: {small}", treatment=t))
        else:
            rules.append(RuleOutcome("min_sample", "", True, "pass",
                                     f"every arm has >= {gate.min_units} units: {counts}", treatment=t))
        low: dict[str, tuple[float, str]] = {}  # gated metrics under min_weight_ess: their fails do not count
        if weight_ess is not None and gate.min_weight_ess is not None:
            least = _least_ess(weight_ess, gate.metrics, (result.control, t))
            rules.append(_weight_ess(gate, least, t))
            low = {m: v for m, v in least.items() if v[0] < gate.min_weight_ess}
        for rule in gate.primary:
            rules.append(_unreliable_fail(_primary(rule, result.lift(rule.metric, treatment=t), raw[(t, rule.metric)],
                                                   adj[(t, rule.metric)], gate.alpha, gate.mode),
                                          low, gate.min_weight_ess))
        for g in gate.guardrails:
            rules.append(_unreliable_fail(_guardrail(g, result.lift(g.metric, treatment=t), gate.mode),
                                          low, gate.min_weight_ess))
        arms[t] = _arm_decision(rules)
        out += rules
    decisions = set(arms.values())
    decision = NO_SHIP if NO_SHIP in decisions else INCONCLUSIVE if INCONCLUSIVE in decisions else SHIP
    return GateDecision(decision, out, ",".join(judged), arms, gate.mode)
