"""The external-cluster lane (chapter 5): chapters on workers that run the way a site runs them.

A real `dask scheduler` listens on a non-loopback address of this machine (a bridge the test
creates), and each `dask worker` runs in its own Linux network namespace (its own "node", joined
to the bridge by a veth pair), from a second virtual environment that has the pinned libraries
but not the book's package, in its own working directory with a private `--local-directory`.
The notebooks run from a fresh clone of the repository (committed files only) with no
NEWSGROUPS_ARCHIVE and scikit-learn's cache in a temporary data home filled by the offline import,
and must pass strict nbval against that cluster through DASK_SCHEDULER_ADDRESS.

Needs root (CI is): when namespaces cannot be created the lane fails and says why; it does not
skip. LANE_CHAPTERS="00 01" runs other chapters than the default 00 01 03 04. The lane's time,
the workers' addresses and any failing cells are printed (pytest -s) and written to
_build/laptop_to_cluster/external_lane.txt.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import cloudpickle
import pytest
from distributed import Client

from scaling_ml import laptop_to_cluster as chapter
from tests import lanes

pytestmark = pytest.mark.cluster  # make test-cluster

CHAPTERS = os.environ.get("LANE_CHAPTERS", "00 01 03 04").split()
# The workers cannot import this test module: send its functions by value, as a notebook's are.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _where_am_i(dask_worker):
    return {"scaling_ml": importlib.util.find_spec("scaling_ml") is not None,
            "prefix": sys.prefix, "cwd": os.getcwd(), "home": os.environ.get("HOME"),
            "local_directory": dask_worker.local_directory, "address": dask_worker.address,
            "pythonpath": os.environ.get("PYTHONPATH")}


def _check_the_cluster_is_site_like(running: lanes.NamespacedCluster, workers_prefix: Path):
    lab = running.lab
    assert running.address.startswith(f"tcp://{lab.bridge_address}:"), running.address
    with Client(running.address, timeout=60) as client:
        seen = client.run(_where_am_i)
        # Same pinned libraries everywhere. check=True only warns ("Mismatched versions found"):
        # made an error here, so that a difference fails the lane.
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message="Mismatched versions")
            client.get_versions(check=True)
        # Data made on one "node" and used on the other crosses the bridge between namespaces.
        first, second = sorted(seen)
        made = client.submit(lambda: list(range(100_000)), workers=[first], pure=False)
        total = client.submit(sum, made, workers=[second], pure=False)
        assert total.result(timeout=60) == sum(range(100_000))
    hosts = sorted(info["address"].split("//")[1].rsplit(":", 1)[0] for info in seen.values())
    assert hosts == sorted(lab.host_addresses), (hosts, lab.host_addresses)
    for info in seen.values():
        assert info["scaling_ml"] is False, "the workers can import the book's package"
        assert Path(info["prefix"]) == workers_prefix and info["pythonpath"] is None
    homes = sorted(str(home) for home in running.worker_homes)
    assert sorted(info["cwd"] for info in seen.values()) == homes
    assert sorted(info["home"] for info in seen.values()) == homes
    for info in seen.values():
        assert Path(info["local_directory"]).is_relative_to(info["cwd"])
    return seen


@pytest.mark.scale_up("00_setup", "set DASK_SCHEDULER_ADDRESS")
@pytest.mark.scale_up("01_distributed_training", "set DASK_SCHEDULER_ADDRESS")
def test_notebooks_on_workers_in_their_own_network_namespaces():
    start = time.perf_counter()
    lines = []
    with tempfile.TemporaryDirectory(prefix="ch5-lane-") as scratch:
        scratch = Path(scratch)
        clone, data_home, kernel_home = scratch / "book", scratch / "scikit_learn_data", scratch / "home"
        commit = lanes.clone_repository(clone)
        notebooks = lanes.notebook_paths(clone, CHAPTERS)
        kernel_home.mkdir()
        with contextlib.ExitStack() as stack:
            with lanes.filling_data_home(clone, data_home):  # meanwhile: environment, cluster
                workers_python = lanes.workers_environment(scratch / "workers-venv")
                running = stack.enter_context(
                    lanes.namespaced_cluster(scratch / "cluster", workers_python))
            prepared = time.perf_counter() - start
            lab = running.lab
            seen = _check_the_cluster_is_site_like(running, scratch / "workers-venv")
            lines.append(f"scheduler {running.address} on bridge {lab.bridge}; workers:")
            lines += [f"  {info['address']} in its namespace, cwd {Path(info['cwd']).name}, "
                      f"scaling_ml importable: {info['scaling_ml']}" for info in seen.values()]
            environment = {key: value for key, value in os.environ.items()
                           if key not in ("NEWSGROUPS_ARCHIVE", "PYTHONPATH")}
            environment.update(DASK_SCHEDULER_ADDRESS=running.address, PYTHONPATH=str(clone),
                               SCIKIT_LEARN_DATA=str(data_home), HOME=str(kernel_home))
            where = lanes.run([sys.executable, "-c", "import scaling_ml; print(scaling_ml.__file__)"],
                              cwd=clone, env=environment).stdout.strip()
            assert Path(where).is_relative_to(clone), f"the kernels import the book from {where}"
            result = lanes.run_nbval(clone, notebooks, environment)
            logs = running.logs()
        lab_left = lab.leftovers()
        processes_left = lanes.processes_mentioning(str(scratch))
    seconds = time.perf_counter() - start
    lines.insert(0, f"external-cluster lane (namespaces): commit {commit[:12]}, "
                    f"{', '.join(p.name for p in notebooks)}: nbval exit code {result.returncode}; "
                    f"set-up {prepared:.0f} s, nbval {result.seconds:.0f} s, whole lane {seconds:.0f} s")
    if lanes.uncommitted_notebooks():
        lines.append(f"note: uncommitted notebook changes are not tested: {lanes.uncommitted_notebooks()}")
    for notebook, failures in result.failures.items():
        lines.append(f"FAILED {notebook}:")
        lines += [f"  {failure}" for failure in failures]
    if result.returncode != 0:
        worker_errors = [line for log in logs.values() for line in log.splitlines()
                         if "Error" in line or "No module named" in line]
        lines += ["scheduler and worker log lines with errors:", *worker_errors[:40]]
    lanes.write_report("external_lane.txt", "\n".join(lines) + "\n")
    assert lab_left == [], f"namespaces or links left: {lab_left}"
    assert processes_left == [], f"processes left running: {processes_left}"
    assert result.returncode == 0, (
        "strict nbval failed on the namespaced cluster:\n" + result.output[-6000:])


def test_the_lab_fails_clearly_without_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    try:
        with lanes.NetworkLab(1):
            pass
    except lanes.LaneError as error:
        assert "needs root" in str(error)
    else:
        raise AssertionError("NetworkLab started without root")


def test_the_workers_environment_lacks_the_book(tmp_path):
    python = lanes.workers_environment(tmp_path / "venv")
    probe = lanes.run([str(python), "-c", "import sklearn, dask_ml; print(sklearn.__version__)"],
                      cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    from sklearn import __version__

    assert probe.stdout.strip() == __version__


@pytest.mark.scale_up("05_laptop_to_cluster", "--interface ib0 (the network the nodes share)")
@pytest.mark.scale_up("05_laptop_to_cluster", "a `dask worker` on every machine, --nworkers one per core")
def test_the_chapters_commands_with_their_scale_up_settings_across_a_network(tmp_path):
    """Chapter 5's `dask scheduler` / `dask worker` cell with its Scale up comments followed: the
    scheduler on a network interface (the lab's bridge) instead of 127.0.0.1, and one `dask worker`
    on another machine (a network namespace) with --nworkers one per core (2 here) and
    --memory-limit its share of that machine's memory (1 GiB each here)."""
    with lanes.NetworkLab(1) as lab:
        code = lanes.with_replacements(lanes.chapter_code_cell('scheduler_command = ["dask", "scheduler"'), {
            '"--host", "127.0.0.1"': f'"--interface", "{lab.bridge}"',
            "for number in range(2):": "for number in range(1):",  # one machine...
            '"--nthreads", "1", "--memory-limit", "2GiB",':        # ... one process per core
                '"--nworkers", "2", "--nthreads", "1", "--memory-limit", "1GiB",',
            "workers.append(chapter.start_command(worker_command,":
                f"workers.append(chapter.start_command(['ip', 'netns', 'exec', '{lab.namespaces[0]}', "
                "*worker_command],"})
        namespace = {"Path": Path, "tempfile": tempfile, "chapter": chapter}
        try:
            exec(code, namespace)
            scheduler_file = namespace["scheduler_file"]
            with Client(scheduler_file=str(scheduler_file), timeout=60) as client:
                client.wait_for_workers(2, timeout=120)
                workers = client.scheduler_info()["workers"].values()
                scheduler_address = client.scheduler.address
                seen = sorted((worker["host"], worker["memory_limit"], worker["nthreads"]) for worker in workers)
                on_loopback = lanes.run(["ip", "netns", "exec", lab.namespaces[0], sys.executable, "-c",
                                         "import socket\ntry:\n socket.create_connection(('127.0.0.1', "
                                         f"{scheduler_address.rsplit(':', 1)[1]}), timeout=5)\n"
                                         "except OSError as error:\n print(type(error).__name__)"]).stdout
        finally:
            for command in [*namespace.get("workers", []), namespace.get("scheduler")]:
                if command is not None:
                    command.stop()
            shutil.rmtree(namespace.get("scratch", tmp_path / "none"), ignore_errors=True)
    lab_left = lab.leftovers()
    assert scheduler_address.startswith(f"tcp://{lab.bridge_address}:"), scheduler_address
    assert seen == [(lab.host_addresses[0], 2**30, 1)] * 2, seen
    # The same scheduler on 127.0.0.1, as in the notebook, is out of the other machine's reach.
    assert on_loopback.strip() == "ConnectionRefusedError", on_loopback
    assert lab_left == [], lab_left
