"""Chapter 5, "From laptop to cluster": the plumbing behind the same notebooks on other clusters.

* :func:`external_cluster`: start a real ``dask scheduler`` and ``dask worker`` processes (the
  command-line tools a cluster administrator uses) on 127.0.0.1, and always tear them down;
* :func:`run_nbval`: strict nbval over notebooks with ``DASK_SCHEDULER_ADDRESS`` pointing at such a
  cluster (``python -m scaling_ml.laptop_to_cluster external-nbval NOTEBOOK...``);
* :func:`newsgroups_grid_search`: chapter 1's grid search (HashingVectorizer -> TfidfTransformer ->
  SGDClassifier), small enough to run through a job-queue cluster in a test;
* :func:`slurm_cluster_options`, :func:`pbs_job_script`: dask-jobqueue settings for this book;
* :func:`scale_up_knobs`: every ``# Scale up:`` comment of the chapters, as one table.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from scaling_ml import cluster

PROJECT_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
NOTEBOOK_PATTERN = "[0-9][0-9]_*.ipynb"
SANITIZE_FILE = PROJECT_ROOT / "tests" / "nbval_sanitize.cfg"
CELL_TIMEOUT = 900

# Chapter 1's pipeline and grid (issue 3), kept here so this chapter does not import chapter 1.
PARAMETER_GRID = {
    "tfidf__use_idf": (True, False),
    "tfidf__norm": ("l1", "l2"),
    "clf__alpha": (1e-5, 1e-6),
}
DEFAULT_CATEGORIES = ("alt.atheism", "sci.space")
RANDOM_STATE = 0


class LaptopToClusterError(RuntimeError):
    """A cluster for this chapter could not be started, used or stopped; the message says why."""


# ---------------------------------------------------------------- chapter 1's grid search

def newsgroups_pipeline():
    """HashingVectorizer -> TfidfTransformer -> SGDClassifier, as in chapter 1."""
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import Pipeline

    return Pipeline([
        ("vect", HashingVectorizer()),
        ("tfidf", TfidfTransformer()),
        ("clf", SGDClassifier(max_iter=1000, random_state=RANDOM_STATE)),
    ])


@functools.lru_cache(maxsize=1)
def _all_category_names() -> tuple:
    from sklearn.datasets import fetch_20newsgroups

    return tuple(fetch_20newsgroups(subset="train").target_names)


def load_newsgroups(categories=DEFAULT_CATEGORIES):
    """The 20 Newsgroups training posts of ``categories`` (unknown names raise a clear error)."""
    from sklearn.datasets import fetch_20newsgroups

    if isinstance(categories, str):
        categories = [categories]
    categories = list(categories)
    if not categories:
        raise LaptopToClusterError(
            "categories is empty: name at least two 20 Newsgroups categories, for example "
            f"{list(DEFAULT_CATEGORIES)}."
        )
    all_names = list(_all_category_names())
    unknown = sorted(set(categories) - set(all_names))
    if unknown:
        raise LaptopToClusterError(
            f"Unknown 20 Newsgroups categories {unknown}; choose from {all_names}."
        )
    if len(set(categories)) < 2:
        raise LaptopToClusterError("A classifier needs at least two different categories.")
    return fetch_20newsgroups(subset="train", categories=categories, shuffle=True,
                              random_state=RANDOM_STATE)


def newsgroups_grid_search(categories=DEFAULT_CATEGORIES, parameters=None, cv: int = 3,
                           backend: str | None = "dask", verbose: int = 0):
    """Fit chapter 1's GridSearchCV; with ``backend="dask"`` inside joblib's dask backend.

    The dask backend needs a connected ``distributed.Client`` (any cluster: local, external,
    SLURMCluster). Returns the fitted GridSearchCV (``refit=False``).
    """
    import joblib
    from sklearn.model_selection import GridSearchCV

    parameters = PARAMETER_GRID if parameters is None else parameters
    if not parameters or not all(len(values) for values in dict(parameters).values()):
        raise LaptopToClusterError(
            f"The parameter grid {parameters!r} is empty: give at least one value per parameter, "
            "for example scaling_ml.laptop_to_cluster.PARAMETER_GRID."
        )
    data = load_newsgroups(categories)
    search = GridSearchCV(newsgroups_pipeline(), parameters, n_jobs=-1, verbose=verbose, cv=cv,
                          refit=False)
    if backend is None:
        search.fit(data.data, data.target)
        return search
    if backend == "dask":
        from distributed import default_client

        try:
            default_client()
        except ValueError:
            raise LaptopToClusterError(
                "The dask backend needs a connected Dask client: create one first, for example "
                "client = cluster.get_client(), or Client(slurm_cluster)."
            ) from None
    with joblib.parallel_config(backend=backend):
        search.fit(data.data, data.target)
    return search


def best_result(search) -> dict:
    """Best parameters and mean CV score (rounded), for printing and comparing."""
    return {"params": search.best_params_, "score": round(float(search.best_score_), 3)}


# ---------------------------------------------------------------- an external cluster

def _dask_executable() -> str:
    candidate = Path(sys.executable).parent / "dask"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("dask")
    if not found:
        raise LaptopToClusterError(
            "The `dask` command is not installed next to this Python: install distributed "
            "(pip install -r requirements.txt) in this environment."
        )
    return found


@dataclass
class ExternalCluster:
    """A running scheduler and workers started by :func:`external_cluster`."""

    address: str
    scheduler_file: Path
    processes: list = field(default_factory=list)
    log_dir: Path | None = None

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def is_stopped(self) -> bool:
        """True when no process of the scheduler's or the workers' process groups is alive."""
        return not any(_process_group_alive(pid) for pid in self.pids)


def _process_group_alive(pgid: int) -> bool:
    """True while a live (non-zombie) process of this process group exists."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            state, process_group = fields[0], int(fields[2])
            if process_group == pgid and state != "Z":
                return True
    return False


def stop_processes(processes, timeout: float = 15) -> None:
    """Stop each process's whole process group: SIGTERM, then SIGKILL after ``timeout`` s."""
    groups = [process.pid for process in processes]  # started with start_new_session=True
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_process_group_alive(g) for g in groups):
        for process in processes:
            with contextlib.suppress(Exception):
                process.poll()
        time.sleep(0.1)
    for pgid in groups:
        if _process_group_alive(pgid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
    for process in processes:
        with contextlib.suppress(Exception):
            process.wait(timeout=5)
    left = [pgid for pgid in groups if _process_group_alive(pgid)]
    if left:
        raise LaptopToClusterError(f"Processes of groups {left} are still running after SIGKILL.")


@contextlib.contextmanager
def external_cluster(n_workers: int = 2, nthreads: int = 1, memory_limit: str = "auto",
                     timeout: float = 60, log_dir: str | os.PathLike | None = None):
    """Start ``dask scheduler`` and ``n_workers`` ``dask worker`` processes on 127.0.0.1.

    Yields an :class:`ExternalCluster` (its ``address`` is what DASK_SCHEDULER_ADDRESS takes).
    Every process runs in its own process group, and all groups are stopped on exit, also when
    the body raises. ``memory_limit="auto"`` gives each 1-thread worker the same share of the
    machine's memory as a LocalCluster does, so ``cluster.describe`` prints the same line.
    """
    for name, value in (("n_workers", n_workers), ("nthreads", nthreads)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise LaptopToClusterError(f"{name} must be a whole number >= 1, got {value!r}.")
    dask_cli = _dask_executable()
    workdir = Path(tempfile.mkdtemp(prefix="ch5-external-"))
    logs = Path(log_dir) if log_dir else workdir
    logs.mkdir(parents=True, exist_ok=True)
    scheduler_file = workdir / "scheduler.json"
    processes: list[subprocess.Popen] = []
    handles = []

    def start(command, log_name):
        log = open(logs / log_name, "w")
        handles.append(log)
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True,
                                   cwd=workdir)
        processes.append(process)
        return process

    failed = True
    try:
        scheduler = start([dask_cli, "scheduler", "--host", cluster.LOOPBACK, "--port", "0",
                           "--dashboard-address", f"{cluster.LOOPBACK}:0",
                           "--scheduler-file", str(scheduler_file)], "scheduler.log")
        deadline = time.monotonic() + timeout
        address = None
        while time.monotonic() < deadline:
            if scheduler.poll() is not None:
                raise LaptopToClusterError(
                    f"`dask scheduler` exited with code {scheduler.returncode}; see "
                    f"{logs / 'scheduler.log'}."
                )
            with contextlib.suppress(OSError, ValueError):
                address = json.loads(scheduler_file.read_text())["address"]
                break
            time.sleep(0.1)
        if address is None:
            raise LaptopToClusterError(f"`dask scheduler` did not start within {timeout} s.")
        for index in range(n_workers):
            start([dask_cli, "worker", address, "--host", cluster.LOOPBACK, "--nworkers", "1",
                   "--nthreads", str(nthreads), "--memory-limit", str(memory_limit),
                   "--no-dashboard", "--local-directory", str(workdir / f"worker-{index}"),
                   "--name", f"external-worker-{index}"], f"worker-{index}.log")
        from distributed import Client

        with Client(address, timeout=timeout) as client:
            try:
                client.wait_for_workers(n_workers, timeout=timeout)
            except TimeoutError:
                raise LaptopToClusterError(
                    f"Only {len(client.scheduler_info()['workers'])} of {n_workers} workers connected within "
                    f"{timeout} s; see the worker logs in {logs}."
                ) from None
        yield ExternalCluster(address=address, scheduler_file=scheduler_file,
                              processes=list(processes), log_dir=logs)
        failed = False
    finally:
        try:
            stop_processes(processes)
        finally:
            for handle in handles:
                handle.close()
            if failed and log_dir is None:
                print(f"external cluster logs kept in {workdir}", file=sys.stderr)
            else:
                shutil.rmtree(workdir, ignore_errors=True)


def chapter_notebooks(directory: str | os.PathLike = NOTEBOOK_DIR) -> list[Path]:
    """Every chapter notebook (``NN_name.ipynb``), in order."""
    return sorted(Path(directory).glob(NOTEBOOK_PATTERN))


def nbval_command(notebooks, extra_args=()) -> list[str]:
    """The strict nbval command of the default test lane, for ``notebooks``."""
    notebooks = [str(notebook) for notebook in notebooks]
    if not notebooks:
        raise LaptopToClusterError(
            f"No notebooks to run: give notebook paths, or put {NOTEBOOK_PATTERN} files in "
            f"{NOTEBOOK_DIR}."
        )
    missing = [notebook for notebook in notebooks if not Path(notebook).is_file()]
    if missing:
        raise LaptopToClusterError(f"Notebooks not found: {missing}.")
    return [sys.executable, "-m", "pytest", "--nbval", "--nbval-sanitize-with", str(SANITIZE_FILE),
            f"--nbval-cell-timeout={CELL_TIMEOUT}", "-p", "no:cacheprovider", "-q",
            *extra_args, *notebooks]


def run_nbval(notebooks, address: str, timeout: float | None = None,
              extra_args=()) -> subprocess.CompletedProcess:
    """Run strict nbval over ``notebooks`` in a subprocess connected to the scheduler ``address``."""
    env = dict(os.environ, DASK_SCHEDULER_ADDRESS=address)
    return subprocess.run(nbval_command(notebooks, extra_args), cwd=PROJECT_ROOT, env=env,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def external_nbval(notebooks=None, n_workers: int = 2, log_dir=None) -> int:
    """Start an external cluster, run strict nbval over ``notebooks`` against it, stop it.

    Returns pytest's exit code. Prints the seconds the lane took.
    """
    notebooks = chapter_notebooks() if not notebooks else list(notebooks)
    start = time.perf_counter()
    with external_cluster(n_workers=n_workers, log_dir=log_dir) as running:
        print(f"external cluster at {running.address}: scheduler and {n_workers} workers "
              f"(pids {running.pids})", flush=True)
        result = run_nbval(notebooks, running.address)
    print(f"external-cluster lane: {len(notebooks)} notebooks, exit code {result.returncode}, "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    return result.returncode


# ---------------------------------------------------------------- dask-jobqueue

def slurm_cluster_options(cores: int = 1, memory: str = "2GiB", walltime: str = "00:30:00",
                          queue: str | None = None, log_directory: str | None = None,
                          local_directory: str | None = None) -> dict:
    """SLURMCluster keyword arguments for 1-process workers of this book.

    ``interface="lo"`` keeps scheduler and workers on 127.0.0.1 (a single-node test cluster);
    on a real cluster use the nodes' network interface instead, for example "ib0" or "eth0".
    """
    if not isinstance(cores, int) or cores < 1:
        raise LaptopToClusterError(f"cores must be a whole number >= 1, got {cores!r}.")
    options = dict(cores=cores, processes=1, memory=memory, walltime=walltime,
                   interface="lo", python=sys.executable,
                   # The dashboard on loopback too (its default listens on every interface).
                   scheduler_options={"dashboard_address": f"{cluster.LOOPBACK}:0"},
                   local_directory=local_directory or tempfile.gettempdir())
    if queue:
        options["queue"] = queue
    if log_directory:
        options["log_directory"] = log_directory
    return options


def job_script_lines(script: str) -> list[str]:
    """A job script without lines that change from machine to machine (paths, addresses)."""
    lines = []
    for line in script.splitlines():
        line = re.sub(r"tcp://[0-9.]+:\d+", "tcp://SCHEDULER:PORT", line)
        line = line.replace(sys.executable, "python")
        line = re.sub(r"--local-directory \S+", "--local-directory LOCAL_DIR", line)
        lines.append(line)
    return lines


# ---------------------------------------------------------------- Slurm daemons

SLURM_START = PROJECT_ROOT / "scripts" / "slurm_start.sh"
SLURM_STOP = PROJECT_ROOT / "scripts" / "slurm_stop.sh"
SLURM_DAEMONS = ("slurmctld", "slurmd", "munged")


def live_processes(name: str) -> list[int]:
    """PIDs of live (non-zombie) processes whose command name is exactly ``name``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            text = stat.read_text()
            command = text[text.index("(") + 1:text.rindex(")")]
            state = text.rsplit(")", 1)[1].split()[0]
            if command == name and state != "Z":
                found.append(int(stat.parent.name))
    return found


def squeue(user: str | None = None) -> str:
    """``squeue``'s output (the jobs of ``user``, or all jobs)."""
    command = ["squeue"] + ([f"--user={user}"] if user else [])
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


# ---------------------------------------------------------------- the Scale up table

SCALE_UP = re.compile(r"#\s*Scale up:\s*(.*)")


def scale_up_knobs(notebooks=None) -> list[dict]:
    """Every ``# Scale up:`` comment in the chapters' code cells, with the line it sits above.

    A comment may continue on the following ``#`` lines; the knob is the code before an inline
    comment, or else the first code line after the comment.
    """
    import nbformat

    rows = []
    for path in chapter_notebooks() if notebooks is None else notebooks:
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type != "code":
                continue
            lines = cell.source.splitlines()
            for index, line in enumerate(lines):
                match = SCALE_UP.search(line)
                if not match:
                    continue
                text = [match.group(1).strip()]
                following = index + 1
                while following < len(lines) and lines[following].lstrip().startswith("#"):
                    text.append(lines[following].lstrip().lstrip("#").strip())
                    following += 1
                code_before = line[:match.start()].strip()
                if code_before:  # an inline comment: the knob is on this line
                    knob = code_before
                else:
                    knob = lines[following].strip() if following < len(lines) else ""
                rows.append({"chapter": Path(path).stem, "knob": knob,
                             "on a real cluster": " ".join(t for t in text if t)})
    return rows


def format_knobs(rows) -> str:
    """The Scale up rows as text: per chapter, each knob and what to set on a real cluster."""
    lines, chapter = [], None
    for row in rows:
        if row["chapter"] != chapter:
            chapter = row["chapter"]
            lines.append(chapter)
        lines.append(f"  {row['knob']}")
        lines.append(f"      -> {row['on a real cluster']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scaling_ml.laptop_to_cluster",
        description="Run the chapter notebooks through strict nbval on an external dask cluster.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("external-nbval", help="start a scheduler and workers, run nbval, stop")
    run.add_argument("notebooks", nargs="*", help=f"default: notebooks/{NOTEBOOK_PATTERN}")
    run.add_argument("--workers", type=int, default=2)
    run.add_argument("--log-dir", default=None, help="keep the scheduler and worker logs here")
    arguments = parser.parse_args(argv)
    try:
        return external_nbval(arguments.notebooks, n_workers=arguments.workers,
                              log_dir=arguments.log_dir)
    except LaptopToClusterError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
