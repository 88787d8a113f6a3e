"""The LSVCR launch harness: logs, synthetic world, replay, results store and CLI."""

__version__ = "0.1.0"
