"""Fixtures and hooks of tests/: the 20 Newsgroups archive, the offline install, the environment
restored after each test. (The repository's own conftest.py guards every run of the notebooks.)"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dask
import distributed  # noqa: F401  (loads its configuration, read below)
import pytest

from scaling_ml import PROJECT_ROOT as ROOT


@pytest.fixture(scope="session")
def newsgroups_archive() -> Path:
    """The original 20news-bydate.tar.gz (NEWSGROUPS_ARCHIVE, default ../shared/data beside the project)."""
    archive = Path(os.environ.get("NEWSGROUPS_ARCHIVE", ROOT.parent / "shared/data/20news-bydate.tar.gz"))
    if not archive.is_file():
        pytest.fail(f"20 Newsgroups archive not found at {archive}: set NEWSGROUPS_ARCHIVE to a copy of it")
    return archive


# The longest file of make test-cluster (about a third of the tier): first in the collection, it
# starts at once in one of the tier's two processes while the other files share the second.
LONGEST_FILE = "test_external_cluster.py"


def pytest_collection_modifyitems(items):
    """A Scale-up run is a cluster test: it runs in make test-cluster, not in make check. The
    longest file comes first (a stable sort keeps every other order)."""
    for item in items:
        if item.get_closest_marker("scale_up"):
            item.add_marker(pytest.mark.cluster)
    items.sort(key=lambda item: item.path.name != LONGEST_FILE)


@pytest.fixture(scope="session")
def learner_venv_from_wheelhouse():
    """A wheelhouse of this machine's wheels, built here, and a fresh virtual environment that
    `make env WHEELHOUSE=...` filled from it with no package index: (venv, wheelhouse). About two
    minutes of pip on one core; make test-cluster runs other test files beside it."""
    base = Path(tempfile.mkdtemp(prefix="offline-install-"))
    wheelhouse, venv = base / "wheelhouse", base / "venv"
    commands = [
        [sys.executable, "-m", "tools.wheelhouse", "build", str(wheelhouse), "--host-only"],
        ["make", "--no-print-directory", "env", f"WHEELHOUSE={wheelhouse}", f"VENV={venv}",
         f"PYTHON={sys.executable}"],
    ]
    try:
        for command in commands:
            # A session of its own, so that a timeout ends make and the pip it started.
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True, cwd=ROOT, start_new_session=True)
            try:
                output, _ = process.communicate(timeout=1800)
            finally:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGTERM)
                    process.wait()
            assert process.returncode == 0, f"$ {' '.join(command)}\n{output}"
        yield venv, wheelhouse
    finally:
        shutil.rmtree(base, ignore_errors=True)


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


# A module- or session-scoped cluster starts its nannies before a test's `before` is taken, so
# what they set would outlive the fixture above; after every test's teardown these names go back
# to what the session started with.
NANNY_ENVIRONMENT = set(dask.config.get("distributed.nanny.pre-spawn-environ")) | {"PYTHONHASHSEED"}
_SESSION_NANNY_ENVIRONMENT = {name: os.environ.get(name) for name in NANNY_ENVIRONMENT}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item):
    yield
    for name, value in _SESSION_NANNY_ENVIRONMENT.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


DASK = Path(sys.executable).parent / "dask"  # the command line of this environment's Dask


@pytest.fixture
def external_scheduler(tmp_path):
    """A real `dask scheduler` and `dask worker` on 127.0.0.1, stopped afterwards."""
    scheduler_file = tmp_path / "scheduler.json"
    scheduler = subprocess.Popen(
        [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address",
         "127.0.0.1:0", "--scheduler-file", scheduler_file], start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = None
    try:
        for _ in range(300):
            if scheduler_file.exists() and scheduler_file.stat().st_size:
                break
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        worker = subprocess.Popen(
            [DASK, "worker", address, "--host", "127.0.0.1", "--nworkers", "1",
             "--nthreads", "1", "--no-dashboard"], start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        yield address
    finally:
        for process in (worker, scheduler):
            if process is not None:
                os.killpg(process.pid, 15)
                process.wait(timeout=30)


@pytest.fixture
def client_of_external_scheduler(external_scheduler, monkeypatch):
    """The chapters' get_client() with DASK_SCHEDULER_ADDRESS set to the external scheduler, as a
    reader sets it; connected there, its worker arrived. The setting is gone afterwards."""
    from scaling_ml import cluster

    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", external_scheduler)
    dask.config.refresh()
    try:
        with cluster.get_client() as client:
            assert client.scheduler.address == external_scheduler
            client.wait_for_workers(1, timeout=60)
            yield client
    finally:
        monkeypatch.delenv("DASK_SCHEDULER_ADDRESS")
        dask.config.refresh()
