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


@pytest.fixture(scope="session")
def learner_venv_from_wheelhouse(tmp_path_factory):
    """A wheelhouse of this machine's wheels, built here, and a fresh virtual environment that
    `make env WHEELHOUSE=...` filled from it with no package index: (venv, wheelhouse)."""
    import subprocess
    import sys

    base = tmp_path_factory.mktemp("offline-install")
    wheelhouse, venv = base / "wheelhouse", base / "venv"
    build = subprocess.run([sys.executable, "-m", "scaling_ml.wheelhouse", "build", str(wheelhouse),
                            "--host-only"], capture_output=True, text=True, cwd=ROOT)
    assert build.returncode == 0, build.stdout + build.stderr
    install = subprocess.run(["make", "--no-print-directory", "env", f"WHEELHOUSE={wheelhouse}",
                              f"VENV={venv}", f"PYTHON={sys.executable}"],
                             capture_output=True, text=True, cwd=ROOT)
    assert install.returncode == 0, install.stdout + install.stderr
    return venv, wheelhouse


@pytest.fixture(autouse=True)
def environment_as_before():
    """Undo what a test leaves in os.environ. A LocalCluster's nannies set OMP_NUM_THREADS=1 and
    friends in the process that starts them (distributed's nanny.pre-spawn-environ), so without
    this the kernels nbval starts after the unit tests inherited them: NumPy's BLAS then ran on one
    thread, and chapter 6's make_classification changed in the last digits (its printed accuracies
    moved). A reader's kernel has no such variables; neither have nbval's kernels now."""
    before = dict(os.environ)
    yield
    for name in set(os.environ) - set(before):
        del os.environ[name]
    os.environ.update(before)
