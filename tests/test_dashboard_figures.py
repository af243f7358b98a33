"""The dashboard pictures (tools/dashboard_figures.py, `make dashboard-figures`).

Every dashboard picture a chapter shows is one the tool writes, with alt text, and every picture
the tool writes is shown; the performance report it copies is linked; the tool still finds the
cells it pictures; and it runs: chapter 0's
picture, taken from a real kernel, cluster and Chromium (a cluster test).
"""

from __future__ import annotations

import json
import re

import pytest
from PIL import Image

from scaling_ml import PROJECT_ROOT
from tools import dashboard_figures

MARKDOWN_IMAGE = re.compile(r"!\[([^\]]*)\]\(\.\./(figs/dashboard_[^)\s]+\.png)\)")


def shown_in_chapters() -> dict[str, list[tuple[str, str]]]:
    """figs/dashboard_*.png each notebook's markdown shows, with its alt text, by notebook stem."""
    shown = {}
    for path in sorted((PROJECT_ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        for cell in cells:
            source = "".join(cell["source"])
            if cell["cell_type"] == "code":
                assert "figs/dashboard_" not in source, f"{path.name}: show dashboard pictures in markdown"
                continue
            for alt, file in MARKDOWN_IMAGE.findall(source):
                shown.setdefault(path.stem, []).append((file, alt))
    return shown


def test_every_dashboard_picture_shown_is_one_the_tool_writes_and_back():
    shown = shown_in_chapters()
    files_shown = [file for pictures in shown.values() for file, _ in pictures]
    assert sorted(files_shown) == sorted(dashboard_figures.picture_files())
    for chapter in dashboard_figures.CHAPTERS:
        written = {f"figs/{picture.file}" for picture in chapter.pictures}
        assert written <= {file for file, _ in shown.get(chapter.notebook, [])}, (
            f"{chapter.notebook} shows its own run's pictures")


def test_every_dashboard_picture_has_alt_text_and_is_committed():
    on_disk = {f"figs/{path.name}" for path in (PROJECT_ROOT / "figs").glob("dashboard_*.png")}
    assert on_disk == set(dashboard_figures.picture_files()), "make dashboard-figures writes exactly these"
    for pictures in shown_in_chapters().values():
        for file, alt in pictures:
            assert len(alt.split()) >= 5, f"{file}: alt text says what the picture shows"


def test_every_performance_report_the_tool_copies_is_committed_and_linked():
    chapters_text = {path.stem: path.read_text() for path in (PROJECT_ROOT / "notebooks").glob("*.ipynb")}
    assert dashboard_figures.report_files(), "a chapter saves a performance report"
    for chapter in dashboard_figures.CHAPTERS:
        if chapter.report:
            file = f"_static/{dashboard_figures.report_name(chapter)}"
            assert (PROJECT_ROOT / file).is_file(), f"{file}: run make dashboard-figures NB={chapter.notebook[:2]}"
            assert f"../{file}" in chapters_text[chapter.notebook], f"{chapter.notebook} links {file}"
            assert "performance_report(" in chapters_text[chapter.notebook]


def test_the_tool_still_finds_every_cell_it_pictures():
    for chapter in dashboard_figures.CHAPTERS:
        run, pictured = dashboard_figures.plan(chapter)
        assert set(pictured) <= set(run)


def test_an_unknown_chapter_is_a_clear_error():
    with pytest.raises(dashboard_figures.BookError, match="choose among"):
        dashboard_figures.chapters(["99_nothing"])


@pytest.mark.cluster
def test_the_tool_photographs_chapter_0s_dashboard(tmp_path):
    assert dashboard_figures.main(["00_setup", "--output", str(tmp_path)]) == 0
    [picture] = dashboard_figures.chapters(["00"])[0].pictures
    with Image.open(tmp_path / picture.file) as image:
        assert image.size == picture.viewport
        pixels = image.convert("RGB").get_flattened_data()
    # The Status page's task stream drew its bars (#355D8C, the colour of chapter 0's tasks).
    task_blue = sum(abs(red - 0x35) + abs(green - 0x5D) + abs(blue - 0x8C) < 40 for red, green, blue in pixels)
    assert task_blue > 10_000, "no task-stream bars in the picture"
