"""Plumbing for chapter 6, "When scaling goes wrong": small failure cases and the tools to read them.

Every case in the chapter is built from scikit-learn, dask and distributed directly (chapter modules
never import each other). The helpers here do the parts a reader would not write: capture
distributed's log records instead of letting them spill onto stderr, kill a worker process while
it is busy, fill a worker's memory on purpose, and read the measured results back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from scaling_ml import measure, plots

BENCHMARK_NAME = "failure_modes"


class FailureModesError(ValueError):
    """A helper of this chapter was given something it cannot use; the message says the fix."""


# --------------------------------------------------------------------------------------------
# Reading distributed's logs
# --------------------------------------------------------------------------------------------

# Parts of log lines that change from run to run, replaced so that printed lines are stable.
_VARIABLE_PARTS = [
    (re.compile(r"(tcp|tls|inproc)://[0-9A-Za-z.\-_]+(:\d+)?"), "WORKER-ADDRESS"),
    (re.compile(r"pid=\d+"), "pid=PID"),
    # joblib names its tasks after the batch, e.g. mixed_batch_of__fit_and_score_2_calls-<hex>
    (re.compile(r"\b\w*batch_of_\w+-[0-9a-f]{32}\b"), "BATCH-KEY"),
    (re.compile(r"\b([A-Za-z0-9_]+)-[0-9a-f]{32}\b"), r"\1-KEY"),
    (re.compile(r"\b([A-Za-z0-9_]+)-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"),
     r"\1-KEY"),
    (re.compile(r"\d+(\.\d+)? (MiB|GiB|kiB|B)\b"), r"N \2"),
    (re.compile(r"\b\d+%"), "N%"),
    (re.compile(r"stimulus_id='[^']*'"), "stimulus_id=..."),
    (re.compile(r"\{'[^}]*'\}"), "{...}"),
]


def sanitize(text: str) -> str:
    """``text`` with addresses, process ids, task keys, sizes and percentages replaced by names."""
    if not isinstance(text, str):
        raise FailureModesError(f"sanitize expects a str (a log message), got {type(text).__name__}.")
    for pattern, replacement in _VARIABLE_PARTS:
        text = pattern.sub(replacement, text)
    return text


class _ListHandler(logging.Handler):
    def __init__(self, records: list):
        super().__init__(level=logging.DEBUG)
        self.records = records

    def emit(self, record):
        self.records.append(record)


@contextlib.contextmanager
def captured_logs(logger_names=("distributed",), level: int = logging.WARNING):
    """Collect log records of the notebook process instead of printing them to stderr.

    The scheduler and the nannies of a LocalCluster run in the notebook's process, so their
    warnings ("Removing worker ...", "Restarting worker") would otherwise appear on stderr at
    unpredictable moments, even in a later cell. Yields the list the records are appended to.
    """
    if isinstance(logger_names, str):
        logger_names = (logger_names,)
    records: list[logging.LogRecord] = []
    handler = _ListHandler(records)
    handler.setLevel(level)
    saved = []
    for name in logger_names:
        logger = logging.getLogger(name)
        saved.append((logger, list(logger.handlers), logger.propagate))
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.propagate = False
    try:
        yield records
    finally:
        for logger, handlers, propagate in saved:
            logger.removeHandler(handler)
            for old in handlers:
                logger.addHandler(old)
            logger.propagate = propagate


def messages(records, contains: str | None = None) -> list[str]:
    """The sanitized ``"LEVEL logger: message"`` lines of log records, optionally filtered."""
    lines = []
    for record in records:
        if isinstance(record, logging.LogRecord):
            line = f"{record.levelname} {record.name}: {record.getMessage()}"
        elif isinstance(record, str):
            line = record
        else:
            raise FailureModesError(
                f"messages expects logging.LogRecord objects or str lines, got {type(record).__name__}."
            )
        if contains is None or contains in line:
            lines.append(sanitize(line))
    return lines


def worker_log_lines(client, contains: str | None = None, level: str = "WARNING") -> list[str]:
    """Sanitized worker log lines at ``level`` or above (``client.get_worker_logs``), oldest first.

    ``get_worker_logs`` returns, per worker, ``(level, formatted line)`` pairs newest first; the
    date and time are cut off so that the lines can be compared from run to run.
    """
    threshold = logging.getLevelName(level)
    if not isinstance(threshold, int):
        raise FailureModesError(f"level must be a logging level name such as 'WARNING', got {level!r}.")
    lines = []
    for worker_lines in client.get_worker_logs().values():
        for line_level, line in reversed(worker_lines):
            if logging.getLevelName(line_level) < threshold:
                continue
            line = re.sub(r"^\S+ \S+ - ", "", line)  # drop the timestamp
            line = line.replace(" - ", ": ", 1).replace(" - ", " ", 1)
            if contains is None or contains in line:
                lines.append(sanitize(line))
    return lines


# --------------------------------------------------------------------------------------------
# Killing a busy worker (case 4)
# --------------------------------------------------------------------------------------------

@dataclass
class KillRecord:
    """What :func:`kill_worker_when_busy` did: which worker, how many tasks it was running."""

    worker: str
    pid: int
    thread: threading.Thread = field(repr=False)
    killed: bool = False
    tasks_in_flight: int = 0
    error: str | None = None

    def wait(self, timeout: float = 60) -> "KillRecord":
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise FailureModesError(
                f"No worker became busy within {timeout} s: start the computation right after "
                "kill_worker_when_busy, or give it more work."
            )
        return self


def _worker_load(dask_scheduler) -> dict:
    """Per worker: [tasks it is running, scattered results it holds] (runs on the scheduler)."""
    load = {}
    for address, state in dask_scheduler.workers.items():
        scattered = sum(1 for task in state.has_what if task.run_spec is None)
        load[address] = [len(state.processing), scattered]
    return load


def choose_victim(load: dict, require_scattered: bool = False) -> str | None:
    """The busy worker to kill: the one holding the most scattered data, then the busiest.

    With ``require_scattered``, only a busy worker that holds scattered data qualifies.
    """
    busy = {address: counts for address, counts in load.items()
            if counts[0] > 0 and (counts[1] > 0 or not require_scattered)}
    if not busy:
        return None
    return max(sorted(busy), key=lambda address: (busy[address][1], busy[address][0]))


def kill_worker_when_busy(client, delay: float = 0.3, timeout: float = 60,
                          require_scattered: bool = False) -> KillRecord:
    """In a background thread: wait ``delay`` s, then until a worker runs a task; SIGKILL its process.

    This is what happens when a machine of the cluster dies or the kernel's out-of-memory killer
    picks a worker: the process disappears with no chance to clean up. The worker's nanny notices
    and starts a fresh worker process. Of the busy workers it kills the one holding the most
    scattered data (the worst case; a dead machine does not choose); with ``require_scattered`` it
    waits for a busy worker that holds scattered data. Returns at once;
    ``.wait()`` on the record joins the thread.
    """
    if os.name != "posix":
        raise FailureModesError("kill_worker_when_busy needs a POSIX system (it sends SIGKILL).")
    if delay < 0 or timeout <= 0:
        raise FailureModesError(f"delay must be >= 0 and timeout > 0, got delay={delay}, timeout={timeout}.")
    pids = client.run(os.getpid)
    record = KillRecord(worker="", pid=0, thread=None)  # type: ignore[arg-type]

    def run():
        deadline = time.monotonic() + timeout
        time.sleep(delay)
        try:
            while time.monotonic() < deadline:
                load = client.run_on_scheduler(_worker_load)
                victim = choose_victim(load, require_scattered)
                if victim is not None and victim in pids:
                    record.worker, record.pid = victim, pids[victim]
                    record.tasks_in_flight = load[victim][0]
                    os.kill(record.pid, signal.SIGKILL)
                    record.killed = True
                    return
                time.sleep(0.02)
            record.error = f"no worker was busy within {timeout} s"
        except Exception as error:  # noqa: BLE001 - reported through the record
            record.error = f"{type(error).__name__}: {error}"

    record.thread = threading.Thread(target=run, name="kill-worker-when-busy", daemon=True)
    record.thread.start()
    return record


def wait_for_workers(client, n_workers: int, timeout: float = 60) -> int:
    """Block until the cluster has ``n_workers`` workers again (a nanny restarted one); return the count."""
    if not isinstance(n_workers, int) or n_workers < 1:
        raise FailureModesError(f"n_workers must be a whole number >= 1, got {n_workers!r}.")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        count = len(client.scheduler_info()["workers"])
        if count >= n_workers:
            return count
        time.sleep(0.1)
    raise FailureModesError(
        f"The cluster did not get back to {n_workers} workers within {timeout} s: look at the "
        "nanny's messages (client.get_worker_logs(nanny=True))."
    )


def search_scores(search) -> dict:
    """The per-split test scores and candidate parameters of a fitted grid search, for comparing."""
    results = getattr(search, "cv_results_", None)
    if results is None:
        raise FailureModesError("search_scores needs a fitted search (call .fit first).")
    keys = sorted(key for key in results if key.startswith("split") and key.endswith("_test_score"))
    return {"params": [dict(sorted(p.items())) for p in results["params"]],
            **{key: np.asarray(results[key]).tolist() for key in keys}}


# --------------------------------------------------------------------------------------------
# Filling a worker's memory (case 3)
# --------------------------------------------------------------------------------------------

def hold_memory(fraction_of_limit: float, seconds: float) -> int:
    """A task: grow this worker's process to ``fraction_of_limit`` of its memory limit for ``seconds``.

    The memory is a plain NumPy array inside the task (*unmanaged* memory, like a model's
    temporary arrays during ``fit``): the worker cannot spill it, only pause or be restarted.
    Returns the bytes it allocated.
    """
    if not 0 < fraction_of_limit <= 2:
        raise FailureModesError(f"fraction_of_limit must be in (0, 2], got {fraction_of_limit!r}.")
    if seconds < 0:
        raise FailureModesError(f"seconds must be >= 0, got {seconds!r}.")
    import psutil
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:
        raise FailureModesError("hold_memory is a task: run it with client.submit(hold_memory, ...).") from None
    limit = worker.memory_manager.memory_limit
    if not limit:
        raise FailureModesError("This worker has no memory limit: start the cluster with memory_limit=...")
    needed = int(fraction_of_limit * limit - psutil.Process().memory_info().rss)
    block = np.ones(max(needed, 0) // 8)  # np.ones writes every page, so it is really resident
    time.sleep(seconds)
    return int(block.nbytes)


def spilled_keys(dask_worker) -> dict:
    """Run with ``client.run(spilled_keys)``: how many results a worker holds in memory and on disk."""
    data = dask_worker.data
    if not hasattr(data, "disk"):
        return {"in_memory": len(data), "on_disk": 0}
    return {"in_memory": len(data.memory), "on_disk": len(data.disk)}


# --------------------------------------------------------------------------------------------
# Case 6: a function shipped to workers with its data
# --------------------------------------------------------------------------------------------

def fit_and_score(alpha: float, data) -> float:
    """Fit an SGD logistic regression with ``alpha`` on ``data = (X, y)``; its training accuracy."""
    from sklearn.linear_model import SGDClassifier

    try:
        X, y = data
    except (TypeError, ValueError):
        raise FailureModesError("data must be a pair (X, y).") from None
    model = SGDClassifier(loss="log_loss", alpha=alpha, max_iter=5, tol=None, random_state=0)
    return round(float(model.fit(X, y).score(X, y)), 6)


# --------------------------------------------------------------------------------------------
# Case 8: partitions that are not identically distributed
# --------------------------------------------------------------------------------------------

def sorted_by_label(X, y):
    """``X, y`` reordered so that all rows of the first class come first, then the next class, ...

    What data often looks like when it arrives from a database export or one file per class.
    """
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim != 2 or y.ndim != 1 or len(X) != len(y):
        raise FailureModesError(
            f"sorted_by_label needs X of shape (n, d) and y of shape (n,), got {X.shape} and {y.shape}."
        )
    order = np.argsort(y, kind="stable")
    return X[order], y[order]


def classes_per_block(y, block_rows: int) -> list[int]:
    """How many different labels each block of ``block_rows`` consecutive rows holds."""
    if not isinstance(block_rows, (int, np.integer)) or block_rows < 1:
        raise FailureModesError(f"block_rows must be a whole number >= 1, got {block_rows!r}.")
    y = np.asarray(y)
    return [int(len(np.unique(y[start:start + block_rows]))) for start in range(0, len(y), block_rows)]


# --------------------------------------------------------------------------------------------
# Results of the benchmark
# --------------------------------------------------------------------------------------------

def load_results(results_dir=None) -> dict:
    """The benchmark's result document (``benchmarks/results/failure_modes.json``)."""
    return measure.load_results(BENCHMARK_NAME, results_dir)


def runs_table(document: dict, case: str):
    """The runs of one case as a DataFrame (one row per variant)."""
    import pandas as pd

    runs = [run for run in document.get("runs", []) if run.get("case") == case]
    if not runs:
        known = sorted({run.get("case") for run in document.get("runs", [])})
        raise FailureModesError(f"No runs for case {case!r} in the results; known cases: {known}.")
    return pd.DataFrame(runs).drop(columns=["case"])


def plot_chunk_overhead(runs, ax=None):
    """Seconds per prediction pass against rows per chunk (log-log), from the case-7 runs."""
    if ax is None:
        figure, ax = plots.new_figure()
    ax.loglog(runs["rows_per_chunk"], runs["seconds"], marker="o", color=plots.COLOURS[0])
    for rows, seconds, tasks in zip(runs["rows_per_chunk"], runs["seconds"], runs["tasks"]):
        ax.annotate(f"{tasks} tasks", (rows, seconds), xytext=(4, 4), textcoords="offset points",
                    fontsize="small")
    ax.set_xlabel("rows per chunk")
    ax.set_ylabel("seconds for one predict pass")
    ax.set_title("Tiny chunks: scheduler overhead dominates")
    return ax


def _hold_then_measure(data, seconds: float) -> int:
    time.sleep(seconds)
    return len(data)


def lose_scattered_data(client, data, n_tasks: int = 4, seconds: float = 2.0, timeout: float = 60):
    """Scatter ``data`` to one worker, queue tasks that need it there, and SIGKILL that worker.

    This is what happens to joblib's dask backend when the worker holding the arguments it
    scattered dies before every task that needs them has run (with a real search, whether a
    copy survives elsewhere is a matter of timing; here no copy exists). Returns the error the
    tasks' results raise and the address of the killed worker.
    """
    if os.name != "posix":
        raise FailureModesError("lose_scattered_data needs a POSIX system (it sends SIGKILL).")
    holder = sorted(client.scheduler_info()["workers"])[0]
    [scattered] = client.scatter([data], workers=[holder])
    tasks = [client.submit(_hold_then_measure, scattered, seconds, pure=False, workers=[holder])
             for _ in range(n_tasks)]
    deadline = time.monotonic() + timeout
    while not client.processing(workers=[holder]).get(holder):
        if time.monotonic() > deadline:
            raise FailureModesError(f"no task started on {holder} within {timeout} s")
        time.sleep(0.02)
    time.sleep(min(0.5, seconds / 4))  # the first task is running, the others wait behind it
    os.kill(client.run(os.getpid, workers=[holder])[holder], signal.SIGKILL)
    try:
        client.gather(tasks)
    except Exception as error:  # noqa: BLE001 - the error is what the caller shows
        return error, holder
    raise FailureModesError("the tasks finished although the only copy of their data died")
