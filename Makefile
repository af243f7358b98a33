# Scaling Machine Learning Models Using Dask: build, test and run the book.
# `make book` and `make test` work on a fresh clone: they create .venv and install the pins first.
# `make help` lists every target with its variables; CONTRIBUTING.md says when to run which.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
# The oldest Python the pinned packages support (tests/test_environment.py derives it from them).
MINIMUM_PYTHON := 3.11
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
# A copy of the original 20news-bydate.tar.gz for offline use; without it the data step downloads.
# The tests of the offline import read the same archive (tests/conftest.py).
NEWSGROUPS_ARCHIVE ?= ../shared/data/20news-bydate.tar.gz
export NEWSGROUPS_ARCHIVE
# The notebooks in reading order, as the table of contents lists them (scaling_ml.notebook_paths).
NOTEBOOKS := $(shell sed -n 's|^ *- file: *\(notebooks/[^ ]*\) *$$|\1.ipynb|p' _toc.yml)
# Seconds a cell may run: _config.yml's execute.timeout, for every runner (tools.CELL_TIMEOUT).
CELL_TIMEOUT := $(shell sed -n 's/^ *timeout: *\([0-9]*\).*/\1/p' _config.yml)
NBVAL := --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout=$(CELL_TIMEOUT)
# Chapters whose strict nbval runs on chapter 5's external-cluster lane (tests/test_external_cluster.py,
# in make test-cluster) instead of a LocalCluster; chapter 0 runs on both, because its cell with the
# LocalCluster(...) call is the path every reader takes first.
export LANE_CHAPTERS := 00 01 03 04
LOCAL_NBVAL_NOTEBOOKS := $(filter-out $(foreach chapter,$(filter-out 00,$(LANE_CHAPTERS)),notebooks/$(chapter)_%),$(NOTEBOOKS))
# Marks every process a run starts (kernels, Dask workers inherit it): see check-processes.
BOOK_RUN_ID ?= $(shell date +%s%N)-$(shell echo $$PPID)
export BOOK_RUN_ID
# The kernels that execute the notebooks talk to their client over CurveZMQ-encrypted sockets
# (ipykernel 7 warns about every unencrypted kernel): tools/kernel_provisioner.py.
export JUPYTER_DEFAULT_PROVISIONER_NAME := encrypted-local-provisioner
# Jupyter Book's execution cache keys each notebook on its code cells; these files change outputs
# too, so a change in any of them empties the cache (make book then executes every notebook).
EXECUTION_CACHE := _build/.jupyter_cache
EXECUTION_CACHE_INPUTS := requirements.txt requirements-dev.txt constraints.txt pyproject.toml \
  $(sort $(wildcard scaling_ml/*.py)) $(sort $(wildcard benchmarks/results/*.json))
BENCHMARKS ?= $(sort $(basename $(notdir $(wildcard benchmarks/[a-z]*.py))))
BENCH_ARGS ?=
PYTEST_ARGS ?=
NB ?=
WHEELHOUSE ?=
WHEELHOUSE_DIR ?= _build/wheelhouse
LEARNER_NOTEBOOKS ?= _build/learner-notebooks

.PHONY: help env data lab book render notebooks bench check test-notebooks test-site test-cluster test \
  test-latest learner-notebooks wheelhouse check-processes execution-cache clean dashboard-figures

help: ## this list
	@awk -F':[^#]*## ' '/^[a-z-]+:[^#]*## /{printf "make %-17s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# The learner set (requirements.txt) and the tools that build and test the book on top of it
# (requirements-dev.txt). A learner who only runs the notebooks needs the first: see README.md.
$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	@"$(PYTHON)" -c 'import sys; sys.exit(sys.version_info[:2] < tuple(map(int, "$(MINIMUM_PYTHON)".split("."))))' \
	  || { echo "error: $(PYTHON) is Python $$("$(PYTHON)" -c 'import platform; print(platform.python_version())'); the pinned packages need $(MINIMUM_PYTHON) or newer: make PYTHON=python$(MINIMUM_PYTHON) ..." >&2; exit 1; }
	test -x "$(PY)" || "$(PYTHON)" -m venv "$(VENV)"
ifeq ($(WHEELHOUSE),)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps -e .
else
	$(PY) -m pip install --quiet --no-index --find-links "$(WHEELHOUSE)" -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-index --find-links "$(WHEELHOUSE)" --no-deps -e .
endif
	touch $@

env: $(VENV)/.installed ## .venv with the pins (PYTHON=python3.12; WHEELHOUSE=folder: the learner set offline)

data: env ## 20 Newsgroups into scikit-learn's cache (NEWSGROUPS_ARCHIVE=path/to/20news-bydate.tar.gz)
	$(PY) -m scaling_ml.data ensure-newsgroups --archive "$(NEWSGROUPS_ARCHIVE)"

lab: data ## JupyterLab on notebooks/
	$(BIN)/jupyter lab notebooks/

# Any execution error or Sphinx warning fails the build (-W), and so does an execution report left
# in _build (Jupyter Book 1 exits 0 when a notebook fails). The status page and the favicon are
# written when the build starts (book/_ext/generated_pages.py).
book: data execution-cache ## execute the notebooks (unchanged ones from the cache), build _build/html
	rm -rf _build/html/reports
	$(BIN)/jupyter-book build . -W -n --keep-going
	$(PY) -m tools.site_check _build/html
	@$(MAKE) --no-print-directory check-processes

render: env ## build _build/html from the committed outputs, executing nothing
	sed 's/execute_notebooks: cache/execute_notebooks: "off"/' _config.yml > _build_config_render.yml
	grep -q 'execute_notebooks: "off"' _build_config_render.yml
	$(BIN)/jupyter-book build . --config _build_config_render.yml -W -n --keep-going; \
	  status=$$?; rm -f _build_config_render.yml; exit $$status

# --coalesce-streams: a progress bar's redraws are committed as its final line.
notebooks: data ## re-execute the notebooks in place and stamp their times (NB=notebooks/NN_x.ipynb: only it)
	for notebook in $(or $(NB),$(NOTEBOOKS)); do \
	  echo "executing $$notebook"; \
	  $(BIN)/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=$(CELL_TIMEOUT) "$$notebook"; \
	  $(BIN)/jupyter nbconvert --to notebook --inplace --coalesce-streams "$$notebook"; \
	done
	$(PY) -m tools.status --stamp-notebooks $(NB)
	$(PY) -m tools.workshop schedule
	@$(MAKE) --no-print-directory check-processes

bench: data ## measure every claim (BENCHMARKS="distributed_training ..."; BENCH_ARGS=--quick or --reclaim)
	for name in $(BENCHMARKS); do echo "running benchmarks.$$name $(BENCH_ARGS)"; $(PY) -m benchmarks.$$name $(BENCH_ARGS); done

# Runs the chapters' own cells in a kernel and photographs the live dashboard in headless Chromium.
dashboard-figures: data ## figs/dashboard_*.png and chapter 2's performance report, from real runs (NB="00 06": only those)
	$(PY) -m tools.dashboard_figures $(NB)
	@$(MAKE) --no-print-directory check-processes

# The tiers of make test. Every test runs in exactly one: a test marked `site` in test-site, one
# marked `cluster` in test-cluster (tests/conftest.py adds Scale-up runs), the rest in check.
# PYTEST_ARGS reaches pytest in each, for example PYTEST_ARGS="-k slurm -x".
check: data ## ruff and the unit tests: no root, browser or notebook execution, under two minutes
	$(BIN)/ruff check .
	$(BIN)/pytest tests -m "not site and not cluster" --durations=10 $(PYTEST_ARGS)
	@$(MAKE) --no-print-directory check-processes

test-notebooks: data ## strict nbval of every notebook not on the external lane (NB=...: those instead)
	$(BIN)/pytest $(or $(NB),$(LOCAL_NBVAL_NOTEBOOKS)) $(NBVAL) $(PYTEST_ARGS)
	@$(MAKE) --no-print-directory check-processes

test-site: render ## the built site in headless Chromium (needs chromium)
	$(BIN)/pytest tests -m site $(PYTEST_ARGS)
	@$(MAKE) --no-print-directory check-processes

# Two test files at a time (pytest-xdist): part of this tier waits on Slurm, kernels and starting
# clusters, and the other file fills the wait. A file's tests stay together in one process, files
# start in collection order (tests/conftest.py puts the longest first).
test-cluster: data ## chapter 5's lanes (root; LANE_CHAPTERS="00 01"), Scale-up runs, slow tests
	$(BIN)/pytest tests -m cluster -n 2 --dist loadfile --no-loadscope-reorder --durations=25 $(PYTEST_ARGS)
	@$(MAKE) --no-print-directory check-processes

test: check test-notebooks test-site test-cluster ## all four tiers: what CI runs (.ci/run)

test-latest: ## the suite against the newest releases, in .venv-latest (report: _build/test-latest)
	bash scripts/test_latest.sh

learner-notebooks: env ## the notebooks without solutions or outputs (LEARNER_NOTEBOOKS=folder)
	$(PY) -m tools.workshop learner-notebooks "$(LEARNER_NOTEBOOKS)" --overwrite

# For Linux x86_64 and macOS (arm64, x86_64), Python 3.11-3.13; its report.txt says what is complete.
wheelhouse: env ## the learner set's wheels for USB sticks (WHEELHOUSE_DIR=folder; then make env WHEELHOUSE=...)
	$(PY) -m tools.wheelhouse build "$(WHEELHOUSE_DIR)"

# Only processes carrying this run's BOOK_RUN_ID are checked: a learner's own JupyterLab and its
# kernels are not (tests/test_leftover_processes.py; .ci/run runs the suite beside such a kernel).
check-processes: ## fail if a process this run started still runs (a cluster, kernel or browser)
	@$(PY) -m tools.leftover_processes

execution-cache: ## empty Jupyter Book's execution cache if the pins, scaling_ml or results changed
	@key=$$(cat $(EXECUTION_CACHE_INPUTS) | sha256sum | cut -d' ' -f1); \
	if [ "$$(cat $(EXECUTION_CACHE)/inputs.sha256 2>/dev/null)" != "$$key" ]; then \
	  if [ -d $(EXECUTION_CACHE) ]; then echo "pins, scaling_ml or benchmark results changed: emptying $(EXECUTION_CACHE)"; fi; \
	  rm -rf $(EXECUTION_CACHE) && mkdir -p $(EXECUTION_CACHE) && echo "$$key" > $(EXECUTION_CACHE)/inputs.sha256; \
	fi

clean: ## remove _build (the execution cache too) and .venv
	rm -rf _build $(VENV) .pytest_cache
