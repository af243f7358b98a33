"""The Slurm lane (chapter 5): a real single-node Slurm, dask-jobqueue's SLURMCluster submitting
worker jobs to it, and chapter 1's grid search running inside those jobs.

Needs root and Debian's `slurmctld slurmd slurm-client munge`. Outside CI it is skipped when
`sbatch` is missing; in CI (CI set) it always runs. The squeue output seen while the workers run
and the lane's time are printed (pytest -s) and written to _build/laptop_to_cluster/slurm_lane.txt.
"""

import os
import shutil
import subprocess
import tempfile
import time

import pytest

from scaling_ml import laptop_to_cluster as ltc

REPORT_DIR = ltc.PROJECT_ROOT / "_build" / "laptop_to_cluster"

if shutil.which("sbatch") is None and not os.environ.get("CI"):
    pytest.skip("Slurm is not installed (no sbatch); in CI this lane runs. Install it with "
                "apt-get install -y slurmctld slurmd slurm-client munge", allow_module_level=True)


def _wait_for_empty_queue(timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = ltc.squeue().splitlines()[1:]
        if not jobs:
            return []
        time.sleep(0.5)
    return jobs


def test_grid_search_in_slurm_jobs():
    from dask_jobqueue import SLURMCluster
    from distributed import Client

    start = time.perf_counter()
    subprocess.run(["bash", str(ltc.SLURM_START)], check=True)
    try:
        with tempfile.TemporaryDirectory(prefix="ch5-slurm-") as scratch:
            options = ltc.slurm_cluster_options(cores=1, memory="2GiB", walltime="00:20:00",
                                                log_directory=scratch, local_directory=scratch)
            with SLURMCluster(**options) as slurm, Client(slurm) as client:
                slurm.scale(jobs=2)
                client.wait_for_workers(2, timeout=120)
                workers_up = time.perf_counter() - start
                queue_while_running = ltc.squeue()
                job_ids = client.run(lambda: os.environ.get("SLURM_JOB_ID"))
                search = ltc.newsgroups_grid_search(cv=3)
                # The work ran inside the Slurm jobs: each worker is one job.
                assert len(job_ids) == 2 and all(job_ids.values())
                assert len(set(job_ids.values())) == 2
                for job_id in job_ids.values():
                    assert f" {job_id} " in f" {queue_while_running} "
                assert len(search.cv_results_["params"]) == 8
                best = ltc.best_result(search)
            leftover = _wait_for_empty_queue()
            assert leftover == [], f"jobs left in the queue after cluster.close(): {leftover}"
    finally:
        subprocess.run(["bash", str(ltc.SLURM_STOP)], check=True)
    for daemon in ltc.SLURM_DAEMONS:
        assert ltc.live_processes(daemon) == [], f"{daemon} still running"
    seconds = time.perf_counter() - start
    report = (f"Slurm lane: 2 worker jobs connected after {workers_up:.1f} s, whole lane "
              f"{seconds:.1f} s; best {best}\nsqueue while the workers ran:\n"
              f"{queue_while_running}")
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    (REPORT_DIR / "slurm_lane.txt").write_text(report)
    print(report)
