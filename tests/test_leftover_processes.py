"""The leftover-process check (make check-processes) reports this run's processes and only those.

Real kernels: one started with a run's marker (BOOK_RUN_ID) that also starts a Dask cluster, as a
chapter does, and one started without it, as a learner's own JupyterLab kernel is. The check must
report the first with its Dask worker, ignore the second, and pass once the first is shut down
while the second keeps running. (.ci/run also runs the whole `make test` beside an unrelated kernel.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import psutil
import pytest
from jupyter_client import KernelManager

from scaling_ml import PROJECT_ROOT
from tools.leftover_processes import MARKER, leftovers

CHECK = [sys.executable, "-m", "tools.leftover_processes"]
START_CLUSTER = """
from distributed import LocalCluster
cluster = LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0")
"""


def start_kernel(environment: dict[str, str]):
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(env=environment)
    client = manager.client()
    client.start_channels()
    client.wait_for_ready(timeout=120)
    return manager, client


def stop_kernel(manager, client) -> None:
    client.stop_channels()
    if manager.has_kernel:
        manager.shutdown_kernel(now=False)


def run_check(run_id: str) -> subprocess.CompletedProcess:
    return subprocess.run(CHECK, env={**os.environ, MARKER: run_id}, cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def kernels():
    run_id = f"test-{uuid.uuid4().hex}"
    unmarked_environment = {name: value for name, value in os.environ.items() if name != MARKER}
    started = []
    try:
        started.append(start_kernel({**os.environ, MARKER: run_id}))
        started.append(start_kernel(unmarked_environment))
        yield run_id, started[0], started[1]
    finally:
        for manager, client in started:
            stop_kernel(manager, client)


def pids_in(lines: list[str]) -> set[int]:
    return {int(line.split()[0]) for line in lines}


@pytest.mark.cluster
def test_only_the_runs_own_kernel_and_its_workers_are_reported(kernels):
    run_id, (marked, marked_client), (unmarked, unmarked_client) = kernels
    reply = marked_client.execute_interactive(START_CLUSTER, timeout=180)
    assert reply["content"]["status"] == "ok", reply["content"]
    marked_pid, unmarked_pid = marked.provisioner.pid, unmarked.provisioner.pid
    workers = {child.pid for child in psutil.Process(marked_pid).children(recursive=True)}
    assert workers, "the marked kernel's cluster started no worker process"

    found = pids_in(leftovers(run_id))
    assert {marked_pid, *workers} <= found, (found, marked_pid, workers)
    assert unmarked_pid not in found

    check = run_check(run_id)
    assert check.returncode == 1, check.stdout + check.stderr
    assert str(marked_pid) in check.stdout and f"\n{unmarked_pid} " not in check.stdout, check.stdout

    # The run cleans up after itself; the learner's kernel keeps running, and the check passes.
    reply = marked_client.execute_interactive("cluster.close()", timeout=120)
    assert reply["content"]["status"] == "ok", reply["content"]
    stop_kernel(marked, marked_client)
    check = run_check(run_id)
    assert check.returncode == 0, check.stdout + check.stderr
    assert unmarked.is_alive() and psutil.pid_exists(unmarked_pid)
    assert unmarked_client.execute_interactive("1 + 1", timeout=60)["content"]["status"] == "ok"


def test_the_check_leaves_out_itself_and_the_make_it_runs_under():
    """Every process of `make check-processes` carries the marker: the check and its ancestors
    (make, the shell) must not count, or it would fail every run."""
    run_id = f"test-{uuid.uuid4().hex}"
    shell = subprocess.run(["bash", "-c", f'"{sys.executable}" -m tools.leftover_processes; echo "exit $?"'],
                           env={**os.environ, MARKER: run_id}, cwd=PROJECT_ROOT, capture_output=True, text=True,
                           timeout=120)
    assert shell.stdout.strip().endswith("exit 0"), shell.stdout + shell.stderr


def test_without_a_marker_the_check_refuses_to_guess():
    environment = {name: value for name, value in os.environ.items() if name != MARKER}
    check = subprocess.run(CHECK, env=environment, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert check.returncode == 2 and "BOOK_RUN_ID is not set" in check.stderr
