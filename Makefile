PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# `make run` needs zenbuild and its runtime dependencies only (seconds); the dev extras
# (test, lint and benchmark tools: selenium, dask, torch, mypy...) are for test/lint/bench.
RUNTIME_STAMP := $(VENV)/.installed-runtime

.PHONY: run test sysdeps lint bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(RUNTIME_STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e . --config-settings editable_mode=compat
	touch $(RUNTIME_STAMP)

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[dev]' --config-settings editable_mode=compat
	touch $(STAMP) $(RUNTIME_STAMP)

run: $(RUNTIME_STAMP)
	$(VENV)/bin/zenbuild run

# System packages some tests need (nginx, chromium): each script installs what is missing.
sysdeps:
	@for f in tests/sysdeps/*.sh; do [ -f "$$f" ] || continue; bash "$$f" || exit 1; done

test: $(STAMP) sysdeps
	$(PY) -m pytest -q -p no:cacheprovider tests

lint: $(STAMP)
	$(VENV)/bin/ruff check zenbuild tests benchmarks examples
	$(VENV)/bin/mypy zenbuild
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(PY) benchmarks/run_bench.py
	$(PY) benchmarks/bench_values.py

clean:
	rm -rf $(VENV) .zenbuild build
