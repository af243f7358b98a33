"""The kernels that execute the book's notebooks start encrypted, without ipykernel 7's warning.

Executes a small notebook with nbclient (what Jupyter Book's jupyter-cache and nbconvert use) in a
fresh process, once with the environment the Makefile exports and once without, and reads the
kernel's stderr: the warning "Kernel is running over TCP without encryption" appears only without.
"""

import os
import subprocess
import sys

import pytest

from scaling_ml import PROJECT_ROOT
from tools import kernel_provisioner

pytestmark = pytest.mark.cluster  # make test-cluster: each test starts a kernel

WARNING = "Kernel is running over TCP without encryption"
EXECUTE = """
import nbformat
from nbclient import NotebookClient

# The kernel itself says whether it got a CurveZMQ key from the client that started it.
code = "from ipykernel.kernelapp import IPKernelApp; print(IPKernelApp.instance().curve_secretkey is not None)"
notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
NotebookClient(notebook, kernel_name="python3", timeout=120).execute()
print("encrypted:", notebook.cells[0].outputs[0]["text"].strip())
"""


def execute_a_notebook(environment: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", EXECUTE], env=environment, capture_output=True,
                          text=True, timeout=300)


def test_the_books_kernels_are_encrypted_and_quiet():
    environment = {**os.environ, "JUPYTER_DEFAULT_PROVISIONER_NAME": kernel_provisioner.NAME}
    run = execute_a_notebook(environment)
    assert run.returncode == 0, run.stderr
    assert "encrypted: True" in run.stdout, run.stdout
    assert WARNING not in run.stderr, run.stderr


def test_without_the_provisioner_the_kernel_warns():
    """The warning this provisioner removes is real with the pinned ipykernel."""
    environment = {name: value for name, value in os.environ.items()
                   if name != "JUPYTER_DEFAULT_PROVISIONER_NAME"}
    run = execute_a_notebook(environment)
    assert run.returncode == 0, run.stderr
    assert "encrypted: False" in run.stdout and WARNING in run.stderr, (run.stdout, run.stderr)


def test_the_makefile_selects_this_provisioner():
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    assert f"export JUPYTER_DEFAULT_PROVISIONER_NAME := {kernel_provisioner.NAME}" in makefile
