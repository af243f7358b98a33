#!/usr/bin/env bash
# make test-latest: the book against the newest release of every direct dependency.
#
# 1. Creates .venv-latest with the pins of requirements*.txt lifted, and runs the unit tests and
#    strict nbval of every notebook there (junit.xml).
# 2. Runs strict nbval of every notebook with the pins too (.venv, made by `make env`;
#    junit-pinned.xml), or reuses an earlier run's file: PINNED_JUNIT=path/to/junit.xml.
# 3. Writes _build/test-latest/report.md: the versions it got, a table chapter by chapter
#    (pinned set / newest releases: pass, or the first error), and every failing test.
#
# What the newest-releases lane compares differently (and nothing else):
# - the versions a notebook prints, the setup check's summary line and scores printed with three
#   decimals, masked by tests/nbval_sanitize_latest.cfg on top of tests/nbval_sanitize.cfg;
# - FutureWarning and DeprecationWarning are ignored (PYTHONWARNINGS, inherited by the kernels and
#   the Dask workers): newer libraries announce changed defaults with them (scikit-learn 1.8+ on
#   LogisticRegressionCV, with no argument that silences it in 1.7.2 as well). They announce a
#   change, not a failure; the pinned lane (make test) still fails on any unexplained warning.
# NOTEBOOKS="notebooks/07_without_dask_ml.ipynb ..." limits both runs to those notebooks;
# TESTS= (empty) leaves out the unit tests (default TESTS=tests).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv-latest
REPORT_DIR=_build/test-latest
TESTS=${TESTS-tests}
mkdir -p "$REPORT_DIR"

# The requirement files without their versions (and without `-r` includes): the newest release
# of each direct dependency.
cat requirements.txt $(test -f requirements-dev.txt && echo requirements-dev.txt) \
  | sed -e 's/#.*//' -e '/^\s*-r/d' -e 's/==[^;]*//' -e 's/\s*$//' -e '/^\s*$/d' \
  | sort -u > "$REPORT_DIR/requirements-latest.txt"
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet --upgrade -r "$REPORT_DIR/requirements-latest.txt"
"$VENV/bin/python" -m pip install --quiet --no-deps -e .
cat tests/nbval_sanitize.cfg tests/nbval_sanitize_latest.cfg > "$REPORT_DIR/nbval_sanitize.cfg"
CELL_TIMEOUT=$("$VENV/bin/python" -c 'import tools; print(tools.CELL_TIMEOUT)')
NBVAL_OPTIONS="--nbval --nbval-cell-timeout=$CELL_TIMEOUT -p no:cacheprovider"
NOTEBOOKS=${NOTEBOOKS:-$("$VENV/bin/python" -c 'import scaling_ml; print(*(path.relative_to(scaling_ml.PROJECT_ROOT) for path in scaling_ml.notebook_paths()))')}

set +e  # failing tests are what the report is for
# shellcheck disable=SC2086 # NOTEBOOKS and NBVAL_OPTIONS are lists of words
PYTHONWARNINGS="ignore::FutureWarning,ignore::DeprecationWarning" "$VENV/bin/pytest" $TESTS $NOTEBOOKS $NBVAL_OPTIONS \
  --nbval-sanitize-with "$REPORT_DIR/nbval_sanitize.cfg" --junitxml="$REPORT_DIR/junit.xml" \
  --deselect tests/test_check.py --deselect tests/test_site.py \
  -k "not test_environment" > "$REPORT_DIR/pytest.log" 2>&1
status=$?
if [ -n "${PINNED_JUNIT:-}" ]; then
  cp "$PINNED_JUNIT" "$REPORT_DIR/junit-pinned.xml"
else
  make --no-print-directory env > "$REPORT_DIR/pinned-env.log" 2>&1
  # shellcheck disable=SC2086
  .venv/bin/pytest $NOTEBOOKS $NBVAL_OPTIONS --nbval-sanitize-with tests/nbval_sanitize.cfg \
    --junitxml="$REPORT_DIR/junit-pinned.xml" > "$REPORT_DIR/pytest-pinned.log" 2>&1
fi
set -e
# shellcheck disable=SC2086
"$VENV/bin/python" -m tools.latest_report "$REPORT_DIR" $NOTEBOOKS
echo "report: $REPORT_DIR/report.md (logs: $REPORT_DIR/pytest.log, $REPORT_DIR/pytest-pinned.log)"
exit $status
