# Two-command quick start:  `make demo` (the main job)  and  `make test` (the test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test test-fast lint install lock clean

# requirements/lock.txt pins every package (and the CUDA wheels of the image) to the versions
# the demo's tables (README, docs/RESULTS.md) and CI ran with; pyproject.toml keeps compatible
# ranges for library users.
LOCK := requirements/lock.txt

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/cbst-tf demo --out demo_out

# Two worker processes, one test file at a time each, in collection order (tests/conftest.py
# collects the longest files first and gives each worker one TensorFlow thread); -n 0 runs serially.
TEST_WORKERS ?= 2
XDIST := -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test: $(STAMP)
	$(BIN)/python -m pytest -q $(XDIST)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q $(XDIST) -m "not slow"

# Refresh the lock (newest versions within pyproject.toml's ranges, for Python >= 3.11 on every
# platform). Then re-measure the demo and update the golden digest of tests/test_drift.py and the
# demo's tables (README, docs/RESULTS.md) together.
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml requirements/lock.in --extra dev --universal \
		--python-version 3.11 --output-file $(LOCK)

lint: $(STAMP)
	$(BIN)/ruff check cbst_tf tests bench

clean:
	rm -rf $(VENV) demo_out runs .pytest_cache
