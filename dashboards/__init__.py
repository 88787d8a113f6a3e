"""The dashboard over the results store (read-only): planned, not yet written (docs/architecture.md)."""
