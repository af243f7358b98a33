"""Chapter 4 plumbing: a synthetic tabular dataset on disk as partitioned parquet, and its checks.

The dataset is a customer-churn-like table: ``N_NUMERIC`` numeric columns ``x0, x1, ...``, two
string columns (``region``, ``plan``) and a 0/1 target ``churned`` drawn from a known logistic
model (:data:`NUMERIC_WEIGHTS`, :data:`REGION_EFFECTS`, :data:`PLAN_EFFECTS`), so that the best
possible accuracy is known and no model can beat it. Every partition is generated from its own seed
(``[seed, partition number]``), so the table is the same whatever the number of workers.

Files are written to a scratch folder that is not committed (``_build/data/`` by default).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / "_build" / "data"

N_NUMERIC = 12
NUMERIC_COLUMNS = [f"x{i}" for i in range(N_NUMERIC)]
CATEGORICAL_COLUMNS = ["region", "plan"]
TARGET = "churned"
INDEX = "row"
REGIONS = ["north", "south", "east", "west", "centre"]
PLANS = ["basic", "standard", "premium"]
# The known signal: half the numeric columns matter, the other half are noise.
NUMERIC_WEIGHTS = np.array([1.0, -0.8, 0.6, -0.4, 0.3, 0.2] + [0.0] * (N_NUMERIC - 6))
REGION_EFFECTS = np.array([0.4, -0.3, 0.0, 0.2, -0.5])
PLAN_EFFECTS = np.array([0.5, 0.0, -0.6])
BYTES_PER_ROW_ESTIMATE = 8 * N_NUMERIC + 8 + 2 * 24  # float64s, the int64 target, two strings

_MANIFEST = "_dataset.json"


class DaskCollectionsError(ValueError):
    """Bad input to this chapter's helpers; the message names the problem and the fix."""


# ---------------------------------------------------------------- generating and writing the data
def make_partition(partition: int, n_rows: int, seed: int = 0, start: int = 0) -> pd.DataFrame:
    """One partition of the table as a pandas DataFrame (rows ``start .. start + n_rows - 1``)."""
    rng = np.random.default_rng([seed, partition])
    numeric = rng.standard_normal((n_rows, N_NUMERIC))
    region = rng.integers(0, len(REGIONS), n_rows)
    plan = rng.integers(0, len(PLANS), n_rows)
    logit = numeric @ NUMERIC_WEIGHTS + REGION_EFFECTS[region] + PLAN_EFFECTS[plan]
    churned = (rng.random(n_rows) < 1 / (1 + np.exp(-logit))).astype("int64")
    frame = pd.DataFrame(numeric, columns=NUMERIC_COLUMNS,
                         index=pd.RangeIndex(start, start + n_rows, name=INDEX))
    frame["region"] = pd.array(np.array(REGIONS)[region], dtype="string[pyarrow]")
    frame["plan"] = pd.array(np.array(PLANS)[plan], dtype="string[pyarrow]")
    frame[TARGET] = churned
    return frame


def _check_sizes(n_rows, rows_per_partition):
    for name, value in (("n_rows", n_rows), ("rows_per_partition", rows_per_partition)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise DaskCollectionsError(f"{name} must be a whole number >= 1, got {value!r}.")


def make_table(n_rows: int, rows_per_partition: int = 250_000, seed: int = 0):
    """The table as a lazy dask DataFrame with known divisions (nothing is computed yet)."""
    import dask.dataframe as dd

    _check_sizes(n_rows, rows_per_partition)
    starts = list(range(0, n_rows, rows_per_partition))
    sizes = [min(rows_per_partition, n_rows - start) for start in starts]
    divisions = (*starts, n_rows - 1)
    return dd.from_map(_partition_from_task, list(zip(range(len(starts)), sizes, starts)),
                       seed=seed, divisions=divisions, meta=make_partition(0, 0, seed),
                       enforce_metadata=False)


def _partition_from_task(task, seed):
    partition, n_rows, start = task
    return make_partition(partition, n_rows, seed, start)


def write_dataset(path: str | Path | None = None, n_rows: int = 200_000,
                  rows_per_partition: int = 250_000, seed: int = 0, overwrite: bool = False) -> Path:
    """Write the table as partitioned parquet (one file per partition) and return the folder.

    The work happens on the cluster of the active client: each worker generates and writes its
    partitions, nothing passes through this process. A folder already written with the same
    parameters is reused unless ``overwrite=True``.
    """
    _check_sizes(n_rows, rows_per_partition)
    path = Path(path) if path is not None else DATA_DIR / f"churn_{n_rows}"
    parameters = {"n_rows": n_rows, "rows_per_partition": rows_per_partition, "seed": seed}
    manifest = path / _MANIFEST
    if manifest.is_file() and not overwrite:
        if json.loads(manifest.read_text()) == parameters:
            return path
    if path.exists():
        if not (path / _MANIFEST).is_file() and any(path.iterdir()):
            raise DaskCollectionsError(
                f"{path} exists and was not written by write_dataset: choose an empty or new folder "
                "(this function deletes the folder before rewriting it).")
        shutil.rmtree(path)
    make_table(n_rows, rows_per_partition, seed).to_parquet(path, write_index=True)
    manifest.write_text(json.dumps(parameters))
    return path


# ---------------------------------------------------------------- reading and checking
def require_columns(frame, columns) -> None:
    """Raise DaskCollectionsError if any of ``columns`` is not a column of ``frame``."""
    columns = [columns] if isinstance(columns, str) else list(columns)
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise DaskCollectionsError(
            f"Column(s) {missing} not in the dataframe; it has {list(frame.columns)}. Check the "
            "spelling, or the `columns=` you read the parquet files with.")


def read_dataset(path: str | Path, columns=None):
    """``dd.read_parquet`` of a folder written by :func:`write_dataset`, with known divisions.

    A missing folder or a missing column raises DaskCollectionsError saying how to fix it.
    """
    import dask.dataframe as dd

    path = Path(path)
    if not path.exists() or (path.is_dir() and not any(path.glob("*.parquet"))):
        raise DaskCollectionsError(
            f"No parquet dataset at {path}: write it first with "
            "scaling_ml.dask_collections.write_dataset(path, n_rows=...), or fix the path.")
    frame = dd.read_parquet(path, index=INDEX, calculate_divisions=True)
    if columns is not None:
        require_columns(frame, columns)
        frame = frame[list(columns)]
    return frame


def first_rows(frame, n_rows: int):
    """The rows whose index is below ``n_rows``, reading only the partitions that hold them.

    Needs known divisions (each partition's index range) to know which partitions to read.
    """
    if not frame.known_divisions:
        raise DaskCollectionsError(
            "The dataframe has unknown divisions, so Dask cannot tell which partitions hold the "
            "first rows. Read it with dd.read_parquet(path, index='row', calculate_divisions=True) "
            "(read_dataset does), or call frame.set_index('row') on a sorted column first.")
    _check_sizes(n_rows, 1)
    return frame.loc[: n_rows - 1]


def dataset_gib(frame) -> float:
    """The dataframe's size in memory (GiB), computed on the workers, with strings counted."""
    return float(frame.memory_usage(deep=True).sum().compute()) / 2**30


def folder_gib(path: str | Path) -> float:
    """The size of the files in a folder on disk (GiB)."""
    return sum(file.stat().st_size for file in Path(path).rglob("*") if file.is_file()) / 2**30


def to_float(frame):
    """Cast every column to float64 (dummy columns are booleans, which StandardScaler refuses)."""
    return frame.astype("float64")


def best_possible_accuracy(frame) -> float:
    """Accuracy of the true model that generated the labels: no estimator can do better on average."""
    require_columns(frame, [*NUMERIC_COLUMNS, *CATEGORICAL_COLUMNS, TARGET])

    def correct(part):
        region = pd.Categorical(part["region"].astype(object), categories=REGIONS).codes
        plan = pd.Categorical(part["plan"].astype(object), categories=PLANS).codes
        logit = part[NUMERIC_COLUMNS].to_numpy() @ NUMERIC_WEIGHTS + REGION_EFFECTS[region] + PLAN_EFFECTS[plan]
        return pd.Series([int(((logit > 0).astype(int) == part[TARGET].to_numpy()).sum()), len(part)])

    counts = frame.map_partitions(correct, meta=(None, "int64")).compute().to_numpy().reshape(-1, 2)
    return float(counts[:, 0].sum() / counts[:, 1].sum())


# ---------------------------------------------------------------- figures
def plot_learning_curve(train_sizes, train_scores, test_scores, best: float | None = None,
                        name: str | None = "dask_collections_learning_curve"):
    """Mean score (with the spread over splits) against the number of training rows."""
    from . import plots

    figure, ax = plots.new_figure()
    for scores, label in ((train_scores, "training score"), (test_scores, "validation score")):
        scores = np.asarray(scores)
        mean, spread = scores.mean(axis=1), scores.std(axis=1)
        ax.plot(train_sizes, mean, marker="o", label=label)
        ax.fill_between(train_sizes, mean - spread, mean + spread, alpha=0.2)
    if best is not None:
        ax.axhline(best, color="black", linestyle="--", linewidth=1, label="best possible")
    ax.set_xscale("log")
    ax.set_xlabel("training rows")
    ax.set_ylabel("accuracy")
    ax.set_title("Learning curve: logistic regression on the churn table")
    ax.legend(loc="lower right", fontsize="small")
    if name:
        plots.save_figure(figure, name)
    return figure


# ---------------------------------------------------------------- quieter worker output
@contextlib.contextmanager
def quiet_worker_logs(client, logger: str = "distributed.worker", level: int = logging.CRITICAL,
                      idle_timeout: float = 30):
    """Raise a logger's level on every worker while the block runs (for an error we expect).

    Worker processes write their logs to the terminal that started them, which Jupyter shows
    under the cell; a demonstration of a failing call would otherwise print the worker's traceback.
    """
    previous = client.run(_set_log_level, logger, level)
    try:
        yield
    finally:
        # The client sees the first failure while other tasks of the same call may still be
        # running (and failing): wait until the workers are idle before restoring the level.
        deadline = time.monotonic() + idle_timeout
        while any(client.processing().values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        for worker, old_level in previous.items():
            client.run(_set_log_level, logger, old_level, workers=[worker])


def _set_log_level(logger: str, level: int) -> int:
    old_level = logging.getLogger(logger).level
    logging.getLogger(logger).setLevel(level)
    return old_level
