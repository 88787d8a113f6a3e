"""bench/quality.py's parts that read on their own; a folder, not bench/*.py, since every script there is a
benchmark that answers --help (tests/test_bench_help.py)."""
