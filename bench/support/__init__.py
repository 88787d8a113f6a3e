"""Helpers the bench scripts share; not scripts themselves (tests/test_bench_help.py runs bench/*.py)."""
