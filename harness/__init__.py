"""The LSVCR launch harness: logs, synthetic world, results store and CLI; the replay is planned (docs/architecture.md)."""

__version__ = "0.1.0"
