# Two commands for a newcomer:  `make demo` (set up + run on the sample)  and  `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint clean

$(BIN)/billing: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,notebook,spark]'
	@touch $@

setup: $(BIN)/billing

demo: setup
	$(BIN)/billing run --input data/sample --db data/billing.duckdb
	$(BIN)/billing query spend-by-provider --db data/billing.duckdb --by month

test: setup
	$(BIN)/ruff check pipeline tests benchmarks notebooks
	$(BIN)/mypy
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check pipeline tests benchmarks notebooks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) data/billing.duckdb data/billing.duckdb.wal data/archive data/snapshots data/.billing.duckdb.*
