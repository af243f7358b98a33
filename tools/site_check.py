"""After `make book`: fail unless every page of the table of contents was built with its outputs.

Jupyter Book 1 exits 0 when a notebook fails to execute (it only writes a report): this check,
together with `-W` and `nb_execution_raise_on_error`, makes such a build fail.

    python -m tools.site_check _build/html
"""

from __future__ import annotations

import sys
from pathlib import Path

from scaling_ml import TABLE_OF_CONTENTS, toc_files


def check_site(site: Path, toc_path: Path = TABLE_OF_CONTENTS) -> list[str]:
    """Return the problems of a built site (empty when it is complete)."""
    problems = []
    if not (site / "index.html").is_file():
        problems.append(f"{site}/index.html is missing")
    reports = sorted((site / "reports").glob("*.log")) if (site / "reports").is_dir() else []
    problems += [f"notebook execution failed, see {report}" for report in reports]
    for toc_file in toc_files(toc_path):
        page = site / f"{toc_file}.html"
        if not page.is_file():
            problems.append(f"no page for {toc_file}")
        elif toc_file.startswith("notebooks/") and 'class="cell_output' not in page.read_text():
            problems.append(f"{page} shows no executed outputs")
    return problems


def main(argv=None) -> int:
    site = Path((argv or sys.argv[1:] or ["_build/html"])[0])
    problems = check_site(site)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not problems:
        print(f"{site}: every page of the table of contents is built, with executed outputs")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
