# Dealflow: every command a developer or CI needs. A fresh machine needs only Python 3.11+:
# the first target that runs installs a pinned uv into .tools/ and the locked dependencies.
SHELL := /bin/bash
PYTHON ?= python3
# The interpreter .venv is built on: an optimised CPython (PGO and LTO, as production's
# python:3.11-slim image is) if the machine has one, else $(PYTHON) (tools/venv_python.py).
VENV_PYTHON ?= $(shell $(PYTHON) tools/venv_python.py || echo $(PYTHON))
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
RUN := $(UV) run --frozen

.PHONY: help run test lint unit component integration bench bench-requests bench-instructions bench-purge bench-sequences bench-reporting chaos contracts docs format clean

help:
	@echo "make run          start the whole system on the embedded broker and SQLite (Ctrl-C stops)"
	@echo "make test         lint, then unit, component and integration tests (PostgreSQL + broker)"
	@echo "make lint         ruff and mypy (strict on domains and libs/common)"
	@echo "make unit | component | integration   one test tier"
	@echo "make bench        the deal benchmark (JSON report)"
	@echo "make bench-requests  CPU per request of the deal, in-process, app and PostgreSQL (opportunity, quote)"
	@echo "make bench-instructions  instructions per request of the deal, counted under valgrind (host-independent)"
	@echo "make bench-purge  the purge benchmark: 10,000 closed deals, 3 quotes each (JSON report)"
	@echo "make bench-sequences  the follow-up scheduler: 10,000 steps due over a minute (JSON report)"
	@echo "make bench-reporting  pipeline and forecast over 100,000 deals in the read model (JSON report)"
	@echo "make chaos        deals under one fault at a time, invariants checked (CHAOS_ARGS=--short)"
	@echo "make contracts    regenerate JSON Schemas, AsyncAPI documents and docs/state-machine.md"

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# The Makefile is a prerequisite so that a change of interpreter rebuilds an existing .venv.
.venv/.synced: $(UV) uv.lock pyproject.toml libs/*/pyproject.toml services/*/pyproject.toml Makefile tools/venv_python.py
	$(UV) sync --frozen --all-packages --python "$(VENV_PYTHON)"
	@touch $@

run: .venv/.synced
	$(RUN) dealflow-run

test: lint
	tools/test_packages.sh
	$(RUN) pytest

unit: .venv/.synced
	$(RUN) pytest -m "not integration" libs services -k "unit or contracts"

component: .venv/.synced
	$(RUN) pytest services -m "not integration"

integration: .venv/.synced
	tools/test_packages.sh
	$(RUN) pytest tests/integration

lint: .venv/.synced
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy --strict libs/common/src services/*/src/*/domain services/*/src/*/application
	$(RUN) mypy libs services/*/src

bench: .venv/.synced
	@$(RUN) python -m bench.deals $(BENCH_ARGS)

bench-requests: .venv/.synced
	@$(RUN) python -m bench.requests $(BENCH_ARGS)

bench-instructions: .venv/.synced
	@$(RUN) python -m bench.instructions $(BENCH_ARGS)

bench-purge: .venv/.synced
	@$(RUN) python -m bench.purge $(BENCH_ARGS)

bench-sequences: .venv/.synced
	@$(RUN) python -m bench.sequences $(BENCH_ARGS)

bench-reporting: .venv/.synced
	@$(RUN) python -m bench.reporting $(BENCH_ARGS)

chaos: .venv/.synced
	@$(RUN) python -m chaos $(CHAOS_ARGS)

contracts: .venv/.synced
	$(RUN) python -m dealflow_common.contracts.export libs/common/schemas
	$(RUN) python -m tools.generate_docs

format: .venv/.synced
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

clean:
	rm -rf .venv $(TOOLS) data .pytest_cache .mypy_cache .ruff_cache
