"""Errors the results store raises; each message says what is wrong and what to do."""

from __future__ import annotations


class StoreError(Exception):
    """Base class: anything the results store refuses or cannot do."""


class UnknownRunError(StoreError, KeyError):
    """The run id is not in the database."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "unknown run"


class RunExistsError(StoreError):
    """create_run was given the id of a run that cannot be resumed and replace was not asked for."""


class InvalidResultsError(StoreError, ValueError):
    """Rows handed to the store are malformed (missing column, wrong type, bad value)."""


class StoreLockedError(StoreError):
    """Another process held the database file longer than the lock timeout."""


class SchemaVersionError(StoreError):
    """The database was written with a schema this harness does not know."""
