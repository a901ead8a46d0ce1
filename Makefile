# The two quick-start targets (demo, test) create the virtual environment on first use.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-fast lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/gateway demo

# Installs what the tests need beyond Python packages (chromium for the browser tests).
test: $(STAMP)
	./scripts/test-deps
	$(BIN)/ruff check gateway schemas tests
	$(BIN)/python -m pytest -q

# The inner loop: everything but the tests marked slow (chaos, bench, long broker runs).
test-fast: $(STAMP)
	$(BIN)/ruff check gateway schemas tests
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check gateway schemas tests
	$(BIN)/ruff format --check gateway schemas tests
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/gateway bench

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
