# Two commands for a newcomer:  `make demo` (set up + run on the sample)  and  `make test`.
# Installs are pinned by requirements/constraints.txt (exact versions the tests ran with).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --disable-pip-version-check -c requirements/constraints.txt
CORE := $(VENV)/.installed-core
DEV := $(VENV)/.installed-dev
# The FOCUS validator wants Python 3.12 and its own pins: a separate venv (skipped, with a
# note, where no python3.12 is found; tests/test_focus.py then skips with that reason).
FOCUS_VENV ?= .venv-focus
PY312 ?= $(shell for p in $$(ls -d $$(pyenv root 2>/dev/null)/versions/3.12*/bin/python3.12 2>/dev/null) $$(command -v python3.12); do $$p -c 'import venv' 2>/dev/null && echo $$p && break; done)

.PHONY: setup setup-dev demo test lint format bench-smoke clean focus-validator print-py312 lock

$(BIN)/python:
	$(PY) -m venv $(VENV)

# the demo needs only the core package (about 480 MB): polars, duckdb, pyarrow, pandera...
$(CORE): pyproject.toml requirements/constraints.txt | $(BIN)/python
	@echo "installing the billing package into $(VENV) (core only; a minute or so)..."
	$(PIP) --progress-bar on -e .
	@touch $@

# tests, notebook and Spark checks need the extras too. The pins are complete (a `pip freeze`
# of this venv), so requirements/install-pinned installs them as two pip processes side by
# side with no resolve, then `pip check`s them (38 s -> 22 s on 2 cores); should that fail
# for any reason, one resolved install does it instead.
$(DEV): pyproject.toml requirements/constraints.txt | $(BIN)/python
	@echo "installing the package with its dev, notebook and spark extras into $(VENV)..."
	@requirements/install-pinned $(VENV) requirements/constraints.txt -e . \
	 || { echo "pinned install incomplete: resolving instead"; \
	      $(PIP) --progress-bar on -e '.[dev,notebook,spark]'; }
	@touch $(CORE) $@

setup: $(CORE)

setup-dev: $(DEV)

demo: setup
	$(BIN)/billing run --input data/sample --db data/billing.duckdb
	$(BIN)/billing query spend-by-provider --db data/billing.duckdb --by month

# the two environments install side by side (-j2), then the linters and the suite on one
# worker more than the cores: several tests wait on a subprocess, a server or a timeout,
# and the extra worker fills that time (2 cores: 135 s with 2 workers, 126 s with 3)
PYTEST_WORKERS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 1) + 1 )))
# Bytecode is written even where PYTHONDONTWRITEBYTECODE is set (into the venvs and
# git-ignored __pycache__ folders): the first process to import a module compiles it for
# the hundreds of test subprocesses after it, instead of each compiling it again. Types
# (mypy) are `make lint`, which .ci/run runs after this.
test: export PYTHONDONTWRITEBYTECODE =
test:
	@$(MAKE) --no-print-directory -j2 setup-dev focus-validator
	$(BIN)/ruff check pipeline tests benchmarks notebooks
	$(BIN)/ruff format --check pipeline tests benchmarks notebooks
	$(BIN)/pytest -n $(PYTEST_WORKERS)

lint: setup-dev
	$(BIN)/ruff check pipeline tests benchmarks notebooks
	$(BIN)/ruff format --check pipeline tests benchmarks notebooks
	$(BIN)/mypy

format: setup-dev
	$(BIN)/ruff format pipeline tests benchmarks notebooks
	$(BIN)/ruff check --fix pipeline tests benchmarks notebooks

# the benchmark harness on a tiny input (about 10 s; not part of `make test`)
bench-smoke: setup-dev
	$(BIN)/pytest -m benchmark

$(FOCUS_VENV)/bin/focus-validator: requirements/focus-validator.txt
	@if [ -z "$(PY312)" ]; then echo "no python3.12: FOCUS validator not installed (its test skips)"; else \
	  $(PY312) -m venv $(FOCUS_VENV) && \
	  requirements/install-pinned $(FOCUS_VENV) requirements/focus-validator.txt && \
	  touch $@; fi

focus-validator: $(FOCUS_VENV)/bin/focus-validator

print-py312:
	@echo $(PY312)

# refresh the pins after changing dependencies (in a venv built by `make setup-dev`)
lock: setup-dev
	@{ echo "# Exact versions the tests ran with (pip freeze of 'make test''s venv, all extras)."; \
	   echo "# make and .ci/run install with '-c requirements/constraints.txt'; regenerate with 'make lock'."; \
	   $(BIN)/pip freeze --all --exclude-editable; } > requirements/constraints.txt

clean:
	rm -rf $(VENV) $(FOCUS_VENV) data/billing.duckdb data/billing.duckdb.wal data/archive data/snapshots data/.billing.duckdb.*
