"""Driving the dashboard with Streamlit's AppTest and reading back what the page shows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
from streamlit.testing.v1 import AppTest

from dashboards.format import unmd

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "dashboards" / "app.py"


def open_page(monkeypatch: Any, db: Path, *, page: str | None = None, run: str | None = None,
              scale: str | None = None, env: dict[str, str] | None = None) -> AppTest:
    """Render the app on `db` with the run and page given in the link (as a shared URL would)."""
    monkeypatch.setenv("HARNESS_DB", str(db))
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    at = AppTest.from_file(str(APP), default_timeout=60)
    if run is not None:
        at.query_params["run"] = run
    if page is not None:
        at.query_params["page"] = page
    if scale is not None:
        at.session_state["scale"] = scale
    return at.run()


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def texts(at: AppTest, kind: str) -> list[str]:
    """The (markdown-unescaped) text of every element of `kind` in the main area: markdown, caption, ..."""
    return [unmd(str(e.value)) for e in at.main.get(kind)]


def all_text(at: AppTest) -> str:
    parts = []
    for kind in ("header", "subheader", "markdown", "caption", "info", "warning", "error", "success"):
        parts += texts(at, kind)
    return "\n".join(parts)


def frames(at: AppTest) -> list[pd.DataFrame]:
    return [d.value for d in at.main.get("dataframe")]


def metrics(at: AppTest) -> dict[str, str]:
    """Metric cards: label -> value as shown."""
    return {m.label: m.value for m in at.main.get("metric")}


def charts(at: AppTest) -> list[dict[str, Any]]:
    """The Vega-Lite specs of the page's charts."""
    return [json.loads(c.proto.spec) for c in at.main.get("vega_lite_chart")]


def chart_data(at: AppTest) -> list[pd.DataFrame]:
    """Per chart, its data: every dataset Streamlit sent with it (Arrow), concatenated."""
    out = []
    for c in at.main.get("vega_lite_chart"):
        parts = [pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in c.proto.datasets]
        out.append(pd.concat(parts, ignore_index=True) if parts else pd.DataFrame())
    return out


def axis_titles(spec: Any) -> set[str]:
    """Every axis title anywhere in a chart spec."""
    out: set[str] = set()
    if isinstance(spec, dict):
        for k, v in spec.items():
            if k == "title" and isinstance(v, str):
                out.add(v)
            else:
                out |= axis_titles(v)
    elif isinstance(spec, list):
        for v in spec:
            out |= axis_titles(v)
    return out
