"""Harness of chapter 5's test lanes (tests/test_external_cluster.py, test_slurm.py, test_gateway.py).

* :class:`NetworkLab`: a Linux bridge on this machine plus one network namespace per worker, each
  joined to the bridge by a veth pair. The namespaces are the "other nodes" of a site: a scheduler
  listening on 127.0.0.1 cannot be reached from them, so the scheduler must listen on the bridge's
  address (`--interface`), as on a real cluster. Needs root; everything is removed on exit.
* :func:`workers_environment`: a second virtual environment with the pinned libraries but not
  the book's package, made in seconds from hard links to this environment's files.
* :func:`namespaced_cluster`: `dask scheduler` on the bridge and `dask worker`s in the namespaces,
  run from that environment, each in its own working directory with a private
  `--local-directory` and HOME.
* :func:`clone_repository`, :func:`fill_data_home`, :func:`run_nbval`: strict nbval of notebooks
  from a fresh clone (committed files only), with scikit-learn's cache in a temporary data home.
* :func:`newsgroups_grid_search`: chapter 1's grid search, small enough for a lane.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

from scaling_ml import PROJECT_ROOT
from scaling_ml.laptop_to_cluster import BackgroundCommand, start_command
from tools import CELL_TIMEOUT

SANITIZE_FILE = Path("tests") / "nbval_sanitize.cfg"
REPORT_DIR = PROJECT_ROOT / "_build" / "laptop_to_cluster"
NAME_PREFIX = "ch5"  # every namespace, bridge and veth of the lab starts with this
SITE_PACKAGES = f"lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"


class LaneError(RuntimeError):
    """A lane could not set up what it needs; the message says what and how to fix it."""


def run(command: list[str], **options) -> subprocess.CompletedProcess:
    """Run a set-up command; a LaneError with its output if it fails."""
    result = subprocess.run(command, capture_output=True, text=True, **options)
    if result.returncode != 0:
        raise LaneError(f"`{' '.join(command)}` failed (exit {result.returncode}): "
                        f"{(result.stderr or result.stdout).strip()}")
    return result


# ---------------------------------------------------------------- network namespaces

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_lab_objects() -> list[str]:
    """Delete namespaces and links of earlier lab runs whose test process has died."""
    removed = []
    namespaces = run(["ip", "netns", "list"]).stdout.split()
    for name in namespaces:
        match = re.fullmatch(rf"{NAME_PREFIX}lab(\d+)-w\d+", name)
        if match and not _pid_alive(int(match.group(1))):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)
            removed.append(name)
    for line in run(["ip", "-o", "link", "show"]).stdout.splitlines():
        match = re.match(rf"\d+: ({NAME_PREFIX}(?:br|v\d+-)(\d+))[@:]", line)
        if match and not _pid_alive(int(match.group(2))):
            subprocess.run(["ip", "link", "delete", match.group(1)], capture_output=True)
            removed.append(match.group(1))
    return removed


def _free_subnet() -> str:
    """A 10.213.N.0/24 that no address or route of this machine uses yet ("10.213.N")."""
    used = run(["ip", "-4", "-o", "addr", "show"]).stdout + run(["ip", "-4", "route"]).stdout
    start = os.getpid() % 200
    for offset in range(200):
        prefix = f"10.213.{(start + offset) % 200 + 20}"
        if f"{prefix}." not in used:
            return prefix
    raise LaneError("No free 10.213.N.0/24 subnet on this machine for the lab.")


@dataclass
class NetworkLab:
    """A bridge (the site's network) and ``n_hosts`` namespaces (its nodes); see the module."""

    n_hosts: int
    tag: str = field(default_factory=lambda: str(os.getpid()))
    bridge: str = ""
    subnet: str = ""
    namespaces: list[str] = field(default_factory=list)
    host_ends: list[str] = field(default_factory=list)
    host_addresses: list[str] = field(default_factory=list)

    @property
    def bridge_address(self) -> str:
        return f"{self.subnet}.1"

    def __enter__(self) -> NetworkLab:
        if os.geteuid() != 0:
            raise LaneError("The namespaced lane needs root (it creates network namespaces and veth "
                            "pairs); CI runs as root. Run the tests as root.")
        if shutil.which("ip") is None:
            raise LaneError("The `ip` command (iproute2) is missing: apt-get install -y iproute2.")
        remove_stale_lab_objects()
        self.subnet = _free_subnet()
        self.bridge = f"{NAME_PREFIX}br{self.tag}"
        try:
            run(["ip", "link", "add", self.bridge, "type", "bridge"])
            run(["ip", "addr", "add", f"{self.bridge_address}/24", "dev", self.bridge])
            run(["ip", "link", "set", self.bridge, "up"])
            for index in range(self.n_hosts):
                namespace = f"{NAME_PREFIX}lab{self.tag}-w{index}"
                host_end = f"{NAME_PREFIX}v{index}-{self.tag}"
                address = f"{self.subnet}.{index + 2}"
                run(["ip", "netns", "add", namespace])
                self.namespaces.append(namespace)
                # The namespace's end is called eth0, as on a node: workers use --interface eth0.
                run(["ip", "link", "add", host_end, "type", "veth", "peer", "name", "eth0",
                     "netns", namespace])
                self.host_ends.append(host_end)
                run(["ip", "link", "set", host_end, "master", self.bridge, "up"])
                run(["ip", "-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0"])
                run(["ip", "-n", namespace, "link", "set", "eth0", "up"])
                run(["ip", "-n", namespace, "link", "set", "lo", "up"])
                self.host_addresses.append(address)
        except LaneError as error:
            self.__exit__(None, None, None)
            raise LaneError(f"Could not create the lab's network namespaces: {error}. This lane "
                            "needs `ip netns` and veth pairs (root, a kernel with network "
                            "namespaces); it does not skip.") from None
        return self

    def __exit__(self, *exc_info) -> None:
        for host_end in self.host_ends:  # removes both ends of the pair
            subprocess.run(["ip", "link", "delete", host_end], capture_output=True)
        for namespace in self.namespaces:
            subprocess.run(["ip", "netns", "delete", namespace], capture_output=True)
        if self.bridge:
            subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True)
        self.namespaces, self.host_ends = [], []

    def leftovers(self, timeout: float = 10) -> list[str]:
        """Namespaces or links of this lab still present (none after exit; the kernel may take
        a moment to remove a veth whose namespace is gone)."""
        deadline = time.monotonic() + timeout
        while True:
            names = run(["ip", "netns", "list"]).stdout + run(["ip", "-o", "link", "show"]).stdout
            found = sorted(set(re.findall(rf"{NAME_PREFIX}(?:lab|br|v\d+-){self.tag}[\w-]*", names)))
            if not found or time.monotonic() > deadline:
                return found
            time.sleep(0.2)


# ---------------------------------------------------------------- the workers' environment

def workers_environment(destination: Path, source_prefix: Path = Path(sys.prefix)) -> Path:
    """A virtual environment at ``destination`` with this one's packages minus ``scaling_ml``.

    Building one with pip takes minutes; hard links to this environment's installed files take
    seconds and give exactly the same pinned versions. The editable install of the book's package
    (its .pth, finder and dist-info) is left out, and the result is checked: `import scaling_ml`
    must fail there while the pinned libraries import. Returns the environment's python.
    """
    base_python = getattr(sys, "_base_executable", sys.executable)
    run([base_python, "-m", "venv", "--without-pip", str(destination)])
    target = destination / SITE_PACKAGES
    shutil.rmtree(target)
    run(["cp", "-al", str(source_prefix / SITE_PACKAGES), str(target)])
    for entry in target.iterdir():
        if re.match(r"(__editable__[._]+)?scaling_ml", entry.name):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        elif entry.suffix == ".pth" and "scaling_ml" in entry.read_text(errors="replace"):
            entry.unlink()
    python = destination / "bin" / "python"
    clean = {"PATH": "/usr/bin:/bin", "HOME": str(destination)}
    probe = subprocess.run([str(python), "-c", "import scaling_ml"], capture_output=True,
                           text=True, cwd=destination, env=clean)
    if "No module named 'scaling_ml'" not in probe.stderr:
        raise LaneError(f"The workers' environment at {destination} can still import scaling_ml "
                        f"(exit {probe.returncode}: {probe.stderr.strip()[-300:]}).")
    run([str(python), "-c", "import dask, distributed, sklearn, dask_ml, pandas, pyarrow"],
        cwd=destination, env=clean)
    return python


# ---------------------------------------------------------------- a cluster across namespaces

@dataclass
class NamespacedCluster:
    address: str
    lab: NetworkLab
    python: Path
    scheduler: BackgroundCommand
    workers: list[BackgroundCommand]
    worker_homes: list[Path]

    @property
    def commands(self) -> list[BackgroundCommand]:
        return [*self.workers, self.scheduler]

    def logs(self) -> dict[str, str]:
        return {command.log_file.name: command.log() for command in self.commands}


def _clean_environment(home: Path) -> dict[str, str]:
    """What a batch job on another node gets: no PYTHONPATH, no notebook variables."""
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    if "BOOK_RUN_ID" in os.environ:  # so `make check-processes` sees them
        environment["BOOK_RUN_ID"] = os.environ["BOOK_RUN_ID"]
    return environment


def _env_command(environment: dict[str, str]) -> list[str]:
    return ["env", "-i", *(f"{key}={value}" for key, value in environment.items())]


@contextlib.contextmanager
def namespaced_cluster(directory: Path, python: Path, n_workers: int = 2, timeout: float = 120):
    """Scheduler on the lab's bridge, ``n_workers`` workers in its namespaces; stopped on exit."""
    from distributed import Client

    started: list[BackgroundCommand] = []
    with NetworkLab(n_workers) as lab:
        try:
            scheduler_home = directory / "scheduler"
            scheduler_home.mkdir(parents=True)
            scheduler_file = scheduler_home / "scheduler.json"
            scheduler = start_command(
                [*_env_command(_clean_environment(scheduler_home)), str(python), "-m", "dask",
                 "scheduler", "--interface", lab.bridge, "--port", "0",
                 "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(scheduler_file)],
                log_file=directory / "logs" / "scheduler.log", cwd=scheduler_home)
            started.append(scheduler)
            deadline = time.monotonic() + timeout
            while not (scheduler_file.is_file() and scheduler_file.stat().st_size):
                if scheduler.process.poll() is not None or time.monotonic() > deadline:
                    raise LaneError("The scheduler did not start:\n" + scheduler.log()[-2000:])
                time.sleep(0.2)
            address = json.loads(scheduler_file.read_text())["address"]
            workers, homes = [], []
            for index, namespace in enumerate(lab.namespaces):
                home = directory / f"worker-{index}"
                (home / "scratch").mkdir(parents=True)
                homes.append(home)
                worker = start_command(
                    ["ip", "netns", "exec", namespace,
                     *_env_command(_clean_environment(home)), str(python), "-m", "dask", "worker",
                     address, "--interface", "eth0", "--nthreads", "1", "--memory-limit", "auto",
                     "--local-directory", str(home / "scratch"), "--name", f"lane-worker-{index}"],
                    log_file=directory / "logs" / f"worker-{index}.log", cwd=home)
                started.append(worker)
                workers.append(worker)
            with Client(address, timeout=timeout) as client:
                try:
                    client.wait_for_workers(n_workers, timeout=timeout)
                except TimeoutError:
                    raise LaneError(
                        f"Only {len(client.scheduler_info()['workers'])} of {n_workers} workers "
                        "reached the scheduler; their logs:\n"
                        + "\n".join(w.log()[-1500:] for w in workers)) from None
            yield NamespacedCluster(address, lab, python, scheduler, workers, homes)
        finally:
            problems = []
            for command in reversed(started):
                try:
                    command.stop()
                except Exception as error:  # stop the others all the same
                    problems.append(str(error))
            if problems:
                raise LaneError("; ".join(problems))


# ---------------------------------------------------------------- notebooks from a clone

def clone_repository(destination: Path, source: Path = PROJECT_ROOT) -> str:
    """Clone ``source`` at its HEAD commit into ``destination`` (committed files only)."""
    commit = run(["git", "-C", str(source), "rev-parse", "HEAD"]).stdout.strip()
    run(["git", "clone", "--quiet", "--no-checkout", str(source), str(destination)])
    run(["git", "-C", str(destination), "checkout", "--quiet", commit])
    return commit


def uncommitted_notebooks(source: Path = PROJECT_ROOT) -> list[str]:
    status = run(["git", "-C", str(source), "status", "--porcelain", "--", "notebooks"]).stdout
    return [line[3:] for line in status.splitlines()]


def newsgroups_archive() -> Path:
    archive = Path(os.environ.get("NEWSGROUPS_ARCHIVE",
                                  PROJECT_ROOT.parent / "shared/data/20news-bydate.tar.gz"))
    if not archive.is_file():
        raise LaneError(f"20 Newsgroups archive not found at {archive}: set NEWSGROUPS_ARCHIVE.")
    return archive


@contextlib.contextmanager
def filling_data_home(clone: Path, data_home: Path):
    """Fill scikit-learn's 20 Newsgroups cache in ``data_home`` with the clone's offline import,
    in the background while the block runs (it takes a while); the block's end waits for it."""
    command = [sys.executable, "-m", "scaling_ml.data", "import-newsgroups",
               str(newsgroups_archive()), "--data-home", str(data_home)]
    importing = subprocess.Popen(command, cwd=clone, env=dict(os.environ, PYTHONPATH=str(clone)),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield
    finally:
        output, _ = importing.communicate(timeout=900)
    if importing.returncode != 0:
        raise LaneError(f"The offline import into {data_home} failed: {output.strip()}")


def notebook_paths(clone: Path, chapters: list[str]) -> list[Path]:
    """The clone's notebooks whose names start with the given numbers ("00", "01", ...)."""
    found = []
    for number in chapters:
        matches = sorted((clone / "notebooks").glob(f"{number}_*.ipynb"))
        if not matches:
            raise LaneError(f"No notebook {number}_*.ipynb in the clone's notebooks/.")
        found.extend(matches)
    return found


@dataclass
class NbvalResult:
    returncode: int
    failures: dict[str, list[str]]  # notebook -> first lines of each failing cell's error
    seconds: float
    output: str


def _first_error(text: str | None) -> str:
    """The last 'SomeError: message' line of a failing cell, else the first lines of its diff."""
    text = re.sub(r"(\x1b|#x1B)\[[0-9;]*m", "", text or "")
    errors = [line.strip() for line in text.splitlines()
              if re.match(r"^\s*[A-Za-z_][\w.]*(Error|Exception): ", line)]
    if errors:
        return errors[-1][:300]
    diff = [line.strip() for line in text.splitlines() if re.match(r"^\s*[-+] ", line)]
    return ("output differs: " + " | ".join(diff[:2]))[:300] if diff else "failed (see output)"


def run_nbval(clone: Path, notebooks: list[Path], environment: dict[str, str],
              timeout: float = 3600) -> NbvalResult:
    """Strict nbval over ``notebooks`` of ``clone`` (its own sanitize file), run from the clone."""
    report = clone / "_build" / "nbval-junit.xml"
    report.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pytest", "--nbval", "--nbval-sanitize-with",
               str(SANITIZE_FILE), f"--nbval-cell-timeout={CELL_TIMEOUT}", "-p", "no:cacheprovider",
               "-q", f"--junitxml={report}", *(str(path.relative_to(clone)) for path in notebooks)]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=clone, env=environment, timeout=timeout, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    failures: dict[str, list[str]] = {}
    if report.exists():
        for case in ElementTree.parse(report).getroot().iter("testcase"):
            for problem in [*case.findall("failure"), *case.findall("error")]:
                failures.setdefault(case.get("classname", "?").removeprefix("notebooks."),
                                    []).append(f"{case.get('name')}: {_first_error(problem.text)}")
    return NbvalResult(result.returncode, failures, seconds, result.stdout)


def write_report(name: str, text: str) -> Path:
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    path = REPORT_DIR / name
    path.write_text(text)
    print(text)
    return path


# ---------------------------------------------------------------- chapter 5's own code

CHAPTER_5 = PROJECT_ROOT / "notebooks" / "05_laptop_to_cluster.ipynb"


def chapter_code_cell(contains: str, notebook: Path = CHAPTER_5) -> str:
    """The source of the one code cell of ``notebook`` that contains ``contains``."""
    cells = [cell for cell in json.loads(notebook.read_text())["cells"]
             if cell["cell_type"] == "code" and contains in "".join(cell["source"])]
    if len(cells) != 1:
        raise LaneError(f"{notebook.name} has {len(cells)} code cells containing {contains!r}, not 1.")
    return "".join(cells[0]["source"])


def chapter_python_block(contains: str, notebook: Path = CHAPTER_5, language: str = "python") -> str:
    """The ```python (or other ``language``) block of ``notebook``'s markdown that contains
    ``contains``: code the chapter shows but cannot run on a machine without a batch system; the
    lanes run it."""
    blocks = [block for cell in json.loads(notebook.read_text())["cells"] if cell["cell_type"] == "markdown"
              for block in re.findall(rf"```{language}\n(.*?)```", "".join(cell["source"]), re.S)
              if contains in block]
    if len(blocks) != 1:
        raise LaneError(f"{notebook.name} has {len(blocks)} ```{language} blocks containing {contains!r}, not 1.")
    return blocks[0]


def with_replacements(code: str, replacements: dict[str, str]) -> str:
    """``code`` with each key replaced by its value; each key must occur exactly once, so that a
    lane's visible overrides of a chapter's cell fail loudly when the cell changes."""
    for old, new in replacements.items():
        if code.count(old) != 1:
            raise LaneError(f"{old!r} occurs {code.count(old)} times in the chapter's code, not once.")
        code = code.replace(old, new)
    return code


# ---------------------------------------------------------------- chapter 1's grid search

PARAMETER_GRID = {"tfidf__use_idf": (True, False), "tfidf__norm": ("l1", "l2"),
                  "clf__alpha": (1e-5, 1e-6)}


def newsgroups_grid_search(categories=("alt.atheism", "sci.space"), cv: int = 3):
    """Chapter 1's search (HashingVectorizer -> TfidfTransformer -> SGDClassifier, 8 candidates)
    in joblib's dask backend, on whatever client is the default one."""
    import joblib
    from sklearn.datasets import fetch_20newsgroups
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
    from sklearn.linear_model import SGDClassifier
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline

    data = fetch_20newsgroups(subset="train", categories=list(categories), shuffle=True,
                              random_state=0)
    pipeline = Pipeline([("vect", HashingVectorizer()), ("tfidf", TfidfTransformer()),
                         ("clf", SGDClassifier(max_iter=1000, random_state=0))])
    search = GridSearchCV(pipeline, PARAMETER_GRID, n_jobs=-1, cv=cv, refit=False)
    with joblib.parallel_config(backend="dask"):
        search.fit(data.data, data.target)
    return search


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


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that contain ``text``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError, IndexError):
            command = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (cmdline.parent / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if text in command and state != "Z" and int(cmdline.parent.name) != os.getpid():
                found.append(command.strip())
    return found
