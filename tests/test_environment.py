"""requirements.txt (pip) and environment.yml (conda, Binder) must pin the same versions."""

import re
from pathlib import Path

import yaml

from scaling_ml.check import normalise, read_pins

ROOT = Path(__file__).resolve().parent.parent


def conda_pins(path=ROOT / "environment.yml") -> dict[str, str]:
    environment = yaml.safe_load(path.read_text())
    pins = {}
    for dependency in environment["dependencies"]:
        entries = dependency["pip"] if isinstance(dependency, dict) else [dependency]
        separator = "==" if isinstance(dependency, dict) else "="
        for entry in entries:
            match = re.fullmatch(rf"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?{separator}([^=\s]+)", entry.strip())
            if match:
                pins[normalise(match.group(1))] = match.group(3)
    return pins


def test_every_pip_pin_is_in_environment_yml_with_the_same_version():
    pip_pins, conda = read_pins(ROOT / "requirements.txt"), conda_pins()
    conda.pop("python", None)
    assert pip_pins, "requirements.txt has no exact pins"
    differing = {name: (version, conda.get(name)) for name, version in pip_pins.items()
                 if conda.get(name) != version}
    assert not differing, f"pin differs or is missing in environment.yml (pip, conda): {differing}"
    extra = sorted(set(conda) - set(pip_pins))
    assert not extra, f"environment.yml pins packages requirements.txt does not: {extra}"


def test_every_requirement_is_pinned_exactly():
    lines = [line.split("#", 1)[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    loose = [line for line in lines if line and "==" not in line]
    assert not loose, f"requirements.txt has unpinned lines: {loose}"


def test_constraints_lock_every_direct_pin_at_the_same_version():
    locked = read_pins(ROOT / "constraints.txt")
    differing = {name: (version, locked.get(name)) for name, version in read_pins().items()
                 if locked.get(name) != version}
    assert not differing, f"constraints.txt disagrees with requirements.txt: {differing}"


def test_the_checker_reads_both_files(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("dask[complete]==2025.1.0  # comment\nnumpy==2.4.6\n")
    environment = tmp_path / "environment.yml"
    environment.write_text("dependencies:\n  - dask=2025.1.0\n  - numpy=2.4.5\n")
    assert read_pins(requirements) == {"dask": "2025.1.0", "numpy": "2.4.6"}
    assert conda_pins(environment) == {"dask": "2025.1.0", "numpy": "2.4.5"}
