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
