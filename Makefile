# Every target sets itself up: a fresh machine needs only Python 3 and make.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DB     ?= $(CURDIR)/.demo/workflows.db

.PHONY: demo test lint bench chaos clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,lint,gui]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m see_persistence demo --db '$(DB)'

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests $(wildcard tools) examples
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) tools/bench.py

chaos: $(STAMP)
	$(PY) tools/chaos.py --clients 4 --seconds 30 --kill-every 2

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info
