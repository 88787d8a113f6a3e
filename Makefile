# The README's two commands: `make demo` (install + main job) and `make test` (install + all tests).
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RAY_AUTH_MODE := disabled

.PHONY: setup demo test lint typecheck check

setup:
	VENV=$(VENV) bash scripts/setup.sh

demo: setup
	$(BIN)/harness replay --control base --treatment lsvcr

# pytest exits 5 when it collected no tests: that is a failure, never a green run.
test: setup
	$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

lint: setup
	$(BIN)/ruff check harness models analysis dashboards tests bench

# mypy must be clean on the statistics layer and the results store (imports followed silently: the
# models' torch code is not held to it yet).
typecheck: setup
	$(BIN)/mypy --follow-imports=silent analysis harness/store

# What CI checks besides the tests (the layering rules are a test: tests/test_layering.py).
check: lint typecheck
