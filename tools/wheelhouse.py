"""Offline installs for a workshop: a folder of wheels an instructor copies to USB sticks.

``make wheelhouse`` (``python -m tools.wheelhouse build OUT``) fills ``OUT`` with a wheel of
every package of the learner set (``requirements.txt``, versions locked by ``constraints.txt``), for
this machine and for each platform and Python of :data:`TARGETS` x :data:`PYTHONS` that the pins
allow, plus what installing the book's own package needs. ``OUT/report.txt`` says which
combinations are complete. On a learner's machine, with no network::

    make env WHEELHOUSE=/media/usb/wheelhouse      # pip install --no-index --find-links ...

``python -m tools.wheelhouse check`` asks the package index, without downloading, whether
every pin of the learner set has a wheel for each target (a quick check of the README's list of
supported systems).
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from packaging.requirements import Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags, mac_platforms
from packaging.utils import canonicalize_name, parse_wheel_filename

from scaling_ml import PROJECT_ROOT, BookError

LEARNER_REQUIREMENTS = PROJECT_ROOT / "requirements.txt"
CONSTRAINTS = PROJECT_ROOT / "constraints.txt"
PYTHONS = ("3.11", "3.12", "3.13")
_MANYLINUX = [f"manylinux_2_{glibc}_x86_64" for glibc in range(35, 4, -1)] + [
    "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]
# Each target: the wheel platform tags it accepts (newest first) and its environment markers.
# macOS: Apple silicon Macs from macOS 14 (Sonoma), Intel Macs from macOS 13 (Ventura).
TARGETS = {
    "linux-x86_64": {"platforms": _MANYLINUX,
                     "markers": {"sys_platform": "linux", "platform_system": "Linux",
                                 "platform_machine": "x86_64", "os_name": "posix"}},
    "macos-arm64": {"platforms": list(mac_platforms((14, 0), "arm64")),
                    "markers": {"sys_platform": "darwin", "platform_system": "Darwin",
                                "platform_machine": "arm64", "os_name": "posix"}},
    "macos-x86_64": {"platforms": list(mac_platforms((13, 0), "x86_64")),
                     "markers": {"sys_platform": "darwin", "platform_system": "Darwin",
                                 "platform_machine": "x86_64", "os_name": "posix"}},
}
INDEX = "https://pypi.org/simple"
# Building the book's own package (pyproject.toml's build-system) offline needs these wheels.
BUILD_REQUIREMENTS = ("setuptools>=68", "wheel")


def _check_target(target: str, python: str) -> None:
    if target not in TARGETS:
        raise BookError(f"Unknown target {target!r}: choose from {', '.join(TARGETS)}.")
    if python not in PYTHONS:
        raise BookError(f"Unknown Python {python!r}: choose from {', '.join(PYTHONS)}.")


def marker_environment(target: str, python: str) -> dict[str, str]:
    _check_target(target, python)
    return {**TARGETS[target]["markers"], "python_version": python, "python_full_version": f"{python}.0",
            "implementation_name": "cpython", "platform_python_implementation": "CPython"}


def target_requirements(target: str, python: str, path: Path = LEARNER_REQUIREMENTS) -> list[Requirement]:
    """The requirements of ``path`` that apply on the target (markers evaluated for it, not here)."""
    environment = marker_environment(target, python)
    requirements = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate(environment):
                requirement.marker = None
                requirements.append(requirement)
    return requirements


def target_tags(target: str, python: str) -> set[Tag]:
    _check_target(target, python)
    version = tuple(int(part) for part in python.split("."))
    platforms = TARGETS[target]["platforms"]
    abi = f"cp{version[0]}{version[1]}"
    return set(cpython_tags(version, abis=[abi, "abi3", "none"], platforms=platforms)) | set(
        compatible_tags(version, interpreter=abi, platforms=platforms))


@functools.lru_cache(maxsize=None)
def index_files(name: str, index: str = INDEX) -> tuple[str, ...]:
    """The file names the package index offers for a project (PyPI's JSON simple API)."""
    request = urllib.request.Request(f"{index}/{canonicalize_name(name)}/",
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return tuple(entry["filename"] for entry in json.load(response)["files"] if not entry.get("yanked"))


def missing_wheels(target: str, python: str, files_of=index_files, requirements=None) -> list[str]:
    """The pins of the learner set (or of ``requirements``) with no wheel for the target
    (``files_of(name)`` lists a project's files on the index). A pure-Python project that ships only
    a source archive counts as available: it builds anywhere."""
    tags, missing = target_tags(target, python), []
    if requirements is None:
        requirements = target_requirements(target, python)
    for requirement in requirements:
        [version] = [spec.version for spec in requirement.specifier if spec.operator == "=="]
        files = files_of(requirement.name)
        wheels = [parse_wheel_filename(file) for file in files if file.endswith(".whl")]
        fits = [wheel for wheel in wheels if str(wheel[1]) == version and wheel[3] & tags]
        any_wheel = [wheel for wheel in wheels if str(wheel[1]) == version]
        source_only = not any_wheel and any(version in file for file in files if file.endswith(".tar.gz"))
        if not fits and not source_only:
            missing.append(f"{requirement.name}=={version}")
    return missing


def _pip(*arguments: str, log=print) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pip", *arguments]
    log("$ pip " + " ".join(arguments))
    return subprocess.run(command, capture_output=True, text=True)


def _last_error(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in (result.stderr + result.stdout).splitlines() if line.startswith("ERROR")]
    return (lines or ["pip failed"])[-1][:300]


def build_wheelhouse(out_dir: str | Path, targets=tuple(TARGETS), pythons=PYTHONS, host_only: bool = False,
                     log=print) -> dict[str, str]:
    """Fill ``out_dir`` with wheels of the learner set; return ``{"target / python": "complete"|error}``.

    First this machine's wheels (``pip wheel``, which also turns source-only packages into wheels
    that then serve every target), then each target's (``pip download --only-binary=:all:``).
    """
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    host = _pip("wheel", "--quiet", "--wheel-dir", str(out), "-r", str(LEARNER_REQUIREMENTS),
                "-c", str(CONSTRAINTS), log=log)
    if host.returncode != 0:
        raise BookError(f"Could not fetch this machine's wheels: {_last_error(host)} "
                              "(is the package index reachable?)")
    build = _pip("download", "--quiet", "--only-binary=:all:", "--dest", str(out), *BUILD_REQUIREMENTS, log=log)
    if build.returncode != 0:
        raise BookError(f"Could not fetch {', '.join(BUILD_REQUIREMENTS)}: {_last_error(build)}")
    report = {f"this machine / Python {sys.version_info[0]}.{sys.version_info[1]}": "complete"}
    for target in () if host_only else targets:
        for python in pythons:
            with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as requirements:
                requirements.write("\n".join(map(str, target_requirements(target, python))) + "\n")
            platforms = [argument for platform in TARGETS[target]["platforms"]
                         for argument in ("--platform", platform)]
            version = python.replace(".", "")
            result = _pip("download", "--quiet", "--only-binary=:all:", "--dest", str(out),
                          "--find-links", str(out), "--implementation", "cp", "--python-version", python,
                          "--abi", f"cp{version}", "--abi", "abi3", "--abi", "none", *platforms,
                          "-r", requirements.name, "-c", str(CONSTRAINTS), log=log)
            Path(requirements.name).unlink()
            report[f"{target} / Python {python}"] = ("complete" if result.returncode == 0
                                                    else _last_error(result))
    lines = [f"{combination}: {outcome}" for combination, outcome in report.items()]
    (out / "report.txt").write_text("\n".join(lines) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.wheelhouse", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="download the learner set's wheels into OUT")
    build.add_argument("out_dir")
    build.add_argument("--targets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    build.add_argument("--pythons", nargs="+", default=list(PYTHONS), choices=list(PYTHONS))
    build.add_argument("--host-only", action="store_true", help="only this machine's wheels")
    commands.add_parser("check", help="does every pin have a wheel for every target? (asks PyPI)")
    arguments = parser.parse_args(argv)
    try:
        if arguments.command == "check":
            failures = 0
            for target in TARGETS:
                for python in PYTHONS:
                    missing = missing_wheels(target, python)
                    failures += bool(missing)
                    print(f"{target} / Python {python}: " + ("every pin has a wheel" if not missing
                                                            else "no wheel for " + ", ".join(missing)))
            return 1 if failures else 0
        report = build_wheelhouse(arguments.out_dir, arguments.targets, arguments.pythons,
                                  arguments.host_only)
    except (BookError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for combination, outcome in report.items():
        print(f"{combination}: {outcome}")
    return 0 if all(outcome == "complete" for outcome in report.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
