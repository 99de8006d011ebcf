# Every target sets itself up: a fresh machine needs only Python 3 and make.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DB     ?= $(CURDIR)/.demo/workflows.db

.PHONY: demo test test-unit lint bench chaos clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,lint]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m see_persistence demo --db '$(DB)'

# Most process-level tests wait on other processes more than they compute: 4 workers keep
# two cores busy. A module runs on one worker, its module-scoped fixtures built once.
TEST_WORKERS ?= 4

test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope

# The edit-and-run loop: the tests that start no process, without the long property tests.
test-unit: $(STAMP)
	$(PY) -m pytest -m 'unit and not slow'

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests $(wildcard tools)
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) tools/bench.py

chaos: $(STAMP)
	$(PY) tools/chaos.py --clients 4 --seconds 30 --kill-every 2

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info
