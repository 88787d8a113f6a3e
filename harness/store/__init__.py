"""The results database (DuckDB): runs, unit metrics, lifts, checks, gate decisions, ranking metrics.

See docs/results-store.md for the tables, the transaction and concurrency design, and examples.
"""

from harness.store.connection import RetryPolicy, is_lock_error
from harness.store.errors import (
    InvalidResultsError,
    RunExistsError,
    SchemaVersionError,
    StoreError,
    StoreLockedError,
    UnknownRunError,
)
from harness.store.reads import ResultsReader
from harness.store.results import (
    DB_ENV_VAR,
    DEFAULT_DB_NAME,
    ResultsStore,
    code_version,
    default_db_path,
    new_run_id,
)
from harness.store.schema import SCHEMA_VERSION

__all__ = [
    "DB_ENV_VAR",
    "DEFAULT_DB_NAME",
    "SCHEMA_VERSION",
    "InvalidResultsError",
    "ResultsReader",
    "ResultsStore",
    "RetryPolicy",
    "RunExistsError",
    "SchemaVersionError",
    "StoreError",
    "StoreLockedError",
    "UnknownRunError",
    "code_version",
    "default_db_path",
    "is_lock_error",
    "new_run_id",
]
