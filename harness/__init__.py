"""The LSVCR launch harness: logs, synthetic world, the replay and its estimators, results store and CLI (docs/architecture.md)."""

__version__ = "0.1.0"
