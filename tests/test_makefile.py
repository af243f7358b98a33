"""The Makefile: its lists come from the one sources, and `make help` lists every target.

Each test asks make for a variable's value (`make --eval`), as make itself expands it.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from scaling_ml import PROJECT_ROOT, notebook_paths
from tools import CELL_TIMEOUT

NOTEBOOKS = notebook_paths()


def make_variable(name: str) -> list[str]:
    """The words of a variable of the Makefile, as make expands it (no recipe runs)."""
    return subprocess.run(["make", "-s", "--no-print-directory", f"--eval=print-variable: ; @echo $({name})",
                           "print-variable"], capture_output=True, text=True, cwd=PROJECT_ROOT,
                          check=True).stdout.split()


def test_the_makefile_takes_the_notebooks_from_the_table_of_contents():
    assert make_variable("NOTEBOOKS") == [str(path.relative_to(PROJECT_ROOT)) for path in NOTEBOOKS]


def test_the_makefile_takes_the_cell_timeout_from_the_book_configuration():
    assert make_variable("CELL_TIMEOUT") == [str(CELL_TIMEOUT)]


def test_make_test_checks_every_notebook_with_strict_nbval_once():
    """test-notebooks (a LocalCluster) and the external-cluster lane in test-cluster, together."""
    local = {Path(path).stem for path in make_variable("LOCAL_NBVAL_NOTEBOOKS")}
    on_the_lane = {path.stem for path in NOTEBOOKS if path.stem[:2] in make_variable("LANE_CHAPTERS")}
    assert {path.stem for path in NOTEBOOKS} == local | on_the_lane
    assert local & on_the_lane == {"00_setup"} and len(on_the_lane) >= 4


def test_make_help_lists_every_target():
    targets = re.findall(r"^([a-z][a-z-]*):", (PROJECT_ROOT / "Makefile").read_text(), re.M)
    listed = re.findall(r"^make (\S+)", subprocess.run(["make", "-s", "--no-print-directory", "help"],
                                                          capture_output=True, text=True, cwd=PROJECT_ROOT,
                                                          check=True).stdout, re.M)
    assert len(targets) >= 15 and listed == targets
