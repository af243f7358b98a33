"""Chapter 7 plumbing: batch prediction and hyper-parameter search without dask-ml.

The chapter's lessons (``da.map_blocks(model.predict, ...)``, ``map_partitions``, a randomized
search with plain futures, Optuna trials on the workers, ``HalvingRandomSearchCV`` on joblib's
Dask backend) are written out in the notebook's cells. This module holds only what a reader need
not type:

* :func:`check_blocks_hold_whole_rows` turns the mistake that makes ``map_blocks(
  model.predict_proba, ...)`` fail deep inside a task (the columns split over several blocks)
  into a clear error;
* :func:`halving_partial_fit_calls` converts the work of a ``HalvingRandomSearchCV`` (full
  ``fit`` calls on growing samples) into the unit of the other routes, ``partial_fit`` calls on
  one training block;
* :func:`route_comparison` and the ``plot_*`` functions read and draw the benchmark's results
  (``benchmarks/results/without_dask_ml.json``) and a search's learning curves.
"""

from __future__ import annotations

import numpy as np

from . import BookError, plots

# Notebook 07 catches this name (`except chapter.WithoutDaskMLError`); it is the book's BookError.
WithoutDaskMLError = BookError
# The search routes the benchmark compares, in the order the figures show them.
ROUTES = {
    "reference": "randomized search\n(plain futures)",
    "optuna": "Optuna trials\n(successive halving pruner)",
    "halving": "HalvingRandomSearchCV\n(joblib's Dask backend)",
    "hyperband": "dask-ml\nHyperbandSearchCV",
}
# Short names for the figures' axes.
ROUTE_TICKS = {"reference": "reference\n(futures)", "optuna": "Optuna", "halving": "Halving-\nRandomSearchCV",
               "hyperband": "dask-ml\nHyperband"}
PREDICTION_METHODS = ("ParallelPostFit", "map_blocks")


def check_blocks_hold_whole_rows(X) -> None:
    """Raise :class:`BookError` unless every block of the 2-d dask array ``X`` holds all
    of its columns, as ``da.map_blocks(model.predict_proba, X, ...)`` (or ``transform``) needs.

    ``map_blocks`` hands each block to the function as it is (only an axis given as
    ``drop_axis`` is joined first, as for ``predict``). A block with only some of the columns makes
    scikit-learn fail inside a task on a worker ("X has 1 features, but ... is expecting 2
    features"); ``ParallelPostFit`` rechunks such an array itself.
    """
    shape = getattr(X, "shape", None)
    numblocks = getattr(X, "numblocks", None)
    if shape is None or numblocks is None:
        raise BookError(
            f"Expected a dask array, got {type(X).__name__}. Make one with "
            "da.from_array(X, chunks=(ROWS, -1)), or call model.predict(X) directly on "
            "in-memory data.")
    if len(shape) != 2:
        raise BookError(
            f"Expected a 2-d array (rows, features), got {len(shape)} dimension(s) of shape "
            f"{shape}: reshape a single feature with X[:, None].")
    if numblocks[1] != 1:
        raise BookError(
            f"The {shape[1]} columns of X are split over {numblocks[1]} blocks, so each block "
            "would reach the model (predict_proba, transform) with only some features. Put all "
            "columns in one block first: X = X.rechunk({1: -1}).")


def halving_partial_fit_calls(cv_results, n_samples: int, n_train: int, epochs: int,
                              rows_per_block: int) -> float:
    """The work of a finished ``HalvingRandomSearchCV`` in ``partial_fit`` calls on one block.

    Each row of ``cv_results`` is one ``fit`` of one candidate on ``n_resources`` of the
    ``n_samples`` rows given to ``fit``; with a single validation split, the training part of
    that sample is ``n_resources * n_train / n_samples`` rows, and ``SGDClassifier(max_iter=
    epochs, tol=None)`` passes over them ``epochs`` times. One ``partial_fit`` call passes once
    over ``rows_per_block`` rows, so the fit counts as ``epochs * rows / rows_per_block`` calls.
    """
    from scaling_ml import require_positive_int

    for name, value in (("n_samples", n_samples), ("n_train", n_train), ("epochs", epochs),
                        ("rows_per_block", rows_per_block)):
        require_positive_int(name, value)
    if n_train > n_samples:
        raise BookError(
            f"n_train ({n_train}) cannot exceed n_samples ({n_samples}): n_samples is the number "
            "of rows given to fit, training and validation rows together.")
    if "n_resources" not in cv_results:
        raise BookError(
            "cv_results has no 'n_resources': pass the cv_results_ of a fitted "
            "HalvingRandomSearchCV or HalvingGridSearchCV.")
    fitted_rows = np.asarray(cv_results["n_resources"], dtype=float) * n_train / n_samples
    return float(epochs * fitted_rows.sum() / rows_per_block)


# ---------------------------------------------------------------------------------------------
# The benchmark's results


def _runs(results: dict, part: str) -> list[dict]:
    runs = [run for run in results.get("runs", []) if run.get("part") == part]
    if not runs:
        raise BookError(
            f"The results have no {part!r} runs: run `python -m benchmarks.without_dask_ml`.")
    return runs


def route_comparison(results: dict):
    """Per search route, medians over the seeds: best validation accuracy, partial_fit calls,
    seconds, and, paired with the reference run of the same seed, the points below the
    reference's best score and the share of its partial_fit calls."""
    import pandas as pd

    frame = pd.DataFrame(_runs(results, "search"))
    reference = frame[frame["route"] == "reference"].set_index("seed")
    if reference.empty:
        raise BookError("The results have no 'reference' route to compare with.")
    frame["points_below_reference"] = 100 * (
        frame["seed"].map(reference["best_score"]) - frame["best_score"])
    frame["share_of_reference_calls"] = (
        frame["partial_fit_calls"] / frame["seed"].map(reference["partial_fit_calls"]))
    columns = ["best_score", "partial_fit_calls", "seconds", "points_below_reference",
               "share_of_reference_calls"]
    medians = frame.groupby("route")[columns].median()
    medians["seeds"] = frame.groupby("route")["seed"].nunique()
    return medians.reindex([route for route in ROUTES if route in medians.index])


def prediction_medians(results: dict, statistic=np.median) -> dict:
    """Median rows per second of each prediction method, on the same persisted chunks (or another
    ``statistic`` of the repeats, such as ``np.min``)."""
    runs = _runs(results, "prediction")
    return {method: float(statistic([run["rows_per_second"] for run in runs
                                     if run["method"] == method]))
            for method in PREDICTION_METHODS}


# ---------------------------------------------------------------------------------------------
# Figures


def plot_score_histories(histories, title: str, max_calls: int | None = None, ax=None):
    """Validation score against partial_fit calls, one line per candidate (or trial).

    ``histories`` is a list of lists of scores, the score after each call.
    """
    if ax is None:
        figure, ax = plots.new_figure()
    for history in histories:
        calls = np.arange(1, len(history) + 1)
        ax.plot(calls, history, marker="." if len(history) < 3 else None, linewidth=1, alpha=0.6)
    if max_calls is not None:
        ax.set_xlim(0, max_calls + 1)
    ax.set_xlabel("partial_fit calls")
    ax.set_ylabel("validation accuracy")
    ax.set_title(title)
    return ax


def plot_route_comparison(results: dict):
    """Three panels, one bar per route: best validation accuracy, partial_fit calls and wall
    time; each bar is the median over the seeds, each dot one seed."""
    import pandas as pd

    frame = pd.DataFrame(_runs(results, "search"))
    routes = [route for route in ROUTES if route in set(frame["route"])]
    figure, axes = plots.new_figure(ncols=3, width=12, height=3.8)
    panels = (("best_score", "best validation accuracy"), ("partial_fit_calls", "partial_fit calls"),
              ("seconds", "wall time (s)"))
    for ax, (column, label) in zip(axes[0], panels):
        for position, route in enumerate(routes):
            values = frame.loc[frame["route"] == route, column].to_numpy(dtype=float)
            ax.bar(position, np.median(values), color=plots.COLOURS[position], alpha=0.8)
            ax.plot(np.full(len(values), position), values, "o", color="black", markersize=3)
        ax.set_xticks(range(len(routes)), [ROUTE_TICKS[route] for route in routes], fontsize=8)
        ax.set_title(label)
    best = frame.loc[frame["route"] == "reference", "best_score"]
    if len(best):
        low = min(frame["best_score"].min(), best.median() - 0.015)
        axes[0][0].set_ylim(low - 0.005, frame["best_score"].max() + 0.005)
        axes[0][0].axhline(best.median() - 0.01, color="black", linestyle="--", linewidth=1,
                           label="reference - 1 point")
        axes[0][0].legend(loc="lower right", fontsize="x-small")
        calls = frame.loc[frame["route"] == "reference", "partial_fit_calls"].median()
        axes[0][1].axhline(calls / 3, color="black", linestyle="--", linewidth=1,
                           label="1/3 of the reference")
        axes[0][1].legend(loc="upper right", fontsize="x-small")
    figure.tight_layout()
    return figure


def plot_prediction_throughput(results: dict, ax=None):
    """Rows per second of each prediction method, every repeat as a dot, the median as a bar."""
    if ax is None:
        figure, ax = plots.new_figure(width=5)
    runs = _runs(results, "prediction")
    ax.set_ylim(0, 1.15 * max(run["rows_per_second"] for run in runs) / 1e6)  # room for the labels
    for position, method in enumerate(PREDICTION_METHODS):
        values = np.array([run["rows_per_second"] for run in runs if run["method"] == method]) / 1e6
        ax.bar(position, np.median(values), color=plots.COLOURS[position], alpha=0.8)
        ax.plot(np.full(len(values), position), values, "o", color="black", markersize=3)
        # The median's label above the highest dot, clear of the dots.
        ax.annotate(f"median {np.median(values):.1f}", (position, values.max()), ha="center",
                    va="bottom", xytext=(0, 4), textcoords="offset points")
    ax.set_xticks(range(len(PREDICTION_METHODS)), PREDICTION_METHODS)
    ax.set_ylabel("million rows per second")
    ax.set_title("predict on the same persisted chunks")
    return ax
