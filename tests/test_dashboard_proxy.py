"""The dashboard where readers actually are: through the notebook server's proxy, in JupyterLab.

A real JupyterLab server (token auth, 127.0.0.1, a free port, started through binder/start as
Binder starts it), a real Dask cluster started the way chapter 0 writes it (plain `LocalCluster` +
`Client`, in its own process), and the dashboard fetched through the server's
`<base_url>proxy/<port>/status` address that jupyter-server-proxy serves. Once as on a laptop
(base URL `/`), once as behind JupyterHub or Binder (base URL `/user/learner/`, where the link
the cluster prints must itself be the proxied one). Also: dask-labextension is installed and
enabled in JupyterLab, and no process outlives the test.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from scaling_ml import cluster
from scaling_ml import PROJECT_ROOT as ROOT

pytestmark = pytest.mark.cluster  # make test-cluster
BIN = Path(sys.executable).parent
START = ROOT / "binder" / "start"
WORKSPACE = ROOT / "binder" / "jupyterlab-workspace.json"
HUB_PREFIX = "/user/learner/"
DASHBOARD_TITLE = "<title>Dask Diagnostic UI</title>"  # distributed's dashboard page

# Chapter 0's set-up code, in its own process as in a reader's kernel: it prints the dashboard
# link distributed makes (from the configuration binder/start exported), then holds the cluster
# until its standard input closes.
CLUSTER_PROCESS = """
import sys
from distributed import Client, LocalCluster

cluster = LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1",
                       dashboard_address="127.0.0.1:0")
client = Client(cluster)
print(client.dashboard_link, cluster.scheduler.http_server.port, flush=True)
sys.stdin.read()
client.close()
cluster.close()
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *arguments):  # a redirect (to the login page) is the answer
        return None


OPENER = urllib.request.build_opener(_NoRedirects)


def get(url: str, token: str, timeout: float = 10) -> tuple[int, str]:
    """Status and body of a GET with the server's token, not following redirects."""
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    try:
        with OPENER.open(request, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def stop(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM the process's group (it was started in a new session), then SIGKILL what is left."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout)


def session_environment(tmp_path: Path, hub_prefix: str | None) -> dict[str, str]:
    environment = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                   "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
                   "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    for name in ("JUPYTERHUB_SERVICE_PREFIX", "DASK_DISTRIBUTED__DASHBOARD__LINK"):
        environment.pop(name, None)
    if hub_prefix:
        environment["JUPYTERHUB_SERVICE_PREFIX"] = hub_prefix
    return environment


@pytest.fixture(params=["laptop", "hub"])
def lab_session(request, tmp_path):
    """A JupyterLab server and a Dask cluster, started as a reader's session starts them."""
    hub_prefix = HUB_PREFIX if request.param == "hub" else None
    base_url = hub_prefix or "/"
    environment = session_environment(tmp_path, hub_prefix)
    port, token = free_port(), secrets.token_hex(16)
    server_command = [str(BIN / "jupyter"), "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
                      f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
                      f"--IdentityProvider.token={token}", f"--ServerApp.base_url={base_url}",
                      f"--ServerApp.root_dir={ROOT}"]
    if os.geteuid() == 0:  # CI runs as root, which JupyterLab refuses unless told
        server_command.append("--allow-root")
    # Behind a hub, Binder runs binder/start before the server and the kernels inherit what it
    # exports; on a laptop nothing runs first.
    prefix = [str(START)] if hub_prefix else []
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(prefix + server_command, env=environment, stdout=log, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, start_new_session=True)
    dask_process = None
    try:
        origin = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if get(f"{origin}{base_url}api/status", token, timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "JupyterLab did not answer within 120 s"
            time.sleep(0.5)
        dask_process = subprocess.Popen(
            prefix + [sys.executable, "-c", CLUSTER_PROCESS], env=environment, cwd=tmp_path,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            start_new_session=True)
        link, dashboard_port = dask_process.stdout.readline().split()
        yield {"origin": origin, "base_url": base_url, "token": token, "hub_prefix": hub_prefix,
               "link": link, "dashboard_port": int(dashboard_port), "log": tmp_path / "server.log",
               "workspaces": tmp_path / "workspaces"}
    finally:
        children = []
        for process in (server, dask_process):
            if process is not None:
                try:
                    children += psutil.Process(process.pid).children(recursive=True)
                except psutil.NoSuchProcess:
                    pass
        if dask_process is not None:
            dask_process.stdin.close()
            try:
                dask_process.wait(30)
            except subprocess.TimeoutExpired:
                pass
            stop(dask_process)
        stop(server)
        log.close()
        _, alive = psutil.wait_procs(children, timeout=15)
        assert not alive, f"left running: {[process.cmdline() for process in alive]}"


def test_the_dashboard_answers_through_the_notebook_servers_proxy(lab_session):
    session = lab_session
    proxied = f"{session['base_url']}proxy/{session['dashboard_port']}/status"
    if session["hub_prefix"]:
        # What the reader's cell prints is the address to open: the proxied one, on the hub's host.
        assert session["link"] == proxied, session["link"]
        # binder/start imported the JupyterLab workspace with the Dask panes pointed through the proxy.
        imported = [json.loads(path.read_text()) for path in session["workspaces"].glob("*.jupyterlab-workspace")]
        assert [workspace["data"]["dask-dashboard-launcher"]["url"] for workspace in imported] == \
            [f"{HUB_PREFIX}proxy/8787"], imported
        assert session["link"].replace(str(session["dashboard_port"]), "{port}") == \
            cluster.HUB_DASHBOARD_LINK.format(JUPYTERHUB_SERVICE_PREFIX=session["hub_prefix"], port="{port}")
    else:
        assert session["link"] == f"http://127.0.0.1:{session['dashboard_port']}/status"

    status, page = get(f"{session['origin']}{proxied}", session["token"])
    assert status == 200, page[:500]
    assert DASHBOARD_TITLE in page and "bokeh.min.js" in page, page[:1000]
    direct_status, direct_page = get(f"http://127.0.0.1:{session['dashboard_port']}/status", "")
    assert direct_status == 200 and DASHBOARD_TITLE in direct_page
    # The page's own resources (relative links) and the panes dask-labextension lists resolve
    # under the proxied path too.
    proxied_root = f"{session['origin']}{session['base_url']}proxy/{session['dashboard_port']}/"
    script = re.search(r'src="(static/js/bokeh\.min\.js[^"]*)"', page).group(1)
    status, _ = get(proxied_root + script, session["token"])
    assert status == 200, script
    status, individual_plots = get(proxied_root + "individual-plots.json", session["token"])
    assert status == 200, individual_plots[:300]
    # binder/jupyterlab-workspace.json opens these panes beside chapter 0.
    workspace = json.loads(WORKSPACE.read_text())["data"]
    panes = {value["data"]["route"] for key, value in workspace.items()
             if key.startswith("dask-dashboard-launcher:/")}
    assert panes and panes <= set(json.loads(individual_plots).values()), (panes, individual_plots)
    # Without the token, the proxy is closed like the rest of the server.
    # The server side of both extensions was loaded by this server.
    log = session["log"].read_text()
    for extension in ("dask_labextension", "jupyter_server_proxy"):
        assert f"{extension} | extension was successfully loaded" in log, log[-3000:]
    status, page = get(f"{session['origin']}{proxied}", "wrong-token")
    assert status in (302, 401, 403) and DASHBOARD_TITLE not in page, status


def test_dask_labextension_is_installed_and_enabled_in_jupyterlab(tmp_path):
    environment = session_environment(tmp_path, None)
    listing = subprocess.run([str(BIN / "jupyter"), "labextension", "list"], env=environment,
                             capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0, listing.stderr
    lines = [line.strip() for line in (listing.stdout + listing.stderr).splitlines()]
    dask_lines = [line for line in lines if line.startswith("dask-labextension ")]
    assert dask_lines, "\n".join(lines)
    assert "enabled" in dask_lines[0] and "OK" in dask_lines[0] and "disabled" not in dask_lines[0], dask_lines
