"""No Dask scheduler, worker or Jupyter kernel that a run of `make` started may outlive it.

`make` gives every command it runs the environment variable BOOK_RUN_ID (one value per top-level
`make` call); every process they start, kernels and Dask workers included, inherits it. This script
lists the live processes that carry this run's value and look like Dask or Jupyter processes, and
exits 1 if there are any. Processes of other runs, and a learner's own JupyterLab with its kernels,
do not carry the value and are left alone.

    python tests/leftover_processes.py            # uses $BOOK_RUN_ID
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

MARKER = "BOOK_RUN_ID"
SUSPECTS = re.compile(r"dask (scheduler|worker)|distributed\.cli|ipykernel_launcher|"
                      r"multiprocessing\.spawn|multiprocessing\.forkserver|dask-worker|dask-scheduler")


def process_environment(pid: str) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (entry.split(b"=", 1) for entry in raw.split(b"\0") if b"=" in entry)
    return {key.decode(errors="replace"): value.decode(errors="replace") for key, value in pairs}


def leftovers(run_id: str, own_pid: int | None = None) -> list[str]:
    """``"pid command"`` of every live suspect process that carries ``BOOK_RUN_ID=run_id``."""
    own_pid = own_pid or os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == own_pid:
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state == "Z" or not SUSPECTS.search(command):
            continue
        if process_environment(entry.name).get(MARKER) == run_id:
            found.append(f"{entry.name} {command.strip()}")
    return found


def main(argv: list[str] | None = None) -> int:
    run_id = os.environ.get(MARKER)
    if not run_id:
        print(f"{MARKER} is not set: run this through make (make check-processes).", file=sys.stderr)
        return 2
    deadline = time.monotonic() + 5  # processes that are already shutting down get a moment
    while (found := leftovers(run_id)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if found:
        print("processes this run started are still running:")
        print("\n".join(found))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
