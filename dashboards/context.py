"""What every view receives: the reader, the runs, the chosen run(s) and the lift scale."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from dashboards.data import Reader


@dataclass
class PageContext:
    """The state a view renders from. `run_id` is None when no run is chosen (e.g. an unknown id in the
    link); `compare_id` is the second run of the Compare view, if picked."""

    reader: Reader
    runs: pd.DataFrame
    run_id: str | None
    compare_id: str | None
    scale: str  # 'relative' | 'absolute'
    schema_version: int

    @property
    def relative(self) -> bool:
        return self.scale == "relative"

    def run(self, run_id: str | None = None) -> dict[str, Any]:
        """The run's `runs` row (config, summary and digests parsed) with its stored decision."""
        rid = run_id or self.run_id
        assert rid is not None
        row = dict(self.reader.run(rid))
        match = self.runs[self.runs["run_id"] == rid]
        decision = None if match.empty else match["decision"].iloc[0]
        row["decision"] = decision if isinstance(decision, str) and decision else None
        return row

    def table(self, method: str, run_id: str | None = None) -> pd.DataFrame:
        rid = run_id or self.run_id
        assert rid is not None
        return self.reader.table(method, rid)
