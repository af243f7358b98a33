"""Get a Dask client: a LocalCluster on 127.0.0.1, or the scheduler the reader configured.

Every notebook starts with ``client = cluster.get_client()`` (or ``with cluster.get_client() as
client:``) and ends with ``client.close()``. The same code path serves three set-ups:

* nothing configured: a LocalCluster sized for this machine, scheduler, workers and dashboard
  all listening on 127.0.0.1 only;
* ``DASK_SCHEDULER_ADDRESS`` (or ``scheduler-address`` in a dask config file) set: connect to that
  existing scheduler, for example one started with ``dask scheduler`` / ``dask worker``;
* an explicit ``address=`` (for example ``SLURMCluster(...).scheduler_address``).
"""

from __future__ import annotations

import logging
import os
import socket
from urllib.parse import urlparse

import dask
from distributed import Client
from distributed.comm import parse_address

LOOPBACK = "127.0.0.1"
DEFAULT_DASHBOARD_PORT = 8787


class ClusterError(RuntimeError):
    """A cluster could not be started or reached; the message says how to fix it."""


def configured_scheduler_address() -> str | None:
    """The scheduler address the reader configured (``DASK_SCHEDULER_ADDRESS`` or dask config)."""
    address = dask.config.get("scheduler-address", None)
    return address or None


def _port_is_free(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the dashboard's server does: a port in TIME_WAIT after a closed cluster is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _check_address(address: str) -> str:
    """Return a normalised ``tcp://host:port`` address or raise ClusterError saying what is wrong."""
    if not isinstance(address, str) or not address.strip():
        raise ClusterError(
            f"Bad scheduler address {address!r}: give it as 'tcp://HOST:PORT', for example "
            "'tcp://127.0.0.1:8786', or unset DASK_SCHEDULER_ADDRESS to start a local cluster."
        )
    address = address.strip()
    if "://" not in address:
        address = "tcp://" + address
    try:
        scheme, location = parse_address(address)
    except ValueError as error:
        raise ClusterError(
            f"Bad scheduler address {address!r} ({error}): give it as 'tcp://HOST:PORT'."
        ) from None
    parsed = urlparse(f"{scheme}://{location}")
    try:
        port = parsed.port
    except ValueError:
        port = None
    if scheme not in ("tcp", "tls", "inproc", "ucx", "ws", "wss") or not parsed.hostname or not port:
        raise ClusterError(
            f"Bad scheduler address {address!r}: expected 'tcp://HOST:PORT' with a numeric port, "
            "for example 'tcp://127.0.0.1:8786' (the address `dask scheduler` prints at start). "
            "Fix DASK_SCHEDULER_ADDRESS, or unset it to start a local cluster."
        )
    return address


def local_cluster_options(n_workers: int | None = None, threads_per_worker: int = 1,
                          memory_limit: str | int | None = "auto", **options) -> dict:
    """Keyword arguments for a LocalCluster that listens on 127.0.0.1 only.

    One single-threaded worker process per core by default: scikit-learn estimators hold the GIL
    in much of their Python code, so processes, not threads, give real parallelism.
    """
    if n_workers is None:
        n_workers = max(1, os.cpu_count() or 1)
    if not isinstance(n_workers, int) or n_workers < 1:
        raise ClusterError(f"n_workers must be a whole number >= 1, got {n_workers!r}.")
    if not isinstance(threads_per_worker, int) or threads_per_worker < 1:
        raise ClusterError(
            f"threads_per_worker must be a whole number >= 1, got {threads_per_worker!r}."
        )
    # distributed's default dashboard listens on 0.0.0.0:8787 (every interface); bind it to
    # loopback, on 8787 when free so that the link readers know works, else on any free port.
    dashboard_port = DEFAULT_DASHBOARD_PORT if _port_is_free(DEFAULT_DASHBOARD_PORT) else 0
    # Keep the scheduler's, nannies' and workers' log lines out of notebook cells: they arrive at
    # random moments (distributed 2025.1.0 logs a heartbeat error when a cluster shuts down), while
    # a failing task still raises its error in the notebook. Pass silence_logs=logging.WARNING
    # to see them.
    options.setdefault("silence_logs", logging.CRITICAL)
    return dict(
        n_workers=n_workers,
        threads_per_worker=threads_per_worker,
        processes=True,
        memory_limit=memory_limit,
        host=LOOPBACK,
        dashboard_address=f"{LOOPBACK}:{dashboard_port}",
        **options,
    )


def get_client(address: str | None = None, timeout: float = 10, local: bool = False,
               **local_options) -> Client:
    """Return a connected ``distributed.Client``.

    address: a scheduler to connect to; defaults to ``DASK_SCHEDULER_ADDRESS`` / dask config.
        Without one, a LocalCluster is started (``local_options`` go to it, see
        :func:`local_cluster_options`) and closing the client also closes that cluster.
    timeout: seconds to wait for an existing scheduler before giving up with a clear error.
    local: start a LocalCluster even when a scheduler is configured; for demonstrations that need
        a cluster of a particular shape (say, one worker with a small memory limit) wherever they run.

    Use it as ``client = get_client()`` ... ``client.close()``, or as a context manager.
    """
    if local and address:
        raise ClusterError("Give either an address or local=True, not both.")
    address = None if local else address or configured_scheduler_address()
    if address is None:
        # A Client given cluster options (no address) owns the LocalCluster it starts:
        # client.close() shuts the scheduler and worker processes down too. The configured
        # address is cleared while it starts, or Client would connect there instead (local=True).
        with dask.config.set({"scheduler-address": None}):
            return Client(**local_cluster_options(**local_options))
    if local_options:
        raise ClusterError(
            f"Options {sorted(local_options)} only apply to a local cluster, but a scheduler "
            f"address is set ({address!r}): size that cluster where it is started, or unset "
            "DASK_SCHEDULER_ADDRESS."
        )
    address = _check_address(address)
    try:
        return Client(address, timeout=timeout)
    except (OSError, TimeoutError) as error:
        raise ClusterError(
            f"Could not reach a Dask scheduler at {address} within {timeout} s ({error}). "
            "Start one (`dask scheduler` and `dask worker ADDRESS`), check the address and that "
            "its port is reachable from here, or unset DASK_SCHEDULER_ADDRESS to start a local "
            "cluster instead."
        ) from None


def dashboard_link(client: Client) -> str:
    """The dashboard URL of the client's cluster (open it beside the notebook)."""
    return client.dashboard_link


def worker_count(client: Client) -> int:
    return len(client.scheduler_info()["workers"])


def describe(client: Client) -> str:
    """One line a notebook can print: workers, threads and memory, without addresses."""
    workers = client.scheduler_info()["workers"].values()
    threads = sum(worker["nthreads"] for worker in workers)
    memory_gib = sum(worker["memory_limit"] for worker in workers) / 2**30
    return f"{len(workers)} workers, {threads} threads, {memory_gib:.1f} GiB memory limit in total"
