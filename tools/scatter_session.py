"""One Python session that runs chapter 1's scattered search several times in a row.

    .venv/bin/python -m tools.scatter_session --pattern taught   # what chapter 1 teaches
    .venv/bin/python -m tools.scatter_session --pattern unsafe   # scatter= alone

The search is the notebook's own (its cells tagged ``reused-by-benchmark``: the pipeline and the
grid; ``--grid first`` keeps the first value of each parameter: one candidate, 3 fits) on the
11,314 training documents of 20 Newsgroups, on a 2-worker LocalCluster. Patterns:

* ``taught``: ``scattered_documents = client.scatter([X, y], broadcast=True)`` kept for the whole
  session, then every search inside ``joblib.parallel_config(backend="dask", scatter=[X, y])``;
* ``unsafe``: only the ``parallel_config(..., scatter=[X, y])`` block.

The race (distributed 2025.1.0, joblib 1.6.0): ``scatter=`` sends the data under content-hashed
keys, so every search sends it again under the same keys. When a release of those keys reaches the
scheduler just before the new scatter does, the scheduler's "free-keys" message to a worker (sent
in batches every few milliseconds) can arrive after the new copy's direct ``update_data``: the
worker then drops the data the scheduler records as there, and the broadcast's replication retries
forever. Each run forces the releases that a notebook makes at random moments: a previous
scatter of the same data is dropped right before the search, and the search's joblib backend is
garbage-collected right after it.

The session then counts how often the scheduler released (forgot) the scattered keys: every
release is a chance for the race. Under the taught pattern the count must be 0 (the keys stay
referenced, so no release, hence no free-keys, is ever sent); under the unsafe pattern it is at
least one per run. The race itself needs a release to land in a window of a few milliseconds,
which a 20 MB scatter rarely offers (``--documents 500`` makes it likely). A search that does not
finish within ``--run-timeout`` seconds ends the process with exit code 1, after printing where the
scheduler and the workers think the scattered keys are and every thread's stack: a hang fails
instead of blocking.
"""

from __future__ import annotations

import argparse
import faulthandler
import gc
import os
import sys
import threading
import time

import joblib
from sklearn.base import clone
from sklearn.datasets import fetch_20newsgroups
from sklearn.model_selection import GridSearchCV

from benchmarks._notebook_cells import run_reused_cells
from scaling_ml import cluster

NOTEBOOK = "01_distributed_training.ipynb"
PATTERNS = ("taught", "unsafe")


def where_the_keys_are(client, keys) -> str:
    """The scheduler's state and holders of each key, and which workers really hold it."""
    def on_scheduler(dask_scheduler, keys=tuple(keys)):
        return {key: (dask_scheduler.tasks[key].state,
                      sorted(ws.address for ws in dask_scheduler.tasks[key].who_has or ()))
                for key in keys if key in dask_scheduler.tasks}

    def on_worker(dask_worker, keys=tuple(keys)):
        return [key for key in keys if key in dask_worker.data]

    return (f"scheduler (state, who_has): {client.run_on_scheduler(on_scheduler)}; "
            f"workers' data: {client.run(on_worker)}")


def report_hang(client, keys, run: int, seconds: float) -> None:
    """Print where the scattered keys are and every thread's stack, then end the process."""
    print(f"run {run} did not finish within {seconds:.0f} s", flush=True)
    answer = threading.Thread(target=lambda: print(where_the_keys_are(client, keys), flush=True),
                              daemon=True)
    answer.start()
    answer.join(30)
    faulthandler.dump_traceback(all_threads=True)
    os._exit(1)


def releases(client, keys) -> int:
    """How many times the scheduler forgot one of ``keys`` (its transition log, this session)."""
    def count(dask_scheduler, keys=tuple(keys)):
        return sum(1 for entry in dask_scheduler.transition_log
                   if entry[0] in keys and entry[2] == "forgotten")
    return client.run_on_scheduler(count)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pattern", choices=PATTERNS, required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--run-timeout", type=float, default=600,
                        help="seconds a run may take before it counts as hung")
    parser.add_argument("--documents", type=int, default=None,
                        help="use only the first N training documents (default: all 11,314)")
    parser.add_argument("--grid", choices=("first", "chapter"), default="first",
                        help="first: one candidate (the first value of each parameter); "
                             "chapter: the notebook's whole grid")
    arguments = parser.parse_args(argv)

    cells = run_reused_cells(NOTEBOOK)
    grid = cells["parameters"]
    if arguments.grid == "first":
        grid = {name: values[:1] for name, values in grid.items()}
    data = fetch_20newsgroups(subset="train")
    X, y = data.data[:arguments.documents], data.target[:arguments.documents]
    client = cluster.get_client(n_workers=2, local=True)
    try:
        if arguments.pattern == "taught":
            scattered_documents = client.scatter([X, y], broadcast=True)  # noqa: F841
        keys: list = []  # the scattered data's keys, filled by the first run
        for run in range(1, arguments.runs + 1):
            watchdog = threading.Timer(arguments.run_timeout, report_hang,
                                       args=(client, keys, run, arguments.run_timeout))
            watchdog.daemon = True
            watchdog.start()
            start = time.perf_counter()
            # A previous scatter of the same data, released right before the search's own.
            previous = client.scatter([X, y], broadcast=True)
            keys[:] = [future.key for future in previous]
            del previous
            with joblib.parallel_config(backend="dask", scatter=[X, y]):
                search = GridSearchCV(clone(cells["pipeline"]), grid, n_jobs=-1, cv=3, refit=False)
                search.fit(X, y)
            # Free this search's joblib backend now, as the garbage collector may do at any time.
            gc.collect()
            watchdog.cancel()
            print(f"{arguments.pattern} run {run}/{arguments.runs}: search of {len(X):,} documents "
                  f"finished in {time.perf_counter() - start:.1f} s, best mean accuracy "
                  f"{search.best_score_:.3f}", flush=True)
        print(f"{arguments.pattern}: the scattered keys were released {releases(client, keys)} "
              f"times in {arguments.runs} runs", flush=True)
    finally:
        # A generous timeout: on a machine loaded many times over, stopping the workers is slow.
        client.close(timeout=300)
    return 0


if __name__ == "__main__":
    sys.exit(main())
