"""Chapter 4 plumbing: the churn table's true model, checks with clear errors, and figures.

The chapter writes, reads and trains on a customer-churn-like table in its own cells. Its labels
are drawn from a known logistic model, kept here so that the chapter can say how good the best
possible model is: ``N_NUMERIC`` standard-normal columns weighted by :data:`NUMERIC_WEIGHTS`
(half of them are noise), plus an effect per ``region`` (:data:`REGION_EFFECTS`, in the order of
:data:`REGIONS`) and per ``plan`` (:data:`PLAN_EFFECTS`, in the order of :data:`PLANS`).

The chapter writes its parquet files under :data:`DATA_FOLDER` (``_build/data/04_dask_collections``,
not committed), which it empties when it starts and removes when its kernel stops.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import PROJECT_ROOT, BookError, require_positive_int

N_NUMERIC = 12
NUMERIC_COLUMNS = [f"x{i}" for i in range(N_NUMERIC)]
CATEGORICAL_COLUMNS = ["region", "plan"]
TARGET = "churned"
REGIONS = ["north", "south", "east", "west", "centre"]
PLANS = ["basic", "standard", "premium"]
# The known signal: half the numeric columns matter, the other half are noise.
NUMERIC_WEIGHTS = np.array([1.0, -0.8, 0.6, -0.4, 0.3, 0.2] + [0.0] * (N_NUMERIC - 6))
REGION_EFFECTS = np.array([0.4, -0.3, 0.0, 0.2, -0.5])
PLAN_EFFECTS = np.array([0.5, 0.0, -0.6])
# The chapter's scratch folder for its parquet files, as a string: dask.dataframe reads and writes
# local paths and fsspec URLs ("s3://bucket/churn", with s3fs installed) alike. On disk inside the
# project rather than in the temporary directory, which is memory on many systems (tmpfs): the
# chapter's larger-than-memory table would fill it.
DATA_FOLDER = str(PROJECT_ROOT / "_build" / "data" / "04_dask_collections")


def check_table_size(n_rows, rows_per_partition) -> None:
    """Raise BookError unless both sizes are whole numbers >= 1."""
    require_positive_int("n_rows", n_rows)
    require_positive_int("rows_per_partition", rows_per_partition)


def require_columns(frame, columns) -> None:
    """Raise BookError if any of ``columns`` is not a column of ``frame``."""
    columns = [columns] if isinstance(columns, str) else list(columns)
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise BookError(
            f"Column(s) {missing} not in the dataframe; it has {list(frame.columns)}. Check the "
            "spelling, or the `columns=` you read the parquet files with.")


def true_model_predictions(table: pd.DataFrame) -> np.ndarray:
    """The true model's prediction (0 or 1) for every row of ``table``, a pandas DataFrame of the
    churn table: 1 where the logit the labels were drawn from is positive."""
    if not isinstance(table, pd.DataFrame):
        raise BookError(
            f"The true model scores a pandas DataFrame, got {type(table).__name__}: "
            "call .compute() on a (small) dask dataframe first.")
    require_columns(table, [*NUMERIC_COLUMNS, *CATEGORICAL_COLUMNS])
    region = pd.Categorical(table["region"].astype(object), categories=REGIONS).codes
    plan = pd.Categorical(table["plan"].astype(object), categories=PLANS).codes
    if (region < 0).any() or (plan < 0).any():
        raise BookError(
            f"Unknown region or plan in the table (expected {REGIONS} and {PLANS}): was it "
            "written by the chapter's make_partition?")
    logit = table[NUMERIC_COLUMNS].to_numpy() @ NUMERIC_WEIGHTS + REGION_EFFECTS[region] + PLAN_EFFECTS[plan]
    return (logit > 0).astype(int)


def best_possible_accuracy(table: pd.DataFrame) -> float:
    """Accuracy of the true model on ``table`` (a pandas DataFrame of the churn table).

    The true model predicts 1 where its logit is positive; no estimator can do better on average,
    so a model scoring close to this on the same rows has learned all there is to learn.
    """
    predictions = true_model_predictions(table)
    require_columns(table, TARGET)
    return float((predictions == table[TARGET].to_numpy()).mean())


# ---------------------------------------------------------------- figures
def plot_learning_curve(train_sizes, train_scores, test_scores, best: float | None = None):
    """Mean score (with one standard deviation over the splits, shaded) against the number of
    training rows: the three arrays that scikit-learn's ``learning_curve`` returns. ``best``, if
    given, is drawn as a dashed line: the true model's accuracy on the chapter's test rows."""
    from . import plots

    train_sizes = np.asarray(train_sizes)
    for name, scores in (("train_scores", train_scores), ("test_scores", test_scores)):
        shape = np.shape(scores)
        if len(shape) != 2 or shape[0] != len(train_sizes) or shape[1] < 1:
            raise BookError(
                f"{name} must have one row per training size ({len(train_sizes)}) and one column per "
                f"split, got shape {shape}: pass the three arrays learning_curve returns, in its order.")
    figure, ax = plots.new_figure()
    for scores, label in ((train_scores, "training score"), (test_scores, "validation score")):
        scores = np.asarray(scores)
        mean, spread = scores.mean(axis=1), scores.std(axis=1)
        ax.plot(train_sizes, mean, marker="o", label=label)
        ax.fill_between(train_sizes, mean - spread, mean + spread, alpha=0.2)
    if best is not None:
        ax.axhline(best, color="black", linestyle="--", linewidth=1, label="the true model, test rows")
    ax.set_xscale("log")
    ax.set_xlabel("training rows")
    ax.set_ylabel("accuracy")
    ax.set_title("Learning curve: logistic regression on the churn table")
    ax.legend(loc="lower right", fontsize="small")
    return figure


def memory_in_seconds(samples: pd.DataFrame) -> pd.DataFrame:
    """MemorySampler.to_pandas() output (bytes, absolute times) as GiB against seconds.

    Seconds count from the first sample of all labels, so that steps sampled one after the other
    (``ms.sample("write")``, then ``ms.sample("train")``) follow each other on one axis.
    """
    if not isinstance(samples, pd.DataFrame) or not isinstance(samples.index, pd.DatetimeIndex):
        raise BookError(
            "Expected the DataFrame of MemorySampler.to_pandas() (absolute times, the default "
            "align=False); got " + type(samples).__name__ + ".")
    if samples.empty:
        raise BookError("The MemorySampler has no samples: run a `with ms.sample(...)` block first.")
    frame = samples / 2**30
    frame.index = (samples.index - samples.index[0]).total_seconds()
    frame.index.name = "seconds"
    return frame


def plot_cluster_memory(samples: pd.DataFrame, limit_gib: float, dataset_gib: float | None = None,
                        title: str = "Cluster memory while the workers stream the table"):
    """Cluster memory of each sampled step on one time axis, with the total memory limit.

    samples: ``MemorySampler.to_pandas()`` (one column per label). limit_gib: the cluster's total
    memory limit. dataset_gib: the table's size in memory, drawn as a second line if given.
    """
    from . import plots

    frame = memory_in_seconds(samples)
    figure, ax = plots.new_figure()
    plots.plot_memory_over_time(frame, title, limit_gib=limit_gib, ax=ax)
    if dataset_gib is not None:
        ax.axhline(dataset_gib, color=plots.COLOURS[3], linestyle=":", linewidth=1.5,
                   label="the table in memory")
    ax.set_xlim(0, frame.index[-1])
    ax.set_ylim(0, 1.1 * max(limit_gib, dataset_gib or 0, float(frame.max().max())))
    ax.legend(loc="lower right", fontsize="small")
    return figure
