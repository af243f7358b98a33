"""Chapter 5, "From laptop to cluster": what its cells call but a reader need not type.

The chapter starts real command-line processes (``dask scheduler``, ``dask worker``,
``dask-gateway-server``) as a reader or an administrator would in a terminal of their own.
:func:`start_command` runs one in the background with its output in a log file, and
:meth:`BackgroundCommand.stop` stops it with all its children (a nanny starts its worker as a
child); what a notebook did not stop is stopped when its kernel exits. :func:`wait_for_file` waits
for a scheduler file with a clear error (``Client(scheduler_file=...)`` waits for ever when the
scheduler died); :func:`log_lines` picks lines out of a log; :func:`start_local_gateway` runs a
Dask Gateway on 127.0.0.1 (on a hub, the administrator's job); :func:`scale_up_knobs` and
:func:`format_knobs` collect every ``# Scale up:`` comment of the chapters.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from scaling_ml import BookError, notebook_paths

# `dask ...` and `dask-gateway-server` run from this environment: a kernel's PATH may lack its bin folder.
ENVIRONMENT_BIN = Path(sys.executable).parent


def _live_pids_in_group(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(stat.parent.name))
    return found


@dataclass
class BackgroundCommand:
    """A command line running in the background in its own process group (see start_command)."""

    command: list[str]
    log_file: Path
    process: subprocess.Popen = field(repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def is_running(self) -> bool:
        """True while the command or any process it started is alive."""
        return bool(_live_pids_in_group(self.pid))

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def stop(self, timeout: float = 15) -> None:
        """Stop the command and every process it started: SIGTERM, then SIGKILL after ``timeout``."""
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and self.is_running():
                with contextlib.suppress(Exception):
                    self.process.poll()
                time.sleep(0.1)
            if not self.is_running():
                break
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        if self.is_running():
            raise BookError(f"`{' '.join(self.command[:2])}` (process group {self.pid}) still runs "
                                       "after SIGKILL.")
        with contextlib.suppress(ValueError):
            _STARTED.remove(self)


_STARTED: list[BackgroundCommand] = []


@atexit.register
def _stop_what_is_left() -> None:
    for command in list(_STARTED):
        with contextlib.suppress(Exception):
            command.stop(timeout=5)


def _resolve(program: str) -> str:
    beside_python = ENVIRONMENT_BIN / program
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which(program)
    if found is None:
        raise BookError(
            f"The command `{program}` is not installed in this environment ({ENVIRONMENT_BIN}) nor "
            "on PATH: install the book's packages (pip install -r requirements.txt).")
    return found


def start_command(command: list[str], log_file: str | os.PathLike, cwd: str | os.PathLike | None = None,
                  env: dict[str, str] | None = None) -> BackgroundCommand:
    """Run ``command`` (a list, as typed in a terminal) in the background; output to ``log_file``.

    ``dask`` and this environment's other commands run from it even when the kernel's PATH lacks its
    bin folder. ``env``: extra environment variables.
    """
    if isinstance(command, str) or not command or not all(isinstance(part, str) for part in command):
        raise BookError("Give the command as a list of strings, for example "
                                   f"['dask', 'scheduler', '--port', '0'], not {command!r}.")
    log_file = Path(log_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    full_command = [_resolve(command[0]), *command[1:]]
    environment = dict(os.environ, **(env or {}))
    # The command's own bin folder first, so that what it starts in turn comes from there too.
    environment["PATH"] = f"{ENVIRONMENT_BIN}{os.pathsep}{environment.get('PATH', '')}"
    with open(log_file, "w") as log:
        process = subprocess.Popen(full_command, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, cwd=cwd, env=environment,
                                   start_new_session=True)
    started = BackgroundCommand(command=list(command), log_file=log_file, process=process)
    _STARTED.append(started)
    return started


def wait_for_file(path: str | os.PathLike, started: BackgroundCommand, timeout: float = 60) -> Path:
    """Wait until ``started`` has written ``path`` (a scheduler file); a clear error if it exits."""
    path = Path(path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.stat().st_size:
            return path
        if started.process.poll() is not None:
            raise BookError(
                f"`{' '.join(started.command[:2])}` exited with code {started.process.returncode} "
                f"before writing {path.name}. Its log ({started.log_file}) ends with:\n"
                + "\n".join(started.log().splitlines()[-10:]))
        time.sleep(0.1)
    raise BookError(f"{path} did not appear within {timeout} s; see {started.log_file}.")


def log_lines(log_file: str | os.PathLike, *words: str) -> list[str]:
    """The lines of ``log_file`` that contain any of ``words`` (every line without words)."""
    text = Path(log_file).read_text(errors="replace") if Path(log_file).exists() else ""
    return [line for line in text.splitlines() if not words or any(w in line for w in words)]


# ---------------------------------------------------------------- Dask Gateway

def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


GATEWAY_CONFIG = """\
# dask-gateway-server configuration written by scaling_ml.laptop_to_cluster (chapter 5).
# Everything on 127.0.0.1; clusters run as local processes of this user (UnsafeLocalBackend:
# for a single-user test only, a hub uses the Kubernetes, jobqueue or local backend).
c.DaskGateway.address = "127.0.0.1:{api_port}"       # the gateway's private API
c.Proxy.address = "127.0.0.1:{proxy_port}"           # what clients (and schedulers) connect to
c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
c.UnsafeLocalBackend.clusters_directory = {clusters!r}
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
c.SimpleAuthenticator.password = {password!r}
# `dask scheduler` / `dask worker` from this environment: the default commands, dask-scheduler
# and dask-worker, are no longer installed by distributed 2026.6.0 and later.
c.ClusterConfig.scheduler_cmd = [{dask!r}, "scheduler"]
c.ClusterConfig.worker_cmd = [{dask!r}, "worker"]
c.ClusterConfig.worker_cores = 1
c.ClusterConfig.worker_memory = "2 G"
c.ClusterConfig.idle_timeout = 600                   # seconds before an unused cluster is shut down
"""


@dataclass
class LocalGateway:
    """A running ``dask-gateway-server`` (see start_local_gateway)."""

    address: str
    password: str
    server: BackgroundCommand
    clusters_directory: Path

    def cluster_processes(self) -> list[int]:
        """Processes of the gateway's clusters (they run inside its clusters directory)."""
        found = []
        for cwd in Path("/proc").glob("[0-9]*/cwd"):
            with contextlib.suppress(OSError):
                if Path(os.readlink(cwd)).is_relative_to(self.clusters_directory):
                    found.append(int(cwd.parent.name))
        return found

    def stop(self) -> None:
        """Stop the server; it shuts its clusters down first. Then check that none is left."""
        self.server.stop(timeout=30)
        left = self.cluster_processes()
        for pid in left:  # only if the server could not stop them itself
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if left:
            raise BookError(f"The gateway left cluster processes {left} running; they were killed. "
                                       f"See {self.server.log_file}.")


def start_local_gateway(directory: str | os.PathLike, timeout: float = 60) -> LocalGateway:
    """Start ``dask-gateway-server`` on 127.0.0.1 with its local backend; wait until it answers.

    Its configuration, log and clusters go to ``directory``. Clients connect to ``LocalGateway.address``
    (the gateway's proxy) with any user name and its ``password``.
    """
    directory = Path(directory)
    clusters = directory / "clusters"
    clusters.mkdir(parents=True, exist_ok=True)
    api_port, proxy_port = _free_port(), _free_port()
    while proxy_port == api_port:
        proxy_port = _free_port()
    password = secrets.token_urlsafe(16)
    config = directory / "dask_gateway_config.py"
    config.write_text(GATEWAY_CONFIG.format(api_port=api_port, proxy_port=proxy_port, clusters=str(clusters),
                                            password=password, dask=_resolve("dask")))
    server = start_command(["dask-gateway-server", "--config", str(config)],
                           log_file=directory / "gateway.log", cwd=directory)
    address = f"http://127.0.0.1:{proxy_port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise BookError(
                f"dask-gateway-server exited with code {server.process.returncode}; its log "
                f"({server.log_file}) ends with:\n" + "\n".join(server.log().splitlines()[-10:]))
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{address}/api/health", timeout=2) as answer:
                if answer.status == 200:
                    return LocalGateway(address, password, server, clusters)
        time.sleep(0.2)
    server.stop()
    raise BookError(f"dask-gateway-server did not answer within {timeout} s; see {server.log_file}.")


# ---------------------------------------------------------------- the Scale up table

SCALE_UP = re.compile(r"#\s*Scale up:\s*(.*)")


def chapter_notebooks() -> list[Path]:
    """Every chapter notebook (``NN_name.ipynb``; the appendices left out), in the book's order."""
    return [path for path in notebook_paths() if path.stem[:2].isdigit()]


def scale_up_knobs(notebooks=None) -> list[dict]:
    """Every ``# Scale up:`` comment in the chapters' code cells, with the line it sits above.

    A comment may continue on the following ``#`` lines; the knob is the code before an inline
    comment, or else the first code line after the comment.
    """
    rows = []
    for path in chapter_notebooks() if notebooks is None else notebooks:
        cells = json.loads(Path(path).read_text())["cells"]
        for lines in ("".join(cell["source"]).splitlines() for cell in cells
                      if cell["cell_type"] == "code"):
            for index, match in ((i, SCALE_UP.search(line)) for i, line in enumerate(lines)):
                if not match:
                    continue
                text, following = [match.group(1).strip()], index + 1
                while following < len(lines) and lines[following].lstrip().startswith("#"):
                    text.append(lines[following].lstrip().lstrip("#").strip())
                    following += 1
                # An inline comment's knob is the code before it; else the next code line.
                knob = lines[index][:match.start()].strip() or (
                    lines[following].strip() if following < len(lines) else "")
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
