"""The launch gate: a TOML file of rules turned into SHIP / NO_SHIP / INCONCLUSIVE with reasons.

Format (see `gate_default.toml` and docs/statistics.md):

    alpha = 0.05                 # two-sided level; must equal the analysis' alpha
    correction = "holm"          # across the primary metrics: none | holm | bh
    srm_policy = "inconclusive"  # on a failed SRM check: inconclusive | no_ship | ignore
    min_units = 1000             # per arm, overall

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
Decision: any fail -> NO_SHIP; else any inconclusive -> INCONCLUSIVE; else SHIP. Exit codes 0 / 1 / 2.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.errors import AnalysisError
from analysis.multitest import adjust
from analysis.results import ExperimentResult, LiftResult

SHIP, NO_SHIP, INCONCLUSIVE = "SHIP", "NO_SHIP", "INCONCLUSIVE"
EXIT_CODES = {SHIP: 0, NO_SHIP: 1, INCONCLUSIVE: 2}
DIRECTIONS = ("increase", "decrease")
SRM_POLICIES = ("inconclusive", "no_ship", "ignore")
_TOP_KEYS = {"alpha", "correction", "srm_policy", "min_units", "primary", "guardrail", "name", "description"}


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
    source: str = ""

    def __post_init__(self) -> None:
        where = f" in {self.source}" if self.source else ""
        if not (isinstance(self.alpha, float | int) and 0 < self.alpha < 1):
            raise AnalysisError(f"gate{where}: alpha = {self.alpha!r} must be between 0 and 1")
        if self.correction not in ("none", "holm", "bh"):
            raise AnalysisError(f"gate{where}: correction = {self.correction!r}; use none, holm or bh")
        if self.srm_policy not in SRM_POLICIES:
            raise AnalysisError(f"gate{where}: srm_policy = {self.srm_policy!r}; use one of {list(SRM_POLICIES)}")
        if not isinstance(self.min_units, int) or isinstance(self.min_units, bool) or self.min_units < 0:
            raise AnalysisError(f"gate{where}: min_units = {self.min_units!r} must be a non-negative integer")
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
    rule: str  # primary | guardrail | srm | min_sample
    metric: str
    passed: bool
    outcome: str  # pass | fail | inconclusive
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "metric": self.metric, "passed": self.passed, "outcome": self.outcome,
                "reason": self.reason}


@dataclass(frozen=True)
class GateDecision:
    decision: str  # SHIP | NO_SHIP | INCONCLUSIVE
    rules: list[RuleOutcome] = field(default_factory=list)
    treatment: str = ""

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.decision]

    @property
    def reason(self) -> str:
        bad = [r for r in self.rules if r.outcome != "pass"]
        if not bad:
            return "all rules pass"
        return "; ".join(f"{r.rule} {r.metric}: {r.reason}".replace("  ", " ") for r in bad)

    def to_dicts(self) -> list[dict[str, Any]]:
        return [{"decision": self.decision, "treatment": self.treatment, **r.to_dict()} for r in self.rules]


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

    top = {k: data[k] for k in ("alpha", "correction", "srm_policy", "min_units") if k in data}
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
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise AnalysisError(f"gate file {str(p)!r} is not valid TOML: {exc}") from exc
    return parse_gate(data, str(p))


def default_gate_path() -> Path:
    return Path(__file__).with_name("gate_default.toml")


def _sign(direction: str) -> int:
    return 1 if direction == "increase" else -1


def _primary(rule: PrimaryRule, lift: LiftResult, p_adj: float, alpha: float) -> RuleOutcome:
    s = _sign(rule.direction)
    est = f"{lift.abs_diff:+.4g}" + (f" ({lift.rel_diff:+.2%})" if lift.rel_diff is not None
                                      and math.isfinite(lift.rel_diff) else "")
    if not math.isfinite(p_adj):
        return RuleOutcome("primary", rule.metric, False, "inconclusive",
                           f"no p-value ({lift.notes or 'degenerate data'})")
    if p_adj < alpha and s * lift.abs_diff > 0:
        return RuleOutcome("primary", rule.metric, True, "pass",
                           f"{rule.direction}s significantly: {est}, p_adj={p_adj:.3g} < {alpha:g}")
    if p_adj < alpha:
        return RuleOutcome("primary", rule.metric, False, "fail",
                           f"moves significantly the wrong way: {est}, p_adj={p_adj:.3g}")
    return RuleOutcome("primary", rule.metric, False, "inconclusive",
                       f"not significant: {est}, p_adj={p_adj:.3g} >= {alpha:g}")


def _guardrail(rule: GuardrailRule, lift: LiftResult) -> RuleOutcome:
    s = _sign(rule.direction)
    if rule.margin_type == "relative":
        est, low, high = lift.rel_diff, lift.rel_ci_low, lift.rel_ci_high
        unit = "relative"
        if est is None or not math.isfinite(est):
            return RuleOutcome("guardrail", rule.metric, False, "inconclusive",
                               f"relative lift undefined ({lift.rel_undefined_reason}); use an absolute margin")
        fmt = "{:+.2%}"
    else:
        est, low, high = lift.abs_diff, lift.abs_ci_low, lift.abs_ci_high
        unit = "absolute"
        fmt = "{:+.4g}"
    if not all(v is not None and math.isfinite(v) for v in (est, low, high)):
        return RuleOutcome("guardrail", rule.metric, False, "inconclusive", f"no CI ({lift.notes})")
    harm_bound = low if s > 0 else high  # the CI end on the harmful side
    limit = -s * rule.margin
    text = (f"{unit} lift {fmt.format(est)}, CI [{fmt.format(low)}, {fmt.format(high)}], "
            f"margin {fmt.format(limit)}")
    if s * harm_bound > limit * s:
        return RuleOutcome("guardrail", rule.metric, True, "pass", f"non-inferior: {text}")
    if s * est < s * limit:
        return RuleOutcome("guardrail", rule.metric, False, "fail", f"breach: {text}")
    return RuleOutcome("guardrail", rule.metric, False, "inconclusive", f"non-inferiority not shown: {text}")


def evaluate_gate(result: ExperimentResult, gate: GateConfig, treatment: str | None = None) -> GateDecision:
    """Apply the gate to an analysis (overall lifts of one treatment arm)."""
    t = treatment or result.treatments[0]
    if not math.isclose(result.config.get("alpha", gate.alpha), gate.alpha):
        raise AnalysisError(f"gate alpha {gate.alpha:g} differs from the analysis alpha "
                            f"{result.config.get('alpha'):g}; analyse with AnalysisConfig(alpha={gate.alpha:g})")
    have = {r.metric for r in result.lifts if r.is_overall and r.treatment == t}
    missing = [m for m in gate.metrics if m not in have]
    if missing:
        raise AnalysisError(f"gate {gate.source}: metric(s) {missing} were not analysed (analysed: "
                            f"{sorted(have)}); add them to the analysis or remove them from the gate")
    out: list[RuleOutcome] = []
    srm = [c for c in result.checks if c.check == "srm"]
    if srm and gate.srm_policy != "ignore":
        c = srm[0]
        if c.passed:
            out.append(RuleOutcome("srm", "", True, "pass", c.message))
        else:
            outcome = "fail" if gate.srm_policy == "no_ship" else "inconclusive"
            out.append(RuleOutcome("srm", "", False, outcome, f"sample ratio mismatch: {c.message}"))
    counts = {a: n for a, n in result.arm_counts.items() if a in (result.control, t)}
    small = {a: n for a, n in counts.items() if n < gate.min_units}
    if small:
        out.append(RuleOutcome("min_sample", "", False, "inconclusive",
                               f"arms below min_units={gate.min_units}: {small}"))
    else:
        out.append(RuleOutcome("min_sample", "", True, "pass", f"every arm has >= {gate.min_units} units: {counts}"))
    lifts = {m: result.lift(m, treatment=t) for m in gate.metrics}
    raw = [lifts[r.metric].p_value for r in gate.primary]
    adj = adjust(raw, gate.correction)
    for rule, p in zip(gate.primary, adj, strict=True):
        out.append(_primary(rule, lifts[rule.metric], p, gate.alpha))
    for g in gate.guardrails:
        out.append(_guardrail(g, lifts[g.metric]))
    outcomes = {r.outcome for r in out}
    decision = NO_SHIP if "fail" in outcomes else INCONCLUSIVE if "inconclusive" in outcomes else SHIP
    return GateDecision(decision, out, t)
