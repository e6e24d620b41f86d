# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= runyard/examples/runyard.toml

.PHONY: run test lint bench install

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

# Start runyard with the example config; SQLite and the token live in ./.runyard.
run: $(BIN)/.installed
	$(BIN)/runyard --config $(CONFIG) --data-dir .runyard serve

lint: $(BIN)/.installed
	$(BIN)/ruff check runyard tests bench
	$(BIN)/ruff format --check runyard tests bench
	$(BIN)/mypy

# The whole suite: lint, types, unit, integration (SQLite and PostgreSQL), acceptance.
test: lint
	$(BIN)/pytest -q

# Benchmarks (not tests): about 17 minutes on 2 cores; results in bench/results/.
# bench/http.py needs wrk (Debian: apt-get install wrk).
bench: $(BIN)/.installed
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/schedule.py
	$(BIN)/python bench/http.py
