"""The generated pages: execution times from notebook metadata, claims from result files."""

import json

import nbformat
import pytest

from scaling_ml import BookError, measure
from tools import site_check, status


def _notebook(path, stamps):
    notebook = nbformat.v4.new_notebook()
    for start, end in stamps:
        cell = nbformat.v4.new_code_cell("pass")
        if start:
            cell.metadata["execution"] = {"iopub.execute_input": start, "shell.execute_reply": end}
        notebook.cells.append(cell)
    nbformat.write(notebook, path)
    return path


def test_execution_time_spans_first_start_to_last_reply(tmp_path):
    path = _notebook(tmp_path / "01_x.ipynb", [("2026-01-01T10:00:00.000Z", "2026-01-01T10:00:05.000Z"),
                                               ("2026-01-01T10:00:05.500Z", "2026-01-01T10:01:10.250Z")])
    execution = status.notebook_execution(path)
    assert execution["seconds"] == 70.25 and execution["code_cells"] == 2
    assert "70 s" in status.notebook_times_table([execution])


def test_a_notebook_without_timestamps_is_reported_as_not_executed(tmp_path):
    path = _notebook(tmp_path / "02_y.ipynb", [(None, None)])
    assert status.notebook_execution(path)["seconds"] is None
    assert "not executed" in status.notebook_times_table([status.notebook_execution(path)])


def test_claims_table_shows_goal_and_whether_it_holds(tmp_path):
    measure.write_results("example", [measure.Claim("speed-up", 1.5, "x", 1.8)], runs=[], results_dir=tmp_path)
    rows = status.claims_rows(tmp_path)
    table = status.claims_table(rows)
    assert "| example | speed-up | 1.5 x | - | >= 1.8 x | **no** |" in table


def test_site_check_reports_missing_pages(tmp_path):
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nparts:\n"
                                       "  - chapters:\n      - file: notebooks/00_setup\n")
    site = tmp_path / "html"
    (site / "book").mkdir(parents=True)
    (site / "index.html").write_text("<html></html>")
    (site / "book" / "intro.html").write_text("<html></html>")
    problems = site_check.check_site(site, tmp_path / "_toc.yml")
    assert problems == ["no page for notebooks/00_setup"]
    (site / "notebooks").mkdir()
    (site / "notebooks" / "00_setup.html").write_text("<div>no outputs</div>")
    assert "shows no executed outputs" in site_check.check_site(site, tmp_path / "_toc.yml")[0]


def _markdown_notebook(path, text, stamps):
    path = _notebook(path, stamps)
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.insert(0, nbformat.v4.new_markdown_cell(text))
    nbformat.write(notebook, path)
    return path


def test_stamping_writes_the_measured_time_into_time_to_learn(tmp_path):
    text = ("# Title\n\n**Time to learn**: about 20 minutes of reading; how long this\nnotebook "
            "takes is elsewhere.\n\nNext paragraph.")
    path = _markdown_notebook(tmp_path / "01_x.ipynb", text,
                              [("2026-01-01T10:00:00Z", "2026-01-01T10:02:30Z")])
    assert status.stamp_notebook(path, cores=2, write=False)
    assert "how long this" in path.read_text(), "write=False writes nothing"
    assert status.stamp_notebook(path, cores=2)
    notebook = json.loads(path.read_text())
    first = "".join(notebook["cells"][0]["source"])
    assert ("**Time to learn**: about 20 minutes of reading; the notebook took 2.5 min to execute "
            "on the 2-core machine that built the book.\n\nNext paragraph.") in first
    assert not status.stamp_notebook(path, cores=2), "a second stamp changes nothing"
    assert status.stamp_notebook(path, cores=4, write=False), "another machine's stamp differs"


def test_stamping_counts_the_minutes_the_exercises_state(tmp_path):
    path = _markdown_notebook(tmp_path / "01_x.ipynb", "**Time to learn**: about 20 minutes of reading.",
                              [("2026-01-01T10:00:00Z", "2026-01-01T10:00:40Z")])
    notebook = nbformat.read(path, as_version=4)
    for minutes in (5, 10):
        text = f"### Exercise\n\n*About {minutes} minutes.*\n\nDo it."
        notebook.cells.append(nbformat.v4.new_markdown_cell(text, metadata={"tags": ["exercise"]}))
    nbformat.write(notebook, path)
    assert status.stamp_notebook(path, cores=2)
    notebook = json.loads(path.read_text())
    assert ("about 20 minutes of reading and 15 minutes for its 2 exercises (35 minutes in all); the notebook "
            "took 40 s") in "".join(notebook["cells"][0]["source"])
    assert status.exercise_minutes(notebook) == [5, 10]


def test_stamping_refuses_a_notebook_without_the_line(tmp_path):
    path = _markdown_notebook(tmp_path / "01_x.ipynb", "# Title", [("2026-01-01T10:00:00Z",
                                                                   "2026-01-01T10:00:05Z")])
    with pytest.raises(BookError, match="Time to learn"):
        status.stamp_notebook(path)
