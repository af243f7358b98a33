"""The external-cluster lane (chapter 5): every chapter notebook through strict nbval on a real
`dask scheduler` + two `dask worker` processes, reached through DASK_SCHEDULER_ADDRESS.

Set CH5_EXTERNAL_NOTEBOOKS (space-separated paths) to run a subset; by default every
notebooks/NN_*.ipynb runs. The lane's time is printed (pytest -s) and written to
_build/laptop_to_cluster/external_lane.txt.
"""

import os
import time
from pathlib import Path

import pytest

from scaling_ml import cluster
from scaling_ml import laptop_to_cluster as ltc

REPORT_DIR = ltc.PROJECT_ROOT / "_build" / "laptop_to_cluster"


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            command = cmdline.read_bytes().replace(b"\0", b" ").decode()
            state = (cmdline.parent / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if text in command and state != "Z":
            found.append(command)
    return found


def _assert_gone(running):
    for pgid in running.pids:
        assert not ltc._process_group_alive(pgid), f"process group {pgid} left running"
    assert running.is_stopped()
    port = running.address.rsplit(":", 1)[1]
    assert _processes_mentioning(f"127.0.0.1:{port}") == []


def test_external_cluster_is_torn_down_after_an_error():
    with pytest.raises(ZeroDivisionError):
        with ltc.external_cluster(n_workers=2) as running:
            client = cluster.get_client(address=running.address)
            assert len(client.scheduler_info()['workers']) == 2
            client.close()
            raise ZeroDivisionError("an error inside the block")
    _assert_gone(running)


def test_notebooks_on_an_external_cluster():
    selected = os.environ.get("CH5_EXTERNAL_NOTEBOOKS", "").split()
    notebooks = [Path(p) for p in selected] or ltc.chapter_notebooks()
    start = time.perf_counter()
    with ltc.external_cluster(n_workers=2, nthreads=1) as running:
        # The same line LocalCluster gives, so the notebooks' checked outputs match.
        client = cluster.get_client(address=running.address)
        external = cluster.describe(client)
        client.close()
        local = cluster.get_client(n_workers=2)
        assert external == cluster.describe(local)
        local.close()
        result = ltc.run_nbval(notebooks, running.address)
    seconds = time.perf_counter() - start
    _assert_gone(running)
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    line = (f"external-cluster lane: {len(notebooks)} notebooks "
            f"({', '.join(p.name for p in notebooks)}) in {seconds:.0f} s, nbval exit code "
            f"{result.returncode}")
    (REPORT_DIR / "external_lane.txt").write_text(line + "\n")
    print(line)
    assert result.returncode == 0, "strict nbval failed on the external cluster (output above)"
