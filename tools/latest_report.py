"""The report of `make test-latest` (scripts/test_latest.sh): versions, chapters, failing tests.

    python -m tools.latest_report _build/test-latest notebooks/00_setup.ipynb ...

reads ``junit.xml`` (newest releases: unit tests and strict nbval) and ``junit-pinned.xml``
(strict nbval with the pins) from that folder and writes ``report.md`` there: the versions the
lane got, a table chapter by chapter (pinned set / newest releases: pass, or the first error), and
every failing test with its error. The versions page takes the chapter table from it.
"""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ERROR_LINE = re.compile(r"^\s*[A-Za-z_][\w.]*(Error|Exception|Warning|Interrupt): ")
COMPARISON_LINE = re.compile(r"^\s*(Unexpected|Missing) output fields|^\s*Cell outputs differ")
CELL_NUMBER = re.compile(r"Cell (\d+)")


def first_error(problem) -> str:
    """The last 'SomeError: message' line of a failure (nbval's own first line only says that a
    cell failed), else what nbval says about the outputs, else the failure's first line."""
    text = re.sub(r"(\x1b|#x1B)\[[0-9;]*m", "", problem.text or "")
    lines = text.splitlines()
    errors = [line.strip() for line in lines if ERROR_LINE.match(line)]
    comparisons = [line.strip() for line in lines if COMPARISON_LINE.match(line)]
    if errors:
        found = errors[-1]
    elif comparisons:
        found = "output differs from the committed one: " + comparisons[0]
    elif "execution failed" in (problem.get("message") or ""):
        found = "cell output differs from the committed one (see pytest.log)"
    else:
        found = ((problem.get("message") or text or "?").strip().splitlines() or ["?"])[0]
    return found[:200].replace("|", "\\|")


def testcases(junit: Path) -> list:
    if not junit.is_file():
        return []
    return list(ElementTree.parse(junit).getroot().iter("testcase"))


def problems(case) -> list:
    return list(case.findall("failure")) + list(case.findall("error"))


def notebook_result(cases, notebook: str) -> str:
    """'pass', 'not run', or 'cell N: the error' for the first failing cell of ``notebook``."""
    name = Path(notebook).name
    own = [case for case in cases
           if name in (case.get("classname") or "") + " " + (case.get("file") or "")
           + " " + (case.get("name") or "")]
    if not own:
        return "not run"
    for case in own:
        found = problems(case)
        if found:
            cell = CELL_NUMBER.search(case.get("name") or "")
            where = f"cell {cell.group(1)}: " if cell else ""
            return where + first_error(found[0])
    return "pass"


def versions_table() -> list[str]:
    from scaling_ml.check import installed_version, read_pins

    lines = ["| Package | Pinned | Newest tried |", "|---|---|---|"]
    lines += [f"| {name} | {pinned} | {installed_version(name)} |"
              for name, pinned in sorted(read_pins().items())]
    return lines


def chapter_table(latest_cases, pinned_cases, notebooks) -> list[str]:
    lines = ["| Chapter | Pinned set | Newest releases |", "|---|---|---|"]
    for notebook in notebooks:
        lines.append(f"| {Path(notebook).stem} | {notebook_result(pinned_cases, notebook)} | "
                     f"{notebook_result(latest_cases, notebook)} |")
    return lines


def report(report_dir: Path, notebooks, versions: list[str] | None = None) -> str:
    latest = testcases(report_dir / "junit.xml")
    pinned = testcases(report_dir / "junit-pinned.xml")
    failures = [f"| `{case.get('classname')}::{case.get('name')}` | {first_error(problem)} |"
                for case in latest for problem in problems(case)]
    lines = ["# Compatibility with the newest releases", ""]
    lines += versions if versions is not None else versions_table()
    lines += ["", "## Chapter by chapter", "",
              "Strict output checks (nbval) of each notebook with the pinned set and with the newest "
              "releases. The newest-releases lane masks the versions a notebook prints, the setup "
              "check's summary and scores printed with three decimals "
              "(tests/nbval_sanitize_latest.cfg) and ignores FutureWarning and DeprecationWarning "
              "(they announce changes to come); every other output must be the committed one.", ""]
    lines += chapter_table(latest, pinned, notebooks)
    lines += ["", f"{len(latest)} tests with the newest releases, {len(failures)} failing. Not run "
              "there: tests/test_environment.py and tests/test_check.py (they compare what is "
              "installed with the pins this lane lifts) and tests/test_site.py (it checks the site "
              "built with the pinned Jupyter Book).", ""]
    if failures:
        lines += ["| Test | Error |", "|---|---|", *failures]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__)
        return 2
    report_dir, notebooks = Path(argv[0]), argv[1:]
    text = report(report_dir, notebooks)
    (report_dir / "report.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
