# Every target sets itself up: a fresh machine needs only Python 3 and make.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DB     ?= $(CURDIR)/.demo/workflows.db

.PHONY: demo test test-unit test-lowest lint bench chaos clean dist check-wheel

# The version is read from __init__.py, so an editable install's metadata is stale after a bump.
$(STAMP): pyproject.toml src/see_persistence/__init__.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,lint,gui,postgresql]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m see_persistence demo --db '$(DB)'

# Most process-level tests wait on other processes more than they compute: 6 workers keep two
# cores busy (measured on 2 cores, the longest modules first: 6 workers 160-179 s, 5 workers
# 183 s; before that order, 6 workers 182 s, 4 workers 195 s, 8 workers 206 s).
# A module runs on one worker, its module-scoped fixtures built once.
TEST_WORKERS ?= 6

# The suite starts about a thousand Python processes (writers, clients, commands, tools) and
# its pytest workers: where PYTHONDONTWRITEBYTECODE is set, each of them compiled every
# project module it imported, and each worker rewrote every test module, anew. Lifted for the
# tests, the first process to import a module caches its bytecode for all the others.
CACHE_BYTECODE := env -u PYTHONDONTWRITEBYTECODE

test: $(STAMP)
	$(CACHE_BYTECODE) $(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

# The edit-and-run loop: the tests that start no process, without the long property tests.
test-unit: $(STAMP)
	$(CACHE_BYTECODE) $(PY) -m pytest -m 'unit and not slow'

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests $(wildcard tools) examples
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) tools/bench.py

chaos: $(STAMP)
	$(PY) tools/chaos.py --clients 4 --seconds 30 --kill-every 2

clean:
	rm -rf $(VENV) $(LOWEST) dist .demo .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info

# --- The lowest dependency versions, the wheel and the sdist ----------------------------------
LOWEST       := .venv-lowest
LOWEST_STAMP := $(LOWEST)/.installed
TEST_ARGS    ?=

# A venv of its own, made anew whenever the constraints change, so nothing newer lingers in it.
$(LOWEST_STAMP): pyproject.toml constraints/lowest.txt src/see_persistence/__init__.py
	rm -rf $(LOWEST)
	$(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/python -m pip install --quiet --upgrade pip
	$(LOWEST)/bin/python -m pip install --quiet -c constraints/lowest.txt -e '.[test,postgresql]'
	touch $@

# The same test command as `make test`, on the lowest versions pyproject.toml allows.
# TEST_ARGS picks a part of the suite: make test-lowest TEST_ARGS='tests/test_reader.py'
test-lowest: $(LOWEST_STAMP)
	$(LOWEST)/bin/python -m pip freeze --exclude-editable | grep -iE '^(pyzmq|msgpack|psutil|pydantic)'
	$(CACHE_BYTECODE) $(LOWEST)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder $(TEST_ARGS)

# The sdist, then the wheel built from it (build's default), and a check of what each holds.
dist: $(STAMP)
	rm -rf dist
	$(PY) -m build --quiet --outdir dist .
	$(PY) tools/check_dist.py dist

# What users install is what is tested: the wheel in a fresh venv, run from outside the tree.
check-wheel: dist
	$(PY) tools/check_dist.py dist --install
