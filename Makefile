# Scaling Machine Learning Models Using Dask: build, test and run the book.
# `make book` and `make test` work on a fresh clone: they create .venv and install the pins first.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
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
CELL_TIMEOUT := 900
NBVAL := --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout=$(CELL_TIMEOUT)

.PHONY: help env data book render test test-external test-slurm test-latest lab notebooks bench clean check-processes

help:
	@echo "make book        build the executed website into _build/html"
	@echo "make test        unit tests, strict nbval over every notebook, checks of the built site"
	@echo "make lab         JupyterLab on notebooks/"
	@echo "make notebooks   re-execute every notebook in place (commit the outputs)"
	@echo "make bench       run every benchmark (writes benchmarks/results/*.json and figs/)"
	@echo "make test-latest the suite against the newest releases, in .venv-latest (a report in _build/)"
	@echo "make clean       remove build output and the virtual environment"

$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

env: $(VENV)/.installed

data: env
	$(PY) -m scaling_ml.data ensure-newsgroups --archive "$(NEWSGROUPS_ARCHIVE)"

# Execute every notebook against a LocalCluster and build the site; any execution error or
# Sphinx warning fails the build (-W), and so does an execution report left in _build.
book: data
	rm -rf _build/html/reports
	$(PY) -m scaling_ml.status
	$(BIN)/jupyter-book build . -W -n --keep-going
	$(PY) -m scaling_ml.site_check _build/html
	@$(MAKE) --no-print-directory check-processes

# Render the committed outputs without executing (make test: nbval has already executed them).
render: env
	$(PY) -m scaling_ml.status
	sed 's/execute_notebooks: force/execute_notebooks: "off"/' _config.yml > _build_config_render.yml
	$(BIN)/jupyter-book build . --config _build_config_render.yml -W -n --keep-going; \
	  status=$$?; rm -f _build_config_render.yml; exit $$status

test: data render
	$(BIN)/ruff check .
	$(BIN)/pytest tests notebooks $(NBVAL)
	@$(MAKE) --no-print-directory check-processes

notebooks: data
	for notebook in $(or $(NB),$(NOTEBOOKS)); do \
	  echo "executing $$notebook"; \
	  $(BIN)/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=$(CELL_TIMEOUT) "$$notebook"; \
	done
	$(PY) -m scaling_ml.status --stamp-notebooks $(NB)
	@$(MAKE) --no-print-directory check-processes

bench: data
	for script in benchmarks/[0-9a-z]*.py; do echo "running $$script"; $(PY) "$$script"; done

# The two lanes of chapter 5 on their own (make test runs them too).
test-external: data
	$(BIN)/pytest -s tests/test_external_cluster.py
	@$(MAKE) --no-print-directory check-processes

test-slurm: env
	$(BIN)/pytest -s tests/test_slurm.py

lab: data
	$(BIN)/jupyter lab notebooks/

test-latest:
	bash scripts/test_latest.sh

# No dask scheduler, worker or Jupyter kernel that this run started may outlive it. Only processes
# carrying this run's BOOK_RUN_ID are checked: a learner's own JupyterLab and its kernels are not.
check-processes:
	@$(PY) tests/leftover_processes.py

clean:
	rm -rf _build $(VENV) .pytest_cache
