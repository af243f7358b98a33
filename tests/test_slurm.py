"""The Slurm lane (chapter 5): a real single-node Slurm, and the chapter's own SLURMCluster code.

The chapter's `SLURMCluster(...)` cell runs as written (its only demo setting is the visible
`interface="lo"`), then the `scale` / `Client` / `wait_for_workers` block the chapter shows. On
those two worker jobs run chapter 1's grid search (joblib's dask backend) and one whole chapter
through strict nbval (SLURM_LANE_CHAPTER, default 00: the cheapest notebook that runs a chapter's
own set-up against an existing scheduler). The jobs' log files must be where the cell's
`log_directory` says, and the queue must be empty after `close()`.

Needs root and Debian's `slurmctld slurmd slurm-client munge`. Outside CI it is skipped when
`sbatch` is missing; in CI (CI set) it always runs. The squeue output seen while the workers run
and the lane's time are printed (pytest -s) and written to _build/laptop_to_cluster/slurm_lane.txt.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from distributed import Client

from tests import lanes

pytestmark = pytest.mark.cluster  # make test-cluster

SLURM_START = lanes.PROJECT_ROOT / "scripts" / "slurm_start.sh"
SLURM_STOP = lanes.PROJECT_ROOT / "scripts" / "slurm_stop.sh"
SLURM_DAEMONS = ("slurmctld", "slurmd", "munged")
NBVAL_CHAPTER = os.environ.get("SLURM_LANE_CHAPTER", "00")

if shutil.which("sbatch") is None and not os.environ.get("CI"):
    pytest.skip("Slurm is not installed (no sbatch); in CI this lane runs. Install it with "
                "apt-get install -y slurmctld slurmd slurm-client munge", allow_module_level=True)


def squeue() -> str:
    return subprocess.run(["squeue"], capture_output=True, text=True, check=True).stdout


def _wait_for_empty_queue(timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = squeue().splitlines()[1:]
        if not jobs:
            return []
        time.sleep(0.5)
    return jobs


def test_the_chapters_slurm_cells_in_real_jobs():
    start = time.perf_counter()
    cell = lanes.chapter_code_cell("slurm_cluster = SLURMCluster(")
    scale_block = lanes.chapter_python_block("slurm_cluster.scale(jobs=")
    namespace = {"Path": Path, "sys": sys, "os": os, "Client": Client}
    job_logs: list[Path] = []
    subprocess.run(["bash", str(SLURM_START)], check=True)
    try:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(cell, namespace)  # the chapter's cell, as written
            try:
                exec(scale_block, namespace)  # the chapter's scale / Client / wait block
                slurm_cluster, slurm_client = namespace["slurm_cluster"], namespace["slurm_client"]
                workers_up = time.perf_counter() - start
                queue_while_running = squeue()
                job_ids = slurm_client.run(lambda: os.environ.get("SLURM_JOB_ID"))
                search = lanes.newsgroups_grid_search()
                notebook = sorted((lanes.PROJECT_ROOT / "notebooks").glob(f"{NBVAL_CHAPTER}_*.ipynb"))
                environment = dict(os.environ, DASK_SCHEDULER_ADDRESS=slurm_cluster.scheduler_address)
                nbval = lanes.run_nbval(lanes.PROJECT_ROOT, notebook, environment)
                workers_after_nbval = len(slurm_client.scheduler_info()["workers"])
                log_directory = Path(re.search(r"#SBATCH -e (\S+)", slurm_cluster.job_script())[1]).parent
                job_logs = [log_directory / f"dask-worker-{job_id}.{kind}"
                            for job_id in job_ids.values() for kind in ("err", "out")]
            finally:
                with contextlib.suppress(KeyError):
                    namespace["slurm_client"].close()
                namespace["slurm_cluster"].close()
        leftover = _wait_for_empty_queue()
        registered = [path for path in job_logs if path.suffix == ".err"
                      and "Registered to" in path.read_text(errors="replace")]
    finally:
        for path in job_logs:
            path.unlink(missing_ok=True)
        subprocess.run(["bash", str(SLURM_STOP)], check=True)
    daemons_left = {daemon: lanes.live_processes(daemon) for daemon in SLURM_DAEMONS}
    seconds = time.perf_counter() - start
    best = {"params": search.best_params_, "score": round(float(search.best_score_), 3)}
    lines = [f"Slurm lane: 2 worker jobs connected after {workers_up:.1f} s; grid search best {best}; "
             f"{notebook[0].name} through strict nbval on the jobs: exit code {nbval.returncode} "
             f"({nbval.seconds:.0f} s); whole lane {seconds:.1f} s",
             f"SLURM_JOB_ID seen by each worker: {sorted(job_ids.values())}",
             "squeue while the workers ran:", queue_while_running.rstrip()]
    for name, failures in nbval.failures.items():
        lines += [f"FAILED {name}:", *(f"  {failure}" for failure in failures)]
    lanes.write_report("slurm_lane.txt", "\n".join(lines) + "\n")

    assert "#SBATCH -A scaling-ml" in printed.getvalue() and "--interface lo" in printed.getvalue()
    # The work ran inside the Slurm jobs: each worker is one job, listed by squeue.
    assert len(job_ids) == 2 and len(set(job_ids.values())) == 2 and all(job_ids.values())
    for job_id in job_ids.values():
        assert f" {job_id} " in f" {queue_while_running} "
    assert len(search.cv_results_["params"]) == 8
    assert workers_after_nbval == 2
    assert len(registered) == 2, f"job logs in the cell's log_directory: {job_logs}"
    assert leftover == [], f"jobs left in the queue after cluster.close(): {leftover}"
    assert not any(daemons_left.values()), f"Slurm daemons still running: {daemons_left}"
    assert nbval.returncode == 0, f"strict nbval failed on the Slurm jobs:\n{nbval.output[-6000:]}"
