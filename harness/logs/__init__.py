"""Logged sessions: schema, store (Parquet folder / DuckDB file), validation, description, importers."""
