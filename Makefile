# Two commands for a newcomer:  `make demo` (set up + run on the sample)  and  `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint clean focus-validator print-py312
# The FOCUS validator wants Python 3.12 and its own pins: a separate venv (skipped, with a
# note, where no python3.12 is found; tests/test_focus.py then skips with that reason).
FOCUS_VENV ?= .venv-focus
PY312 ?= $(shell for p in $$(ls -d $$(pyenv root 2>/dev/null)/versions/3.12*/bin/python3.12 2>/dev/null) $$(command -v python3.12); do $$p -c 'import venv' 2>/dev/null && echo $$p && break; done)

$(BIN)/billing: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,notebook,spark]'
	@touch $@

setup: $(BIN)/billing

demo: setup
	$(BIN)/billing run --input data/sample --db data/billing.duckdb
	$(BIN)/billing query spend-by-provider --db data/billing.duckdb --by month

$(FOCUS_VENV)/bin/focus-validator: requirements/focus-validator.txt
	@if [ -z "$(PY312)" ]; then echo "no python3.12: FOCUS validator not installed (its test skips)"; else \
	  $(PY312) -m venv $(FOCUS_VENV) && \
	  $(FOCUS_VENV)/bin/pip install --quiet --no-deps -r requirements/focus-validator.txt && \
	  touch $@; fi

focus-validator: $(FOCUS_VENV)/bin/focus-validator

print-py312:
	@echo $(PY312)

test: setup focus-validator
	$(BIN)/ruff check pipeline tests benchmarks notebooks
	$(BIN)/mypy
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check pipeline tests benchmarks notebooks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(FOCUS_VENV) data/billing.duckdb data/billing.duckdb.wal data/archive data/snapshots data/.billing.duckdb.*
