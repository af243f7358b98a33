"""Learner setup check: ``python -m scaling_ml.check``.

Prints one line per check, ``OK``, ``WARN`` or ``FAIL`` with the fix, then a one-line summary a
learner can paste into an instructor's form, and exits non-zero on any FAIL. Run it before a
workshop; the setup notebook runs the checks that need no cluster.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from . import PROJECT_ROOT, BookError, cluster, data, measure

# The pins: requirements.txt beside the book's package (in a clone, or in a workshop handout that
# has the package, as book/instructor_guide.md lists it).
REQUIREMENTS = PROJECT_ROOT / "requirements.txt"
# Packages that must be identical on the client and every worker for pickled estimators to load,
# by the name each is imported with (what distributed's version report uses).
WORKER_PACKAGES = {"scikit-learn": "sklearn", "dask-ml": "dask_ml", "dask": "dask",
                   "distributed": "distributed", "numpy": "numpy", "pandas": "pandas"}
# The oldest Python every pinned package supports (numpy, scipy and others need 3.11);
# tests/test_environment.py derives it from the packages' own Requires-Python metadata.
MINIMUM_PYTHON = (3, 11)
MINIMUM_FREE_MEMORY_GIB = 2.0


@dataclass
class CheckResult:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    # A check that is not required warns (WARN) instead of failing: the book still works.
    required: bool = True

    @property
    def status(self) -> str:
        return "OK" if self.ok else "FAIL" if self.required else "WARN"

    def line(self) -> str:
        text = f"{self.status:<4} {self.name}: {self.detail}"
        if not self.ok and self.fix:
            text += f" -> fix: {self.fix}"
        return text


def read_pins(requirements: str | os.PathLike = REQUIREMENTS, here_only: bool = False) -> dict[str, str]:
    """``{package: version}`` for every ``name==version`` line of a requirements file.

    A line may carry an environment marker (``xgboost==3.2.0; sys_platform == "darwin"``); with
    ``here_only`` the pins whose marker does not hold on this machine are left out.
    """
    from packaging.requirements import InvalidRequirement, Requirement

    requirements = Path(requirements)
    if not requirements.is_file():
        raise BookError(
            f"No {requirements.name} at {requirements}, so there are no pins to compare the "
            f"installed packages with: {missing_requirements_fix(requirements)}.")
    pins = {}
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        exact = [spec.version for spec in requirement.specifier if spec.operator == "=="]
        if len(exact) != 1 or (here_only and requirement.marker and not requirement.marker.evaluate()):
            continue
        pins[normalise(requirement.name)] = exact[0]
    return pins


def normalise(package: str) -> str:
    return re.sub(r"[-_.]+", "-", package).lower()


def check_python(version_info=sys.version_info) -> CheckResult:
    found = ".".join(map(str, version_info[:3]))
    ok = tuple(version_info[:2]) >= MINIMUM_PYTHON
    minimum = ".".join(map(str, MINIMUM_PYTHON))
    return CheckResult("python", ok, found,
                       f"the pinned packages need Python {minimum} or newer: create the book's "
                       f"environment with one (python{minimum} -m venv .venv, or conda's environment.yml)")


def missing_requirements_fix(requirements: Path) -> str:
    return (f"copy the book's requirements.txt into {requirements.parent}, beside the scaling_ml "
            "folder (the instructor guide lists what a workshop handout holds), or work in a clone "
            "of the book's repository")


def check_pinned_packages(requirements: str | os.PathLike = REQUIREMENTS) -> list[CheckResult]:
    """One line per pinned package; one FAIL line naming the fix when the pins cannot be read."""
    requirements = Path(requirements)
    try:
        pins = read_pins(requirements, here_only=True)
    except BookError:
        return [CheckResult("pinned versions", False, f"no requirements.txt at {requirements}",
                            missing_requirements_fix(requirements))]
    return check_pins(pins)


def check_pins(pins: dict[str, str], installed=None) -> list[CheckResult]:
    installed = installed or installed_version
    results = []
    for package, wanted in sorted(pins.items()):
        found = installed(package)
        results.append(CheckResult(
            f"package {package}", found == wanted,
            f"{found or 'not installed'} (pinned {wanted})",
            "run `make env` (or `pip install -r requirements.txt`) in the book's environment",
        ))
    return results


def installed_version(package: str) -> str | None:
    """The installed version of a distribution (``scikit-learn``), or None."""
    return measure.versions([package])[package]


def check_newsgroups(data_home=None) -> CheckResult:
    path = data.newsgroups_cache_path(data_home)
    return CheckResult(
        "20 Newsgroups offline", path.is_file(), str(path) if path.is_file() else f"no cache at {path}",
        "online: python -c 'from sklearn.datasets import fetch_20newsgroups as f; f()'; offline: "
        "python -m scaling_ml.data import-newsgroups path/to/20news-bydate.tar.gz",
    )


def check_resources(cores=None, free_memory_gib=None) -> list[CheckResult]:
    cores = cores if cores is not None else os.cpu_count() or 1
    if free_memory_gib is None:
        free_memory_gib = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    return [
        CheckResult("cores", cores >= 2, f"{cores}",
                    "a single core runs everything, but shows no parallel speed-up: use a 2+ core machine"),
        CheckResult("free memory", free_memory_gib >= MINIMUM_FREE_MEMORY_GIB,
                    f"{free_memory_gib:.1f} GiB",
                    f"close programs to free at least {MINIMUM_FREE_MEMORY_GIB:g} GiB, or turn the "
                    "chapters' `# Scale up:` size knobs down"),
    ]


def check_dashboard_port(port: int = cluster.DEFAULT_DASHBOARD_PORT) -> CheckResult:
    """Is the dashboard's usual port free? Taken, it is most often a cluster left running."""
    free = cluster._port_is_free(port)
    return CheckResult(
        f"port {port} free", free, "yes" if free else "in use by another program",
        "most often a Dask cluster left running by another notebook: run client.close() there or "
        "restart its kernel (Kernel > Shut Down Kernel). Otherwise the book's clusters use another "
        "port and print its link, and chapter 0's LocalCluster(dashboard_address=\"127.0.0.1:8787\") "
        "warns that the port is in use", required=False)


def check_cluster(packages=WORKER_PACKAGES, timeout: float = 60) -> list[CheckResult]:
    """Start a cluster (or reach the configured one), check its addresses, dashboard and packages."""
    try:
        client = cluster.get_client()
    except Exception as error:  # any failure to start is what this check reports
        return [CheckResult("cluster starts", False, f"{type(error).__name__}: {error}",
                            "see the error; unset DASK_SCHEDULER_ADDRESS to use a local cluster")]
    results = []
    try:
        info = client.scheduler_info()
        results.append(CheckResult("cluster starts", True, cluster.describe(client)))
        if cluster.configured_scheduler_address() is None:
            addresses = [info["address"], *info["workers"]]
            on_loopback = all("127.0.0.1" in address for address in addresses)
            results.append(CheckResult(
                "cluster on loopback", on_loopback,
                "scheduler and workers on 127.0.0.1" if on_loopback else ", ".join(addresses),
                "use scaling_ml.cluster.get_client(), which binds to 127.0.0.1"))
        dashboard_port = info.get("services", {}).get("dashboard")
        host = cluster.LOOPBACK if cluster.configured_scheduler_address() is None else \
            info["address"].split("://", 1)[-1].rsplit(":", 1)[0]
        results.append(check_dashboard(f"http://{host}:{dashboard_port}/status"))
        results.extend(check_worker_packages(client, packages))
    finally:
        client.close()
    return results


def check_dashboard(link: str, timeout: float = 10) -> CheckResult:
    health = link.rsplit("/", 1)[0] + "/health"
    try:
        with urllib.request.urlopen(health, timeout=timeout) as response:
            ok = response.status == 200
    except OSError as error:
        return CheckResult("dashboard answers", False, f"{link}: {error}",
                           "pip install bokeh (in the pinned version) and restart the cluster")
    return CheckResult("dashboard answers", ok, "yes" if ok else link,
                       "pip install bokeh (in the pinned version) and restart the cluster")


def check_worker_packages(client, packages=WORKER_PACKAGES) -> list[CheckResult]:
    """Compare package versions on every worker with the client's (beyond distributed's own check).

    Uses distributed's own version report (``client.get_versions``), which needs nothing of this
    book's package on the workers.
    """
    report = client.get_versions(packages=list(packages.values()))
    on_client = report["client"]["packages"]
    on_workers = {worker: info["packages"] for worker, info in report["workers"].items()}
    results = []
    for package, module in packages.items():
        differing = {worker: found.get(module) for worker, found in on_workers.items()
                     if found.get(module) != on_client.get(module)}
        detail = (f"{on_client.get(module)} on the client and all {len(on_workers)} workers"
                  if not differing else
                  f"client {on_client.get(module)}, workers "
                  + ", ".join(sorted(set(map(str, differing.values())))))
        results.append(CheckResult(
            f"workers have {package}", not differing and on_client.get(module) is not None, detail,
            "install the same requirements.txt in the workers' environment as in the client's"))
    return results


def run_checks(start_cluster: bool = True) -> list[CheckResult]:
    results = [check_python(), *check_pinned_packages(), check_newsgroups(), *check_resources(),
               check_dashboard_port()]
    if start_cluster:
        results.extend(check_cluster())
    return results


def summary_line(results: list[CheckResult]) -> str:
    """One line for an instructor's form: counts, the machine, and the names of what failed."""
    counts = {status: sum(result.status == status for result in results) for status in ("OK", "WARN", "FAIL")}
    not_ok = [result.name for result in results if not result.ok]
    machine = measure.machine_info()
    return (f"scaling-ml check: {counts['OK']} OK, {counts['WARN']} WARN, {counts['FAIL']} FAIL | "
            f"Python {platform.python_version()} | {platform.system()} {platform.machine()} | "
            f"{machine['cores']} cores, {machine['memory_gib']} GiB | "
            f"not OK: {', '.join(not_ok) if not_ok else 'none'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scaling_ml.check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-cluster", action="store_true", help="skip the checks that start a cluster")
    arguments = parser.parse_args(argv)
    results = run_checks(start_cluster=not arguments.no_cluster)
    for result in results:
        print(result.line())
    print("\nSummary (paste this line into your instructor's form):")
    print(summary_line(results))
    return 1 if any(result.status == "FAIL" for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
