"""Chapter 0's set-up cell as one function, for the later chapters: ``client = get_client()``.

Chapter 0 writes the cluster out in full, and this is exactly that code::

    scheduler_address = dask.config.get("scheduler-address", None)  # DASK_SCHEDULER_ADDRESS
    if scheduler_address:                 # an existing cluster (chapter 5)
        client = Client(scheduler_address)
    else:                                 # a cluster on this machine
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                               dashboard_address="127.0.0.1:8787", silence_logs=logging.CRITICAL)
        client = Client(cluster)

plus what a learner should not have to type:

* a check that the address really is a Dask scheduler, which fails within ``timeout`` with an
  error naming the likely mix-up (plain ``Client`` waits for minutes when pointed at the
  dashboard's port, 8787, instead of the scheduler's, 8786);
* the dashboard on 8787 when that port is free, else on any free port (no warning in the cell);
* behind JupyterHub or Binder, a dashboard link that goes through the hub's proxy;
* the LocalCluster is started as ``Client(n_workers=..., ...)``, which makes the client own it:
  ``client.close()`` stops the scheduler and the workers too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from urllib.parse import urlparse

import dask
from distributed import Client
from distributed.comm import parse_address

from scaling_ml import BookError

LOOPBACK = "127.0.0.1"
DEFAULT_DASHBOARD_PORT = 8787
DEFAULT_N_WORKERS = 2
# distributed's own default of distributed.dashboard.link.
DISTRIBUTED_DASHBOARD_LINK = "{scheme}://{host}:{port}/status"
# Behind JupyterHub (Binder is one) the dashboard is reached through jupyter-server-proxy.
HUB_DASHBOARD_LINK = "{JUPYTERHUB_SERVICE_PREFIX}proxy/{port}/status"


def configured_scheduler_address() -> str | None:
    """The scheduler address the reader configured (``DASK_SCHEDULER_ADDRESS`` or dask config)."""
    return dask.config.get("scheduler-address", None) or None


def dashboard_link_template(environ=os.environ) -> str:
    """The dashboard link to use: the hub's proxy under JupyterHub, else what is configured."""
    configured = dask.config.get("distributed.dashboard.link", DISTRIBUTED_DASHBOARD_LINK)
    if environ.get("JUPYTERHUB_SERVICE_PREFIX") and configured == DISTRIBUTED_DASHBOARD_LINK:
        return HUB_DASHBOARD_LINK
    return configured


def _port_is_free(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the dashboard's server does: a port in TIME_WAIT after a closed cluster is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def check_address(address: str) -> str:
    """Return a normalised ``tcp://host:port`` address or raise BookError saying what is wrong."""
    if not isinstance(address, str) or not address.strip():
        raise BookError(
            f"Bad scheduler address {address!r}: give it as 'tcp://HOST:PORT', for example "
            "'tcp://127.0.0.1:8786', or unset DASK_SCHEDULER_ADDRESS to start a local cluster."
        )
    address = address.strip()
    if "://" not in address:
        address = "tcp://" + address
    try:
        scheme, location = parse_address(address)
        port = urlparse(f"{scheme}://{location}").port
    except ValueError:
        scheme, location, port = None, None, None
    if scheme not in ("tcp", "tls") or not urlparse(f"{scheme}://{location}").hostname or not port:
        raise BookError(
            f"Bad scheduler address {address!r}: expected 'tcp://HOST:PORT' with a numeric port, "
            "for example 'tcp://127.0.0.1:8786' (the address `dask scheduler` prints at start). "
            "Fix DASK_SCHEDULER_ADDRESS, or unset it to start a local cluster."
        )
    return address


def probe_scheduler(address: str, timeout: float = 10) -> None:
    """Raise BookError unless a Dask scheduler answers at ``address`` within ``timeout`` s.

    A Dask server sends its handshake as soon as a connection opens; a web server (the
    dashboard, a Jupyter server) sends nothing until it gets a request. So a silent port is
    most likely the dashboard's (8787) given where the scheduler's (8786) was meant.
    """
    address = check_address(address)
    if not address.startswith("tcp://"):
        return  # TLS needs the certificates: distributed's own handshake checks it
    parsed = urlparse(address)
    host, port = parsed.hostname, parsed.port
    fix = ("Start one (`dask scheduler`, then `dask worker ADDRESS`), check the address and that "
           "its port is reachable from here, or unset DASK_SCHEDULER_ADDRESS to start a local "
           "cluster instead.")
    try:
        connection = socket.create_connection((host, port), timeout=timeout)
    except OSError as error:
        raise BookError(f"No Dask scheduler at {address} ({error}). {fix}") from None
    with connection:
        connection.settimeout(timeout)
        try:
            first_bytes = connection.recv(16)
        except (socket.timeout, OSError):
            first_bytes = None
    if not first_bytes or first_bytes.startswith(b"HTTP"):
        raise BookError(
            f"Something listens at {address}, but it is not a Dask scheduler: it did not answer "
            f"Dask's handshake within {timeout:g} s. Is it the dashboard's port (8787 by default) "
            "or a web server? The scheduler's address is the tcp:// one `dask scheduler` prints "
            "(port 8786 by default); the dashboard's http:// link is for your browser only."
        )


def local_cluster_options(n_workers: int = DEFAULT_N_WORKERS, threads_per_worker: int = 1,
                          **options) -> dict:
    """Keyword arguments for a LocalCluster that listens on 127.0.0.1 only.

    Single-threaded worker processes: scikit-learn's Python code (chapter 1's tokenizer, say) holds
    Python's GIL, so processes, not threads, run it at the same time. Without ``memory_limit`` in
    ``options`` each worker gets LocalCluster's default, the machine's memory divided among the
    workers, as in chapter 0's cell (an explicit ``memory_limit="auto"`` would give each worker its
    threads' share of the machine's cores instead).
    """
    from . import require_positive_int

    require_positive_int("n_workers", n_workers)
    require_positive_int("threads_per_worker", threads_per_worker)
    dashboard_port = DEFAULT_DASHBOARD_PORT if _port_is_free(DEFAULT_DASHBOARD_PORT) else 0
    # Keep the scheduler's, nannies' and workers' log lines out of notebook cells: they arrive
    # at random moments (distributed 2025.1.0 logs a heartbeat error when a cluster shuts down),
    # while a failing task still raises its error in the notebook. Chapter 6 reads them on purpose
    # with client.get_worker_logs(); pass silence_logs=logging.WARNING to see them as they come.
    options.setdefault("silence_logs", logging.CRITICAL)
    return dict(n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True,
                host=LOOPBACK, dashboard_address=f"{LOOPBACK}:{dashboard_port}", **options)


def get_client(address: str | None = None, timeout: float = 10, local: bool = False,
               **local_options) -> Client:
    """Return a connected ``distributed.Client``: chapter 0's set-up cell (see the module).

    address: a scheduler to connect to; defaults to ``DASK_SCHEDULER_ADDRESS`` / dask config.
        Without one, a LocalCluster is started (``local_options`` go to it, see
        :func:`local_cluster_options`), and closing the client also closes that cluster.
    timeout: seconds to wait for an existing scheduler before giving up with a clear error.
    local: start a LocalCluster even when a scheduler is configured; for demonstrations that need
        a cluster of a particular shape (one worker with a small memory limit) wherever they run.
    """
    if local and address:
        raise BookError("Give either an address or local=True, not both.")
    address = None if local else address or configured_scheduler_address()
    # Client.dashboard_link reads this setting each time it is asked, so it stays set (as the
    # binder/start script sets it for the whole session through DASK_DISTRIBUTED__DASHBOARD__LINK).
    dask.config.set({"distributed.dashboard.link": dashboard_link_template()})
    if address is None:
        # The configured address is cleared while the cluster starts, or Client would connect
        # there instead (local=True).
        with dask.config.set({"scheduler-address": None}):
            return Client(**local_cluster_options(**local_options))
    if local_options:
        raise BookError(
            f"Options {sorted(local_options)} only apply to a local cluster, but a scheduler "
            f"address is set ({address!r}): size that cluster where it is started, or unset "
            "DASK_SCHEDULER_ADDRESS."
        )
    probe_scheduler(address, timeout)
    try:
        return Client(check_address(address), timeout=timeout)
    except (OSError, TimeoutError) as error:
        raise BookError(
            f"Could not connect to the Dask scheduler at {address} within {timeout} s ({error}). "
            "Check that its workers and this notebook run the same versions of dask and "
            "distributed (`python -m scaling_ml.check`)."
        ) from None


def describe(client: Client) -> str:
    """One line a notebook can print: how many workers and threads, without addresses."""
    workers = client.scheduler_info()["workers"].values()
    threads = sum(worker["nthreads"] for worker in workers)
    return f"{len(workers)} worker{'s' * (len(workers) != 1)}, {threads} thread{'s' * (threads != 1)}"


@contextlib.contextmanager
def captured_logs(*logger_names: str, level: int = logging.WARNING):
    """Collect this process's log records of ``logger_names`` in a list instead of printing them.

    ``with captured_logs("distributed.nanny") as records: ...``. The scheduler and the nannies of
    a LocalCluster run in the notebook's own process, so their warnings would otherwise land in
    whatever cell runs when they happen. Loggers silenced by ``silence_logs`` are opened up to
    ``level`` inside the block and restored afterwards.
    """
    names = logger_names or ("distributed",)
    records: list[logging.LogRecord] = []

    class _Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = _Keep(level=level)
    saved = []
    for name in names:
        logger = logging.getLogger(name)
        saved.append((logger, list(logger.handlers), logger.propagate, logger.level))
        logger.handlers = [handler]
        logger.propagate = False
        logger.setLevel(min(level, logger.level) if logger.level else level)
    try:
        yield records
    finally:
        for logger, handlers, propagate, old_level in saved:
            logger.handlers = handlers
            logger.propagate = propagate
            logger.setLevel(old_level)
