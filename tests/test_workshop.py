"""The learners' notebooks: no solution code survives, every exercise is still there, no outputs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from scaling_ml import BookError
from scaling_ml import PROJECT_ROOT, notebook_paths
from tools import workshop


def _cell(kind, source, tags=(), outputs=()):
    cell = {"cell_type": kind, "metadata": {"tags": list(tags)}, "source": [source]}
    if kind == "code":
        cell.update(outputs=list(outputs), execution_count=3)
        cell["metadata"]["execution"] = {"iopub.execute_input": "2026-01-01T00:00:00Z"}
    return cell


def _code_lines(cell) -> set[str]:
    return {line.strip() for line in "".join(cell["source"]).splitlines()
            if line.strip() and not line.strip().startswith("#")}


def _solution_lines_left(original: dict, copy: dict) -> set[str]:
    """Lines of the original's solutions that appear in the copy and nowhere else in the original."""
    solution = set().union(*[_code_lines(cell) for cell in original["cells"]
                             if cell["cell_type"] == "code" and "solution" in cell["metadata"].get("tags", [])])
    elsewhere = set().union(*[_code_lines(cell) for cell in original["cells"]
                              if cell["cell_type"] == "code"
                              and "solution" not in cell["metadata"].get("tags", [])])
    in_copy = set().union(*[_code_lines(cell) for cell in copy["cells"] if cell["cell_type"] == "code"])
    return (solution - elsewhere) & in_copy


def test_a_learner_copy_empties_solutions_and_clears_outputs():
    output = {"output_type": "stream", "name": "stdout", "text": ["42\n"]}
    notebook = {"cells": [
        _cell("markdown", "### Exercise 1: predict, then measure", tags=["exercise"]),
        _cell("code", "answer = 6 * 7\nprint(answer)", tags=["solution", "hide-cell"], outputs=[output]),
        _cell("code", "print('lesson')", outputs=[output]),
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    copy = workshop.learner_copy(notebook)
    assert copy["cells"][0] == notebook["cells"][0]
    assert copy["cells"][1]["source"] == [workshop.SOLUTION_PROMPT]
    assert copy["cells"][1]["metadata"]["tags"] == ["solution"]
    assert copy["cells"][2]["source"] == ["print('lesson')"]
    assert all(cell.get("outputs", []) == [] for cell in copy["cells"])
    assert all(cell.get("execution_count") is None for cell in copy["cells"] if cell["cell_type"] == "code")
    assert "execution" not in copy["cells"][2]["metadata"]
    assert notebook["cells"][1]["outputs"] == [output], "the book's notebook is left as it was"
    assert _solution_lines_left(notebook, copy) == set()


def test_the_book_s_notebooks_become_learner_copies(tmp_path):
    out = tmp_path / "handout"
    result = subprocess.run([sys.executable, "-m", "tools.workshop", "learner-notebooks", str(out)],
                            capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert result.returncode == 0, result.stderr
    sources = notebook_paths()
    assert sorted(path.name for path in out.iterdir()) == sorted(path.name for path in sources)
    for path in sources:
        original, copy = json.loads(path.read_text()), json.loads((out / path.name).read_text())
        assert len(copy["cells"]) == len(original["cells"]), path.name
        exercises = [cell for cell in original["cells"] if "exercise" in cell["metadata"].get("tags", [])]
        assert exercises == [cell for cell in copy["cells"] if "exercise" in cell["metadata"].get("tags", [])]
        assert _solution_lines_left(original, copy) == set(), f"{path.name}: solution code survived"
        assert not any(cell.get("outputs") for cell in copy["cells"]), f"{path.name}: outputs left"


def test_an_existing_folder_is_never_overwritten_unless_it_is_a_previous_copy(tmp_path):
    workshop.write_learner_notebooks(tmp_path / "copy")
    with pytest.raises(BookError, match="not empty"):
        workshop.write_learner_notebooks(tmp_path / "copy")
    workshop.write_learner_notebooks(tmp_path / "copy", overwrite=True)
    (tmp_path / "copy" / "my_notes.txt").write_text("a learner's work")
    with pytest.raises(BookError, match="never overwritten"):
        workshop.write_learner_notebooks(tmp_path / "copy", overwrite=True)
    assert (tmp_path / "copy" / "my_notes.txt").read_text() == "a learner's work"
    with pytest.raises(BookError, match="book's own notebooks"):
        workshop.write_learner_notebooks(workshop.NOTEBOOKS_DIR, overwrite=True)
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".copy-")], "scratch left"


def _timed_notebook(folder, stem, reading, seconds, exercise_minutes):
    cells = [_cell("markdown", f"# {stem}\n\n**Time to learn**: about {reading} minutes of reading.")]
    for number, minutes in enumerate(exercise_minutes, 1):
        cells.append(_cell("markdown", f"### Exercise {number}: x\n\n*About {minutes} minutes.*",
                           tags=["exercise"]))
    code = _cell("code", "pass")
    reply = f"2026-01-01T10:{seconds // 60:02d}:{seconds % 60:02d}Z"
    code["metadata"]["execution"] = {"iopub.execute_input": "2026-01-01T10:00:00Z",
                                     "shell.execute_reply": reply}
    cells.append(code)
    path = folder / f"{stem}.ipynb"
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return path


def test_a_schedule_adds_the_minutes_the_notebooks_state(tmp_path):
    _timed_notebook(tmp_path, "00_setup", 10, 30, [])
    _timed_notebook(tmp_path, "01_x", 20, 130, [10, 15])
    plan = workshop.Plan("test", 60, [workshop.Block("Setup", "00_setup"), workshop.Block("Break", minutes=5),
                                      workshop.Block("One", "01_x", (2,))])
    rows = workshop.schedule_rows(plan, tmp_path)
    assert [(row["start"], row["minutes"]) for row in rows] == [(0, 11), (11, 5), (16, 38)]
    assert rows[2]["detail"] == "20 reading + 3 running cells + 15 exercise 2"
    markdown = workshop.schedule_markdown([plan], tmp_path)
    assert "| 0:54 | End (6 minutes to spare) |" in markdown
    too_long = workshop.Plan("short", 50, plan.blocks)
    with pytest.raises(BookError, match="54 minutes, more than the session's 50"):
        workshop.schedule_rows(too_long, tmp_path)
    with pytest.raises(BookError, match="no exercise 3"):
        workshop.schedule_rows(workshop.Plan("x", 99, [workshop.Block("One", "01_x", (3,))]), tmp_path)


def test_an_exercise_without_its_minutes_is_a_clear_error(tmp_path):
    path = _timed_notebook(tmp_path, "01_x", 20, 10, [5])
    notebook = json.loads(path.read_text())
    notebook["cells"][1]["source"] = ["### Exercise 1: no time given"]
    path.write_text(json.dumps(notebook))
    with pytest.raises(BookError, match="states its minutes"):
        workshop.notebook_minutes(path)


def test_the_committed_schedule_matches_the_notebooks():
    # make notebooks rewrites it; a chapter's new reading or exercise minutes must reach the guide.
    assert workshop.SCHEDULE_PATH.read_text() == workshop.schedule_markdown(), (
        "book/workshop_schedule.md is out of date: run `python -m tools.workshop schedule`")


def test_the_guide_includes_the_schedule_the_times_and_every_chapter_s_notes():
    guide = (PROJECT_ROOT / "book" / "instructor_guide.md").read_text()
    for included in ["workshop_schedule.md", "notebook_times.md"]:
        assert f"{{include}} {included}" in guide
    notebooks = [path.stem for path in notebook_paths() if path.stem[:2].isdigit()]
    assert len(notebooks) >= 7
    for stem in notebooks:
        notes = PROJECT_ROOT / "book" / "instructor_notes" / f"{stem}.md"
        assert notes.exists(), f"no instructor notes for {stem}"
        assert f"{{include}} instructor_notes/{stem}.md" in guide, f"the guide does not include {notes.name}"
        text = notes.read_text()
        assert "Where learners go wrong" in text and "Common failures" in text, notes.name
