"""The learner setup check: a passing run, and failing ones that name the fix."""

import os
import subprocess
import sys

import pytest

from scaling_ml import check, cluster


def run_check(*arguments, **environment):
    env = {**os.environ, **environment}
    return subprocess.run([sys.executable, "-m", "scaling_ml.check", *arguments],
                          capture_output=True, text=True, env=env, timeout=300)


def _check_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.split(" ", 1)[0] in ("OK", "WARN", "FAIL")]


@pytest.mark.cluster
def test_a_complete_setup_passes_every_check():
    result = run_check()
    assert result.returncode == 0, result.stdout + result.stderr
    lines = _check_lines(result.stdout)
    # Port 8787 may be held by another cluster on this machine: that only warns.
    assert all(line.startswith("OK") or line.startswith("WARN port 8787") for line in lines), result.stdout
    for expected in ("package dask-ml", "20 Newsgroups offline", "cluster on loopback",
                     "dashboard answers", "workers have scikit-learn", "free memory", "cores"):
        assert any(expected in line for line in lines), f"no {expected!r} line"
    summary = result.stdout.splitlines()[-1]
    assert summary.startswith("scaling-ml check: ") and " 0 FAIL | Python 3." in summary, summary


def test_a_taken_dashboard_port_warns_and_names_the_leftover_cluster():
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = check.check_dashboard_port(port)
    assert not result.ok and result.status == "WARN"
    assert "client.close()" in result.line() and "restart its kernel" in result.line()
    free = check.check_dashboard_port(port)
    assert free.ok and free.status == "OK"


def test_the_summary_names_what_failed_on_one_line():
    results = [check.CheckResult("cores", True, "2"),
               check.CheckResult("20 Newsgroups offline", False, "no cache", "import it"),
               check.CheckResult("port 8787 free", False, "in use", "close it", required=False)]
    summary = check.summary_line(results)
    assert "\n" not in summary
    assert "1 OK, 1 WARN, 1 FAIL" in summary
    assert summary.endswith("not OK: 20 Newsgroups offline, port 8787 free")


@pytest.mark.cluster
def test_missing_newsgroups_data_fails_with_the_import_command(tmp_path):
    result = run_check("--no-cluster", SCIKIT_LEARN_DATA=str(tmp_path))
    assert result.returncode == 1
    failing = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failing) == 1 and "20 Newsgroups offline" in failing[0]
    assert "python -m scaling_ml.data import-newsgroups" in failing[0]


@pytest.mark.cluster
def test_unreachable_scheduler_fails_the_cluster_check():
    result = run_check(DASK_SCHEDULER_ADDRESS="tcp://127.0.0.1:9")
    assert result.returncode == 1
    failing = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failing) == 1 and failing[0].startswith("FAIL cluster starts: BookError")
    assert "DASK_SCHEDULER_ADDRESS" in failing[0]


def test_a_version_other_than_the_pin_fails(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("dask==1999.1.0\nnot-a-package-here==1.0\n")
    results = check.check_pins(check.read_pins(requirements))
    assert [result.ok for result in results] == [False, False]
    assert "2025.1.0 (pinned 1999.1.0)" in results[0].line()
    assert "not installed (pinned 1.0)" in results[1].line()
    assert "fix: run `make env`" in results[0].line()


@pytest.mark.cluster
def test_a_package_missing_on_the_workers_fails():
    with cluster.get_client(n_workers=1) as client:
        results = check.check_worker_packages(
            client, {"scikit-learn": "sklearn", "not-a-package-here": "not_a_package_here"})
    assert [result.ok for result in results] == [True, False]
    assert "install the same requirements.txt" in results[1].line()


def test_too_few_resources_fail():
    cores, memory = check.check_resources(cores=1, free_memory_gib=0.5)
    assert not cores.ok and not memory.ok
    assert "Scale up" in memory.line()
