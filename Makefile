# Two-command set-up: `make demo` runs the main job, `make test` runs the tests. Each first installs
# whatever is missing into .venv (an existing .venv is reused; only missing packages are installed).
# `make test PYTHON=python3.10` builds its own .venv-python3.10 beside .venv. `make test` also runs the
# suite on Python 3.10 (Humble, JetPack 6) when one runs here (on PATH or in pyenv), as on CI.
PYTHON ?= python3
VENV   ?= $(if $(filter python3,$(PYTHON)),.venv,.venv-$(notdir $(PYTHON)))
# An interpreter of that name that runs: on PATH, else pyenv's (its shims refuse versions not selected).
runnable = $(firstword $(foreach p,$(1) $(wildcard $(HOME)/.pyenv/versions/$(subst python,,$(notdir $(1)))*/bin/$(notdir $(1))),\
             $(shell $(p) -c 'print("$(p)")' 2>/dev/null)))
PYBIN  := $(call runnable,$(PYTHON))
PY310  := $(call runnable,python3.10)
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.defm_ros-deps
# The LeRobot oracle (tests only): its own venv of the same interpreter, which sees .venv's packages
# (torch, numpy) after its own through a .pth file, so its pins shadow ours without a second torch.
ORACLE := .venv-lerobot
ORACLE_STAMP := $(ORACLE)/.oracle-deps

.PHONY: venv oracle demo test test-suite lint bench clean

$(PY):
	@test -n "$(PYBIN)" || { echo "no working $(PYTHON) found" >&2; exit 1; }
	$(PYBIN) -m venv $(VENV)

$(STAMP): $(PY) requirements.txt requirements-dev.txt setup.py
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

venv: $(STAMP)

$(ORACLE_STAMP): requirements-lerobot.txt | $(STAMP)
	$(PY) -m venv $(ORACLE)
	$(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > \
	  "$$($(ORACLE)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/defm_ros_base.pth"
	$(ORACLE)/bin/python -m pip install -q -r requirements-lerobot.txt
	$(ORACLE)/bin/python -m pip install -q --no-deps lerobot==0.4.4
	$(ORACLE)/bin/python -c 'from lerobot.datasets.lerobot_dataset import LeRobotDataset'
	@touch $@

oracle: $(ORACLE_STAMP)

demo: $(STAMP)
	$(VENV)/bin/defm-ros demo

test: $(STAMP) $(if $(filter python3,$(PYTHON)),$(ORACLE_STAMP))
	$(PY) -m ruff check defm_ros test bench launch
	$(PY) -m pytest -q test
ifeq ($(PYTHON),python3)
	@if [ -n "$(PY310)" ]; then $(MAKE) --no-print-directory test-suite PYTHON=python3.10; \
	else echo "NOTE: no working python3.10 found: the Python 3.10 run was not done"; fi
endif

test-suite: $(STAMP)  # the tests alone, on $(PYTHON)
	$(PY) -m pytest -q test

lint: $(STAMP)
	$(PY) -m ruff check defm_ros test bench launch

bench: $(STAMP)
	$(PY) bench/bench_preprocess.py

clean:
	rm -rf demo_out .pytest_cache
