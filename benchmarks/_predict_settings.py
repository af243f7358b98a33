"""Process and cluster settings that chapter 2's benchmark compares (see the throughput appendix).

glibc's malloc reads the ``MALLOC_*`` variables when a process starts; Dask's nanny sets
``MALLOC_TRIM_THRESHOLD_`` for its workers (``distributed.nanny.pre-spawn-environ``). To compare a
plain process pool with Dask's workers fairly, every process of a comparison must start with the
same variables: :func:`start_process_pool` and :func:`start_local_cluster` take them.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import time

import dask

from scaling_ml import BookError, cluster

MALLOC_VARIABLES = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_ARENA_MAX")
DASK_DEFAULT_SETTINGS = "Dask's default"
MEMORY_SETTINGS = {
    # What Dask's workers get by default: glibc returns the free memory at the top of its heap once
    # more than 64 KiB of it is free and, because a threshold is set, no longer raises its mmap
    # threshold above 128 KiB, so every larger array is mapped afresh, page faults included.
    DASK_DEFAULT_SETTINGS: {"MALLOC_TRIM_THRESHOLD_": "65536"},
    # Nothing set: what a plain Python process gets. glibc raises its mmap threshold to the size
    # of each mapped array it frees, up to 32 MiB: smaller arrays then reuse its heap.
    "glibc's default": {},
    # Arrays up to 1 GiB come from memory the process keeps and reuses: no page faults per block,
    # at the price of holding on to freed memory (Dask reports it as unmanaged memory).
    "memory kept": {"MALLOC_MMAP_THRESHOLD_": str(2**30), "MALLOC_TRIM_THRESHOLD_": str(2**32),
                    "MALLOC_ARENA_MAX": "1"},
}
# Dask's scheduling defaults protect graphs that hold blocks in memory; for a stream of
# independent blocks, each reduced to a few numbers on its worker, two of them cost throughput on
# a small machine:
THROUGHPUT_SCHEDULING = {
    # Queuing (a saturation of 1.1) keeps at most ceil(1.1 x threads) blocks on a worker (two on
    # a one-thread worker: one running, one waiting) and the rest on the scheduler; inf sends
    # every block at once. Safe only because a block's result is a few numbers.
    "distributed.scheduler.worker-saturation": float("inf"),
    # Each worker samples its threads' stacks for the dashboard's Profile page, taking Python's
    # lock from the computing thread.
    "distributed.worker.profile.enabled": False,
}


def check_memory_settings(settings) -> dict | None:
    if settings is None:
        return None
    unknown = sorted(set(settings) - set(MALLOC_VARIABLES)) if isinstance(settings, dict) else None
    if unknown is None or unknown:
        raise BookError(
            f"memory settings must be a dict of {', '.join(MALLOC_VARIABLES)} (or one of "
            f"MEMORY_SETTINGS: {', '.join(MEMORY_SETTINGS)}), got {settings!r}."
        )
    return {name: str(value) for name, value in settings.items()}


@contextlib.contextmanager
def process_environment(settings: dict | None):
    """Within the block, ``os.environ`` has exactly ``settings`` of the malloc variables (the
    others unset), so processes started inside inherit them; afterwards it is as it was.

    Dask's nanny writes its workers' settings into the starting process's ``os.environ`` and
    leaves them there, and a value there wins over Dask's configuration: a pool or a cluster
    started later would silently inherit them. ``None`` changes nothing.
    """
    settings = check_memory_settings(settings)
    saved = dict(os.environ)
    try:
        if settings is not None:
            for name in MALLOC_VARIABLES:
                os.environ.pop(name, None)
            os.environ.update(settings)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def start_process_pool(n_processes: int = 2, memory_settings: dict | None = None,
                       initializer=None):
    """A started ``ProcessPoolExecutor`` (spawned processes, warmed up so timing excludes
    start-up), each process started with ``memory_settings`` and having run ``initializer``."""
    with process_environment(memory_settings):
        pool = concurrent.futures.ProcessPoolExecutor(
            n_processes, mp_context=multiprocessing.get_context("spawn"), initializer=initializer)
        # Processes start on first use: while the environment is still set.
        list(pool.map(time.sleep, [0.2] * n_processes))
    return pool


def start_local_cluster(n_workers: int = 2, memory_settings: dict | None = None,
                        dask_config: dict | None = None):
    """A client of a new local cluster whose workers start with ``memory_settings`` in place of
    Dask's own (``None``: Dask's own), and whose scheduler and workers start with ``dask_config``
    (e.g. :data:`THROUGHPUT_SCHEDULING`), which does not stay set in this process."""
    settings = check_memory_settings(memory_settings)
    if dask_config is not None and not (isinstance(dask_config, dict)
                                        and all(isinstance(key, str) for key in dask_config)):
        raise BookError(
            "dask_config must be a dict of Dask configuration keys, such as "
            f"THROUGHPUT_SCHEDULING, got {dask_config!r}."
        )
    config = dict(dask_config or {})
    if settings is not None:
        environ = {name: value for name, value
                   in dask.config.get("distributed.nanny.pre-spawn-environ").items()
                   if name not in MALLOC_VARIABLES}
        config["distributed.nanny.pre-spawn-environ"] = {**environ, **settings}
    with process_environment(settings), dask.config.set(config):
        return cluster.get_client(n_workers=n_workers, local=True)
