"""Static checks of every notebook: the template, committed outputs, checked cells, current APIs.

The notebooks' outputs themselves are compared by strict nbval (`pytest notebooks --nbval`, part
of `make test`); these tests check what nbval cannot: that enough cells are checked at all, that
every chapter follows the book's template (CONTRIBUTING.md, "A chapter"), that test markers
are cell tags a reader never sees, and that exercises are executed and stand alone.
"""

from __future__ import annotations

import ast
import json
import re
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from nbval.plugin import get_sanitize_patterns

from scaling_ml import PROJECT_ROOT, notebook_paths, toc_files
from tools import status

NOTEBOOKS = notebook_paths()
CHAPTERS = [path for path in NOTEBOOKS if not path.name.startswith("00_")]
IGNORE_TAGS = {"nbval-ignore-output", "nbval-skip"}
# Calls the book must not teach any more (the current API in parentheses, for the message).
DEPRECATED = {
    r"parallel_backend\(": "joblib.parallel_config(backend=...)",
    r"loss=[\"']log[\"']": 'loss="log_loss"',
    r"dask\.dataframe\.core": "the dask-expr API of dask.dataframe",
    r"da\.random\.(random|normal|randint)\(": "da.random.default_rng(seed).random(...)",
    r"dask\.local\.get_sync": 'scheduler="synchronous"',
}
# A chapter's module: every module of the learner package but the shared ones.
CHAPTER_MODULES = {path.stem for path in (PROJECT_ROOT / "scaling_ml").glob("*.py")} - {
    "__init__", "check", "cluster", "data", "measure", "plots"}


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def code_cells(notebook: dict) -> list[dict]:
    return [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def tags(cell: dict) -> list[str]:
    return cell["metadata"].get("tags", [])


def markdown(notebook: dict) -> str:
    return "\n".join(source(cell) for cell in notebook["cells"] if cell["cell_type"] == "markdown")


def is_checked(cell: dict) -> bool:
    """As nbval decides it for this book: only cell tags switch output checking off."""
    return not IGNORE_TAGS & set(tags(cell))


def test_every_notebook_is_in_the_table_of_contents():
    assert len(NOTEBOOKS) >= 1, "no notebooks found: pytest would check nothing"
    on_disk = sorted((PROJECT_ROOT / "notebooks").glob("*.ipynb"))
    missing = [path.name for path in on_disk if path not in NOTEBOOKS]
    assert not missing, f"notebooks missing from _toc.yml (no test, no page): {missing}"
    assert all(path.is_file() for path in NOTEBOOKS), NOTEBOOKS


@pytest.mark.parametrize("page, folder", [("README.md", "notebooks/"), ("book/intro.md", "../notebooks/")])
def test_the_readme_and_the_intro_link_every_chapter(page, folder):
    text = (PROJECT_ROOT / page).read_text()
    missing = [path.name for path in NOTEBOOKS if f"]({folder}{path.name})" not in text]
    assert not missing, f"{page} does not list {missing}: add a row to its chapter table"


def test_the_table_of_contents_is_read_as_yaml_reads_it():
    toc = yaml.safe_load((PROJECT_ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries:
            files.extend([entry["file"]] if "file" in entry else [])
            walk(entry.get("sections", []))

    for part in toc.get("parts", [toc]):
        walk(part.get("chapters", []))
    assert toc_files() == files


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_more_than_half_of_the_code_cells_are_checked_by_nbval(path):
    cells = code_cells(load(path))
    checked = sum(is_checked(cell) for cell in cells)
    assert cells, f"{path.name} has no code cells"
    assert checked * 2 >= len(cells), f"{path.name}: only {checked} of {len(cells)} code cells are checked"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_test_markers_are_cell_tags_a_reader_never_sees(path):
    notebook = load(path)
    text = "\n".join(source(cell) for cell in notebook["cells"])
    assert "NBVAL" not in text, (
        f"{path.name}: use the nbval cell tags (nbval-ignore-output, nbval-skip, raises-exception), "
        "not NBVAL comments in the source")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_committed_with_outputs_in_order(path):
    cells = code_cells(load(path))
    counts = [cell.get("execution_count") for cell in cells]
    assert None not in counts, f"{path.name} has unexecuted cells: run `make notebooks`"
    assert counts == list(range(1, len(cells) + 1)), f"{path.name} was not executed top to bottom"
    errors = [cell for cell in cells if "raises-exception" not in tags(cell)
              and any(output["output_type"] == "error" for output in cell.get("outputs", []))]
    assert not errors, f"{path.name} has error outputs in cells not tagged raises-exception"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_follows_the_book_template(path):
    notebook = load(path)
    text = markdown(notebook)
    first = source(notebook["cells"][0])
    assert first.startswith("# "), f"{path.name} must open with a title"
    for heading in ["You will learn", "Prerequisites", "Time to learn", "Key points", "What's next"]:
        assert heading in text, f"{path.name} lacks '{heading}'"
    assert text.index("You will learn") < text.index("Key points") < text.index("What's next")
    assert "In this notebook we have seen" not in text, (
        f"{path.name}: one summary per chapter, its 'Key points'")
    last_code = source(code_cells(notebook)[-1])
    assert "client.close()" in last_code, f"{path.name} must end by closing its client"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_time_to_learn_states_the_measured_time_and_the_exercises_minutes(path):
    """As `make notebooks` stamps it (python -m tools.status --stamp-notebooks), on the machine it names."""
    cores = re.search(r"\*\*Time to learn\*\*:[^\n]*took [^\n]* on the (\d+)-core machine", markdown(load(path)))
    assert cores, f"{path.name}: the 'Time to learn' line must state the measured execution time"
    assert not status.stamp_notebook(path, cores=int(cores.group(1)), write=False), (
        f"{path.name}: its 'Time to learn' line differs from its cells' times or its exercises' minutes: "
        "run python -m tools.status --stamp-notebooks")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_no_assert_in_notebook_cells(path):
    for cell in code_cells(load(path)):
        code = source(cell)
        assert not re.search(r"^\s*assert\b|AssertionError", code, re.M), (
            f"{path.name}: checks belong in tests, not in the reader's cells:\n{code[:300]}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_chapter_modules_are_imported_as_chapter(path):
    for cell in code_cells(load(path)):
        for match in re.finditer(r"from scaling_ml import (\w+)(?: as (\w+))?", source(cell)):
            if match.group(1) in CHAPTER_MODULES:
                assert match.group(2) == "chapter", (
                    f"{path.name}: import the chapter's module as `chapter` "
                    f"(from scaling_ml import {match.group(1)} as chapter)")


def cell_seconds(cell: dict) -> float:
    """Seconds a code cell took when the notebook was last executed (0 if not recorded)."""
    execution = cell.get("metadata", {}).get("execution", {})
    if "iopub.execute_input" not in execution or "shell.execute_reply" not in execution:
        return 0
    return (datetime.fromisoformat(execution["shell.execute_reply"].replace("Z", "+00:00"))
            - datetime.fromisoformat(execution["iopub.execute_input"].replace("Z", "+00:00"))).total_seconds()


def exercises(notebook: dict) -> list[tuple[dict, list[dict]]]:
    """(exercise markdown cell, its solution code cells) pairs, in order."""
    found, cells = [], notebook["cells"]
    for index, cell in enumerate(cells):
        if "exercise" in tags(cell):
            solutions = []
            for following in cells[index + 1:]:
                if "solution" in tags(following):
                    solutions.append(following)
                elif solutions or following["cell_type"] == "code":
                    break
            found.append((cell, solutions))
    return found


def assigned_names(code: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names


def used_names(code: str) -> set[str]:
    return {node.id for node in ast.walk(ast.parse(code))
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda path: path.stem)
def test_chapters_have_two_or_three_exercises_with_hidden_executed_solutions(path):
    notebook = load(path)
    found = exercises(notebook)
    assert 2 <= len(found) <= 3, f"{path.name} has {len(found)} exercises, the template asks 2-3"
    quick = 0
    for prompt, solutions in found:
        title = source(prompt).splitlines()[0]
        assert prompt["cell_type"] == "markdown" and title.startswith("### Exercise"), (
            f"{path.name}: an exercise is a markdown cell tagged 'exercise' starting '### Exercise'")
        assert solutions, f"{path.name}: '{title}' has no solution cell (tag it 'solution')"
        for cell in solutions:
            assert "hide-cell" in tags(cell), f"{path.name}: hide the solution of '{title}' (hide-cell)"
        assert any(is_checked(cell) and cell.get("outputs") for cell in solutions), (
            f"{path.name}: nbval must check an output of the solution of '{title}'")
        seconds = sum(cell_seconds(cell) for cell in solutions)
        quick += seconds < 60
    assert quick >= 1, f"{path.name}: at least one exercise must run in under a minute"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda path: path.stem)
def test_no_cell_depends_on_a_solution_cell(path):
    defined_by_solutions: set[str] = set()
    defined_elsewhere: set[str] = set()
    for cell in code_cells(load(path)):
        code = source(cell)
        if "solution" in tags(cell):
            defined_by_solutions |= assigned_names(code) - defined_elsewhere
            continue
        leaked = (used_names(code) & defined_by_solutions) - assigned_names(code)
        assert not leaked, (
            f"{path.name}: this cell uses {sorted(leaked)}, defined only in a solution (learners' "
            f"copies have no solutions):\n{code[:300]}")
        defined_elsewhere |= assigned_names(code)
        # A name the chapter itself (re)defines here no longer depends on the solution.
        defined_by_solutions -= assigned_names(code)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_no_deprecated_calls_and_no_unexplained_warnings(path):
    notebook = load(path)
    for cell in code_cells(notebook):
        code = source(cell)
        for pattern, current in DEPRECATED.items():
            assert not re.search(pattern, code), f"{path.name}: `{pattern}` is deprecated; use {current}"
        for output in cell.get("outputs", []):
            text = "".join(output.get("text", "")) if output["output_type"] == "stream" else ""
            if re.search(r"\b\w*Warning\b", text) and "explained-warning" not in tags(cell):
                pytest.fail(f"{path.name}: a warning in the output of\n{code[:200]}\n---\n{text[:500]}\n"
                            "Fix its cause, or tag the cell 'explained-warning' and explain it in the text.")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda path: path.stem)
def test_size_knobs_say_how_to_scale_up(path):
    code = "".join(source(cell) for cell in code_cells(load(path)))
    assert "# Scale up:" in code, f"{path.name}: mark its size knobs with '# Scale up:' comments"


def test_the_helpers_of_this_test_find_what_they_should():
    notebook = {"cells": [
        {"cell_type": "markdown", "metadata": {"tags": ["exercise"]}, "source": ["### Exercise 1"]},
        {"cell_type": "code", "metadata": {"tags": ["solution", "hide-cell"]}, "source": ["a = 1"]},
        {"cell_type": "code", "metadata": {}, "source": ["print(a)"]},
    ]}
    [(prompt, solutions)] = exercises(notebook)
    assert source(prompt) == "### Exercise 1" and [source(cell) for cell in solutions] == ["a = 1"]
    assert assigned_names("import numpy as np\nx, y = 1, 2\ndef f(): pass") == {"np", "x", "y", "f"}
    assert used_names("print(a + b)") == {"print", "a", "b"}


def sanitize(text: str) -> str:
    """What nbval compares: ``text`` after every mask of tests/nbval_sanitize.cfg, in order."""
    for regex, replace in get_sanitize_patterns((PROJECT_ROOT / "tests" / "nbval_sanitize.cfg").read_text()):
        text = re.sub(regex, replace, text)
    return text


@pytest.mark.parametrize("environment", ["/tmp/tmp.Xa3/scaling-ml/.venv", "/home/ada/my books/scaling ml/.venv",
                                         "/srv/book/.venv-latest"])
def test_the_masks_do_not_depend_on_where_the_clone_lives(environment):
    """Chapter 5's job scripts print the environment the jobs activate and the home folder; a
    clone under /tmp (where mktemp puts it) or in a folder with a space prints the same after masking."""
    committed = ("#SBATCH -e /root/dask-logs/dask-worker-%J.err\n"
                 "source /work/main/.venv/bin/activate\n"
                 "python -m distributed.cli.dask_worker tcp://127.0.0.1:41333 --local-directory /tmp\n")
    elsewhere = committed.replace("/work/main/.venv", environment).replace("/root/", "/home/ada/")
    assert sanitize(elsewhere) == sanitize(committed)
    assert "ENVIRONMENT/bin/activate" in sanitize(committed) and "--local-directory /tmp" in sanitize(committed)
