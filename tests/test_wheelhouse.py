"""Offline installs: every pin has a wheel for each supported system, and a wheelhouse installs
the learner set into a fresh virtual environment with no package index at all."""

from __future__ import annotations

import subprocess
import sys

import pytest
from packaging.tags import Tag

from scaling_ml import BookError
from scaling_ml import PROJECT_ROOT
from tools import wheelhouse


def test_markers_are_evaluated_for_the_target_not_for_this_machine():
    linux = {str(requirement) for requirement in wheelhouse.target_requirements("linux-x86_64", "3.11")}
    mac = {str(requirement) for requirement in wheelhouse.target_requirements("macos-arm64", "3.12")}
    assert "xgboost-cpu==3.2.0" in linux and "xgboost==3.2.0" not in linux
    assert "xgboost==3.2.0" in mac and "xgboost-cpu==3.2.0" not in mac
    assert all(";" not in requirement for requirement in linux | mac)


def test_target_tags_accept_the_wheels_a_target_can_install():
    tags = wheelhouse.target_tags("macos-arm64", "3.12")
    assert Tag("cp312", "cp312", "macosx_11_0_arm64") in tags
    assert Tag("py3", "none", "any") in tags
    assert Tag("cp311", "cp311", "macosx_11_0_arm64") not in tags
    assert Tag("cp312", "cp312", "macosx_11_0_x86_64") not in tags
    with pytest.raises(BookError, match="choose from"):
        wheelhouse.target_tags("windows-arm64", "3.12")


def test_a_pin_without_a_wheel_for_a_target_is_reported():
    """The listing of xgboost-cpu 3.2.0 as PyPI has it: Linux and Windows wheels, none for macOS."""
    def files_of(name):
        if name == "xgboost-cpu":
            return ("xgboost_cpu-3.2.0-py3-none-manylinux_2_28_x86_64.whl",
                    "xgboost_cpu-3.2.0-py3-none-win_amd64.whl")
        if name == "xgboost":
            return ("xgboost-3.2.0-py3-none-macosx_12_0_arm64.whl",)
        return (f"{name}-0-py3-none-any.whl", f"{name.replace('-', '_')}-99-py3-none-any.whl")

    def xgboost_pins(target):
        return [requirement for requirement in wheelhouse.target_requirements(target, "3.11")
                if requirement.name.startswith("xgboost")]

    for target in ("linux-x86_64", "macos-arm64"):  # the book's pins: the right wheel each
        assert wheelhouse.missing_wheels(target, "3.11", files_of, xgboost_pins(target)) == []
    # The book's former pin, xgboost-cpu everywhere, has no wheel for macOS.
    assert wheelhouse.missing_wheels("macos-arm64", "3.11", files_of, xgboost_pins("linux-x86_64")) == [
        "xgboost-cpu==3.2.0"]


@pytest.mark.cluster
@pytest.mark.parametrize("target", list(wheelhouse.TARGETS))
def test_every_pin_of_the_learner_set_has_a_wheel_on_the_package_index(target):
    """Asks PyPI (the one network access of the suite: the package registry)."""
    for python in wheelhouse.PYTHONS:
        assert wheelhouse.missing_wheels(target, python) == [], f"{target} / Python {python}"


@pytest.mark.cluster
def test_a_wheelhouse_installs_the_learner_set_with_no_index(learner_venv_from_wheelhouse):
    venv, wheelhouse_dir = learner_venv_from_wheelhouse
    python = venv / "bin" / "python"
    imports = ("dask, distributed, dask_ml, dask_jobqueue, sklearn, pandas, numpy, scipy, matplotlib, "
               "pyarrow, zarr, xgboost, psutil, jupyterlab, ipykernel, dask_labextension, jupyter_server_proxy")
    result = subprocess.run([python, "-c", f"import {imports}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    check = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert (wheelhouse_dir / "report.txt").read_text().startswith("this machine / Python 3.")
    assert not list(wheelhouse_dir.glob("*.tar.gz")), "a wheelhouse holds wheels only"


@pytest.mark.cluster
def test_make_env_with_a_wheelhouse_installs_the_book_package_offline(learner_venv_from_wheelhouse):
    venv, _ = learner_venv_from_wheelhouse
    result = subprocess.run([venv / "bin" / "python", "-c", "import scaling_ml.cluster"],
                            capture_output=True, text=True, cwd=venv)
    assert result.returncode == 0, result.stderr
    assert sys.executable != str(venv / "bin" / "python")
    assert (venv / ".installed").is_file()
    assert PROJECT_ROOT.is_dir()
