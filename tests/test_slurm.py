"""The Slurm lanes (chapter 5): a real single-node Slurm, started once for all of them, running the
chapter's own cells and blocks in real jobs.

1. The `SLURMCluster(...)` cell as written (its demo settings are the visible `interface="lo"` for
   the workers and for the scheduler), then the `scale` / `Client` / `wait_for_workers` block, with
   no TMPDIR in the jobs' environment; on those two jobs chapter 1's grid search and one whole
   chapter through strict nbval (SLURM_LANE_CHAPTER, default 00). The jobs' logs must be where
   `log_directory` says, and the queue empty after `close()`. Beside it, the cell's `# Scale up:`
   comments at a proportional size: one job of 4 cores and 2 worker processes, with job_mem above
   the workers' memory.
2. A refused job: the cell asking for a partition this Slurm does not have; the chapter's
   diagnosis block prints sbatch's own error within seconds.
3. `security=True`: the chapter's cells, with two TLS worker jobs in between.
4. The walltime: the cell with a 1-minute walltime, once with the chapter's `--lifetime` advice at
   that scale and `adapt`, once without; a computation runs across the workers' retirement.
5. Batch mode: the chapter's `search_in_one_job.py` and `search_in_one_job.sh`, submitted with
   sbatch while lane 4 waits for its walltime.
6. A crashed kernel: a process that made a cluster dies with SIGKILL; its job must not idle.

Needs root and Debian's `slurmctld slurmd slurm-client munge`. Outside CI it is skipped when
`sbatch` is missing; in CI (CI set) it always runs. What each lane saw (squeue, `sacct
--completion`, job log lines) and its time are printed (pytest -s) and written to
_build/laptop_to_cluster/slurm_lanes.txt.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from urllib.parse import urlparse

import cloudpickle
import pytest
from dask_jobqueue import SLURMCluster
from distributed import Client, as_completed

from tests import lanes

pytestmark = pytest.mark.cluster  # make test-cluster

SLURM_START = lanes.PROJECT_ROOT / "scripts" / "slurm_start.sh"
SLURM_STOP = lanes.PROJECT_ROOT / "scripts" / "slurm_stop.sh"
SLURM_DAEMONS = ("slurmctld", "slurmd", "munged")
NBVAL_CHAPTER = os.environ.get("SLURM_LANE_CHAPTER", "00")
SLURM_CELL = "slurm_cluster = SLURMCluster("
# The jobs import nothing of the tests: functions defined here travel by value, as a notebook's do.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

if shutil.which("sbatch") is None and not os.environ.get("CI"):
    pytest.skip("Slurm is not installed (no sbatch); in CI this lane runs. Install it with "
                "apt-get install -y slurmctld slurmd slurm-client munge", allow_module_level=True)


# ---------------------------------------------------------------- Slurm, once for the module

def squeue(*arguments: str) -> str:
    return subprocess.run(["squeue", *arguments], capture_output=True, text=True, check=True).stdout


def queued_job_ids() -> set[str]:
    return set(squeue("-h", "-o", "%i").split())


def wait_for_empty_queue(job_ids=None, timeout: float = 60) -> list[str]:
    """Wait until none of ``job_ids`` (any job, without them) is queued; the ones left."""
    deadline = time.monotonic() + timeout
    while True:
        left = queued_job_ids() if job_ids is None else queued_job_ids() & set(job_ids)
        if not left or time.monotonic() > deadline:
            return sorted(left)
        time.sleep(0.5)


def job_endings(job_ids) -> dict[str, dict[str, str]]:
    """How each job ended, from Slurm's job-completion log (`sacct --completion`)."""
    fields = ["JobID", "JobName", "State", "ExitCode", "Elapsed", "Timelimit"]
    output = subprocess.run(["sacct", "--completion", "-P", "-n", "-o", ",".join(fields),
                             "-j", ",".join(sorted(job_ids))], capture_output=True, text=True).stdout
    endings = {}
    for line in output.splitlines():  # the last record wins (job ids restart with a new state)
        record = dict(zip(fields, line.split("|")))
        endings[record["JobID"]] = record
    return endings


def seconds(elapsed: str) -> int:
    """Slurm's [D-][HH:]MM:SS as seconds."""
    days, _, clock = elapsed.rpartition("-")
    parts = [int(part) for part in clock.split(":")]
    return int(days or 0) * 86400 + sum(value * 60 ** power for power, value in enumerate(reversed(parts)))


def log_excerpt(path: Path, *words: str) -> list[str]:
    return [re.sub(r"^\S+ \S+ - ", "", line) for line in lanes.run(["cat", str(path)]).stdout.splitlines()
            if any(word in line for word in words)]


@pytest.fixture(scope="module")
def slurm():
    """Slurm started once for every lane of this module, and stopped after the last; collects
    each lane's report."""
    subprocess.run(["bash", str(SLURM_START)], check=True)
    report: list[str] = [subprocess.run(["sinfo", "-N", "-o", "%N %c %m %T"], capture_output=True,
                                        text=True).stdout.rstrip()]
    try:
        yield report
    finally:
        subprocess.run(["bash", str(SLURM_STOP)], check=True)
        lanes.write_report("slurm_lanes.txt", "\n".join(report) + "\n")
    daemons_left = {daemon: lanes.live_processes(daemon) for daemon in SLURM_DAEMONS}
    assert not any(daemons_left.values()), f"Slurm daemons still running: {daemons_left}"


def run_chapter_code(code: str, namespace: dict) -> str:
    """Run a cell or block of chapter 5 in ``namespace``; what it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(code, namespace)
    return printed.getvalue()


def chapter_namespace(**names) -> dict:
    """What the chapter's earlier cells define that its Slurm cells use: no more, so that a cell or
    block that uses a name the notebook never imports fails here as it would in the notebook."""
    return {"Path": Path, "shlex": shlex, "sys": sys, "Client": Client, **names}


def slurm_cell(**replacements: str) -> str:
    return lanes.with_replacements(lanes.chapter_code_cell(SLURM_CELL), replacements)


def close_all(namespace: dict, *names: str) -> None:
    for name in names:
        with contextlib.suppress(Exception):
            namespace[name].close()


# ---------------------------------------------------------------- 1. the chapter's cell as written

def where_am_i(dask_worker):
    return {"job": os.environ.get("SLURM_JOB_ID"), "TMPDIR": os.environ.get("TMPDIR"),
            "local_directory": dask_worker.local_directory}


def test_the_chapters_slurm_cells_in_real_jobs(slurm, crashing_kernel, monkeypatch):
    start = time.perf_counter()
    monkeypatch.delenv("TMPDIR", raising=False)  # sbatch passes the submitter's environment on
    cell = lanes.chapter_code_cell(SLURM_CELL)
    scale_block = lanes.chapter_python_block("slurm_cluster.scale(jobs=")
    namespace = chapter_namespace()
    job_logs: list[Path] = []
    try:
        printed = run_chapter_code(cell, namespace)  # the chapter's cell, as written
        printed += run_chapter_code(scale_block, namespace)
        slurm_cluster, slurm_client = namespace["slurm_cluster"], namespace["slurm_client"]
        workers_up = time.perf_counter() - start
        queue_while_running = squeue()
        seen = slurm_client.run(where_am_i)
        search = lanes.newsgroups_grid_search()
        notebook = sorted((lanes.PROJECT_ROOT / "notebooks").glob(f"{NBVAL_CHAPTER}_*.ipynb"))
        environment = dict(os.environ, DASK_SCHEDULER_ADDRESS=slurm_cluster.scheduler_address)
        nbval = lanes.run_nbval(lanes.PROJECT_ROOT, notebook, environment)
        workers_after_nbval = len(slurm_client.scheduler_info()["workers"])
        scheduler_address = slurm_cluster.scheduler_address
        log_directory = Path(re.search(r"#SBATCH -e (\S+)", slurm_cluster.job_script())[1]).parent
        job_ids = sorted(info["job"] for info in seen.values())
        job_logs = [log_directory / f"dask-worker-{job_id}.{kind}"
                    for job_id in job_ids for kind in ("err", "out")]
    finally:
        close_all(namespace, "slurm_client", "slurm_cluster")
    try:
        leftover = wait_for_empty_queue()
        registered = [path for path in job_logs if path.suffix == ".err"
                      and "Registered to" in path.read_text(errors="replace")]
        directories = [log_excerpt(path, "Local Directory") for path in job_logs if path.suffix == ".err"]
    finally:
        for path in job_logs:
            path.unlink(missing_ok=True)
    best = {"params": search.best_params_, "score": round(float(search.best_score_), 3)}
    slurm += [f"\n1. The chapter's SLURMCluster cell as written: 2 worker jobs connected after "
              f"{workers_up:.1f} s; grid search best {best}; {notebook[0].name} through strict nbval "
              f"on the jobs: exit code {nbval.returncode} ({nbval.seconds:.0f} s); lane "
              f"{time.perf_counter() - start:.1f} s",
              f"   scheduler at {scheduler_address}; each worker: "
              + "; ".join(f"job {info['job']}, TMPDIR={info['TMPDIR']}, local directory "
                          f"{info['local_directory']}" for info in seen.values()),
              "   squeue while the workers ran:", textwrap.indent(queue_while_running.rstrip(), "   "),
              *(f"   job log: {line}" for lines in directories for line in lines)]
    for name, failures in nbval.failures.items():
        slurm += [f"   FAILED {name}:", *(f"     {failure}" for failure in failures)]

    assert "#SBATCH -A scaling-ml" in printed and "--interface lo" in printed
    assert "--local-directory ${TMPDIR:-/tmp}" in printed and "#SBATCH --mem=3G" in printed
    assert scheduler_address.startswith("tcp://127.0.0.1:")
    # The work ran inside the Slurm jobs: each worker is one job, listed by squeue.
    assert len(job_ids) == 2 and len(set(job_ids)) == 2 and all(job_ids)
    for job_id in job_ids:
        assert f" {job_id} " in f" {queue_while_running} "
    # The submitter had no TMPDIR; Slurm (slurmstepd) sets TMPDIR=/tmp in the job when it has none.
    for info in seen.values():
        assert info["TMPDIR"] == "/tmp" and info["local_directory"].startswith("/tmp/"), info
    assert len(search.cv_results_["params"]) == 8
    assert workers_after_nbval == 2
    assert len(registered) == 2, f"job logs in the cell's log_directory: {job_logs}"
    assert leftover == [], f"jobs left in the queue after cluster.close(): {leftover}"
    assert nbval.returncode == 0, f"strict nbval failed on the Slurm jobs:\n{nbval.output[-6000:]}"


def worker_shape(dask_worker):
    return {"job": os.environ.get("SLURM_JOB_ID"), "nthreads": dask_worker.state.nthreads,
            "memory_limit": dask_worker.memory_manager.memory_limit, "TMPDIR": os.environ.get("TMPDIR"),
            "local_directory": dask_worker.local_directory}


@pytest.mark.scale_up("05_laptop_to_cluster", "cores per job, e.g. a whole node's 32")
@pytest.mark.scale_up("05_laptop_to_cluster", 'per job, e.g. memory="112GiB" and job_mem="120G"')
def test_several_workers_share_one_job_and_start_without_tmpdir(slurm, tmp_path):
    """The cell's Scale up comments at this node's size: 4 cores and 2 processes per job (a whole
    node's 32 with 8 processes, proportionally), the workers' 2 GiB shared between them and the
    job asking Slurm for 3 GiB. Its prologue unsets TMPDIR (a lane override: Slurm always sets it,
    other launchers may not): `${TMPDIR:-/tmp}` starts the workers, a bare `$TMPDIR` does not."""
    start = time.perf_counter()
    activate = 'job_script_prologue=[f"source {shlex.quote(sys.prefix)}/bin/activate"]'
    without_tmpdir = 'job_script_prologue=[f"source {shlex.quote(sys.prefix)}/bin/activate", "unset TMPDIR"]'
    logs = 'str(Path.home() / "dask-logs")'
    namespace, bare = chapter_namespace(), chapter_namespace()
    try:
        run_chapter_code(slurm_cell(**{"cores=1,": "cores=4,", "processes=1, ": "processes=2, ",
                                       activate: without_tmpdir, logs: repr(str(tmp_path / "fallback"))}),
                         namespace)
        run_chapter_code(slurm_cell(**{'local_directory="${TMPDIR:-/tmp}"': 'local_directory="$TMPDIR"',
                                       activate: without_tmpdir, logs: repr(str(tmp_path / "bare"))}), bare)
        slurm_cluster = namespace["slurm_cluster"]
        slurm_cluster.scale(jobs=1)
        bare["slurm_cluster"].scale(jobs=1)
        with Client(slurm_cluster) as slurm_client:
            slurm_client.wait_for_workers(2, timeout=120)
            shapes = list(slurm_client.run(worker_shape).values())
            job = subprocess.run(["scontrol", "show", "job", shapes[0]["job"]], capture_output=True,
                                 text=True).stdout
        deadline = time.monotonic() + 60
        while not list((tmp_path / "bare").glob("*.err")) or queued_job_ids() & {
                path.stem.split("-")[-1] for path in (tmp_path / "bare").glob("*.err")}:
            assert time.monotonic() < deadline, "the job with a bare $TMPDIR did not end"
            time.sleep(0.5)
    finally:
        close_all(namespace, "slurm_cluster")
        close_all(bare, "slurm_cluster")
    requested = re.search(r"TRES=(\S+)", job)[1]
    bare_log = next((tmp_path / "bare").glob("*.err"))
    bare_job = bare_log.stem.split("-")[-1]
    bare_ending = job_endings([bare_job]).get(bare_job, {})
    bare_error = [line for line in bare_log.read_text(errors="replace").splitlines() if "Error" in line]
    threads_and_memory = [(shape["nthreads"], shape["memory_limit"]) for shape in shapes]
    slurm += [f"\n1b. One job of 4 cores, 2 processes, memory 2GiB, job_mem 3G, TMPDIR unset in its prologue: "
              f"workers (threads, memory limit) {threads_and_memory} "
              f"in job {shapes[0]['job']}, local directories {[shape['local_directory'] for shape in shapes]}; "
              f"scontrol: TRES={requested}",
              f"   the same with a bare $TMPDIR: job {bare_job} {bare_ending.get('State')} "
              f"{bare_ending.get('ExitCode')} after {bare_ending.get('Elapsed')}: {bare_error}",
              f"   lane {time.perf_counter() - start:.1f} s"]
    assert len({shape["job"] for shape in shapes}) == 1
    assert [shape["nthreads"] for shape in shapes] == [2, 2]
    assert [shape["memory_limit"] for shape in shapes] == [2**30, 2**30]
    assert all(shape["TMPDIR"] is None and shape["local_directory"].startswith("/tmp/") for shape in shapes)
    assert "cpu=4" in requested and "mem=3G" in requested
    assert bare_ending.get("State") == "FAILED", bare_ending
    assert any("Got unexpected extra argument" in line for line in bare_error), bare_error
    assert wait_for_empty_queue() == []


# ---------------------------------------------------------------- 2. a refused job

class _Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage() + (str(record.exc_info[1]) if record.exc_info else ""))


def test_a_refused_job_is_diagnosed_in_seconds(slurm, tmp_path, monkeypatch):
    start = time.perf_counter()
    monkeypatch.chdir(tmp_path)  # the diagnosis writes worker-job.sh where the notebook runs
    namespace = chapter_namespace()
    event_loop_log = _Collect()
    logging.getLogger("tornado.application").addHandler(event_loop_log)
    try:
        run_chapter_code(slurm_cell(**{'queue="debug"': 'queue="no-such-partition"'}), namespace)
        slurm_cluster = namespace["slurm_cluster"]
        slurm_cluster.scale(jobs=2)
        with Client(slurm_cluster) as slurm_client:
            with pytest.raises(TimeoutError):  # no timeout: it would wait for ever
                slurm_client.wait_for_workers(2, timeout=5)
        diagnosis_start = time.perf_counter()
        diagnosis = run_chapter_code(lanes.chapter_python_block('"sbatch", "--test-only"'), namespace)
        diagnosis_seconds = time.perf_counter() - diagnosis_start
    finally:
        logging.getLogger("tornado.application").removeHandler(event_loop_log)
        close_all(namespace, "slurm_cluster")
    logged = [line for message in event_loop_log.messages for line in message.splitlines()
              if line.startswith("sbatch: error")]
    slurm += [f"\n2. A job for a partition that does not exist: the diagnosis block took "
              f"{diagnosis_seconds:.1f} s; lane {time.perf_counter() - start:.1f} s; it printed:",
              textwrap.indent(diagnosis.rstrip(), "   "),
              "   logged by the event loop after scale():", *(f"   {line}" for line in sorted(set(logged)))]
    assert "sbatch: error: invalid partition specified: no-such-partition" in diagnosis
    assert "job ids: [None, None]" in diagnosis
    assert diagnosis_seconds < 30
    assert any("invalid partition specified" in line for line in logged)
    assert queued_job_ids() == set()


# ---------------------------------------------------------------- 3. security=True

def test_a_secure_cluster_accepts_only_its_own_credentials(slurm, tmp_path, monkeypatch):
    start = time.perf_counter()
    monkeypatch.chdir(tmp_path)  # the cell sets no log_directory: sbatch writes slurm-JOBID.out here
    namespace = chapter_namespace(scratch=tmp_path, stat=stat, urlparse=urlparse, SLURMCluster=SLURMCluster)
    secure_cell = lanes.chapter_code_cell("secure_cluster = SLURMCluster(")
    refusals_cell = lanes.chapter_code_cell('("someone else\'s", Security.temporary())')
    try:
        shown = run_chapter_code(secure_cell, namespace)
        secure_cluster = namespace["secure_cluster"]
        secure_cluster.scale(jobs=2)  # as the chapter says, on a machine with Slurm
        with Client(secure_cluster) as secure_client:
            secure_client.wait_for_workers(2, timeout=120)
            worker_addresses = sorted(secure_client.scheduler_info()["workers"])
            total = secure_client.submit(sum, range(1_000)).result()
            job_ids = sorted(secure_client.run(lambda: os.environ["SLURM_JOB_ID"]).values())
        refusals = run_chapter_code(refusals_cell, namespace)  # ends with secure_cluster.close()
    finally:
        close_all(namespace, "secure_cluster")
    leftover = wait_for_empty_queue(job_ids)
    slurm += [f"\n3. security=True: TLS worker jobs {job_ids} at {worker_addresses}; sum on them "
              f"{total}; lane {time.perf_counter() - start:.1f} s; the chapter's cells printed:",
              textwrap.indent((shown + refusals).rstrip(), "   ")]
    assert "scheduler address scheme: tls" in shown
    assert "-rw------- .dask-jobqueue.worker.key" in shown
    assert len(worker_addresses) == 2 and all(address.startswith("tls://") for address in worker_addresses)
    assert total == sum(range(1_000))
    assert "no credentials: TypeError" in refusals
    assert "someone else's: FatalCommClosedError: TLS certificate does not match" in refusals
    assert "the cluster's own client: running" in refusals
    assert leftover == []


# ---------------------------------------------------------------- 5. batch mode (started by lane 4)

@pytest.fixture(scope="module")
def batch_job(slurm, tmp_path_factory):
    """The chapter's batch-mode job, submitted with sbatch as the chapter says; it runs beside the
    walltime lane, which waits anyway (the node has room for both)."""
    folder = tmp_path_factory.mktemp("batch-mode")
    (folder / "search_in_one_job.py").write_text(lanes.chapter_python_block("SLURMRunner("))
    script = lanes.chapter_python_block("srun python search_in_one_job.py", language="bash")
    activate = f"source {shlex.quote(sys.prefix)}/bin/activate"  # a path may hold spaces
    script = re.sub(r"^source \S+/bin/activate", lambda _: activate, script, count=1, flags=re.M)
    (folder / "search_in_one_job.sh").write_text(script)
    submitted = lanes.run(["sbatch", "--parsable", "search_in_one_job.sh"], cwd=folder)
    job_id = submitted.stdout.strip().split(";")[0]
    yield {"folder": folder, "job": job_id, "submitted": time.perf_counter(), "script": script}
    subprocess.run(["scancel", job_id], capture_output=True)


# ---------------------------------------------------------------- 4. the walltime

def slow_square(number):
    time.sleep(1)
    return number * number


def test_workers_retire_before_the_walltime_and_adapt_replaces_them(slurm, batch_job, tmp_path):
    start = time.perf_counter()
    lifetime_logs, killed_logs = tmp_path / "lifetime", tmp_path / "no-lifetime"
    logs = 'str(Path.home() / "dask-logs")'
    # The chapter's advice for a 1-hour walltime (--lifetime 45m --lifetime-stagger 5m) at 1 minute,
    # a little earlier: closing a worker takes seconds whatever the walltime.
    lifetime_cell = slurm_cell(**{
        'walltime="00:30:00"': 'walltime="00:01:00", '
                               'worker_extra_args=["--lifetime", "40s", "--lifetime-stagger", "5s"]',
        logs: repr(str(lifetime_logs))})
    killed_cell = slurm_cell(**{'walltime="00:30:00"': 'walltime="00:01:00"', logs: repr(str(killed_logs))})
    retiring, killed = chapter_namespace(), chapter_namespace()
    tasks, total_result, queue_seen = 100, 0, []
    scheduler_log = _Collect()
    logging.getLogger("distributed.scheduler").addHandler(scheduler_log)
    try:
        run_chapter_code(killed_cell, killed)
        killed["slurm_cluster"].scale(jobs=1)
        run_chapter_code(lifetime_cell, retiring)
        lifetime_cluster = retiring["slurm_cluster"]
        lifetime_cluster.adapt(minimum_jobs=2, maximum_jobs=2)  # the chapter's adapt, at this node's size
        with Client(lifetime_cluster) as client:
            client.wait_for_workers(2, timeout=120)
            first_jobs = sorted(client.run(lambda: os.environ["SLURM_JOB_ID"]).values())
            # Each result goes to the client as soon as it is computed, as the chapters' searches do.
            squares = as_completed(client.map(slow_square, range(tasks)))
            last_look = 0.0
            for square in squares:
                total_result += square.result()
                if time.perf_counter() - last_look > 5:
                    last_look = time.perf_counter()
                    queue_seen.append(f"{last_look - start:4.0f} s: " + " | ".join(
                        squeue("-h", "-o", "%i %j %T %M").splitlines()))
                assert time.perf_counter() - start < 300, "the computation did not finish in 5 minutes"
            computed = time.perf_counter() - start
        # The job without --lifetime is killed at its walltime (Slurm checks every 30 s or so).
        deadline = time.monotonic() + 120
        while True:
            killed_ids = sorted(path.stem.split("-")[-1] for path in killed_logs.glob("*.err"))
            killed_endings = job_endings(killed_ids) if killed_ids else {}
            if killed_endings or time.monotonic() > deadline:
                break
            time.sleep(2)
        workers_left_without_lifetime = len(killed["slurm_cluster"].scheduler_info["workers"])
        queue_after_kill = squeue("-h", "-o", "%i %j %T")
    finally:
        logging.getLogger("distributed.scheduler").removeHandler(scheduler_log)
        close_all(killed, "slurm_cluster")
        close_all(retiring, "slurm_cluster")
    retirements = [message.split(" (stimulus_id")[0] for message in scheduler_log.messages
                   if "etire" in message and "worker" in message]
    lifetime_ids = sorted(path.stem.split("-")[-1] for path in lifetime_logs.glob("*.err"))
    wait_for_empty_queue(lifetime_ids + killed_ids)
    lifetime_endings = job_endings(lifetime_ids)
    retired = {job: log_excerpt(lifetime_logs / f"dask-worker-{job}.err", "worker-lifetime-reached")
               for job in first_jobs}
    killed_lines = [line for job in killed_ids for line in
                    log_excerpt(killed_logs / f"dask-worker-{job}.err", "TIME LIMIT", "SIGTERM")]
    slurm += [f"\n4. Walltime 1 minute: with --lifetime 40s --lifetime-stagger 5s and adapt(2 jobs), "
              f"sum of {tasks} one-second squares, collected as they complete = {total_result} (expected "
              f"{sum(n * n for n in range(tasks))}) after {computed:.0f} s; lane "
              f"{time.perf_counter() - start:.1f} s",
              "   squeue every 5 s while it ran:", *(f"   {line}" for line in queue_seen),
              "   sacct --completion, the jobs with --lifetime:",
              *(f"   {record}" for record in lifetime_endings.values()),
              "   the scheduler's log of the retirements:", *(f"   {line}" for line in retirements),
              "   their retirement in the job logs:",
              *(f"   {job}: {lines[0]}" for job, lines in retired.items() if lines),
              "   sacct --completion, the job without --lifetime:",
              *(f"   {record}" for record in killed_endings.values()),
              "   its job log:", *(f"   {line}" for line in killed_lines),
              f"   workers of that cluster after the kill: {workers_left_without_lifetime}; "
              f"queue then: {queue_after_kill.strip() or 'empty'}"]

    assert total_result == sum(n * n for n in range(tasks))
    # The first two jobs retired on their own before the walltime; adapt submitted replacements.
    for job in first_jobs:
        assert retired[job], f"job {job} did not retire: {lifetime_endings.get(job)}"
        assert lifetime_endings[job]["State"] == "COMPLETED", lifetime_endings[job]
        assert seconds(lifetime_endings[job]["Elapsed"]) < 60, lifetime_endings[job]
    assert len(lifetime_ids) > 2, "adapt did not replace the retired workers"
    assert not [record for record in lifetime_endings.values() if record["State"] == "TIMEOUT"]
    # Without --lifetime: killed by Slurm at the walltime, and nothing replaced it (scale, not adapt).
    assert len(killed_ids) == 1 and killed_endings[killed_ids[0]]["State"] == "TIMEOUT", killed_endings
    assert any("DUE TO TIME LIMIT" in line for line in killed_lines)
    assert any("Received signal SIGTERM" in line for line in killed_lines)
    assert workers_left_without_lifetime == 0


def test_batch_mode_runs_the_search_inside_one_job(slurm, batch_job):
    start = time.perf_counter()
    job_id = batch_job["job"]
    left = wait_for_empty_queue([job_id], timeout=600)
    output_file = batch_job["folder"] / f"search-{job_id}.out"
    output = output_file.read_text(errors="replace") if output_file.exists() else ""
    ending = job_endings([job_id]).get(job_id, {})
    result = [line for line in output.splitlines() if " workers; best " in line]
    roles = [re.sub(r"^\S+ \S+ - ", "", line) for line in output.splitlines()
             if re.search(r"Scheduler at:|Registered to:|Closing scheduler", line)]
    since_sbatch = time.perf_counter() - batch_job["submitted"]
    slurm += [f"\n5. Batch mode (SLURMRunner), job {job_id}: done {since_sbatch:.0f} s after sbatch (it ran "
              f"beside lane 4; this test waited {time.perf_counter() - start:.1f} s more)",
              f"   sacct --completion: {ending}", "   search-JOBID.out:",
              *(f"   {line}" for line in result + roles)]
    assert left == [], f"the batch job is still queued: {squeue()}"
    assert ending.get("State") == "COMPLETED" and ending.get("ExitCode") == "0:0", (ending, output[-3000:])
    assert result and result[0].startswith("2 workers; best {"), output[-3000:]
    assert float(result[0].rsplit(", ", 1)[1]) > 0.9
    assert sum("Registered to:" in line for line in roles) == 2


# ---------------------------------------------------------------- 6. a crashed kernel

CRASHING_KERNEL = """
import os, shlex, signal, sys
from pathlib import Path
from distributed import Client
namespace = {"Path": Path, "shlex": shlex, "sys": sys, "os": os, "Client": Client}
exec(CELL, namespace)
namespace["slurm_cluster"].scale(jobs=1)
client = Client(namespace["slurm_cluster"])
client.wait_for_workers(1, timeout=120)
import time
print("job", client.run(lambda: os.environ["SLURM_JOB_ID"]).popitem()[1], "killed at", time.time(), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.fixture(scope="module")
def crashing_kernel(slurm, tmp_path_factory):
    """A process that makes the chapter's cluster, gets one worker job, then dies with SIGKILL as a
    crashing kernel would. Started by lane 1, so that it runs while lane 1 does."""
    folder = tmp_path_factory.mktemp("crashing-kernel")
    cell = slurm_cell(**{'str(Path.home() / "dask-logs")': repr(str(folder))})
    kernel = subprocess.Popen([sys.executable, "-c", f"CELL = {cell!r}\n{CRASHING_KERNEL}"], cwd=folder,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    yield {"process": kernel, "folder": folder}
    kernel.kill()
    kernel.wait()


def test_a_crashed_kernel_leaves_no_job_running(slurm, crashing_kernel):
    kernel, folder = crashing_kernel["process"], crashing_kernel["folder"]
    output, _ = kernel.communicate(timeout=180)
    job_id, killed_at = re.search(r"job (\d+) killed at (\S+)", output).groups()
    left = wait_for_empty_queue([job_id], timeout=90)
    ending = job_endings([job_id]).get(job_id, {})
    log = (folder / f"dask-worker-{job_id}.err").read_text(errors="replace").splitlines()
    lines = [re.sub(r"^\S+ \S+ - ", "", line) for line in log if "Reason:" in line or "End worker" in line]
    ended = [time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")) + 1  # a log line's second, rounded up
             for line in log if "End worker" in line]
    worker_left_after = ended[0] - float(killed_at) if ended else None
    slurm += [f"\n6. A kernel killed with SIGKILL (exit {kernel.returncode}) once its worker job {job_id} ran "
              f"(beside lane 1): its worker ended within {worker_left_after:.0f} s; sacct --completion: "
              f"{ending}; the job log:", *(f"   {line}" for line in lines)]
    assert kernel.returncode == -signal.SIGKILL
    assert left == [] and ending.get("State") == "COMPLETED", ending
    assert any("worker-handle-scheduler-connection-broken" in line for line in lines), lines
    assert worker_left_after is not None and worker_left_after < 15, (killed_at, lines)


def test_slurm_times_are_read_as_seconds():
    assert seconds("00:01:22") == 82 and seconds("1-00:00:01") == 86401
