"""Write the book's generated pages from what the build measured.

``python -m tools.status`` writes
* ``book/status.md``: pinned versions, the machine, each notebook's execution time, every claim;
* ``book/images/favicon.png``: the site's icon.

``python -m tools.status --stamp-notebooks`` (run by ``make notebooks``, after executing)
writes each notebook's measured execution time into its "Time to learn" line, and the committed
execution-time table ``book/notebook_times.md`` that the instructor guide includes.

Execution times come from the timestamps that Jupyter records in each cell's metadata when a
notebook is executed; claims come from benchmarks/results/*.json.
"""

from __future__ import annotations

import argparse
import datetime as _datetime
import json
import math
import re
from pathlib import Path

from scaling_ml import PROJECT_ROOT, BookError, check, measure, notebook_paths, plots

BOOK_DIR = PROJECT_ROOT / "book"
NOTEBOOK_TIMES = BOOK_DIR / "notebook_times.md"
# The "Time to learn" paragraph of every notebook, from its marker to the end of the paragraph.
TIME_TO_LEARN = re.compile(r"\*\*Time to learn\*\*:(?P<text>[^\n]*(?:\n(?!\s*\n)[^\n]*)*)")
READING = re.compile(r"about (\d+) minutes of reading")
# What every exercise states under its heading ("*About 10 minutes.*").
EXERCISE_MINUTES = re.compile(r"^\*About (\d+) minutes?\.\*", re.M)


def _parse_time(stamp: str) -> _datetime.datetime:
    return _datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def notebook_execution(path: Path) -> dict:
    """Execution facts of a committed notebook: seconds from first cell start to last reply."""
    notebook = json.loads(path.read_text())
    code_cells = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    starts, ends = [], []
    for cell in code_cells:
        execution = cell.get("metadata", {}).get("execution", {})
        if "iopub.execute_input" in execution and "shell.execute_reply" in execution:
            starts.append(_parse_time(execution["iopub.execute_input"]))
            ends.append(_parse_time(execution["shell.execute_reply"]))
    if not starts or len(starts) != len(code_cells):
        return {"notebook": path.stem, "code_cells": len(code_cells), "seconds": None, "executed": None}
    return {"notebook": path.stem, "code_cells": len(code_cells),
            "seconds": (max(ends) - min(starts)).total_seconds(),
            "executed": min(starts).strftime("%Y-%m-%d %H:%M UTC")}


def notebook_executions() -> list[dict]:
    return [notebook_execution(path) for path in notebook_paths()]


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "not executed"
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def exercise_minutes(notebook: dict) -> list[int]:
    """The minutes each exercise (a markdown cell tagged ``exercise``) states for itself."""
    minutes = []
    for cell in notebook["cells"]:
        if cell["cell_type"] == "markdown" and "exercise" in cell["metadata"].get("tags", []):
            match = EXERCISE_MINUTES.search("".join(cell["source"]))
            if not match:
                raise BookError("every exercise states its minutes under its heading ('*About 10 "
                                f"minutes.*'); this one does not: {''.join(cell['source'])[:80]!r}")
            minutes.append(int(match.group(1)))
    return minutes


def time_to_learn_line(reading_minutes: int, seconds: float | None, cores: int,
                       exercises: list[int] = ()) -> str:
    line = f"**Time to learn**: about {reading_minutes} minutes of reading"
    if exercises:
        count = len(exercises)
        line += (f" and {sum(exercises)} minutes for its {count} exercise{'s' if count > 1 else ''}"
                 f" ({reading_minutes + sum(exercises)} minutes in all)")
    if seconds is None:
        return line + "."
    return (line + f"; the notebook took {format_duration(seconds)} to execute on the {cores}-core "
            "machine that built the book.")


def stamp_notebook(path: Path, cores: int | None = None, write: bool = True) -> bool:
    """Write the notebook's measured execution time (and its exercises' minutes) into its "Time to
    learn" line. Returns whether the line changed (with ``write=False``: would change). The reading
    time stays what the author wrote."""
    notebook = json.loads(path.read_text())
    seconds = notebook_execution(path)["seconds"]
    cores = cores or measure.machine_info()["cores"]
    for cell in notebook["cells"]:
        text = "".join(cell["source"])
        match = TIME_TO_LEARN.search(text) if cell["cell_type"] == "markdown" else None
        if not match:
            continue
        reading = READING.search(match.group("text"))
        if not reading:
            raise BookError(f"{path.name}: its Time to learn line must say 'about N minutes of reading'.")
        line = time_to_learn_line(int(reading.group(1)), seconds, cores, exercise_minutes(notebook))
        new = text[:match.start()] + line + text[match.end():]
        if new == text or not write:
            return new != text
        cell["source"] = new.splitlines(keepends=True)
        path.write_text(json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
        return True
    raise BookError(f"{path.name} has no '**Time to learn**:' line.")


def stamp_notebooks(times_path: Path = NOTEBOOK_TIMES) -> list[Path]:
    """Stamp every notebook's execution time and write the committed execution-time table."""
    changed = [path for path in notebook_paths() if stamp_notebook(path)]
    times_path.write_text(
        "<!-- Written by `python -m tools.status --stamp-notebooks` (make notebooks). -->\n\n"
        + notebook_times_table(notebook_executions()) + "\n")
    return [*changed, times_path]


def notebook_times_table(executions: list[dict]) -> str:
    rows = ["| Notebook | Code cells | Execution time | Executed on |", "|---|---|---|---|"]
    for execution in executions:
        rows.append(f"| [{execution['notebook']}](../notebooks/{execution['notebook']}.ipynb) | "
                    f"{execution['code_cells']} | {format_duration(execution['seconds'])} | "
                    f"{execution['executed'] or '-'} |")
    total = sum(execution["seconds"] or 0 for execution in executions)
    rows.append(f"| **all notebooks** | | **{format_duration(total)}** | |")
    return "\n".join(rows)


def claims_rows(results_dir: Path = measure.RESULTS_DIR) -> list[dict]:
    rows = []
    for path in sorted(Path(results_dir).glob("*.json")):
        document = measure.load_results(path.stem, results_dir)
        for claim in document.get("claims", []):
            rows.append({"benchmark": document["benchmark"], "date": document["date"],
                         "cores": document["machine"]["cores"], **claim})
    return rows


def _number(value: float) -> str:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def claims_table(rows: list[dict]) -> str:
    if not rows:
        return "No benchmark results yet: run `make bench`."
    table = ["| Benchmark | Claim | Measured | Spread | Goal | Holds | Measured on |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        spread = row.get("spread")
        spread = f"{_number(spread[0])} to {_number(spread[1])}" if spread else "-"
        table.append(
            f"| {row['benchmark']} | {row['name']} | {_number(row['measured'])} {row['unit']} | {spread} | "
            f"{row['goal_op']} {_number(row['goal'])} {row['unit']} | "
            f"{'yes' if row['holds'] else '**no**'} | {row['date'][:10]}, {row['cores']} cores |")
    return "\n".join(table)


def versions_table() -> str:
    table = ["| Package | Pinned | Installed where the book was built |", "|---|---|---|"]
    for package, pinned in sorted(check.read_pins(here_only=True).items()):
        table.append(f"| {package} | {pinned} | {check.installed_version(package) or 'not installed'} |")
    return "\n".join(table)


def status_page() -> str:
    machine = measure.machine_info()
    built = _datetime.datetime.now(_datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""# Status

This page is generated by `python -m tools.status` each time the book is built
({built}); nothing on it is typed by hand.

## The machine that built the book

{machine['cores']} cores, {machine['memory_gib']} GiB memory, {machine['cpu']}, Python {machine['python']}.

## Notebook execution times

Measured from the cell timestamps Jupyter records when the notebooks are executed
(`make notebooks` before a commit, `make book` for a fresh build).

{notebook_times_table(notebook_executions())}

## Measured claims

Every speed or memory claim of the book, from the benchmark scripts' result files in
`benchmarks/results/` (`make bench` runs them all). *Holds* is computed from the measured value and
the goal by the code that wrote the file.

{claims_table(claims_rows())}

## Pinned versions

Why these versions and how to try the newest: [Versions](versions.md).

{versions_table()}
"""


def write_pages(book_dir: Path = BOOK_DIR) -> list[Path]:
    status = book_dir / "status.md"
    status.write_text(status_page())
    icon = plots.draw_book_icon(book_dir / "images" / "favicon.png")
    return [status, icon]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.status", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stamp-notebooks", nargs="*", metavar="NOTEBOOK", default=None,
                        help="write the execution time into these notebooks (default: all of them, "
                             "and then also book/notebook_times.md)")
    arguments = parser.parse_args(argv)
    if arguments.stamp_notebooks is None:
        paths = write_pages()
    elif arguments.stamp_notebooks:
        paths = [Path(path).resolve() for path in arguments.stamp_notebooks
                 if stamp_notebook(Path(path).resolve())]
    else:
        paths = stamp_notebooks()
    for path in paths:
        print(f"wrote {path.relative_to(PROJECT_ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
