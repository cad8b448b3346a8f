# The two quick-start commands (README) and CI all go through here.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: simulate test lint unit bench

# A virtualenv with heatshift and its dev tools, rebuilt when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Run the fleet simulator on the built-in scenario, all four policies.
simulate: $(VENV)/.installed
	$(BIN)/heatshift simulate --plot heatshift-winter-week.png

# Lint, type-check, check the layering contracts, run the tests.
test: lint unit

lint: $(VENV)/.installed
	$(BIN)/ruff check operator tests scripts
	$(BIN)/ruff format --check operator tests scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: $(VENV)/.installed
	$(BIN)/pytest

# Planner scale benchmark (prints numbers; asserts nothing).
bench: $(VENV)/.installed
	$(BIN)/heatshift bench planner --jobs 1000 --sites 20
	$(BIN)/heatshift bench planner --jobs 10000 --sites 200
