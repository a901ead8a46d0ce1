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

# Tests run in TEST_WORKERS processes (pytest-xdist), each with its own embedded broker:
# most broker tests wait on group joins, timeouts and subprocesses rather than compute, so
# four workers on two cores take about a third of the serial time. `worksteal` keeps the
# few minute-long tests from leaving one worker with a long tail. TEST_WORKERS=0 runs
# them in one process.
TEST_WORKERS ?= 4
PYTEST := $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

# Installs what the tests need beyond Python packages (chromium for the browser tests).
test: $(STAMP)
	./scripts/test-deps
	$(BIN)/ruff check gateway schemas tests
	$(PYTEST)

# The inner loop: everything but the tests marked slow (chaos, bench, long broker runs).
test-fast: $(STAMP)
	$(BIN)/ruff check gateway schemas tests
	$(PYTEST) -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check gateway schemas tests
	$(BIN)/ruff format --check gateway schemas tests
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/gateway bench

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
