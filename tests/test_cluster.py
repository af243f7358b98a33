"""The cluster helper: loopback only, the configured scheduler, clear errors, nothing left running."""

import os
import socket
import sys
import time
from pathlib import Path

import dask
import psutil
import pytest

from scaling_ml import BookError
from scaling_ml import cluster

BIN = Path(sys.executable).parent


def _listening_addresses(pids):
    addresses = []
    for pid in pids:
        for connection in psutil.Process(pid).net_connections(kind="inet"):
            if connection.status == psutil.CONN_LISTEN:
                addresses.append(connection.laddr.ip)
    return addresses


def _cluster_pids(client):
    """The pids of this process's cluster: itself (scheduler) and the worker processes."""
    worker_pids = list(client.run(os.getpid).values())
    return [os.getpid(), *worker_pids]


@pytest.mark.cluster
def test_local_cluster_scheduler_workers_and_dashboard_listen_on_loopback_only():
    with dask.config.set({"scheduler-address": None}):
        with cluster.get_client(n_workers=2) as client:
            pids = _cluster_pids(client)
            addresses = _listening_addresses(pids)
            dashboard_port = int(client.dashboard_link.split(":")[2].split("/")[0])
            listening = {connection.laddr.port for connection in psutil.Process().net_connections("inet")
                         if connection.status == psutil.CONN_LISTEN}
            assert dashboard_port in listening
            assert len(client.scheduler_info()["workers"]) == 2
        assert addresses and set(addresses) == {"127.0.0.1"}, addresses
        time.sleep(1)
        survivors = [pid for pid in pids[1:] if psutil.pid_exists(pid)
                     and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
        assert not survivors, f"worker processes left running after close: {survivors}"


def test_closing_the_client_closes_the_cluster_it_started():
    client = cluster.get_client(n_workers=1)
    worker_pids = list(client.run(os.getpid).values())
    client.close()
    time.sleep(1)
    assert not [pid for pid in worker_pids if psutil.pid_exists(pid)
                and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


def test_dask_scheduler_address_is_used(client_of_external_scheduler):
    assert client_of_external_scheduler.submit(sum, [1, 2, 3]).result() == 6


def test_local_options_with_an_address_are_refused(external_scheduler):
    with pytest.raises(BookError, match="only apply to a local cluster"):
        cluster.get_client(external_scheduler, n_workers=4)


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:notaport", "http//nowhere", "tcp://:8786", "   "])
def test_bad_scheduler_address_names_the_fix(address):
    with pytest.raises(BookError, match=r"Bad scheduler address|tcp://HOST:PORT"):
        cluster.get_client(address)


def test_bad_address_in_the_environment_names_the_variable(monkeypatch):
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://127.0.0.1:port")
    dask.config.refresh()
    try:
        with pytest.raises(BookError, match="DASK_SCHEDULER_ADDRESS"):
            cluster.get_client()
    finally:
        monkeypatch.delenv("DASK_SCHEDULER_ADDRESS")
        dask.config.refresh()


def test_unreachable_scheduler_names_the_fix():
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(BookError, match=r"No Dask scheduler at .*dask scheduler"):
        cluster.get_client(f"tcp://127.0.0.1:{port}", timeout=2)
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("options", [{"n_workers": 0}, {"n_workers": "two"}, {"threads_per_worker": 0}])
def test_bad_local_cluster_sizes_are_refused(options):
    with pytest.raises(BookError, match="whole number"):
        cluster.get_client(**options)


def test_local_true_starts_a_local_cluster_even_with_a_configured_scheduler(external_scheduler, monkeypatch):
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", external_scheduler)
    dask.config.refresh()
    try:
        with cluster.get_client(local=True, n_workers=1, memory_limit="1GiB") as client:
            assert client.scheduler.address != external_scheduler
            assert client.scheduler.address.startswith("tcp://127.0.0.1:")
        with pytest.raises(BookError, match="not both"):
            cluster.get_client(external_scheduler, local=True)
    finally:
        monkeypatch.delenv("DASK_SCHEDULER_ADDRESS")
        dask.config.refresh()


@pytest.fixture
def web_server():
    """An HTTP server on a loopback port: what the dashboard's port (8787) looks like."""
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"tcp://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_web_server_address_fails_fast_naming_the_dashboard_mix_up(web_server, monkeypatch):
    # Plain Client(address, timeout=5) waits for minutes here; the helper answers within its timeout.
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", web_server)
    dask.config.refresh()
    try:
        started = time.monotonic()
        with pytest.raises(BookError, match=r"not a Dask scheduler.*dashboard.*8786"):
            cluster.get_client(timeout=2)
        assert time.monotonic() - started < 10
    finally:
        monkeypatch.delenv("DASK_SCHEDULER_ADDRESS")
        dask.config.refresh()


def test_a_real_scheduler_passes_the_probe(external_scheduler):
    cluster.probe_scheduler(external_scheduler, timeout=5)


def test_the_dashboard_link_goes_through_the_hub_proxy_under_jupyterhub():
    with dask.config.set({"distributed.dashboard.link": cluster.DISTRIBUTED_DASHBOARD_LINK}):
        hub = {"JUPYTERHUB_SERVICE_PREFIX": "/user/ada/"}
        assert cluster.dashboard_link_template(hub) == cluster.HUB_DASHBOARD_LINK
        assert cluster.dashboard_link_template({}) == cluster.DISTRIBUTED_DASHBOARD_LINK
    with dask.config.set({"distributed.dashboard.link": "https://example.org/{port}"}):
        # A link someone configured on purpose wins.
        assert cluster.dashboard_link_template(hub) == "https://example.org/{port}"


def test_under_jupyterhub_the_printed_link_is_the_proxied_one(monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/ada/")
    with dask.config.set({"distributed.dashboard.link": cluster.DISTRIBUTED_DASHBOARD_LINK,
                          "scheduler-address": None}):
        with cluster.get_client(n_workers=1) as client:
            port = client.cluster.scheduler.http_server.port
            assert client.dashboard_link == f"/user/ada/proxy/{port}/status"


def test_captured_logs_keep_records_and_restore_the_logger():
    import logging

    logger = logging.getLogger("distributed.test-capture")
    logger.setLevel(logging.CRITICAL)  # as silence_logs leaves it
    handlers = list(logger.handlers)
    with cluster.captured_logs("distributed.test-capture") as records:
        logger.warning("worker %s restarted", "w1")
        logger.info("not kept")
    assert [record.getMessage() for record in records] == ["worker w1 restarted"]
    assert logger.level == logging.CRITICAL and logger.handlers == handlers and logger.propagate


def test_without_a_memory_limit_each_worker_gets_its_share_of_the_machine():
    """As chapter 0's LocalCluster(...) does: the machine's memory divided among the workers (an
    explicit memory_limit="auto" would divide it among the cores instead)."""
    from distributed.system import MEMORY_LIMIT

    assert "memory_limit" not in cluster.local_cluster_options()
    with dask.config.set({"scheduler-address": None}):
        with cluster.get_client(n_workers=1) as client:
            [worker] = client.scheduler_info()["workers"].values()
    assert worker["memory_limit"] == MEMORY_LIMIT


# ---- chapter 0's `# Scale up:` comments, run at this machine's size ---------------------------

@pytest.mark.scale_up("00_setup", "n_workers is the number of processes")
def test_chapter_0_starts_one_single_threaded_worker_per_core(monkeypatch, capsys):
    from tests.notebook_cells import run_cells

    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "")
    cores = os.cpu_count()
    with dask.config.set({"scheduler-address": None}):
        namespace = run_cells("00_setup", ["cell-08", "cell-10"],
                              replace={"n_workers=2,": f"n_workers={cores},"})
    try:
        assert f"{cores} workers, {cores} threads" in capsys.readouterr().out
        assert namespace["cluster"] is not None  # a LocalCluster of this notebook's own
    finally:
        run_cells("00_setup", ["cell-22"], namespace)
    assert namespace["cluster"].status.name == "closed"


@pytest.mark.scale_up("00_setup", "a larger shape (same chunks)")
def test_chapter_0_a_larger_array_gives_more_tasks_spread_over_every_worker(capsys):
    from tests.notebook_cells import run_cells

    with dask.config.set({"scheduler-address": None}):
        namespace = run_cells("00_setup", ["cell-08"])
    try:
        run_cells("00_setup", ["cell-13", "cell-15", "cell-17"], namespace,
                  replace={"random((20_000, 2_000), chunks=": "random((40_000, 2_000), chunks="})
        array, client = namespace["random_numbers"], namespace["client"]
        assert array.numblocks == (20, 1) and array.chunksize == (2_000, 2_000)  # twice the chunks
        chunk_keys = {key for row in array.__dask_keys__() for key in row}
        held = {worker: chunk_keys.intersection(keys) for worker, keys in client.has_what().items()}
        assert len(held) == 2 and all(held.values()), held
        # Every chunk is held; one may sit on both workers (copied for a task on the other).
        assert set().union(*held.values()) == chunk_keys and len(chunk_keys) == 20
        assert "(2000,) 0.5" in capsys.readouterr().out  # the chapter's column means, as before
    finally:
        run_cells("00_setup", ["cell-22"], namespace)
