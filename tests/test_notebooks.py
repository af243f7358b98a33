"""Static checks of every notebook: the template, committed outputs, checked cells, current APIs.

The notebooks' outputs themselves are compared by strict nbval (`pytest notebooks --nbval`, part
of `make test`); these tests check what nbval cannot: that enough cells are checked at all, that
every chapter follows the book's template and has an executed, self-checking exercise.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from scaling_ml.site_check import toc_files

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CHAPTERS = [path for path in NOTEBOOKS if not path.name.startswith("00_")]
IGNORE_MARKERS = {"NBVAL_IGNORE_OUTPUT", "NBVAL_SKIP"}
# Calls the book must not teach any more (the current API in parentheses, for the message).
DEPRECATED = {
    r"parallel_backend\(": "joblib.parallel_config(backend=...)",
    r"loss=[\"']log[\"']": 'loss="log_loss"',
    r"dask\.dataframe\.core": "the dask-expr API of dask.dataframe",
    r"da\.random\.(random|normal|randint)\(": "da.random.default_rng(seed).random(...)",
}
CHECKED_CELLS_REPORT: dict[str, tuple[int, int]] = {}


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def code_cells(notebook: dict) -> list[dict]:
    return [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def markdown(notebook: dict) -> str:
    return "\n".join(source(cell) for cell in notebook["cells"] if cell["cell_type"] == "markdown")


def comment_lines(cell: dict) -> list[str]:
    return [line.strip().lstrip("#").strip() for line in source(cell).splitlines() if line.strip().startswith("#")]


def is_checked(cell: dict) -> bool:
    """As nbval decides: a comment line that is exactly a marker, or a marker tag."""
    tags = cell["metadata"].get("tags", [])
    return not (IGNORE_MARKERS & set(comment_lines(cell)) or {"nbval-ignore-output", "nbval-skip"} & set(tags))


def test_there_are_notebooks_and_each_is_in_the_table_of_contents():
    assert len(NOTEBOOKS) >= 1, "no notebooks found: pytest would check nothing"
    listed = set(toc_files())
    missing = [path.stem for path in NOTEBOOKS if f"notebooks/{path.stem}" not in listed]
    assert not missing, f"notebooks missing from _toc.yml: {missing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_more_than_half_of_the_code_cells_are_checked_by_nbval(path):
    cells = code_cells(load(path))
    checked = sum(is_checked(cell) for cell in cells)
    CHECKED_CELLS_REPORT[path.stem] = (checked, len(cells))
    assert cells, f"{path.name} has no code cells"
    assert checked * 2 >= len(cells), f"{path.name}: only {checked} of {len(cells)} code cells are checked"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_ignored_cells_say_why(path):
    """`# NBVAL_IGNORE_OUTPUT` alone on its line (nbval ignores any other form), the reason below."""
    for cell in code_cells(load(path)):
        comments = comment_lines(cell)
        for number, comment in enumerate(comments):
            if comment.startswith("NBVAL_"):
                assert comment in IGNORE_MARKERS, (
                    f"{path.name}: nbval does not recognise `# {comment}`: put the marker alone on its line")
                reason = comments[number + 1] if number + 1 < len(comments) else ""
                assert len(reason) >= 8, f"{path.name}: say why below `# {comment}`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_committed_with_outputs_in_order(path):
    cells = code_cells(load(path))
    counts = [cell.get("execution_count") for cell in cells]
    assert None not in counts, f"{path.name} has unexecuted cells: run `make notebooks`"
    assert counts == list(range(1, len(cells) + 1)), f"{path.name} was not executed top to bottom"
    errors = [output for cell in cells for output in cell.get("outputs", []) if output["output_type"] == "error"]
    assert not errors, f"{path.name} has error outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_follows_the_book_template(path):
    notebook = load(path)
    text = markdown(notebook)
    first = source(notebook["cells"][0])
    assert first.startswith("# "), f"{path.name} must open with a title"
    for heading in ("You will learn", "Prerequisites", "Time to learn",
                    "In this notebook we have seen", "What's next"):
        assert heading in text, f"{path.name} lacks '{heading}'"
    assert text.index("You will learn") < text.index("In this notebook we have seen")
    last_code = source(code_cells(notebook)[-1])
    assert "client.close()" in last_code, f"{path.name} must end by closing its client"
    assert "cluster.get_client(" in "".join(source(cell) for cell in code_cells(notebook))


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda path: path.stem)
def test_chapters_have_an_exercise_with_a_hidden_self_checking_solution(path):
    notebook = load(path)
    assert "Exercise" in markdown(notebook), f"{path.name} has no exercise"
    solutions = [cell for cell in code_cells(notebook) if "solution" in cell["metadata"].get("tags", [])]
    assert solutions, f"{path.name}: tag the solution cell 'solution'"
    for cell in solutions:
        assert "hide-cell" in cell["metadata"]["tags"], f"{path.name}: hide the solution ('hide-cell')"
        assert "assert " in source(cell), f"{path.name}: the solution must check its own answer"
        assert is_checked(cell), f"{path.name}: nbval must check the solution's output"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_no_deprecated_calls_and_no_unexplained_warnings(path):
    notebook = load(path)
    for cell in code_cells(notebook):
        code = source(cell)
        for pattern, current in DEPRECATED.items():
            assert not re.search(pattern, code), f"{path.name}: `{pattern}` is deprecated; use {current}"
        for output in cell.get("outputs", []):
            text = "".join(output.get("text", "")) if output["output_type"] == "stream" else ""
            if re.search(r"\b\w*Warning\b", text) and "explained-warning" not in cell["metadata"].get("tags", []):
                pytest.fail(f"{path.name}: a warning in the output of\n{code[:200]}\n---\n{text[:500]}\n"
                            "Fix its cause, or tag the cell 'explained-warning' and explain it in the text.")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda path: path.stem)
def test_size_knobs_say_how_to_scale_up(path):
    code = "".join(source(cell) for cell in code_cells(load(path)))
    assert "# Scale up:" in code, f"{path.name}: mark its size knobs with '# Scale up:' comments"


def pytest_terminal_summary_lines() -> list[str]:
    return [f"{name}: {checked} of {total} code cells checked by nbval"
            for name, (checked, total) in sorted(CHECKED_CELLS_REPORT.items())]
