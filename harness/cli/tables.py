"""Terminal tables of analysis results, readable in an 80-column CI log.

Every table reads the analysis layer's field names (from `to_dict()` rows or the results database), so
what is printed is what `--json` and the database hold. Cells fold rather than truncate: a number is
never cut to "1.23…" (a CI log is 80 columns wide), and cell text is escaped so `[[primary]]` or
`[red]` in a message prints verbatim.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table

SIG_MARK = "*"  # significant after the correction (adjusted p < alpha)


def _missing(v: Any) -> bool:
    if v is None:
        return True
    try:
        return bool(isinstance(v, float) and math.isnan(v))
    except TypeError:
        return False


def num(v: Any, fmt: str = ".4g") -> str:
    if _missing(v):
        return "-"
    return format(float(v), fmt) if isinstance(v, int | float) else str(v)


def interval(est: Any, low: Any, high: Any, fmt: str, est_fmt: str | None = None) -> str:
    if _missing(est):
        return "-"
    ci = f" [{num(low, fmt)}, {num(high, fmt)}]" if not (_missing(low) or _missing(high)) else ""
    return f"{num(est, est_fmt or fmt)}{ci}"


def _table(title: str, columns: Sequence[tuple[str, str]]) -> Table:
    t = Table(title=escape(title), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for name, justify in columns:
        t.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    return t


def fit(t: Table, keep_whole: int = 12, flexible: Sequence[str] = ("message", "reason", "notes"),
        first: int = 22) -> Table:
    """Never split a number: each column gets the width of its longest word (of cells and header) up
    to `keep_whole` characters, so cells wrap between words ("+1.00 [+0.75," / "+1.25]") and only longer
    words (metric names) fold. `flexible` columns (free text) take the width that is left."""
    for i, col in enumerate(t.columns):
        if col.header in flexible:
            continue
        words = [w for cell in [*col._cells, col.header] for w in str(cell).split()]
        col.width = min(max((len(w) for w in words), default=1), first if i == 0 else keep_whole)
    return t


def _segment(r: dict[str, Any]) -> str:
    return "all" if r.get("segment") in (None, "all") else f"{r['segment']}={r.get('segment_value')}"


def lift_table(rows: Sequence[dict[str, Any]], title: str) -> Table:
    """Lifts: one row per metric, segment level and treatment; `*` marks adjusted p < alpha.

    Segment rows sit under their metric, indented, so the table fits 80 columns."""
    methods = sorted({str(r.get("relative_ci_method")) for r in rows if not _missing(r.get("relative_ci_method"))})
    t = _table(title, (("metric", "left"), ("arm", "left"), ("ctrl mean", "right"), ("trt mean", "right"),
                       ("abs lift [CI]", "right"), ("rel lift [CI]", "right"),
                       ("adj p", "right")))
    for r in rows:
        rel = interval(r.get("rel_diff"), r.get("rel_ci_low"), r.get("rel_ci_high"), "+.2%")
        if rel == "-" and r.get("rel_undefined_reason"):
            rel = f"- ({r['rel_undefined_reason']})"
        label = str(r["metric"]) if _segment(r) == "all" else f"  {_segment(r)}"
        t.add_row(
            escape(label), escape(str(r.get("treatment") or "")), num(r.get("control_mean")),
            num(r.get("treatment_mean")),
            interval(r.get("abs_diff"), r.get("abs_ci_low"), r.get("abs_ci_high"), "+.4g"),
            escape(rel), num(r.get("p_value_adjusted"), ".3g") + (f" {SIG_MARK}" if r.get("significant") else ""),
        )
    t.caption = escape(f"rel lift [CI] ({'/'.join(methods) or '-'}): relative CI method; * = adjusted p < alpha")
    t.caption_justify = "left"
    return fit(t)


def detail_table(lifts: Sequence[dict[str, Any]], power: Sequence[dict[str, Any]]) -> Table | None:
    """Per overall lift: units, raw p, CUPED variance reduction and the minimum detectable effect."""
    overall = [r for r in lifts if r.get("segment") in (None, "all")]
    if not overall:
        return None
    mde = {(p.get("metric"), p.get("treatment")): p for p in power}
    t = _table("overall lifts: units, raw p, CUPED, minimum detectable effect",
               (("metric", "left"), ("arm", "left"), ("n c/t", "right"), ("p", "right"), ("CUPED VR", "right"),
                ("MDE", "right"), ("MDE rel", "right")))
    for r in overall:
        m = mde.get((r.get("metric"), r.get("treatment")), {})
        t.add_row(escape(str(r["metric"])), escape(str(r.get("treatment") or "")),
                  f"{r.get('n_control')}/{r.get('n_treatment')}", num(r.get("p_value"), ".3g"),
                  num(r.get("variance_reduction"), ".1%"), num(m.get("mde_abs"), ".3g"), num(m.get("mde_rel"), ".2%"))
    return fit(t)


def sequential_table(lifts: Sequence[dict[str, Any]]) -> Table | None:
    """Per overall lift: the always-valid interval and p (safe to peek) and, when computed, the Bayesian view."""
    overall = [r for r in lifts if r.get("segment") in (None, "all")]
    if not overall:
        return None
    bayes = any(not _missing(r.get("bayes_chance_to_win")) for r in overall)
    cols = [("metric", "left"), ("arm", "left"), ("always-valid abs CI", "right"), ("av p", "right")]
    if bayes:
        cols += [("P(win)", "right"), ("risk ship", "right"), ("risk keep", "right")]
    t = _table("always-valid (peeking-safe)" + (" and Bayesian view (relative lift)" if bayes else ""), cols)
    for r in overall:
        row = [escape(str(r["metric"])), escape(str(r.get("treatment") or "")),
               f"[{num(r.get('seq_ci_low'), '+.3g')}, {num(r.get('seq_ci_high'), '+.3g')}]",
               num(r.get("seq_p_value"), ".3g")]
        if bayes:
            row += [num(r.get("bayes_chance_to_win"), ".1%"), num(r.get("bayes_risk_treatment"), ".3%"),
                    num(r.get("bayes_risk_control"), ".3%")]
        t.add_row(*row)
    return fit(t)


def heterogeneity_table(rows: Sequence[dict[str, Any]]) -> Table | None:
    if not rows:
        return None
    t = _table("heterogeneity across segment levels (Cochran's Q)",
               (("metric", "left"), ("arm", "left"), ("segment", "left"), ("levels", "right"), ("Q", "right"),
                ("p", "right"), ("I^2", "right"), ("notes", "left")))
    for h in rows:
        t.add_row(escape(str(h["metric"])), escape(str(h.get("treatment") or "")), escape(str(h.get("segment"))),
                  str(h.get("n_levels")), num(h.get("q_stat"), ".3g"), num(h.get("p_value"), ".3g"),
                  num(h.get("i2"), ".0%"), escape(str(h.get("notes") or "")))
    return fit(t)


def check_table(rows: Sequence[dict[str, Any]]) -> Table:
    t = _table("trust checks", (("check", "left"), ("metric", "left"), ("status", "left"), ("message", "left")))
    for r in rows:
        status = r.get("status") or ("pass" if r.get("passed") else "fail")
        if status == "fail" and r.get("severity") == "warning":
            status = "warn"
        colour = {"pass": "green", "warn": "yellow"}.get(str(status), "red")
        t.add_row(escape(str(r["check"])), escape(str(r.get("metric") or "")), f"[{colour}]{status}[/{colour}]",
                  escape(str(r.get("message") or "")))
    return fit(t)


def gate_table(decision: str, rules: Sequence[dict[str, Any]], arms: dict[str, str] | None = None) -> Table:
    colour = {"SHIP": "green", "NO_SHIP": "red"}.get(decision, "yellow")
    title = f"launch gate: [bold {colour}]{decision}[/bold {colour}]"
    if arms and len(arms) > 1:
        title += " (" + ", ".join(f"{escape(a)}: {d}" for a, d in arms.items()) + ")"
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for name in ("arm", "rule", "metric", "outcome", "reason"):
        t.add_column(name, overflow="fold")
    for r in rules:
        if _missing(r.get("rule")):
            continue
        outcome = r.get("outcome") or ("pass" if r.get("passed") else "fail")
        t.add_row(escape(str(r.get("treatment") or "")), str(r["rule"]), escape(str(r.get("metric") or "")),
                  str(outcome), escape(str(r.get("reason") or "")))
    return fit(t)


def daily_table(rows: Sequence[dict[str, Any]]) -> Table:
    t = _table("cumulative lift by day (always-valid band: safe to read daily)",
               (("metric", "left"), ("arm", "left"), ("day", "left"), ("abs lift", "right"), ("p", "right"),
                ("always-valid CI", "right"), ("av p", "right")))
    for r in rows:
        t.add_row(escape(str(r["metric"])), escape(str(r["treatment"])), escape(str(r["day"])),
                  num(r.get("abs_diff"), "+.4g"), num(r.get("p_value"), ".3g"),
                  f"[{num(r.get('seq_ci_low'), '+.4g')}, {num(r.get('seq_ci_high'), '+.4g')}]",
                  num(r.get("seq_p_value"), ".3g"))
    return fit(t)
