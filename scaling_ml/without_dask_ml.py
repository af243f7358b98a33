"""Chapter 7 plumbing: batch prediction and hyper-parameter search without dask-ml.

The chapter's lessons (``da.map_blocks(model.predict, ...)``, ``map_partitions``, a model sent
once with ``client.scatter``, a randomized search with plain futures, Optuna trials on the workers,
``HalvingRandomSearchCV`` on joblib's Dask backend, a task stream recorded with
``get_task_stream``) are written out in the notebook's cells. This module holds only what a reader
need not type:

* :func:`check_blocks_hold_whole_rows` turns the mistake that makes ``map_blocks(
  model.predict_proba, ...)`` fail deep inside a task (the columns split over several blocks)
  into a clear error;
* :func:`halving_partial_fit_calls` converts the work of a ``HalvingRandomSearchCV`` (full
  ``fit`` calls on growing samples) into the unit of the other routes, ``partial_fit`` calls on
  one training block;
* :func:`busy_by_round` reads a recorded task stream: how many tasks (and fits) each round had,
  and how busy it kept the workers;
* :func:`describe_routes`, :func:`summarize_routes` and :func:`describe_timing` put the
  benchmark's results (``benchmarks/results/without_dask_ml.json``) in words, and
  :func:`plot_score_histories` draws a search's learning curves. The benchmark draws its own
  figures (``benchmarks/_without_dask_ml_figures.py``).
"""

from __future__ import annotations

import re

import numpy as np

from . import BookError, measure, plots

# The search routes the benchmark compares, in the order the figures and tables show them.
ROUTES = {
    "reference": "randomized search, every candidate fully (plain futures)",
    "single_machine": "the same search on one machine (joblib, n_jobs=-1)",
    "even_split": "a third of the budget: every candidate a third of the calls",
    "fewer_full": "a third of the budget: a third of the candidates, fully",
    "optuna": "Optuna + successive halving pruner (DaskStorage)",
    "optuna_journal": "Optuna + successive halving pruner (journal file)",
    "halving": "HalvingRandomSearchCV (joblib's Dask backend)",
    "hyperband": "dask-ml HyperbandSearchCV",
}
PREDICTION_METHODS = ("ParallelPostFit", "map_blocks")
MODEL_PASSING = ("inside every task", "scattered once")
# The benchmark's timed parts: the key naming the two settings of each, in the order compared.
TIMED_PARTS = {"model_passing": ("passing", MODEL_PASSING), "prediction": ("method", PREDICTION_METHODS)}
# joblib's Dask backend names each task after the batch of calls it runs.
_JOBLIB_BATCH = re.compile(r"batch_of_.*?_(\d+)_calls")


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
# Task streams


def _compute_interval(task: dict):
    spans = [span for span in task.get("startstops", ()) if span.get("action") == "compute"]
    if not spans:
        return None
    return min(span["start"] for span in spans), max(span["stop"] for span in spans)


def _merged(intervals) -> list[list[float]]:
    """The union of ``(start, stop)`` intervals, as disjoint ``[start, stop]`` pairs in order."""
    merged: list[list[float]] = []
    for start, stop in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], stop)
        else:
            merged.append([start, stop])
    return merged


def busy_by_round(tasks, n_threads: int, calls_per_round=None) -> list[dict]:
    """Split a recorded task stream into rounds and say how busy each kept the workers.

    ``tasks`` is what ``get_task_stream`` recorded (``stream.data``); ``n_threads`` the worker
    threads of the cluster (one per worker here). Without ``calls_per_round`` the whole stream is
    one round. With it (say ``[49, 17, 6, 2]`` fits per round of a ``HalvingRandomSearchCV``), the
    tasks are taken in the order they started and each round gets tasks until it has its calls; a
    task of joblib's Dask backend counts the calls its name says (``batch_of_..._3_calls``), any
    other task one.

    Each round: ``tasks``, ``calls``, ``seconds`` (first start to last stop), ``busy_share`` (the
    time each worker spent computing, over ``n_threads * seconds``) and ``most_at_once`` (the most
    workers computing at the same moment). A worker's compute intervals are merged first: the
    times a task stream records for one worker can overlap by a few milliseconds or more, as they
    are taken on the worker and shifted to the scheduler's clock.
    """
    from scaling_ml import require_positive_int

    require_positive_int("n_threads", n_threads)
    timed = []
    for number, task in enumerate(tasks):
        interval = _compute_interval(task)
        if interval is not None:
            match = _JOBLIB_BATCH.search(str(task.get("key", "")))
            timed.append((*interval, int(match.group(1)) if match else 1, task.get("worker", number)))
    if not timed:
        raise BookError(
            "The task stream has no computed tasks: record it around the computation, "
            "`with get_task_stream() as stream: ...`, then pass stream.data.")
    timed.sort()
    if calls_per_round is None:
        groups = [timed]
    else:
        groups, rest = [], list(timed)
        for wanted in calls_per_round:
            group, calls = [], 0
            while rest and calls < wanted:
                group.append(rest.pop(0))
                calls += group[-1][2]
            if calls != wanted:
                raise BookError(
                    f"The task stream holds {calls} calls where round {len(groups)} needs {wanted}: "
                    "record the stream around the whole search, and nothing else.")
            groups.append(group)
        if rest:
            raise BookError(
                f"{len(rest)} tasks are left after the {len(groups)} rounds: record the stream "
                "around the search only.")
    rounds = []
    for group in groups:
        start = min(task[0] for task in group)
        stop = max(task[1] for task in group)
        seconds = max(stop - start, 1e-9)
        by_worker: dict = {}
        for task_start, task_stop, _, worker in group:
            by_worker.setdefault(worker, []).append((task_start, task_stop))
        busy, events = 0.0, []
        for intervals in by_worker.values():
            merged = _merged(intervals)
            busy += sum(b - a for a, b in merged)
            events += [(a, 1) for a, _ in merged] + [(b, -1) for _, b in merged]
        running = most = 0
        for _, change in sorted(events):
            running += change
            most = max(most, running)
        rounds.append({"tasks": len(group), "calls": sum(task[2] for task in group),
                       "seconds": round(seconds, 4),
                       "busy_share": round(min(busy / (n_threads * seconds), 1.0), 4),
                       "most_at_once": most})
    return rounds


# ---------------------------------------------------------------------------------------------
# The benchmark's results


def runs_of(results: dict, part: str) -> list[dict]:
    """The benchmark's runs of one part ("search", "model_passing", "prediction")."""
    runs = [run for run in results.get("runs", []) if run.get("part") == part]
    if not runs:
        raise BookError(
            f"The results have no {part!r} runs: run `python -m benchmarks.without_dask_ml`.")
    return runs


def search_frame(results: dict):
    """One row per route and seed, with the per-seed differences the chapter compares:
    ``points_below_reference`` (the reference's best validation accuracy minus the route's, in
    points, same seed), ``points_above_even_split``, the route's work as a share of the
    reference's (``calls_share``, ``scorings_share``) and its wall time over the reference's
    (``seconds_ratio``)."""
    import pandas as pd

    frame = pd.DataFrame(runs_of(results, "search"))
    by_seed = {route: frame[frame["route"] == route].set_index("seed") for route in ("reference", "even_split")}
    if by_seed["reference"].empty:
        raise BookError("The results have no 'reference' route to compare with.")
    reference = by_seed["reference"]
    frame["points_below_reference"] = 100 * (frame["seed"].map(reference["best_score"]) - frame["best_score"])
    if not by_seed["even_split"].empty:
        frame["points_above_even_split"] = 100 * (
            frame["best_score"] - frame["seed"].map(by_seed["even_split"]["best_score"]))
    frame["calls_share"] = frame["partial_fit_calls"] / frame["seed"].map(reference["partial_fit_calls"])
    frame["seconds_ratio"] = frame["seconds"] / frame["seed"].map(reference["seconds"])
    frame["scorings_share"] = frame["scorings"] / frame["seed"].map(reference["scorings"])
    return frame


def route_comparison(results: dict):
    """Per route, over the seeds: the median and the range (``_low``, ``_high``) of each per-seed
    statistic of :func:`search_frame` and of the wall time; ``seeds`` is how many there were."""
    frame = search_frame(results)
    columns = [column for column in ("best_score", "points_below_reference", "points_above_even_split",
                                     "calls_share", "scorings_share", "partial_fit_calls", "scorings",
                                     "seconds", "seconds_ratio") if column in frame]
    grouped = frame.groupby("route")[columns]
    table = grouped.median()
    for suffix, statistic in (("_low", grouped.min()), ("_high", grouped.max())):
        table = table.join(statistic.add_suffix(suffix))
    table["seeds"] = frame.groupby("route")["seed"].nunique()
    return table.reindex([route for route in ROUTES if route in table.index])


def compare(median: float, low: float, high: float, unit: str, bigger: str, smaller: str,
            none: float = 0.0) -> str:
    """A median difference (or ratio) in words, a difference only when its range excludes ``none``:
    ``bigger`` when the whole range is above it, ``smaller`` when below, else "no difference
    measured here"."""
    verdict = measure.difference_verdict([low - none, high - none], bigger, smaller)
    return f"{median:.2f}{unit} (range {low:.2f} to {high:.2f}): {verdict}"


def seconds_of(results: dict, part: str, key: str) -> dict:
    """The seconds of every repeat of a timed part, by ``key`` (the method, or how the model was
    passed)."""
    seconds: dict[str, list[float]] = {}
    for run in runs_of(results, part):
        seconds.setdefault(run[key], []).append(run["seconds"])
    return seconds


def describe_routes(results: dict) -> str:
    """The search comparison in words, route by route, from the per-seed statistics of
    :func:`search_frame`: each a median over the seeds with its range, called a difference only
    when the range excludes none (:func:`compare`); wall times as per-seed ratios to the
    reference's."""
    table = route_comparison(results)
    frame = search_frame(results)
    row = table.loc["reference"]
    lines = [f"{int(row['seeds'])} seeds. The reference: best validation accuracy {row['best_score']:.4f} "
             f"(range {row['best_score_low']:.4f} to {row['best_score_high']:.4f}), "
             f"{row['partial_fit_calls']:.0f} partial_fit calls, {row['seconds']:.1f} s"]
    for route in table.index.drop("reference"):
        row = table.loc[route]
        lines.append(f"{ROUTES[route]}:")
        lines.append("  points below the reference: " + compare(
            row["points_below_reference"], row["points_below_reference_low"],
            row["points_below_reference_high"], "", "below", "above"))
        if route != "even_split" and "points_above_even_split" in row:
            lines.append("  points above the even split: " + compare(
                row["points_above_even_split"], row["points_above_even_split_low"],
                row["points_above_even_split_high"], "", "above", "below"))
        lines.append(f"  work: partial_fit calls {row['calls_share']:.2f} of the reference's (range "
                     f"{row['calls_share_low']:.2f} to {row['calls_share_high']:.2f}), scorings "
                     f"{row['scorings_share']:.2f} (range {row['scorings_share_low']:.2f} to "
                     f"{row['scorings_share_high']:.2f})")
        ran = frame.loc[frame["route"] == route].get("partial_fit_tasks_run")
        if ran is not None and ran.notna().any():
            counted = frame.loc[frame["route"] == route, "partial_fit_calls"]
            lines.append(f"  partial_fit tasks the workers ran: {ran.median():.0f} (range {ran.min():.0f} to "
                         f"{ran.max():.0f}), where dask-ml counted {counted.median():.0f}")
        lines.append("  wall time / the reference's (same seed): " + compare(
            row["seconds_ratio"], row["seconds_ratio_low"], row["seconds_ratio_high"], "x", "slower",
            "faster", none=1.0))
    return "\n".join(lines)


def summarize_routes(results: dict) -> str:
    """Which routes the seeds can tell apart: from the ranges of :func:`route_comparison`, the
    routes below (or above) the reference, those with no difference measured, and those above the
    even split of a third of the budget."""
    table = route_comparison(results)
    routes = [route for route in table.index if route not in ("reference", "single_machine")]
    groups = {"below the reference": [], "above the reference": [],
              "no difference measured here with the reference": []}
    for route in routes:
        low, high = table.loc[route, ["points_below_reference_low", "points_below_reference_high"]]
        key = ("below the reference" if low > 0 else "above the reference" if high < 0
               else "no difference measured here with the reference")
        groups[key].append(route)
    if "points_above_even_split_low" in table:
        groups["above the even split"] = [
            route for route in routes if route != "even_split"
            and table.loc[route, "points_above_even_split_low"] > 0]
    return "\n".join(f"{label}: {', '.join(members) if members else 'none'}"
                     for label, members in groups.items())


def describe_timing(results: dict, part: str) -> str:
    """One of the benchmark's timed comparisons in words: the ratio of the two settings' median
    seconds, its range over the repeats (:func:`measure.ratio_spread`) and the verdict."""
    if part not in TIMED_PARTS:
        raise BookError(f"part must be one of {sorted(TIMED_PARTS)}, got {part!r}.")
    key, (first, second) = TIMED_PARTS[part]
    seconds = seconds_of(results, part, key)
    low, high = measure.ratio_spread(seconds[first], seconds[second])
    ratio = float(np.median(seconds[first]) / np.median(seconds[second]))
    return (f"{first} / {second}, time ({len(seconds[first])} and {len(seconds[second])} repeats): "
            + compare(ratio, low, high, "x", f"{second} faster", f"{first} faster", none=1.0))


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
