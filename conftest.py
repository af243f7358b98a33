"""Loaded by every pytest run in the repository, strict nbval of the notebooks included: running
the notebooks must leave every tracked file as it was. A notebook shows its figures inline; a
figure in figs/ has one writer, its benchmark; a notebook that rewrites a committed file makes
every run a change to commit."""

import hashlib
import subprocess

import pytest

from scaling_ml import PROJECT_ROOT as ROOT

_before: dict[str, str] | None = None


def changed_tracked_files() -> dict[str, str] | None:
    """{path: hash of its content} of every tracked file that differs from git's index (None
    outside a git clone)."""
    try:
        status = subprocess.run(["git", "status", "--porcelain", "-z", "--untracked-files=no"], cwd=ROOT,
                                capture_output=True, check=True).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        return None
    paths = [entry[3:] for entry in status.split("\0") if entry[3:]]
    return {path: hashlib.sha256((ROOT / path).read_bytes()).hexdigest() if (ROOT / path).is_file() else "gone"
            for path in paths}


def pytest_collection_finish(session):
    global _before
    if any(type(item).__module__.startswith("nbval") for item in session.items):
        _before = changed_tracked_files()


def pytest_sessionfinish(session):
    after = changed_tracked_files() if _before is not None else None
    if after is not None and after != _before:
        changed = sorted(path for path in set(after) | set(_before) if after.get(path) != _before.get(path))
        session.config.get_terminal_writer().line(
            f"FAILED: running the notebooks changed tracked files: {', '.join(changed)}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
