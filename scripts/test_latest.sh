#!/usr/bin/env bash
# make test-latest: the test suite against the newest release of every direct dependency.
# Creates .venv-latest (the pins lifted), runs unit tests and strict nbval there, and writes
# _build/test-latest/report.md: the versions it got, and each failing test with its error.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv-latest
REPORT_DIR=_build/test-latest
mkdir -p "$REPORT_DIR"

test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
# The learner set and the build and test tools without the versions: the newest release of each
# direct dependency.
cat requirements.txt requirements-dev.txt \
  | sed -e 's/#.*//' -e '/^-r /d' -e 's/==[^;]*//' -e '/^\s*$/d' > "$REPORT_DIR/requirements-latest.txt"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet --upgrade -r "$REPORT_DIR/requirements-latest.txt"
"$VENV/bin/python" -m pip install --quiet --no-deps -e .

set +e  # failing tests are what the report is for
"$VENV/bin/pytest" tests notebooks --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg \
  --nbval-cell-timeout=900 -p no:cacheprovider --junitxml="$REPORT_DIR/junit.xml" \
  --deselect tests/test_check.py --deselect tests/test_site.py \
  -k "not test_environment" > "$REPORT_DIR/pytest.log" 2>&1
status=$?
set -e
"$VENV/bin/python" - "$REPORT_DIR" <<'PY'
import re
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from scaling_ml.check import installed_version, read_pins

report_dir = Path(sys.argv[1])
lines = ["# Compatibility with the newest releases", "",
         "| Package | Pinned | Newest tried |", "|---|---|---|"]
pins = {**read_pins("requirements.txt"), **read_pins("requirements-dev.txt")}
lines += [f"| {name} | {pinned} | {installed_version(name)} |" for name, pinned in sorted(pins.items())]
suite = ElementTree.parse(report_dir / "junit.xml").getroot()
def first_error(problem) -> str:
    """The last 'SomeError: message' line of the failure (nbval's own first line only says that
    a cell failed), else the failure's first line."""
    text = re.sub(r"(\x1b|#x1B)\[[0-9;]*m", "", problem.text or "")
    errors = [line.strip() for line in text.splitlines()
              if re.match(r"^\s*[A-Za-z_][\w.]*(Error|Exception): ", line)]
    outputs = [line.strip() for line in text.splitlines()
               if re.match(r"^\s*(Unexpected|Missing) output fields", line)]
    if errors or outputs:
        found = (errors or outputs)[-1]
    elif "execution failed" in (problem.get("message") or ""):
        found = "cell output differs from the committed one (see pytest.log)"
    else:
        found = ((problem.get("message") or text or "?").strip().splitlines() or ["?"])[0]
    return found[:200].replace("|", "\\|")


failures = []
for case in suite.iter("testcase"):
    for problem in list(case.findall("failure")) + list(case.findall("error")):
        failures.append(f"| `{case.get('classname')}::{case.get('name')}` | {first_error(problem)} |")
total = sum(1 for _ in suite.iter("testcase"))
lines += ["", f"{total} tests, {len(failures)} failing with the newest releases. Not run here: "
          "tests/test_environment.py and tests/test_check.py (they compare what is installed with "
          "the pins this run lifts) and tests/test_site.py (it checks the site built with the "
          "pinned Jupyter Book).", ""]
if failures:
    lines += ["| Test | Error |", "|---|---|", *failures]
(report_dir / "report.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
echo "report: $REPORT_DIR/report.md (full log: $REPORT_DIR/pytest.log)"
exit $status
