import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def newsgroups_archive() -> Path:
    """The original 20news-bydate.tar.gz (NEWSGROUPS_ARCHIVE, default ../shared/data beside the project)."""
    archive = Path(os.environ.get("NEWSGROUPS_ARCHIVE", ROOT.parent / "shared/data/20news-bydate.tar.gz"))
    if not archive.is_file():
        pytest.fail(f"20 Newsgroups archive not found at {archive}: set NEWSGROUPS_ARCHIVE to a copy of it")
    return archive


def pytest_terminal_summary(terminalreporter):
    """Per notebook, how many code cells nbval checks (tests/test_notebooks.py collects them)."""
    from tests import test_notebooks

    lines = test_notebooks.pytest_terminal_summary_lines()
    if lines:
        terminalreporter.section("nbval coverage")
        for line in lines:
            terminalreporter.write_line(line)
