# Two-command set-up: `make demo` runs the main job, `make test` runs the tests. Each first installs
# whatever is missing into .venv (an existing .venv is reused; only missing packages are installed).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.defm_ros-deps

.PHONY: venv demo test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) requirements.txt requirements-dev.txt setup.py
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/defm-ros demo

test: $(STAMP)
	$(PY) -m ruff check defm_ros test bench launch
	$(PY) -m pytest -q test

lint: $(STAMP)
	$(PY) -m ruff check defm_ros test bench launch

bench: $(STAMP)
	$(PY) bench/bench_preprocess.py

clean:
	rm -rf demo_out .pytest_cache
