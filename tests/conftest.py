"""Fixtures and hooks of tests/: the 20 Newsgroups archive, the offline install, the environment
restored after each test. (The repository's own conftest.py guards every run of the notebooks.)"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
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


def pytest_collection_modifyitems(items):
    """A Scale-up run is a cluster test: it runs in make test-cluster, not in make check."""
    for item in items:
        if item.get_closest_marker("scale_up"):
            item.add_marker(pytest.mark.cluster)


class _OfflineInstall(threading.Thread):
    """Build a wheelhouse of this machine's wheels, then fill a fresh virtual environment from it
    with `make env WHEELHOUSE=...` (no package index). About two minutes of pip on one core, so it
    starts as soon as collection finds a test that needs it and runs beside the other tests."""

    def __init__(self):
        super().__init__(name="offline-install", daemon=True)
        self.base = Path(tempfile.mkdtemp(prefix="offline-install-"))
        self.wheelhouse, self.venv = self.base / "wheelhouse", self.base / "venv"
        self.commands = [
            [sys.executable, "-m", "tools.wheelhouse", "build", str(self.wheelhouse), "--host-only"],
            ["make", "--no-print-directory", "env", f"WHEELHOUSE={self.wheelhouse}", f"VENV={self.venv}",
             f"PYTHON={sys.executable}"],
        ]
        self.process, self.failure, self.stopped = None, None, False
        self.lock = threading.Lock()  # no command starts after stop() has looked

    def run(self):
        for command in self.commands:
            with self.lock:
                if self.stopped:
                    return
                self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                text=True, cwd=ROOT, start_new_session=True)
            output, _ = self.process.communicate()
            if self.process.returncode != 0:
                self.failure = f"$ {' '.join(command)}\n{output}"
                return

    def stop(self):
        """End pip (and make) if the session ends first, and remove the folder."""
        with self.lock:
            self.stopped = True
            if self.process is not None and self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGTERM)
        self.join(timeout=60)
        shutil.rmtree(self.base, ignore_errors=True)


_offline_install: _OfflineInstall | None = None


def pytest_collection_finish(session):
    global _offline_install
    if any("learner_venv_from_wheelhouse" in getattr(item, "fixturenames", ()) for item in session.items):
        _offline_install = _OfflineInstall()
        _offline_install.start()


def pytest_sessionfinish(session):
    if _offline_install is not None:
        _offline_install.stop()


@pytest.fixture(scope="session")
def learner_venv_from_wheelhouse():
    """A wheelhouse of this machine's wheels, built here, and a fresh virtual environment that
    `make env WHEELHOUSE=...` filled from it with no package index: (venv, wheelhouse)."""
    assert _offline_install is not None, "the offline install starts when collection needs it"
    _offline_install.join(timeout=1800)
    assert not _offline_install.is_alive(), "the offline install took more than 30 minutes"
    assert _offline_install.failure is None, _offline_install.failure
    return _offline_install.venv, _offline_install.wheelhouse


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
