"""The one error type of the statistics layer.

`AnalysisError` subclasses `ValueError` so callers that already catch bad-input errors keep working;
its message always says what is wrong, where (column, arm, metric, file) and what to do, so the CLI can
print it as is, without a traceback.
"""

from __future__ import annotations


class AnalysisError(ValueError):
    """Bad input to the statistics layer (missing column, empty arm, non-finite values, bad gate file)."""
