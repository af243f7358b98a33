"""The learner setup check: a passing run, failing ones that name the fix, and a workshop handout."""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scaling_ml import PROJECT_ROOT as ROOT
from scaling_ml import BookError, check, cluster
from tools import workshop


def run_check(*arguments, **environment):
    env = {**os.environ, **environment}
    return subprocess.run([sys.executable, "-m", "scaling_ml.check", *arguments],
                          capture_output=True, text=True, env=env, timeout=300)


def _check_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.split(" ", 1)[0] in ("OK", "WARN", "FAIL")]


@pytest.mark.cluster
def test_a_complete_setup_passes_every_check():
    result = run_check()
    assert result.returncode == 0, result.stdout + result.stderr
    lines = _check_lines(result.stdout)
    # Port 8787 may be held by another cluster on this machine: that only warns.
    assert all(line.startswith("OK") or line.startswith("WARN port 8787") for line in lines), result.stdout
    for expected in ("package dask-ml", "20 Newsgroups offline", "cluster on loopback",
                     "dashboard answers", "workers have scikit-learn", "free memory", "cores"):
        assert any(expected in line for line in lines), f"no {expected!r} line"
    summary = result.stdout.splitlines()[-1]
    assert summary.startswith("scaling-ml check: ") and " 0 FAIL | Python 3." in summary, summary


def test_a_taken_dashboard_port_warns_and_names_the_leftover_cluster():
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = check.check_dashboard_port(port)
    assert not result.ok and result.status == "WARN"
    assert "client.close()" in result.line() and "restart its kernel" in result.line()
    free = check.check_dashboard_port(port)
    assert free.ok and free.status == "OK"


def test_the_summary_names_what_failed_on_one_line():
    results = [check.CheckResult("cores", True, "2"),
               check.CheckResult("20 Newsgroups offline", False, "no cache", "import it"),
               check.CheckResult("port 8787 free", False, "in use", "close it", required=False)]
    summary = check.summary_line(results)
    assert "\n" not in summary
    assert "1 OK, 1 WARN, 1 FAIL" in summary
    assert summary.endswith("not OK: 20 Newsgroups offline, port 8787 free")


@pytest.mark.cluster
def test_missing_newsgroups_data_fails_with_the_import_command(tmp_path):
    result = run_check("--no-cluster", SCIKIT_LEARN_DATA=str(tmp_path))
    assert result.returncode == 1
    failing = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failing) == 1 and "20 Newsgroups offline" in failing[0]
    assert "python -m scaling_ml.data import-newsgroups" in failing[0]


@pytest.mark.cluster
def test_unreachable_scheduler_fails_the_cluster_check():
    result = run_check(DASK_SCHEDULER_ADDRESS="tcp://127.0.0.1:9")
    assert result.returncode == 1
    failing = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failing) == 1 and failing[0].startswith("FAIL cluster starts: BookError")
    assert "DASK_SCHEDULER_ADDRESS" in failing[0]


def test_a_version_other_than_the_pin_fails(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("dask==1999.1.0\nnot-a-package-here==1.0\n")
    results = check.check_pins(check.read_pins(requirements))
    assert [result.ok for result in results] == [False, False]
    assert "2025.1.0 (pinned 1999.1.0)" in results[0].line()
    assert "not installed (pinned 1.0)" in results[1].line()
    assert "fix: run `make env`" in results[0].line()


@pytest.mark.cluster
def test_a_package_missing_on_the_workers_fails():
    with cluster.get_client(n_workers=1) as client:
        results = check.check_worker_packages(
            client, {"scikit-learn": "sklearn", "not-a-package-here": "not_a_package_here"})
    assert [result.ok for result in results] == [True, False]
    assert "install the same requirements.txt" in results[1].line()


def test_too_few_resources_fail():
    cores, memory = check.check_resources(cores=1, free_memory_gib=0.5)
    assert not cores.ok and not memory.ok
    assert "Scale up" in memory.line()


# ---- a workshop handout: exactly what the instructor guide lists ------------------------------

def handout_entries() -> list[str]:
    """The entries of the handout, from the instructor guide's list (its first ``text`` block)."""
    guide = (ROOT / "book" / "instructor_guide.md").read_text()
    block = re.search(r"holds exactly:\s*```text\n(.*?)```", guide, re.DOTALL)
    assert block, "the instructor guide lists no handout (a ```text block after 'holds exactly:')"
    return [line.split()[0] for line in block.group(1).splitlines() if line.strip()]


@pytest.fixture
def handout(tmp_path) -> Path:
    """A handout folder with exactly the guide's entries: the learner notebooks and copies of the
    rest from this repository."""
    folder = tmp_path / "handout"
    entries = handout_entries()
    assert "notebooks/" in entries and "scaling_ml/" in entries and "requirements.txt" in entries
    for entry in entries:
        if entry == "notebooks/":
            workshop.write_learner_notebooks(folder / "notebooks")
        elif entry.endswith("/"):
            shutil.copytree(ROOT / entry, folder / entry, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / entry, folder / entry)
    return folder


def run_in_handout(handout: Path, *arguments) -> subprocess.CompletedProcess:
    """Python in the handout's notebooks folder, importing the handout's package (as its
    `pip install --no-deps -e .` would), never this repository's."""
    env = {**os.environ, "PYTHONPATH": str(handout)}
    return subprocess.run([sys.executable, *arguments], capture_output=True, text=True, env=env,
                          cwd=handout / "notebooks", timeout=300)


def notebook_imports(notebook: Path) -> list[str]:
    """Every top-level import statement of a notebook's code cells, but of modules the notebook
    writes itself (a ``name.py`` its cells name: chapter 5's and 6's modules for the workers)."""
    cells = [cell for cell in json.loads(notebook.read_text())["cells"] if cell["cell_type"] == "code"]
    code = ["".join(cell["source"]) for cell in cells]
    written = set(re.findall(r"(\w+)\.py\b", "\n".join(code)))
    statements = []
    for source in code:
        for node in ast.parse(source).body:
            modules = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                       else [node.module] if isinstance(node, ast.ImportFrom) else [])
            if modules and not written & set(modules):
                statements.append(ast.unparse(node))
    return statements


@pytest.mark.cluster
def test_a_handout_runs_the_check_and_every_notebooks_imports(handout):
    import tomllib

    # `pip install --no-deps -e .` in the handout needs every package its pyproject.toml names.
    packages = tomllib.loads((handout / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert all((handout / package / "__init__.py").is_file() for package in packages), packages
    result = run_in_handout(handout, "-m", "scaling_ml.check", "--no-cluster")
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK   package dask-ml: 2025.1.0" in result.stdout
    imports = sorted({statement for notebook in sorted((handout / "notebooks").glob("*.ipynb"))
                      for statement in notebook_imports(notebook)})
    assert "from scaling_ml import cluster" in imports and len(imports) > 20
    script = "\n".join([*imports, "import scaling_ml", "from scaling_ml import laptop_to_cluster, measure",
                        "import yaml; yaml.safe_load(open('jobqueue.yaml'))",  # chapter 5 reads them
                        "assert len(laptop_to_cluster.scale_up_knobs()) > 20",
                        "print(scaling_ml.__file__)",
                        "print(sorted(path.stem for path in measure.RESULTS_DIR.glob('*.json')))",
                        "[measure.load_results(path.stem) for path in measure.RESULTS_DIR.glob('*.json')]"])
    result = run_in_handout(handout, "-c", script)
    assert result.returncode == 0, result.stderr[-3000:]
    package_file, results = result.stdout.splitlines()[-2:]
    assert Path(package_file).is_relative_to(handout)
    assert ast.literal_eval(results) == sorted(path.stem for path in (ROOT / "benchmarks/results").glob("*.json"))


@pytest.mark.cluster
def test_a_handout_without_the_pins_fails_with_the_fix(handout):
    (handout / "requirements.txt").unlink()
    result = run_in_handout(handout, "-m", "scaling_ml.check", "--no-cluster")
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1
    [failing] = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert failing.startswith(f"FAIL pinned versions: no requirements.txt at {handout / 'requirements.txt'}")
    assert f"fix: copy the book's requirements.txt into {handout}, beside the scaling_ml folder" in failing
    assert "not OK: pinned versions" in result.stdout.splitlines()[-1]
    with pytest.raises(BookError, match="copy the book's requirements.txt"):
        check.read_pins(handout / "requirements.txt")
