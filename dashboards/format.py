"""How stored values are named, ordered and written on the page: metric order and units, numbers,
run labels, and the guardrail margins the gate wrote into its reasons.

Nothing here computes a statistic: these functions only choose names, order rows and format numbers the
results database already holds.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pandas as pd

# The four online metrics, in the order the launch page reads them (docs/architecture.md).
PRIMARY_METRICS = ("comment_watch_time_s", "comment_interactions", "watch_time_s", "video_interactions")
METRIC_LABELS = {
    "comment_watch_time_s": "comment watch time",
    "comment_interactions": "comment interactions",
    "watch_time_s": "video watch time",
    "video_interactions": "video interactions",
}
SCALES = ("relative", "absolute")
DECISION_ICONS = {"SHIP": ":material/check_circle:", "NO_SHIP": ":material/block:", "INCONCLUSIVE": ":material/warning:"}
OUTCOME_COLOURS = {"pass": "green", "fail": "red", "inconclusive": "orange", "warn": "orange"}

# analysis/gate.py writes a guardrail's reason as
#   "<verdict>: relative lift +0.12%, CI [-0.30%, +0.50%], margin -1.00%"   (relative margin)
#   "<verdict>: absolute lift +0.5, CI [-0.1, +1.1], margin -2"             (absolute margin)
# The margin itself is not a column of gate_decisions, so the page reads it back from that text.
_MARGIN = re.compile(
    r"(?P<unit>relative|absolute(?: \(always-valid\))?) lift [^,]*, CI \[[^\]]*\], "
    r"margin (?P<value>[+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)(?P<pct>%)?"
)


def metric_order(metrics: list[str] | pd.Series) -> list[str]:
    """The four online metrics first (comment watch time, comment interactions, video watch time, video
    interactions), then every other metric in the order it was stored."""
    seen = list(dict.fromkeys(str(m) for m in metrics))
    return [m for m in PRIMARY_METRICS if m in seen] + [m for m in seen if m not in PRIMARY_METRICS]


def sort_by_metric(frame: pd.DataFrame, *, then: tuple[str, ...] = ()) -> pd.DataFrame:
    """Rows ordered by `metric_order`, ties kept in stored order (or by `then`)."""
    if frame.empty or "metric" not in frame:
        return frame
    order = {m: i for i, m in enumerate(metric_order(frame["metric"]))}
    keys = frame["metric"].map(order)
    out = frame.assign(_order=keys).sort_values(["_order", *then], kind="stable")
    return out.drop(columns="_order").reset_index(drop=True)


def metric_label(metric: str) -> str:
    """'video watch time (watch_time_s)' for the four online metrics, the column name otherwise."""
    label = METRIC_LABELS.get(metric)
    return f"{label} ({metric})" if label else metric


def _unit_of(name: str) -> str:
    if name.endswith("_s"):
        return "s"
    if "interaction" in name:
        return "interactions"
    if name == "requests":
        return "requests"
    return "units of the metric"


def metric_unit(metric: str, *, per: str = "user") -> str:
    """Unit of a metric's per-unit value: 'watch_time_s' -> 's per user', a ratio 'a_s_per_requests' ->
    's per request'. Columns of an arbitrary export get 'units of the metric'."""
    if "_per_" in metric:
        num, _, den = metric.partition("_per_")
        return f"{_unit_of(num)} per {den[:-1] if den.endswith('s') else den}"
    return f"{_unit_of(metric)} per {per}"


def lift_axis(scale: str, metric: str | None = None) -> str:
    """Axis title of a lift chart with its unit."""
    if scale == "relative":
        return "relative lift, treatment / control - 1 (%)"
    unit = metric_unit(metric) if metric else "metric units per user"
    return f"absolute lift, treatment - control ({unit})"


def is_number(value: Any) -> bool:
    try:
        return value is not None and not pd.isna(value) and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def pct(value: Any, digits: int = 2) -> str:
    """'+1.23%' for 0.0123; '-' for a missing or undefined value."""
    return f"{float(value):+.{digits}%}" if is_number(value) else "-"


def share(value: Any, digits: int = 1) -> str:
    """'19.2%' for 0.192 (a share, no sign); '-' when missing."""
    return f"{float(value):.{digits}%}" if is_number(value) else "-"


def num(value: Any, digits: int = 4) -> str:
    """A number with `digits` significant digits and a sign; '-' when missing."""
    return f"{float(value):+.{digits}g}" if is_number(value) else "-"


def count(value: Any) -> str:
    """'1,500'; '-' when missing."""
    return f"{int(value):,}" if is_number(value) else "-"


def pvalue(value: Any) -> str:
    return f"{float(value):.3g}" if is_number(value) else "-"


def interval(low: Any, high: Any, *, relative: bool) -> str:
    """'[+0.10%, +0.52%]' or '[+0.4, +1.2]'; '-' when either end is missing."""
    if not (is_number(low) and is_number(high)):
        return "-"
    f = pct if relative else num
    return f"[{f(low)}, {f(high)}]"


_MD_SPECIAL = re.compile(r"([\\`*_\[\]{}<>#|$~])")


def md(text: Any) -> str:
    """Stored text made safe for st.markdown: brackets, asterisks, dollars ... escaped, shown as written."""
    return _MD_SPECIAL.sub(r"\\\1", "" if text is None else str(text))


def unmd(text: str) -> str:
    """The inverse of `md` (tests compare the page's text with the database)."""
    return re.sub(r"\\(.)", r"\1", text)


def short(text: Any, n: int = 12) -> str:
    """The first `n` characters of a digest or fingerprint."""
    return "" if text is None or (isinstance(text, float) and math.isnan(text)) else str(text)[:n]


def parse_json(text: Any) -> dict[str, Any]:
    """A JSON column of `runs` (config, summary, checkpoint_digests) as a dict; {} when empty."""
    if isinstance(text, dict):
        return text
    if text is None or (isinstance(text, float) and math.isnan(text)) or text == "":
        return {}
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def treatments(run: dict[str, Any]) -> list[str]:
    """The run's treatment arms: the summary's list (A/B/n), else the `treatment` column."""
    listed = parse_json(run.get("summary")).get("treatments") or parse_json(run.get("config")).get("treatments")
    if listed:
        return [str(t) for t in listed]
    t = run.get("treatment")
    return [str(t)] if t is not None and not (isinstance(t, float) and math.isnan(t)) else []


def design(run: dict[str, Any]) -> str:
    """'paired' / 'split' for a replay (its --design), 'paired' / 'A/B split' for an analysis, '' otherwise."""
    config = parse_json(run.get("config"))
    if config.get("design"):
        return str(config["design"])
    analysis = parse_json(run.get("summary")).get("config") or config.get("analysis") or {}
    if run.get("kind") == "analyze" and analysis:
        return "paired" if analysis.get("paired") else "A/B split"
    return ""


def estimator(run: dict[str, Any]) -> str:
    """The replay's default estimator (the one behind its lifts and gate); '' for other runs."""
    return str(parse_json(run.get("config")).get("default_estimator") or "")


def data_source(run: dict[str, Any]) -> str:
    """What the run read: the replay's logs, the analysed table or the evaluated logs, and the fingerprint."""
    config = parse_json(run.get("config"))
    where = config.get("data") or config.get("table") or ""
    fp = short(run.get("data_fingerprint"), 10)
    return f"{where} ({fp})" if where else fp


def run_label(run: dict[str, Any]) -> str:
    """'rep-1 · replay · logging vs pop · INCONCLUSIVE' for the run pickers."""
    arms = ""
    if run.get("control") is not None and not (isinstance(run.get("control"), float)):
        arms = f" · {run['control']} vs {', '.join(treatments(run))}"
    decision = run.get("decision")
    tail = f" · {decision}" if isinstance(decision, str) and decision else ""
    return f"{run['run_id']} · {run['kind']}{arms}{tail}"


def guardrail_margins(gate: pd.DataFrame) -> pd.DataFrame:
    """The signed margin of each guardrail rule: the stored `limit` (schema v6), else read back from the
    reason the gate stored (runs gated before v6).

    Columns: treatment, metric, scale ('relative' | 'absolute'), margin (a fraction for relative
    margins: -0.01 for "-1.00%"). The reason carries the margin rounded as the gate printed it (two
    decimals of a percent, or 4 significant digits), which is what the chart draws.
    """
    rows = []
    if not gate.empty and "rule" in gate:
        for rec in gate[gate["rule"] == "guardrail"].to_dict("records"):
            limit, kind = rec.get("limit"), rec.get("margin_type")
            if limit is not None and limit == limit and kind in ("relative", "absolute"):  # stored (schema v6)
                rows.append({"treatment": rec.get("treatment"), "metric": rec.get("metric"), "scale": kind,
                             "margin": float(limit)})
                continue
            m = _MARGIN.search(str(rec.get("reason") or ""))
            if m is None:
                continue
            value = float(m.group("value"))
            relative = m.group("unit") == "relative"
            rows.append({"treatment": rec.get("treatment"), "metric": rec.get("metric"),
                         "scale": "relative" if relative else "absolute",
                         "margin": value / 100 if m.group("pct") else value})
    return pd.DataFrame(rows, columns=["treatment", "metric", "scale", "margin"])


CORRECTION_NAMES = {"holm": "Holm", "bh": "Benjamini-Hochberg", "none": "no correction"}
SCOPE_TEXT = {
    "metric": "one family per metric and treatment over its segment levels; each overall lift is its own "
              "family, so its adjusted p equals its p",
    "all": "one family holding every lift of the run (all metrics, segments and treatments)",
}


def correction_text(lifts: pd.DataFrame) -> str:
    """How the run's adjusted p-values were adjusted, from the stored `correction` and `correction_scope`."""
    if lifts.empty or "correction" not in lifts:
        return "no lifts stored"
    parts = []
    for (corr, scope), _ in lifts.groupby(["correction", "correction_scope"], dropna=False, sort=False):
        name = CORRECTION_NAMES.get(str(corr), str(corr))
        if str(corr) in ("none", "", "nan", "None"):
            parts.append("adjusted p = p (no multiple-testing correction)")
        else:
            parts.append(f"{name}, scope '{scope}': {SCOPE_TEXT.get(str(scope), str(scope))}")
    return "; ".join(parts)
