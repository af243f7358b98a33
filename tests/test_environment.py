"""The environment files agree, and every statement of the minimum Python is true.

requirements.txt is the learner set, requirements-dev.txt adds the build and test tools on top,
environment.yml (conda) mirrors the learner set, binder/ installs it, and constraints.txt locks the
whole resolved set. The oldest supported Python is derived from the installed pinned packages' own
``Requires-Python`` metadata and compared with everything that states it.
"""

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from scaling_ml import PROJECT_ROOT as ROOT
from scaling_ml import check

LEARNER = ROOT / "requirements.txt"
DEVELOPMENT = ROOT / "requirements-dev.txt"
CONSTRAINTS = ROOT / "constraints.txt"
# What the learner set must contain besides the notebooks' libraries: JupyterLab and the dashboard panes.
LEARNER_TOOLS = {"jupyterlab", "ipykernel", "dask-labextension", "jupyter-server-proxy"}
DEVELOPMENT_TOOLS = {"jupyter-book", "nbval", "pytest", "playwright", "ruff"}
# The installer's own packages, which `pip freeze` leaves out (sphinx-togglebutton requires two).
INSTALLER_PACKAGES = {"pip", "setuptools", "wheel"}


def conda_pins(path=ROOT / "environment.yml") -> dict[str, str]:
    environment = yaml.safe_load(path.read_text())
    pins = {}
    for dependency in environment["dependencies"]:
        entries = dependency["pip"] if isinstance(dependency, dict) else [dependency]
        separator = "==" if isinstance(dependency, dict) else "="
        for entry in entries:
            # pip entries may carry an environment marker (`; sys_platform == "darwin"`).
            match = re.fullmatch(rf"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?{separator}([^=\s;]+)(\s*;.*)?",
                                 entry.strip())
            if match:
                pins[check.normalise(match.group(1))] = match.group(3)
    return pins


def requirement_lines(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def all_pins(here_only: bool = False) -> dict[str, str]:
    """Both sets' pins; ``here_only``: only those whose environment marker holds on this machine."""
    return {**check.read_pins(LEARNER, here_only), **check.read_pins(DEVELOPMENT, here_only)}


# ---- the files agree --------------------------------------------------------------------------

def test_every_requirement_is_pinned_exactly():
    for path in (LEARNER, DEVELOPMENT):
        loose = [line for line in requirement_lines(path) if "==" not in line and line != "-r requirements.txt"]
        assert not loose, f"{path.name} has unpinned lines: {loose}"


def test_the_development_set_is_the_learner_set_plus_tools():
    lines = requirement_lines(DEVELOPMENT)
    assert lines[0] == "-r requirements.txt", "requirements-dev.txt must start from the learner set"
    learner, development = check.read_pins(LEARNER), check.read_pins(DEVELOPMENT)
    assert not set(learner) & set(development), (
        f"pinned in both files (pin each package once): {sorted(set(learner) & set(development))}")
    assert LEARNER_TOOLS <= set(learner), f"learner set lacks {sorted(LEARNER_TOOLS - set(learner))}"
    assert DEVELOPMENT_TOOLS <= set(development), (
        f"development set lacks {sorted(DEVELOPMENT_TOOLS - set(development))}")
    assert not DEVELOPMENT_TOOLS & set(learner), (
        f"build and test tools in the learner set: {sorted(DEVELOPMENT_TOOLS & set(learner))}")


def test_environment_yml_is_the_learner_set_with_the_same_versions():
    learner, conda = check.read_pins(LEARNER), conda_pins()
    conda.pop("python", None)
    assert learner, "requirements.txt has no exact pins"
    differing = {name: (version, conda.get(name)) for name, version in learner.items()
                 if conda.get(name) != version}
    assert not differing, f"pin differs or is missing in environment.yml (pip, conda): {differing}"
    extra = sorted(set(conda) - set(learner))
    assert not extra, f"environment.yml pins packages the learner set does not: {extra}"


def test_constraints_lock_every_pin_at_the_same_version():
    # constraints.txt is resolved on Linux: it locks the pins that apply there.
    locked = check.read_pins(CONSTRAINTS)
    differing = {name: (version, locked.get(name)) for name, version in all_pins(here_only=True).items()
                 if locked.get(name) != version}
    assert not differing, f"constraints.txt disagrees with the requirements files: {differing}"


def _requirements_of(distribution: metadata.Distribution, extras: set[str]) -> list[Requirement]:
    wanted = []
    for text in distribution.requires or []:
        requirement = Requirement(text)
        if requirement.marker is None or any(
                requirement.marker.evaluate({"extra": extra}) for extra in extras | {""}):
            wanted.append(requirement)
    return wanted


def test_constraints_lock_exactly_what_the_pins_pull_in():
    """Walk the installed dependency tree from the pins: every package in it is locked at its
    installed version, and nothing else is (so Binder's `-c ../constraints.txt` install, which
    resolves the learner set against it, gets the tested versions)."""
    locked = check.read_pins(CONSTRAINTS)
    seen, missing = {}, []
    queue = [Requirement(line) for path in (LEARNER, DEVELOPMENT)
             for line in requirement_lines(path) if not line.startswith("-r")]
    queue = [requirement for requirement in queue
             if requirement.marker is None or requirement.marker.evaluate()]
    while queue:
        requirement = queue.pop()
        name = canonicalize_name(requirement.name)
        extras = set(requirement.extras)
        if name in seen and extras <= seen[name]:
            continue
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
            continue
        seen[name] = seen.get(name, set()) | extras
        queue.extend(_requirements_of(distribution, seen[name]))
    assert not missing, f"not installed (run make env): {sorted(missing)}"
    installed = {name: metadata.version(name) for name in seen if name not in INSTALLER_PACKAGES}
    differing = {name: (version, locked.get(name)) for name, version in installed.items()
                 if locked.get(name) != version}
    assert not differing, f"constraints.txt does not lock the installed tree (installed, locked): {differing}"
    extra = sorted(set(locked) - set(installed))
    assert not extra, f"constraints.txt locks packages no pin pulls in: {extra}"


def test_binder_installs_the_locked_learner_set_and_nothing_else():
    lines = requirement_lines(ROOT / "binder" / "requirements.txt")
    assert lines == ["-r ../requirements.txt", "-c ../constraints.txt"], lines


def test_the_checker_reads_both_files(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("dask[complete]==2025.1.0  # comment\nnumpy==2.4.6\n"
                            'xgboost==3.2.0; sys_platform == "no-such-platform"\n')
    environment = tmp_path / "environment.yml"
    environment.write_text("dependencies:\n  - dask=2025.1.0\n  - numpy=2.4.5\n  - pip:\n"
                           '      - xgboost==3.2.0; sys_platform == "no-such-platform"\n')
    assert check.read_pins(requirements) == {"dask": "2025.1.0", "numpy": "2.4.6", "xgboost": "3.2.0"}
    assert check.read_pins(requirements, here_only=True) == {"dask": "2025.1.0", "numpy": "2.4.6"}
    assert conda_pins(environment) == {"dask": "2025.1.0", "numpy": "2.4.5", "xgboost": "3.2.0"}


# ---- the minimum Python ------------------------------------------------------------------------

def oldest_supported_minor(specifier: SpecifierSet) -> int:
    """The smallest N such that some Python 3.N release satisfies ``specifier``."""
    for minor in range(0, 40):
        if any(specifier.contains(f"3.{minor}.{patch}") for patch in (0, 99)):
            return minor
    raise ValueError(f"no Python 3 release satisfies {specifier}")


def pinned_minimum_python() -> tuple[tuple[int, int], list[str]]:
    """The oldest Python every pinned package supports, and the packages that set it."""
    minimums = {}
    for name in all_pins(here_only=True):
        try:
            requires_python = metadata.metadata(name).get("Requires-Python") or ""
        except metadata.PackageNotFoundError:
            pytest.fail(f"{name} is pinned but not installed: run make env")
        minimums[name] = oldest_supported_minor(SpecifierSet(requires_python))
    highest = max(minimums.values())
    return (3, highest), sorted(name for name, minor in minimums.items() if minor == highest)


def stated_minimums(text: str) -> list[str]:
    """Every "Python 3.N or newer" / "Python 3.N+" statement in a text."""
    return re.findall(r"Python (3\.\d+)(?:\+| or newer)", text)


def test_the_pinned_packages_metadata_sets_the_minimum_python():
    minimum, setters = pinned_minimum_python()
    assert minimum == (3, 11), (
        f"the pins now need Python {minimum[0]}.{minimum[1]} ({', '.join(setters)}): update "
        "the statements this test checks next, and this number")
    assert {"numpy", "scipy"} <= set(setters), setters


@pytest.mark.parametrize("path", ["README.md", "book/setup.md"])
def test_the_prose_states_the_derived_minimum_python(path):
    minimum, setters = pinned_minimum_python()
    stated = stated_minimums((ROOT / path).read_text())
    assert stated, f"{path} does not say which Python it needs"
    assert set(stated) == {f"{minimum[0]}.{minimum[1]}"}, (
        f"{path} says Python {stated}; the pins ({', '.join(setters)}) need {minimum[0]}.{minimum[1]}")


def test_the_configuration_states_the_derived_minimum_python():
    minimum, setters = pinned_minimum_python()
    dotted = f"{minimum[0]}.{minimum[1]}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    statements = {
        "pyproject.toml requires-python":
            (3, oldest_supported_minor(SpecifierSet(project["project"]["requires-python"]))),
        "pyproject.toml ruff target-version":
            (3, int(project["tool"]["ruff"]["target-version"].removeprefix("py3"))),
        "scaling_ml.check.MINIMUM_PYTHON": tuple(check.MINIMUM_PYTHON),
        "environment.yml python": next(
            tuple(map(int, dependency.split("=")[-1].split(".")[:2]))
            for dependency in yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
            if isinstance(dependency, str) and re.fullmatch(r"python[=<>]+[\d.]+", dependency)),
        "binder/runtime.txt": tuple(map(int, (ROOT / "binder" / "runtime.txt").read_text().strip()
                                        .removeprefix("python-").split(".")[:2])),
        "Makefile MINIMUM_PYTHON": tuple(map(int, re.search(
            r"^MINIMUM_PYTHON := ([\d.]+)$", (ROOT / "Makefile").read_text(), re.M).group(1).split("."))),
    }
    wrong = {where: stated for where, stated in statements.items() if stated != minimum}
    assert not wrong, f"the pins ({', '.join(setters)}) need Python {dotted}; these say otherwise: {wrong}"
    assert check.check_python((3, 10, 12)).ok is False
    assert f"Python {dotted} or newer" in check.check_python((3, 10, 12)).line()
    assert check.check_python((*minimum, 0)).ok is True
