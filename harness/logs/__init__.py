"""Logged sessions: schema, store (Parquet folder / DuckDB file), validation, description, importers."""

from harness.logs.store import LogStore, detect_format, import_logs, write_logs
from harness.logs.validate import LogValidationError, ValidationIssue, ValidationReport, validate

__all__ = [
    "LogStore",
    "LogValidationError",
    "ValidationIssue",
    "ValidationReport",
    "detect_format",
    "import_logs",
    "validate",
    "write_logs",
]
