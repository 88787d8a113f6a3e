"""The statistics layer: metrics, lifts and CIs, variance reduction, trust checks, gate.

Stands alone: imports nothing of ours and no torch, so an analyst can use it on any export.
Maths and references: docs/statistics.md.
"""

from analysis.aggregates import Moments
from analysis.checks import srm_test
from analysis.config import AnalysisConfig
from analysis.errors import AnalysisError
from analysis.experiment import analyze
from analysis.gate import (
    Decision,
    GateConfig,
    GateDecision,
    GuardrailRule,
    PrimaryRule,
    RuleOutcome,
    default_gate_path,
    evaluate_gate,
    load_gate,
    parse_gate,
)
from analysis.metrics import MeanMetric, ProportionMetric, RatioMetric, parse_metric
from analysis.multitest import adjust
from analysis.power import mde, power_two_sample, sample_size
from analysis.results import (
    OVERALL,
    CheckResult,
    ExperimentResult,
    HeterogeneityResult,
    LiftResult,
    PowerResult,
)
from analysis.segments import cochran_q
from analysis.sequential import always_valid_p, confidence_sequence, monitor

__all__ = [
    "OVERALL", "AnalysisConfig", "AnalysisError", "CheckResult", "Decision", "ExperimentResult",
    "GateConfig", "GateDecision", "GuardrailRule", "HeterogeneityResult", "LiftResult", "MeanMetric",
    "Moments", "PowerResult", "PrimaryRule", "ProportionMetric", "RatioMetric", "RuleOutcome", "adjust",
    "always_valid_p", "analyze", "cochran_q", "confidence_sequence", "default_gate_path", "evaluate_gate",
    "load_gate", "mde", "monitor", "parse_gate", "parse_metric", "power_two_sample", "sample_size",
    "srm_test",
]
