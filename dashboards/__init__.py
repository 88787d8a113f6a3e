"""The launch-decision dashboard over the results database (`harness dashboard`; docs/dashboard.md).

Read-only: it reads the store through `harness.store`'s read API only and shows what the CLI stored,
never recomputing a statistic (tests/test_layering.py).
"""
