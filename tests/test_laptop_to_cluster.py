"""Unit tests of scaling_ml.laptop_to_cluster and of chapter 5's job-queue cells (fast, real
components: real processes, real dask-jobqueue job scripts; no batch system needed)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import shlex
import sys
import time
from pathlib import Path

import dask
import nbformat
import pytest
import yaml

from scaling_ml import BookError
from scaling_ml import laptop_to_cluster as chapter
from tests import lanes

NOTEBOOKS = lanes.PROJECT_ROOT / "notebooks"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.parametrize("command", ["dask scheduler", [], ["dask", 8786]])
def test_start_command_wants_a_list_of_strings(command, tmp_path):
    with pytest.raises(BookError, match="list of strings"):
        chapter.start_command(command, log_file=tmp_path / "log")


def test_start_command_names_a_missing_program(tmp_path):
    with pytest.raises(BookError, match="`no-such-program-ch5` is not installed"):
        chapter.start_command(["no-such-program-ch5"], log_file=tmp_path / "log")


def test_stop_ends_the_command_and_everything_it_started(tmp_path):
    marker = tmp_path / "children"
    started = chapter.start_command(
        ["bash", "-c", f"sleep 300 & sleep 300 & echo $! > {marker}; echo started; wait"],
        log_file=tmp_path / "logs" / "shell.log")
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    child = int(marker.read_text())
    assert started.is_running() and _alive(child)
    started.stop(timeout=5)
    assert not started.is_running() and not _alive(child)
    assert started.log().strip() == "started"
    assert started not in chapter._STARTED


def test_dask_comes_from_this_environment(tmp_path):
    started = chapter.start_command(["dask", "--version"], log_file=tmp_path / "version.log")
    assert started.process.wait(timeout=120) == 0
    assert started.command == ["dask", "--version"]
    assert started.process.args[0] == str(Path(sys.executable).parent / "dask")
    from dask import __version__

    assert __version__ in started.log()


def test_wait_for_file_reports_a_command_that_died(tmp_path):
    started = chapter.start_command(
        [sys.executable, "-c", "print('no such interface: ib0'); raise SystemExit(3)"],
        log_file=tmp_path / "scheduler.log")
    with pytest.raises(BookError, match=r"(?s)exited with code 3.*no such interface"):
        chapter.wait_for_file(tmp_path / "scheduler.json", started, timeout=60)
    (tmp_path / "ready.json").write_text("{}")
    assert chapter.wait_for_file(tmp_path / "ready.json", started) == tmp_path / "ready.json"


def test_log_lines(tmp_path):
    log = tmp_path / "worker.log"
    log.write_text("a Waiting to connect\nb other\nc Timed out\n")
    assert chapter.log_lines(log, "Waiting", "Timed out") == ["a Waiting to connect", "c Timed out"]
    assert len(chapter.log_lines(log)) == 3
    assert chapter.log_lines(tmp_path / "missing.log", "x") == []


def test_scale_up_knobs(tmp_path):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# Scale up: not in a code cell"),
        nbformat.v4.new_code_cell("x = 1\n# Scale up: use all 20 categories\n# on a cluster.\n"
                                  "categories = ['a', 'b']\n"
                                  "N = 10  # Scale up: 1000\n"),
    ]
    path = tmp_path / "01_demo.ipynb"
    nbformat.write(notebook, path)
    rows = chapter.scale_up_knobs([path])
    assert rows == [{
        "chapter": "01_demo", "knob": "categories = ['a', 'b']",
        "on a real cluster": "use all 20 categories on a cluster.",
    }, {"chapter": "01_demo", "knob": "N = 10", "on a real cluster": "1000"}]
    assert chapter.format_knobs(rows).splitlines()[:2] == ["01_demo", "  categories = ['a', 'b']"]


def test_chapter_notebooks_are_numbered():
    names = [path.name for path in chapter.chapter_notebooks()]
    assert "00_setup.ipynb" in names and names == sorted(names)


# ---------------------------------------------------------------- the chapter's job-queue cells

def _run_cell(contains: str) -> tuple[dict, str]:
    namespace = {"Path": Path, "shlex": shlex, "sys": sys, "os": os}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(lanes.chapter_code_cell(contains), namespace)
    return namespace, printed.getvalue()


def test_the_chapters_slurm_cell_asks_for_what_its_comments_say():
    namespace, script = _run_cell("slurm_cluster = SLURMCluster(")
    namespace["slurm_cluster"].close()
    home = str(Path.home())
    for line in ("#SBATCH -p debug", "#SBATCH -A scaling-ml", "#SBATCH --cpus-per-task=1",
                 "#SBATCH --mem=3G", "#SBATCH -t 00:30:00",
                 f"#SBATCH -e {home}/dask-logs/dask-worker-%J.err",
                 f"#SBATCH -o {home}/dask-logs/dask-worker-%J.out",
                 f"source {shlex.quote(sys.prefix)}/bin/activate"):
        assert line in script.splitlines(), line
    worker = next(line for line in script.splitlines() if "dask_worker" in line)
    assert worker.startswith("python -m distributed.cli.dask_worker tcp://127.0.0.1:")
    for option in ("--memory-limit 2.00GiB", "--local-directory ${TMPDIR:-/tmp}", "--interface lo"):
        assert option in worker
    # The job asks Slurm for more than its workers may use: room for the nannies.
    assert namespace["slurm_cluster"]._dummy_job.worker_memory == 2 * 2**30
    # The settings that differ from a site's are marked as the demo's, in the cell: the workers'
    # interface, and the scheduler's own (given separately, so that it is not the workers').
    cell = lanes.chapter_code_cell("slurm_cluster = SLURMCluster(")
    assert 'interface="lo",             # THIS DEMO ONLY' in cell
    assert '"interface": "lo",      # THIS DEMO ONLY' in cell


def test_the_chapters_pbs_cell_has_the_directives_the_chapter_explains():
    _, script = _run_cell("pbs_cluster = PBSCluster(")
    lines = script.splitlines()
    for line in ("#PBS -N dask-worker", "#PBS -q workq", "#PBS -A scaling-ml",
                 "#PBS -l select=1:ncpus=1:mem=3GB", "#PBS -l walltime=00:30:00",
                 f"#PBS -e {Path.home()}/dask-logs/", f"#PBS -o {Path.home()}/dask-logs/",
                 f"source {shlex.quote(sys.prefix)}/bin/activate"):
        assert line in lines, line
    worker = [line for line in lines if line][-1]
    assert "--interface lo" in worker and "--memory-limit 2.00GiB" in worker


@pytest.mark.parametrize("kind", ["slurm", "pbs"])
def test_jobqueue_yaml_gives_a_sites_job_script(kind):
    from dask_jobqueue import PBSCluster, SLURMCluster

    settings = yaml.safe_load((NOTEBOOKS / "jobqueue.yaml").read_text())
    site = settings["jobqueue"][kind]
    assert site["interface"] == "ib0" and site["cores"] == 32 and site["processes"] == 8
    # The scheduler runs on the login node: its interface is its own, not the workers' ib0.
    assert site["scheduler-options"]["interface"] == "eth0"
    # No --lifetime in the file: without adapt, retired workers would not come back.
    assert "worker-extra-args" not in site
    demo_overrides = dict(interface="lo", log_directory=str(Path.home() / "dask-logs"),
                          scheduler_options={"interface": "lo", "dashboard_address": "127.0.0.1:0"})
    with dask.config.set(dask.config.merge(dask.config.config, settings)):
        cluster_class = SLURMCluster if kind == "slurm" else PBSCluster
        with cluster_class(**demo_overrides) as made:
            script = made.job_script()
    expected = {"slurm": ["#SBATCH -p regular", "#SBATCH -A my-project",
                          "#SBATCH --cpus-per-task=32", "#SBATCH --mem=120G", "#SBATCH -t 02:00:00"],
                "pbs": ["#PBS -q workq", "#PBS -A my-project", "#PBS -l select=1:ncpus=32:mem=120GB",
                        "#PBS -l walltime=02:00:00"]}[kind]
    for line in [*expected, "module load python/3.11",
                 "source /scratch/my-project/envs/scaling-ml/bin/activate"]:
        assert line in script.splitlines(), line
    worker = [line for line in script.splitlines() if line][-1]
    # 8 workers of 14 GiB: 112 GiB, 8 GiB below what the job asks for (120G / 120GB).
    for option in ("--nworkers 8", "--nthreads 4", "--memory-limit 14.00GiB",
                   "--local-directory ${TMPDIR:-/tmp}"):
        assert option in worker
    assert worker.startswith("python -m distributed.cli.dask_worker")


# ---------------------------------------------------------------- the chapter's cells on a hub

HUB_PREFIX = "/user/learner/"
# The chapter's cells that print a dashboard port, run in order in a process started through
# binder/start, as on Binder or a JupyterHub: the setup cell, the external scheduler, the handshake
# cell, the SLURMCluster cell and its SSH tunnel.
HUB_SESSION = r"""
import json, shutil, sys, urllib.request
cells = ["".join(cell["source"]) for cell in json.load(open(sys.argv[1]))["cells"]
         if cell["cell_type"] == "code"]

def run(contains):
    [code] = [code for code in cells if contains in code]
    exec(code, globals())

run("client = cluster.get_client()")
print("setup cell's dashboard link:", client.dashboard_link)
print("setup cell's dashboard port:", client.scheduler_info()["services"]["dashboard"])
run("scheduler_command = [")
run("external_client = Client(scheduler_file=")
try:
    run('dashboard_port = external_client.scheduler_info()["services"]')
except Exception as error:
    print("handshake cell:", type(error).__name__, str(error)[:60])
print("external dashboard:", external_client.scheduler_info()["services"]["dashboard"],
      urllib.request.urlopen(f"http://127.0.0.1:{dashboard_port}/status", timeout=10).status)
run("external_client.close()")
run("slurm_cluster = SLURMCluster(")
print("SLURMCluster dashboard link:", slurm_cluster.dashboard_link)
print("SLURMCluster dashboard listens on:", slurm_cluster.scheduler.http_server.port)
real_port = slurm_cluster.scheduler.http_server.port
status = urllib.request.urlopen(f"http://127.0.0.1:{real_port}/status", timeout=10).status
run('dashboard_port = slurm_cluster.scheduler_info["services"]')
print("dashboard answers:", status)
shutil.rmtree(scratch, ignore_errors=True)
client.close()
"""


@pytest.mark.scale_up("05_laptop_to_cluster", "set DASK_SCHEDULER_ADDRESS=tcp://SCHEDULER:8786")
def test_the_chapters_dashboard_cells_on_a_hub(tmp_path):
    """Binder and JupyterHub export the dashboard link template of binder/start, under which a
    dashboard link is a proxy path without a port. The chapter's cells that need the port must
    still print the real one. The session's DASK_SCHEDULER_ADDRESS points at a scheduler started
    here (the setup cell's Scale up comment): the setup cell connects there."""
    scheduler_file = tmp_path / "scheduler.json"
    started = [chapter.start_command(
        ["dask", "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", "127.0.0.1:0",
         "--scheduler-file", str(scheduler_file)], log_file=tmp_path / "scheduler.log")]
    try:
        chapter.wait_for_file(scheduler_file, started[0])
        address = json.loads(scheduler_file.read_text())["address"]
        started.append(chapter.start_command(["dask", "worker", address, "--nthreads", "1", "--no-nanny",
                                              "--local-directory", str(tmp_path / "worker")],
                                             log_file=tmp_path / "worker.log"))
        environment = {key: value for key, value in os.environ.items()
                       if not key.startswith(("DASK_", "JUPYTERHUB_"))}
        environment.update(JUPYTERHUB_SERVICE_PREFIX=HUB_PREFIX, DASK_SCHEDULER_ADDRESS=address,
                           JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"),
                           PATH=f"{chapter.ENVIRONMENT_BIN}{os.pathsep}{os.environ['PATH']}")
        session = subprocess.run(
            [str(lanes.PROJECT_ROOT / "binder" / "start"), sys.executable, "-c", HUB_SESSION,
             str(lanes.CHAPTER_5)], cwd=NOTEBOOKS, env=environment, capture_output=True, text=True,
            timeout=300)
    finally:
        for command in started:
            command.stop()
    printed = session.stdout
    assert session.returncode == 0, session.stderr[-3000:]
    values = dict(line.split(": ", 1) for line in printed.splitlines() if ": " in line)
    setup_port = values["setup cell's dashboard port"]
    assert values["setup cell's dashboard link"] == f"{HUB_PREFIX}proxy/{setup_port}/status"
    assert "1 worker, 1 thread" in printed  # the setup cell connected to DASK_SCHEDULER_ADDRESS
    assert values["handshake cell"].startswith("BookError Something listens at tcp://127.0.0.1:")
    assert values["external dashboard"].endswith(" 200")
    slurm_port = values["SLURMCluster dashboard listens on"]
    assert values["SLURMCluster dashboard link"] == f"{HUB_PREFIX}proxy/{slurm_port}/status"
    assert f"ssh -N -L {slurm_port}:localhost:{slurm_port} you@login.your-site.org" in printed
    assert f"then open http://localhost:{slurm_port}/status on your laptop" in printed
    assert values["dashboard answers"] == "200"
