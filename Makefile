# Scaling Machine Learning Models Using Dask: build, test and run the book.
# `make book` and `make test` work on a fresh clone: they create .venv and install the pins first.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
# The oldest Python the pinned packages support (tests/test_environment.py derives it from them).
MINIMUM_PYTHON := 3.11
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
# A copy of the original 20news-bydate.tar.gz for offline use; without it the data step downloads.
NEWSGROUPS_ARCHIVE ?= ../shared/data/20news-bydate.tar.gz
# The tests of the offline import read the same archive (tests/conftest.py).
export NEWSGROUPS_ARCHIVE
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb)) $(sort $(wildcard notebooks/appendix_*.ipynb))
# Marks every process a run starts (kernels, Dask workers inherit it): see check-processes.
BOOK_RUN_ID ?= $(shell date +%s%N)-$(shell echo $$PPID)
export BOOK_RUN_ID
# The kernels that execute the notebooks talk to their client over CurveZMQ-encrypted sockets
# (ipykernel 7 warns about every unencrypted kernel); scaling_ml/kernel_provisioner.py.
export JUPYTER_DEFAULT_PROVISIONER_NAME := encrypted-local-provisioner
# Jupyter Book's execution cache: a notebook whose code cells are unchanged is not re-executed.
# The cache's key covers each notebook's code; these files change outputs too, so a change in any
# of them empties the cache (make book then executes every notebook).
EXECUTION_CACHE := _build/.jupyter_cache
EXECUTION_CACHE_INPUTS := requirements.txt requirements-dev.txt constraints.txt pyproject.toml \
  $(sort $(wildcard scaling_ml/*.py)) $(sort $(wildcard benchmarks/results/*.json))
CELL_TIMEOUT := 900
NBVAL := --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout=$(CELL_TIMEOUT)

.PHONY: help env data book render test test-external test-slurm test-latest lab notebooks bench clean check-processes execution-cache learner-notebooks wheelhouse

help:
	@echo "make book        build the executed website into _build/html (unchanged notebooks from the cache)"
	@echo "make test        unit tests, strict nbval over every notebook, checks of the built site"
	@echo "make lab         JupyterLab on notebooks/"
	@echo "make notebooks   re-execute every notebook in place (commit the outputs)"
	@echo "make bench       run every benchmark (writes benchmarks/results/*.json and figs/)"
	@echo "make test-latest the suite against the newest releases, in .venv-latest (a report in _build/)"
	@echo "make learner-notebooks  the notebooks without solutions or outputs, for a workshop (OUT=...)"
	@echo "make wheelhouse  the learner set's wheels for an offline install (WHEELHOUSE_DIR=...), then"
	@echo "                 on a learner's machine: make env WHEELHOUSE=that-folder"
	@echo "make clean       remove build output (the execution cache too) and the virtual environment"

# The learner set (requirements.txt) and the tools that build and test the book on top of it
# (requirements-dev.txt). A learner who only runs the notebooks needs the first: see README.md.
# With WHEELHOUSE=folder (a wheelhouse from `make wheelhouse`, say on a USB stick) the learner set
# and the book's package are installed from that folder alone, with no network.
WHEELHOUSE ?=
$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] < tuple(map(int, "$(MINIMUM_PYTHON)".split("."))))' \
	  || { echo "error: $(PYTHON) is Python $$($(PYTHON) -c 'import platform; print(platform.python_version())'); the pinned packages need $(MINIMUM_PYTHON) or newer: make PYTHON=python$(MINIMUM_PYTHON) ..." >&2; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
ifeq ($(WHEELHOUSE),)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps -e .
else
	$(PY) -m pip install --quiet --no-index --find-links "$(WHEELHOUSE)" -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-index --find-links "$(WHEELHOUSE)" --no-deps -e .
endif
	touch $@

env: $(VENV)/.installed

data: env
	$(PY) -m scaling_ml.data ensure-newsgroups --archive "$(NEWSGROUPS_ARCHIVE)"

# Execute every notebook against a LocalCluster (or take its outputs from the execution cache when
# its code is unchanged) and build the site; any execution error or Sphinx warning fails the build
# (-W), and so does an execution report left in _build. The status page and the favicon are written
# when the build starts (book/_ext/generated_pages.py). A clean build: make clean book.
book: data execution-cache
	rm -rf _build/html/reports
	$(BIN)/jupyter-book build . -W -n --keep-going
	$(PY) -m scaling_ml.site_check _build/html
	@$(MAKE) --no-print-directory check-processes

# Render the committed outputs without executing (make test: nbval has already executed them).
render: env
	sed 's/execute_notebooks: cache/execute_notebooks: "off"/' _config.yml > _build_config_render.yml
	grep -q 'execute_notebooks: "off"' _build_config_render.yml
	$(BIN)/jupyter-book build . --config _build_config_render.yml -W -n --keep-going; \
	  status=$$?; rm -f _build_config_render.yml; exit $$status

# Strict nbval runs every notebook once. Chapters 1, 3 and 4 run on the external-cluster lane
# (tests/test_external_cluster.py: workers in their own network namespaces, without the book's
# package), so the LocalCluster pass leaves them out; chapter 0 runs in both, because its cell with
# the LocalCluster(...) call is the default path every reader takes first.
EXTERNAL_LANE_CHAPTERS := 00 01 03 04
export LANE_CHAPTERS := $(EXTERNAL_LANE_CHAPTERS)
LOCAL_NBVAL_NOTEBOOKS := $(filter-out $(foreach chapter,$(filter-out 00,$(EXTERNAL_LANE_CHAPTERS)),notebooks/$(chapter)_%),$(NOTEBOOKS))

test: data render
	$(BIN)/ruff check .
	$(BIN)/pytest tests $(LOCAL_NBVAL_NOTEBOOKS) $(NBVAL) --durations=25
	@$(MAKE) --no-print-directory check-processes

notebooks: data
	for notebook in $(or $(NB),$(NOTEBOOKS)); do \
	  echo "executing $$notebook"; \
	  $(BIN)/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=$(CELL_TIMEOUT) "$$notebook"; \
	done
	$(PY) -m scaling_ml.status --stamp-notebooks $(NB)
	$(PY) -m scaling_ml.workshop schedule
	@$(MAKE) --no-print-directory check-processes

bench: data
	for script in benchmarks/[0-9a-z]*.py; do echo "running $$script"; $(PY) "$$script"; done

# The two lanes of chapter 5 on their own (make test runs them too).
test-external: data
	$(BIN)/pytest -s tests/test_external_cluster.py
	@$(MAKE) --no-print-directory check-processes

test-slurm: data
	$(BIN)/pytest -s tests/test_slurm.py

lab: data
	$(BIN)/jupyter lab notebooks/

# Empty the execution cache when anything besides a notebook's code changed what it prints.
execution-cache:
	@key=$$(cat $(EXECUTION_CACHE_INPUTS) | sha256sum | cut -d' ' -f1); \
	if [ "$$(cat $(EXECUTION_CACHE)/inputs.sha256 2>/dev/null)" != "$$key" ]; then \
	  if [ -d $(EXECUTION_CACHE) ]; then echo "pins, scaling_ml or benchmark results changed: emptying $(EXECUTION_CACHE)"; fi; \
	  rm -rf $(EXECUTION_CACHE) && mkdir -p $(EXECUTION_CACHE) && echo "$$key" > $(EXECUTION_CACHE)/inputs.sha256; \
	fi

test-latest:
	bash scripts/test_latest.sh

# No process that this run started (a Dask scheduler or worker, a Jupyter kernel or server, a
# browser) may outlive it. Only processes carrying this run's BOOK_RUN_ID are checked: a learner's
# own JupyterLab and its kernels are not (tests/test_leftover_processes.py, and .ci/run runs the
# suite beside an unrelated kernel).
check-processes:
	@$(PY) tests/leftover_processes.py

clean:
	rm -rf _build $(VENV) .pytest_cache

# Instructors: the learners' copies of the notebooks (solutions emptied, outputs cleared).
LEARNER_NOTEBOOKS ?= _build/learner-notebooks
learner-notebooks: env
	$(PY) -m scaling_ml.workshop learner-notebooks "$(LEARNER_NOTEBOOKS)" --overwrite

# Instructors: every wheel of the learner set for Linux x86_64 and macOS (arm64, x86_64), Python
# 3.11-3.13, into one folder to copy to USB sticks; its report.txt says what is complete.
WHEELHOUSE_DIR ?= _build/wheelhouse
wheelhouse: env
	$(PY) -m scaling_ml.wheelhouse build "$(WHEELHOUSE_DIR)"
