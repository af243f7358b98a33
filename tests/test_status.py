"""The generated pages: execution times from notebook metadata, claims from result files."""

import json

import nbformat

from scaling_ml import measure, site_check, status


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
    assert "| example | speed-up | 1.5 x | >= 1.8 x | **no** |" in table


def test_site_check_reports_missing_pages(tmp_path):
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nparts:\n"
                                       "  - chapters:\n      - file: notebooks/00_setup\n")
    site = tmp_path / "html"
    (site / "book").mkdir(parents=True)
    (site / "index.html").write_text("<html></html>")
    (site / "book" / "intro.html").write_text("<html></html>")
    problems = site_check.check_site(site, root=tmp_path)
    assert problems == ["no page for notebooks/00_setup"]
    (site / "notebooks").mkdir()
    (site / "notebooks" / "00_setup.html").write_text("<div>no outputs</div>")
    assert "shows no executed outputs" in site_check.check_site(site, root=tmp_path)[0]
