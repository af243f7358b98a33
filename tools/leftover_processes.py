"""No process that a run of `make` started may outlive it: a Dask scheduler or worker, a Jupyter
kernel or server, a browser, a joblib worker.

`make` gives every command it runs the environment variable BOOK_RUN_ID (one value per top-level
`make` call); every process they start, kernels and Dask workers included, inherits it. This script
lists the live processes that carry this run's value, other than itself and the `make` and shell
processes it runs under, and exits 1 if there are any. Processes of other runs, and a learner's own
JupyterLab with its kernels, do not carry the value and are left alone (tests/test_leftover_processes.py
checks both sides with real kernels, and .ci/run runs the whole suite beside an unrelated kernel).

    python -m tools.leftover_processes            # uses $BOOK_RUN_ID

Works wherever psutil reads other processes' environments (Linux, macOS; a process of another
user is not readable, and is not this run's).
"""

from __future__ import annotations

import os
import sys
import time

import psutil

MARKER = "BOOK_RUN_ID"
GRACE_SECONDS = 5  # processes that are already shutting down get a moment


def leftovers(run_id: str, own_pid: int | None = None) -> list[str]:
    """``"pid command"`` of every live process carrying ``BOOK_RUN_ID=run_id``.

    The process ``own_pid`` (default: this one) and its ancestors are left out: they are the
    check itself and the `make` that runs it.
    """
    own = psutil.Process(own_pid or os.getpid())
    excluded = {own.pid, *(parent.pid for parent in own.parents())}
    found = []
    for process in psutil.process_iter(["pid", "status", "cmdline", "environ"]):
        info = process.info
        if info["pid"] in excluded or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if (info["environ"] or {}).get(MARKER) == run_id:
            found.append(f"{info['pid']} {' '.join(info['cmdline'] or ['?'])}")
    return found


def main(argv: list[str] | None = None) -> int:
    run_id = os.environ.get(MARKER)
    if not run_id:
        print(f"{MARKER} is not set: run this through make (make check-processes).", file=sys.stderr)
        return 2
    deadline = time.monotonic() + GRACE_SECONDS
    while (found := leftovers(run_id)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if found:
        print("processes this run started are still running:")
        print("\n".join(found))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
