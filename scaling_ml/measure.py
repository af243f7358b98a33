"""Measuring: timing repeats, claims with their spreads, machine and versions, result files.

Every benchmark writes ``benchmarks/results/<name>.json`` through :func:`write_results`; notebooks
and the status page read it back with :func:`load_results`. A claim's ``holds`` is always computed
here from ``measured``, its ``spread``, ``goal_op`` and ``goal``, never written by hand.
"""

from __future__ import annotations

import contextlib
import datetime as _datetime
import json
import operator
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from scaling_ml import PROJECT_ROOT, BookError

RESULTS_DIR = PROJECT_ROOT / "benchmarks" / "results"

# The packages whose versions every result file records.
RECORDED_PACKAGES = ("dask", "distributed", "dask-ml", "scikit-learn", "numpy", "pandas", "joblib")

GOAL_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt,
}


# What a comparison inside its own spread is called: never a ranking.
NO_DIFFERENCE = "no difference measured here"


def machine_info() -> dict:
    """Cores, memory and CPU of the machine running this code."""
    memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cores": os.cpu_count(), "memory_gib": round(memory_bytes / 2**30, 1), "cpu": cpu,
            "python": platform.python_version()}


def versions(packages=RECORDED_PACKAGES) -> dict:
    """Installed versions of ``packages`` (None for one that is not installed)."""
    found = {}
    for package in packages:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def time_repeats(function: Callable[[], Any], repeats: int = 3) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``function``."""
    if repeats < 1:
        raise BookError(f"repeats must be >= 1, got {repeats}.")
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return seconds


@contextlib.contextmanager
def timer():
    """``with timer() as elapsed: ...`` then ``elapsed()`` gives the seconds the block took."""
    start = time.perf_counter()
    end = None

    def elapsed() -> float:
        return (end if end is not None else time.perf_counter()) - start

    try:
        yield elapsed
    finally:
        end = time.perf_counter()


@dataclass
class Claim:
    """A measured claim: ``measured goal_op goal`` must hold, and so must every value in ``spread``.

    ``spread`` is the range ``[low, high]`` of the repeats or seeds behind ``measured`` (for a
    ratio of two timed settings, :func:`ratio_spread`). A claim holds only when its whole spread
    meets the goal: a "faster" whose spread reaches "no faster" is reported as no difference
    measured here, never as a ranking. Without a spread the claim rests on ``measured`` alone.
    """

    name: str
    measured: float
    unit: str
    goal: float
    goal_op: str = ">="
    spread: list[float] | None = None
    holds: bool = field(init=False)

    def __post_init__(self):
        if self.goal_op not in GOAL_OPERATORS:
            raise BookError(f"goal_op must be one of {sorted(GOAL_OPERATORS)}, got {self.goal_op!r}.")
        self.measured = float(self.measured)
        if self.spread is not None:
            low, high = (float(value) for value in self.spread)
            if not low <= self.measured <= high:
                raise BookError(f"claim {self.name!r}: measured {self.measured:g} lies outside its "
                                   f"spread [{low:g}, {high:g}].")
            self.spread = [low, high]
        self.holds = claim_holds(self.measured, self.goal_op, self.goal, self.spread)


def claim_holds(measured: float, goal_op: str, goal: float, spread=None) -> bool:
    """True when ``measured`` and both ends of ``spread`` meet ``goal_op goal``."""
    compare = GOAL_OPERATORS[goal_op]
    return all(compare(float(value), goal) for value in [measured, *(spread or [])])


def ratio_spread(numerators, denominators) -> list[float]:
    """The range of ``numerator / denominator`` over the repeats of two settings:
    ``[min(a) / max(b), max(a) / min(b)]``. It excludes 1 only when the two ranges do not overlap."""
    numerators, denominators = list(numerators), list(denominators)
    if not numerators or not denominators or min(denominators) <= 0:
        raise BookError("ratio_spread needs repeats of both settings, all of them above zero.")
    return [min(numerators) / max(denominators), max(numerators) / min(denominators)]


def accuracy_difference(correct_a, correct_b, resamples: int = 1000, seed: int = 0) -> tuple[float, list[float]]:
    """Accuracy of model a minus accuracy of model b on the same test rows, and its spread.

    ``correct_a``, ``correct_b``: one boolean per test row (prediction == label), for the same rows
    in the same order. Returns ``(difference, [low, high])`` as fractions: the difference of the
    two accuracies, and the middle 95 % of that difference over ``resamples`` bootstrap resamples
    of the test rows (both models scored on the same resample). A resample only changes how many
    rows of each kind it holds (right for a only, right for b only, the rest), so the counts are
    drawn directly, which is the same as resampling the rows and as quick for millions of them.
    """
    import numpy as np

    a, b = np.asarray(correct_a, dtype=bool).ravel(), np.asarray(correct_b, dtype=bool).ravel()
    if a.shape != b.shape or a.size == 0:
        raise BookError(f"accuracy_difference needs one boolean per test row for both models, "
                           f"the same rows; got {a.size} and {b.size} values.")
    n_rows = a.size
    counts = np.array([np.sum(a & ~b), np.sum(~a & b), np.sum(a == b)])
    draws = np.random.default_rng(seed).multinomial(n_rows, counts / n_rows, size=resamples)
    low, high = np.percentile((draws[:, 0] - draws[:, 1]) / n_rows, [2.5, 97.5])
    difference = float(counts[0] - counts[1]) / n_rows
    return difference, [min(float(low), difference), max(float(high), difference)]


def difference_verdict(spread, above: str = "higher", below: str = "lower") -> str:
    """``above`` when the whole spread of a difference is above 0, ``below`` when it is below,
    else "no difference measured here"."""
    low, high = spread
    if low > 0:
        return above
    if high < 0:
        return below
    return NO_DIFFERENCE


def compare_accuracies(correct_a, correct_b, name_a: str = "a", name_b: str = "b") -> str:
    """One line: how much more accurate ``name_a`` is than ``name_b`` on the same test rows, in
    points, with the spread of :func:`accuracy_difference` and what that spread supports."""
    difference, (low, high) = accuracy_difference(correct_a, correct_b)
    verdict = difference_verdict([low, high], f"{name_a} is more accurate", f"{name_b} is more accurate")
    return (f"{name_a} minus {name_b}: {100 * difference:+.2f} points ({100 * low:+.2f} to "
            f"{100 * high:+.2f} over resamples of the {len(correct_a):,} test rows): {verdict}")


def format_claim(claim: Claim) -> str:
    """One line for a benchmark's log: ``HOLDS  name: measured unit [spread] (goal op goal)``."""
    spread = f" [{claim.spread[0]:.4g}, {claim.spread[1]:.4g}]" if claim.spread else ""
    return (f"{'HOLDS ' if claim.holds else 'MISSED'} {claim.name}: {claim.measured:.4g} {claim.unit}"
            f"{spread} (goal {claim.goal_op} {claim.goal:g})")


def results_path(name: str, results_dir: str | os.PathLike | None = None) -> Path:
    return Path(results_dir or RESULTS_DIR) / f"{name}.json"


def write_results(name: str, claims: list[Claim], runs: list[dict], extra: dict | None = None,
                  results_dir: str | os.PathLike | None = None) -> Path:
    """Write ``benchmarks/results/<name>.json`` in the book's shape and return its path."""
    document = {
        "benchmark": name,
        "date": _datetime.datetime.now(_datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine_info(),
        "versions": versions(),
        "claims": [asdict(claim) for claim in claims],
        "runs": runs,
    }
    if extra:
        document.update(extra)
    return write_document(name, document, results_dir)


def write_document(name: str, document: dict, results_dir: str | os.PathLike | None = None) -> Path:
    """Write a whole result document (a new one, or a stored one whose claims were recomputed) at
    once: a reader never sees half a file."""
    path = results_path(name, results_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(document, indent=2, default=_json_default) + "\n")
    os.replace(partial, path)
    return path


def _json_default(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def load_results(name: str, results_dir: str | os.PathLike | None = None) -> dict:
    """Read a benchmark's result file; a clear error says how to make it when it is missing."""
    path = results_path(name, results_dir)
    if not path.is_file():
        raise BookError(
            f"No results at {path}: run `make bench` (or `python -m benchmarks.{name}`) first."
        )
    document = json.loads(path.read_text())
    for claim in document.get("claims", []):
        expected = claim_holds(claim["measured"], claim["goal_op"], claim["goal"], claim.get("spread"))
        if claim.get("holds") != expected:
            raise BookError(f"{path}: claim {claim['name']!r} has a 'holds' that its numbers contradict.")
    return document


def median(values) -> float:
    return float(statistics.median(values))
