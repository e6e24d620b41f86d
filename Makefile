# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXAMPLE := runyard/examples/runyard.toml
# The config `make run` serves. The default, ./runyard.toml, is where the CLI
# looks first, so `runyard ...` from this directory finds the daemon with no
# flags; `make run` copies the example there once, and that copy is yours to edit.
CONFIG ?= runyard.toml

.PHONY: run test test-setup lint bench install

# Runtime dependencies only: what `make run` needs.
$(BIN)/.runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# The dev tools on top: tests, lint, types.
$(BIN)/.dev: $(BIN)/.runtime
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.dev

runyard.toml:
	cp $(EXAMPLE) $@
	@echo "make run: copied $(EXAMPLE) to ./runyard.toml; edit the copy, then \`runyard reload\`"

# Serve $(CONFIG); the database, logs and API token live in .runyard next to it.
run: $(BIN)/.runtime $(if $(filter runyard.toml,$(CONFIG)),runyard.toml)
	@echo "make run: serving $(CONFIG). In another terminal, from $(CURDIR):"
	@echo "    . $(VENV)/bin/activate    # puts runyard on PATH"
	@$(if $(filter runyard.toml,$(CONFIG)),,echo "    export RUNYARD_CONFIG=$(abspath $(CONFIG))")
	@echo "    runyard tasks"
	exec $(BIN)/runyard --config $(CONFIG) serve

# What the suite needs besides Python packages: PostgreSQL and chromium.
test-setup:
	scripts/test-setup.sh

lint: $(BIN)/.dev
	$(BIN)/ruff check runyard tests bench
	$(BIN)/ruff format --check runyard tests bench
	$(BIN)/mypy

# The whole suite: set-up, lint, types, unit, integration (SQLite and PostgreSQL),
# acceptance, browser.
test: test-setup lint
	$(BIN)/pytest -q

# Benchmarks (not tests): about 55 minutes on 2 cores; results in bench/results/.
# bench/http.py needs wrk (Debian: apt-get install wrk). bench/dashboard.py
# seeds 1,000,000 runs once a day (~1.2 GB under bench/results/.cache) and its
# own PostgreSQL database `dashbench` on 127.0.0.1:5432.
bench: $(BIN)/.dev
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/schedule.py
	$(BIN)/python bench/http.py
	$(BIN)/python bench/concurrency.py
	$(BIN)/python bench/cli.py
	$(BIN)/python bench/input_memory.py
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/notifications.py
	$(BIN)/python bench/services.py
	$(BIN)/python bench/dashboard.py
