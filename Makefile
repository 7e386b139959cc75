# Every project command in one place. CPU machines: install with the constraints file (see README).
PY ?= python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: install test test-fast test-slow lint format run bench

install:
	$(PY) -m pip install -c constraints/cpu.txt -e ".[test]"

lint:
	ruff check .
	ruff format --check .
	$(PY) -m compileall -q run.py pipeline models actors trainers loop conf bench

# The default test run (CI): lint + every test not marked slow (unit + ray tiers).
test: lint
	$(PY) -m pytest -m "not slow" -q

test-fast:
	$(PY) -m pytest -m "not slow and not ray" -q

test-slow:
	$(PY) -m pytest -m slow -q

format:
	ruff format .
	ruff check --fix .

run:
	$(PY) run.py

bench:
	$(PY) bench/search_throughput.py
