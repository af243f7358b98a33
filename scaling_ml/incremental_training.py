"""Chapter 3 plumbing: the 20 Newsgroups posts as files on disk, and the chapter's figures.

The lesson (a dask bag of file names turned into sparse blocks with ``to_delayed`` /
``da.from_delayed``, ``Incremental``, ``MemorySampler``, ``HyperbandSearchCV``) is in the
notebook's cells. What is here a reader need not learn:

* :func:`write_newsgroups_files` writes the posts that scikit-learn's ``fetch_20newsgroups``
  provides as one file per post, one folder per newsgroup, the shape a corpus on disk usually has.
  It needs only scikit-learn's cache (filled online, or offline by ``make data``), no archive. By
  default it writes them to a folder of this process's own that is removed when the process (the
  notebook's kernel) exits, so restarted kernels leave nothing behind;
* :func:`plot_memory_above_idle` and :func:`plot_model_history` draw the chapter's figures.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from numbers import Real
from pathlib import Path

import numpy as np

from . import BookError, plots

SUBSETS = ("train", "test")
DEFAULT_FOLDER_NAME = "scaling_ml_20news_posts"
# Written last, just before the folder gets its final name: a folder with it is complete.
COMPLETE_MARKER = ".complete"
# The posts are written under a hidden name and renamed when complete; a writer killed midway
# leaves such a folder behind, which a later call removes once it is this old.
STALE_PARTIAL_SECONDS = 3600
# The original archive's encoding; scikit-learn decodes the posts with it, so writing them back
# with it reproduces the original files byte for byte.
POSTS_ENCODING = "latin-1"


def _process_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, as another user's process
    return True


def _remove_orphaned_copies(parent: Path) -> None:
    """Remove the default copies whose process is gone (a kernel killed before it could clean up)."""
    for copy in parent.glob(f"{DEFAULT_FOLDER_NAME}-*-*"):
        pid = copy.name[len(DEFAULT_FOLDER_NAME) + 1:].split("-", 1)[0]
        if pid.isdigit() and not _process_is_alive(int(pid)):
            shutil.rmtree(copy, ignore_errors=True)


def _write_private_copy(data_home, download_if_missing: bool) -> Path:
    """The posts in a new folder of this process's own, in the temporary directory, removed when
    the process exits (and, if it is killed, by the next process that calls this)."""
    parent = Path(tempfile.gettempdir())
    _remove_orphaned_copies(parent)
    folder = Path(tempfile.mkdtemp(prefix=f"{DEFAULT_FOLDER_NAME}-{os.getpid()}-", dir=parent))
    folder.chmod(0o755)  # mkdtemp's folder is private; workers may run as another user
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    try:
        counts = {subset: _write_subset(_fetch(subset, data_home, download_if_missing), folder / subset)
                  for subset in SUBSETS}
        (folder / COMPLETE_MARKER).write_text(
            "".join(f"{subset}: {count} posts\n" for subset, count in counts.items()))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def _partial_prefix(folder: Path) -> str:
    return f".{folder.name}.partial-"


def _remove_stale_partials(folder: Path) -> None:
    """Remove what writers killed midway left next to ``folder`` (hidden, older than an hour)."""
    now = time.time()
    for partial in folder.parent.glob(_partial_prefix(folder) + "*"):
        try:
            old = now - partial.stat().st_mtime > STALE_PARTIAL_SECONDS
        except OSError:
            continue  # another process removed or renamed it meanwhile
        if old:
            shutil.rmtree(partial, ignore_errors=True)


def _fetch(subset: str, data_home, download_if_missing: bool):
    from sklearn.datasets import fetch_20newsgroups

    try:
        return fetch_20newsgroups(subset=subset, data_home=data_home, shuffle=False,
                                  download_if_missing=download_if_missing)
    except OSError as error:
        raise BookError(
            f"20 Newsgroups is not available ({error}). Online, run `make data` (it downloads it "
            "once); offline, fill scikit-learn's cache from a copy of the archive: "
            "python -m scaling_ml.data import-newsgroups path/to/20news-bydate.tar.gz"
        ) from None


def _write_subset(posts, destination: Path) -> int:
    """One file per post under ``destination/<newsgroup>/``, named as in the original archive."""
    for group in posts.target_names:
        (destination / group).mkdir(parents=True)
    for text, label, original in zip(posts.data, posts.target, posts.filenames):
        path = destination / posts.target_names[label] / Path(original).name
        if path.exists():
            raise BookError(
                f"Two posts would both be written to {path.relative_to(destination.parent)}: "
                "scikit-learn's 20 Newsgroups cache looks damaged. Delete it "
                "(sklearn.datasets.get_data_home()) and run `make data` again."
            )
        path.write_text(text, encoding=POSTS_ENCODING)
    return len(posts.data)


def write_newsgroups_files(folder: str | os.PathLike | None = None,
                           data_home: str | os.PathLike | None = None,
                           download_if_missing: bool = True) -> Path:
    """Write the 20 Newsgroups posts as files and return the folder that holds them.

    The folder gets ``train/<newsgroup>/<post>`` and ``test/<newsgroup>/<post>``: one text file
    per post (11,314 and 7,532 of them), one sub-folder per newsgroup, the posts' text as
    ``fetch_20newsgroups(subset=...)`` returns it (latin-1 encoded, as in the original archive).

    folder: where to write. By default a new folder in the system's temporary directory, this
        process's own, removed when the process exits; one that a killed process left behind is
        removed by the next call. On a cluster, give a folder on storage that every worker can
        read: a folder you name is kept, and reused by later calls.
    data_home, download_if_missing: passed to ``fetch_20newsgroups``.

    A named folder is written as a hidden folder beside it and renamed only when complete, so an
    interrupted write leaves no half folder; a complete folder is reused as it is. An existing
    folder that this function did not complete is never touched.
    """
    if folder is None:
        return _write_private_copy(data_home, download_if_missing)
    folder = Path(folder).expanduser()
    if (folder / COMPLETE_MARKER).is_file():
        return folder
    if folder.exists():
        raise BookError(
            f"{folder} exists but is not a complete copy of the posts written by "
            "write_newsgroups_files(), so it is left as it is. Pass another folder, or delete "
            "this one if it holds nothing you need."
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(folder)
    partial = Path(tempfile.mkdtemp(prefix=_partial_prefix(folder), dir=folder.parent))
    partial.chmod(0o755)  # mkdtemp's folder is private; workers may run as another user
    try:
        counts = {subset: _write_subset(_fetch(subset, data_home, download_if_missing),
                                        partial / subset)
                  for subset in SUBSETS}
        (partial / COMPLETE_MARKER).write_text(
            "".join(f"{subset}: {count} posts\n" for subset, count in counts.items()))
        try:
            partial.rename(folder)  # atomic within one file system
        except OSError:
            if not (folder / COMPLETE_MARKER).is_file():
                raise
            # Another process (a second kernel) finished first: its copy is the same, use it.
    finally:
        shutil.rmtree(partial, ignore_errors=True)  # gone already after a successful rename
    return folder


# ---------------------------------------------------------------------------------------------
# Figures


def _seconds(index) -> np.ndarray:
    """Seconds from a MemorySampler frame's index (timedeltas) or from plain numbers."""
    if hasattr(index, "total_seconds"):
        return np.asarray(index.total_seconds(), dtype=float)
    return np.asarray(index, dtype=float)


def plot_memory_above_idle(memory_mib, block_mib: float, title: str, ax=None):
    """Memory above the idle cluster's (MiB) against seconds, one line per column of ``memory_mib``.

    ``memory_mib``: a DataFrame such as ``ms.to_pandas(align=True) / 2**20`` minus the idle
    baseline (index: time since each run started). A dashed line marks the size of one block.
    """
    import pandas as pd

    if not isinstance(memory_mib, pd.DataFrame) or memory_mib.empty:
        raise BookError(
            "plot_memory_above_idle draws a DataFrame with one column per run, such as "
            "ms.to_pandas(align=True) / 2**20 minus the idle baseline; got "
            f"{'an empty DataFrame' if isinstance(memory_mib, pd.DataFrame) else type(memory_mib).__name__}. "
            "Run a `with ms.sample(...)` block first.")
    if isinstance(memory_mib.index, pd.DatetimeIndex):
        raise BookError("The memory frame has absolute times: use ms.to_pandas(align=True), so that "
                        "every run starts at 0 seconds.")
    if isinstance(block_mib, bool) or not isinstance(block_mib, Real) or not block_mib > 0:
        raise BookError(f"block_mib must be the size of one block in MiB (a number above 0), got {block_mib!r}.")
    if ax is None:
        figure, ax = plots.new_figure()
    seconds = _seconds(memory_mib.index)
    for label in memory_mib.columns:
        values = memory_mib[label].to_numpy(dtype=float)
        measured = ~np.isnan(values)  # aligned runs of different lengths leave gaps at the end
        ax.plot(seconds[measured], values[measured], label=str(label))
    ax.axhline(block_mib, color="black", linestyle="--", linewidth=1,
               label=f"one block ({block_mib:,.0f} MiB)")
    ax.set_xlabel("seconds since the fit started")
    ax.set_ylabel("memory above idle (MiB)")
    ax.set_ylim(bottom=min(0.0, float(np.nanmin(memory_mib.to_numpy(dtype=float)))))
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize="small")
    return ax


def plot_model_history(model_history: dict, title: str, ax=None):
    """Validation score against ``partial_fit`` calls, one line per model of an incremental search
    (``search.model_history_``)."""
    if not isinstance(model_history, dict) or not model_history or not all(
            isinstance(history, list) and all(isinstance(record, dict) and "partial_fit_calls" in record
                                              and "score" in record for record in history)
            for history in model_history.values()):
        raise BookError(
            "plot_model_history draws the model_history_ attribute of a fitted incremental search "
            f"(a dict of lists of records), got {type(model_history).__name__}: fit the search, "
            "then pass search.model_history_.")
    if ax is None:
        figure, ax = plots.new_figure()
    for model_id in sorted(model_history):  # the same colour for the same model on every run
        history = model_history[model_id]
        calls = [record["partial_fit_calls"] for record in history]
        scores = [record["score"] for record in history]
        ax.plot(calls, scores, marker=".", linewidth=1, alpha=0.7)
    ax.set_xlabel("partial_fit calls")
    ax.set_ylabel("validation score")
    ax.set_title(title)
    return ax
