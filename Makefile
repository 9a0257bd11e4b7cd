PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test sysdeps lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]' --config-settings editable_mode=compat
	touch $(STAMP)

run: $(STAMP)
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

clean:
	rm -rf $(VENV) .zenbuild build
