# Two-command set-up: `make demo` runs the main job, `make test` runs the tests. Each first installs
# whatever is missing into .venv (an existing .venv is reused; only missing packages are installed).
# `make test PYTHON=python3.10` builds its own .venv-python3.10 beside .venv. `make test` also runs the
# suite on Python 3.10 (Humble, JetPack 6) when python3.10 is on the machine, as CI's is.
PYTHON ?= python3
VENV   ?= $(if $(filter python3,$(PYTHON)),.venv,.venv-$(notdir $(PYTHON)))
PY310  ?= python3.10
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.defm_ros-deps

.PHONY: venv demo test test-suite lint bench clean

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
ifeq ($(PYTHON),python3)
	@if command -v $(PY310) >/dev/null; then $(MAKE) --no-print-directory test-suite PYTHON=$(PY310); \
	else echo "NOTE: $(PY310) not found: the Python 3.10 run was not done"; fi
endif

test-suite: $(STAMP)  # the tests alone, on $(PYTHON)
	$(PY) -m pytest -q test

lint: $(STAMP)
	$(PY) -m ruff check defm_ros test bench launch

bench: $(STAMP)
	$(PY) bench/bench_preprocess.py

clean:
	rm -rf demo_out .pytest_cache
