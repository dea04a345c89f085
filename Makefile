# The two commands of the README. Each creates .venv and installs frameflow
# into it on first use (and again whenever setup.cfg or pyproject.toml change).
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed

.PHONY: run test lint suite clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet --config-settings editable_mode=compat -e '.[dev]'
	touch $(STAMP)

## run: the pipeline end to end on the embedded Redis (REDIS_URL to use another)
run: $(STAMP)
	$(VENV)/bin/frameflow demo

## test: lint, the whole test suite, then Dramatiq's own suite against our broker
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest
	$(VENV)/bin/python scripts/dramatiq_suite.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) .dramatiq-suite .pytest_cache
