"""Chapter 3 plumbing: incremental training on data that does not fit in memory.

* :func:`make_stream` builds a lazily generated classification data set as dask arrays (nothing
  is computed until a block is needed), with a size knob;
* :func:`check_incremental_inputs` turns the mistakes readers make with ``Incremental`` (no
  ``classes``, an estimator without ``partial_fit``, X and y blocks that do not line up) into clear
  errors before anything runs;
* :func:`partial_fit_loop` is the plain scikit-learn loop over the blocks, in the same order
  ``dask_ml.wrappers.Incremental`` uses, for comparison;
* the 20 Newsgroups helpers extract the original archive into a scratch folder outside the
  repository and turn a dask bag of file paths into hashed sparse blocks, read one block at a time;
* plotting helpers for the memory profile and for Hyperband's model history.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import dask
import dask.array as da
import dask.local
import numpy as np
import scipy.sparse
from sklearn.utils import check_random_state

from . import data, plots

PROJECT_ROOT = Path(__file__).resolve().parent.parent
NEWSGROUPS_ARCHIVE_ENV = "NEWSGROUPS_ARCHIVE"
DEFAULT_NEWSGROUPS_ARCHIVE = "../shared/data/20news-bydate.tar.gz"  # relative to the repo root
NEWSGROUPS_FOLDERS = data.NEWSGROUPS_SUBSETS


class IncrementalTrainingError(ValueError):
    """Input that incremental training cannot use; the message says how to fix it."""


# ---------------------------------------------------------------------------------------------
# Data


def make_stream(n_blocks: int, rows_per_block: int = 100_000, n_features: int = 20,
                random_state: int = 0, noise: float = 1.0):
    """A lazily generated binary classification problem as dask arrays ``X, y``.

    Each of the ``n_blocks`` blocks (``rows_per_block`` rows) is generated only when a task needs
    it, so the whole array never has to exist at once. The labels depend linearly on the features
    plus Gaussian noise (a problem a linear model can learn, but not perfectly).
    """
    for name, value in (("n_blocks", n_blocks), ("rows_per_block", rows_per_block),
                        ("n_features", n_features)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise IncrementalTrainingError(f"{name} must be a whole number >= 1, got {value!r}.")
    rng = da.random.default_rng(random_state)
    n_rows = n_blocks * rows_per_block
    X = rng.standard_normal((n_rows, n_features), chunks=(rows_per_block, n_features))
    weights = np.linspace(-1.0, 1.0, n_features)
    signal = X @ weights + noise * rng.standard_normal(n_rows, chunks=rows_per_block)
    y = (signal > 0).astype("int8")
    return X, y


# ---------------------------------------------------------------------------------------------
# Checks


def check_incremental_inputs(estimator, X, y, classes=None) -> None:
    """Raise :class:`IncrementalTrainingError` if ``Incremental(estimator).fit(X, y)`` would fail.

    ``estimator`` may be the scikit-learn estimator or an ``Incremental`` wrapping it.
    """
    inner = getattr(estimator, "estimator", estimator)
    if not hasattr(inner, "partial_fit"):
        raise IncrementalTrainingError(
            f"{type(inner).__name__} has no partial_fit, so it cannot learn one block at a time. "
            "Use an estimator that has one (SGDClassifier, SGDRegressor, MultinomialNB, "
            "MiniBatchKMeans, PassiveAggressiveClassifier, ...), or train on a sample that fits "
            "in memory (chapter 2)."
        )
    if classes is None and _is_classifier(inner):
        raise IncrementalTrainingError(
            f"{type(inner).__name__}.partial_fit needs classes=... on the first call: one block "
            "need not contain every class. Pass all labels up front, for example "
            "fit(X, y, classes=np.unique(y_sample)) or classes=[0, 1]."
        )
    data.check_row_blocks(X, y, IncrementalTrainingError)


def _is_classifier(estimator) -> bool:
    from sklearn.base import is_classifier

    return is_classifier(estimator)


def block_order(n_blocks: int, random_state=None, shuffle_blocks: bool = True) -> list[int]:
    """The order in which ``Incremental(..., random_state=random_state)`` visits the blocks."""
    order = list(range(n_blocks))
    if shuffle_blocks:
        check_random_state(random_state).shuffle(order)
    return order


def partial_fit_loop(estimator, X, y, classes, random_state=None, shuffle_blocks=True,
                     epochs: int = 1):
    """The plain scikit-learn way: compute one block, ``partial_fit`` on it, drop it, repeat.

    Visits the blocks in the order ``Incremental`` would (see :func:`block_order`); each epoch
    uses ``random_state + epoch`` so the order changes from pass to pass. Blocks are computed in
    this process (``dask.local.get_sync``); only one block of X is in memory at a time.
    Returns the fitted estimator.
    """
    check_incremental_inputs(estimator, X, y, classes)
    for epoch in range(epochs):
        seed = None if random_state is None else random_state + epoch
        for index in block_order(X.numblocks[0], seed, shuffle_blocks):
            # In this process, as a plain scikit-learn script would: no cluster involved.
            X_block, y_block = dask.compute(X.blocks[index], y.blocks[index],
                                            scheduler=dask.local.get_sync)
            estimator.partial_fit(X_block, y_block, classes=classes)
    return estimator


# ---------------------------------------------------------------------------------------------
# 20 Newsgroups, streamed from the files of the original archive


def newsgroups_archive_path() -> Path:
    """The archive named by ``NEWSGROUPS_ARCHIVE`` (default ``../shared/data/...`` from the repo)."""
    configured = os.environ.get(NEWSGROUPS_ARCHIVE_ENV, DEFAULT_NEWSGROUPS_ARCHIVE)
    path = Path(configured).expanduser()
    if not path.is_absolute():
        path = PROJECT_ROOT / path
    return path.resolve()


def default_scratch_dir() -> Path:
    """Where the archive is extracted: a folder in the system's temporary directory."""
    return Path(tempfile.gettempdir()) / "scaling_ml_20news"


def extract_newsgroups(archive: str | os.PathLike | None = None,
                       scratch_dir: str | os.PathLike | None = None) -> Path:
    """Extract ``20news-bydate.tar.gz`` once into ``scratch_dir`` and return that folder.

    The folder then holds ``20news-bydate-train/`` and ``20news-bydate-test/``, one text file
    per post, one sub-folder per newsgroup. A second call reuses the extracted files.
    """
    archive = Path(archive).expanduser() if archive else newsgroups_archive_path()
    scratch = Path(scratch_dir) if scratch_dir else default_scratch_dir()
    done = scratch / ".extracted"
    if done.is_file():
        return scratch
    if not archive.is_file():
        raise IncrementalTrainingError(
            f"No 20 Newsgroups archive at {archive}. Set the environment variable "
            f"{NEWSGROUPS_ARCHIVE_ENV} to the path of 20news-bydate.tar.gz (the original bydate "
            "split that scikit-learn downloads), or put it at "
            f"{DEFAULT_NEWSGROUPS_ARCHIVE} relative to the repository."
        )
    scratch.mkdir(parents=True, exist_ok=True)
    data.extract_newsgroups_archive(archive, scratch, IncrementalTrainingError)
    done.write_text("ok\n")
    return scratch


def newsgroups_files(folder: str | os.PathLike, subset: str = "train"):
    """``(paths, labels, category_names)`` of one subset, in a fixed (sorted) order."""
    if subset not in NEWSGROUPS_FOLDERS:
        raise IncrementalTrainingError(
            f"subset must be one of {sorted(NEWSGROUPS_FOLDERS)}, got {subset!r}."
        )
    root = Path(folder) / NEWSGROUPS_FOLDERS[subset]
    if not root.is_dir():
        raise IncrementalTrainingError(
            f"No {root}: call extract_newsgroups() first and pass the folder it returns."
        )
    categories = sorted(entry.name for entry in root.iterdir() if entry.is_dir())
    paths, labels = [], []
    for label, category in enumerate(categories):
        for path in sorted((root / category).iterdir(), key=lambda p: p.name):
            paths.append(str(path))
            labels.append(label)
    return paths, np.array(labels), categories


def read_texts(paths) -> list[str]:
    """The text of each file (the archive's posts are latin-1 encoded)."""
    return [Path(path).read_text(encoding="latin-1") for path in paths]


def _hash_block(records, vectorizer):
    paths = [path for path, _ in records]
    return vectorizer.transform(read_texts(paths)).astype(np.float64).tocsr()


def _label_block(records):
    return np.array([label for _, label in records], dtype=np.int64)


def bag_to_hashed_arrays(records_bag, vectorizer):
    """Dask arrays ``X, y`` from a bag of ``(path, label)`` records, one block per partition.

    Each block of X is a scipy sparse matrix: the files of that partition read and hashed by
    ``vectorizer`` (which must be stateless, such as ``HashingVectorizer``, so every block is
    transformed the same way without a pass over all the data). Only the file paths are looked
    at here; the files are read when a block is computed.
    """
    if hasattr(vectorizer, "vocabulary") and not hasattr(vectorizer, "n_features"):
        raise IncrementalTrainingError(
            f"{type(vectorizer).__name__} learns a vocabulary from all the data; use a "
            "stateless HashingVectorizer so each block can be transformed on its own."
        )
    counts = records_bag.map_partitions(lambda part: [len(list(part))]).compute()
    empty = [index for index, count in enumerate(counts) if count == 0]
    if empty:
        raise IncrementalTrainingError(
            f"Partitions {empty[:10]} of the bag are empty (of {len(counts)}); an empty block "
            "cannot be trained on. Repartition first, for example "
            f"bag.repartition(npartitions={max(1, len(counts) - len(empty))}), or build the bag "
            "with db.from_sequence(records, partition_size=...)."
        )
    partitions = records_bag.to_delayed()
    n_features = vectorizer.n_features
    X_blocks = [
        da.from_delayed(dask.delayed(_hash_block)(part, vectorizer), shape=(count, n_features),
                        dtype=np.float64, meta=scipy.sparse.csr_matrix((0, n_features)))
        for part, count in zip(partitions, counts)
    ]
    y_blocks = [
        da.from_delayed(dask.delayed(_label_block)(part), shape=(count,), dtype=np.int64)
        for part, count in zip(partitions, counts)
    ]
    return da.concatenate(X_blocks), da.concatenate(y_blocks)


# ---------------------------------------------------------------------------------------------
# Hyperband helpers and plots


def same_candidates(cv_results) -> list[dict]:
    """The candidates of a finished search as a list of one-value grids, for ``n_initial_parameters="grid"``.

    ``IncrementalSearchCV(model, same_candidates(search.cv_results_), n_initial_parameters="grid")``
    trains exactly the candidates the first search tried.
    """
    return [{name: [value] for name, value in params.items()} for params in cv_results["params"]]


def plot_model_history(model_history, title: str, ax=None):
    """Validation score against partial_fit calls, one line per model of a search."""
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


def plot_memory_profiles(profiles: dict, title: str, ax=None):
    """Cluster memory (GiB) against the fraction of training done, one line per data size.

    ``profiles`` maps a label to a DataFrame from ``measure.memory_frame`` (one column).
    """
    if ax is None:
        figure, ax = plots.new_figure()
    for label, frame in profiles.items():
        seconds = np.asarray(frame.index, dtype=float)
        fraction = seconds / seconds.max() if seconds.max() > 0 else seconds
        ax.plot(fraction, frame.iloc[:, 0].to_numpy(), label=str(label))
    ax.set_xlabel("fraction of Incremental.fit done (time)")
    ax.set_ylabel("cluster memory (GiB)")
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize="small")
    return ax


class capture_logs:
    """``with capture_logs("distributed.nanny") as messages:`` keeps those loggers' records
    (WARNING and above) in a list instead of printing them, so a cell can show what they said
    without addresses and timestamps that change from run to run."""

    def __init__(self, *names: str):
        import logging

        self.loggers = [logging.getLogger(name) for name in names]
        self.messages: list[str] = []
        outer = self

        class _Keep(logging.Handler):
            def emit(self, record):
                outer.messages.append(f"{record.name}: {record.getMessage()}")

        self.handler = _Keep(level=logging.WARNING)

    def __enter__(self):
        import logging

        self.saved = [(logger.propagate, list(logger.handlers), logger.level)
                      for logger in self.loggers]
        for logger in self.loggers:
            logger.handlers = [self.handler]
            logger.propagate = False
            # Also when a cluster started with silence_logs=logging.ERROR raised the level.
            logger.setLevel(logging.WARNING)
        return self.messages

    def __exit__(self, *exc_info):
        for logger, (propagate, handlers, level) in zip(self.loggers, self.saved):
            logger.handlers = handlers
            logger.propagate = propagate
            logger.setLevel(level)
        return False
