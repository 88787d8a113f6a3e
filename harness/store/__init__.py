"""The results database (DuckDB): runs, unit metrics, lifts, gate decisions, ranking metrics."""
