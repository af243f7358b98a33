"""Chapter 2 plumbing: the figures and comparisons of "Train small, predict on data larger than memory".

The lesson's code lives in the notebook's cells: the model, the functions that draw a block on a
worker, the lazily generated arrays (``da.map_blocks``), the zarr write and ``MemorySampler``.
``benchmarks/predict_large_data.py`` runs those same cells at full size. What is left here is what
a reader need not type: figures, drawn from the notebook's arrays or from the benchmark's results
(``measure.load_results("predict_large_data")``), and the comparison of two of the benchmark's
timed settings with the spread of their repeats (:func:`compare_throughput`), with clear errors for
inputs they cannot use.
"""

from __future__ import annotations

import textwrap
from typing import Sequence

import numpy as np

from . import BookError, measure, plots

BYTES_PER_GIB = 2**30
NO_DIFFERENCE = "no difference measured here"


def _check_rows(name: str, X, y) -> tuple[np.ndarray, np.ndarray]:
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim != 2 or X.shape[1] != 2 or y.shape != (len(X),):
        raise BookError(
            f"{name}: expected X of shape (rows, 2) and y of shape (rows,), got {X.shape} and "
            f"{y.shape}. Compute a slice of the lazy arrays first, e.g. X_large[:1000].compute()."
        )
    return X, y


def plot_training_and_new_rows(X_train, y_train, X_new, y_new, axes=None):
    """Two scatter plots side by side: the training rows, and new rows drawn from the classes'
    Gaussians, each class in its colour, on the same axes limits."""
    panels = [("training rows", *_check_rows("training rows", X_train, y_train)),
              ("new rows", *_check_rows("new rows", X_new, y_new))]
    if axes is None:
        figure, axes = plots.new_figure(ncols=2, height=3.4)
        axes = axes.ravel()
    for ax, (title, X, y) in zip(axes, panels):
        for label in (0, 1):
            in_class = y == label
            ax.scatter(X[in_class, 0], X[in_class, 1], s=4, alpha=0.5, label=f"class {label}",
                       color=plots.COLOURS[label])
        ax.set_title(f"{len(X):,} {title}")
        ax.set_xlabel("feature 0")
    axes[0].set_ylabel("feature 1")
    axes[0].legend(fontsize="small", markerscale=3)
    limits = np.concatenate([X for _, X, _ in panels])
    for ax in axes:
        ax.set_xlim(limits[:, 0].min() - 0.2, limits[:, 0].max() + 0.2)
        ax.set_ylim(limits[:, 1].min() - 0.2, limits[:, 1].max() + 0.2)
    return axes


def _check_curve(points) -> list[dict]:
    needed = {"chunk_rows", "rows_per_second"}
    if not points or not all(isinstance(point, dict) and needed <= set(point) for point in points):
        raise BookError(
            "points must be a non-empty list of dicts with 'chunk_rows' and 'rows_per_second', "
            "as results['summary']['chunk_size_curve'] holds them (run the benchmark first)."
        )
    return sorted(points, key=lambda point: point["chunk_rows"])


def plot_chunk_size_curve(points, title="Throughput of scoring against block size", ax=None):
    """Million rows per second against rows per block (log scale), each point labelled."""
    points = _check_curve(points)
    if ax is None:
        figure, ax = plots.new_figure()
    rows = [point["chunk_rows"] for point in points]
    throughput = [point["rows_per_second"] / 1e6 for point in points]
    ax.plot(rows, throughput, marker="o")
    for x, value in zip(rows, throughput):
        ax.annotate(f"{value:.2g}", (x, value), textcoords="offset points", xytext=(0, 5),
                    ha="center", fontsize="small")
    ax.set_xscale("log")
    ax.set_xlabel("rows per block")
    ax.set_ylabel("million rows per second")
    ax.set_ylim(0, 1.15 * max(throughput))
    ax.set_title(title)
    return ax


def big_run(results: dict) -> dict:
    """The benchmark's run on the largest array (its entry in ``results["runs"]``)."""
    runs = [run for run in results.get("runs", []) if run.get("kind") == "big run"]
    if len(runs) != 1:
        raise BookError(
            f"expected one 'big run' in the results, found {len(runs)}: pass the document "
            "measure.load_results('predict_large_data') returns, from a complete benchmark run."
        )
    return runs[0]


def plot_big_run_memory(results: dict, ax=None):
    """The cluster's memory during the benchmark's big run (from ``MemorySampler``), from zero,
    with the idle cluster's memory as a dashed line when the results hold it."""
    run = big_run(results)
    memory = run.get("memory_over_time")
    if not memory:
        raise BookError("the big run holds no memory samples ('memory_over_time').")
    seconds = np.array([float(second) for second in memory])
    gib = np.array(list(memory.values()), dtype=float)
    order = np.argsort(seconds)
    if ax is None:
        figure, ax = plots.new_figure()
    ax.plot(seconds[order], gib[order], label="cluster memory while predicting")
    if run.get("idle_memory_gib") is not None:
        ax.axhline(run["idle_memory_gib"], color="black", linestyle="--", linewidth=1,
                   label="idle cluster")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("cluster memory (GiB)")
    ax.set_ylim(0, max(1.0, 1.3 * gib.max()))
    ax.set_title(f"Predicting {run['logical_gib']:.3g} GiB into zarr on 2 workers")
    ax.legend(loc="lower right", fontsize="small")
    return ax


def throughput_repeats(results: dict, setting: str, method: str) -> list[float]:
    """Rows per second of every timed repeat of ``method`` under ``setting`` in the benchmark's
    results (``measure.load_results("predict_large_data")``)."""
    runs = [run for run in results.get("runs", []) if run.get("kind") == "throughput"]
    repeats = [float(run["rows_per_second"]) for run in runs
               if run.get("setting") == setting and run.get("method") == method]
    if not repeats:
        measured = sorted({(run.get("setting"), run.get("method")) for run in runs})
        raise BookError(
            f"no timed repeats of {method!r} under {setting!r} in the results; they hold "
            f"{len(measured)} (setting, method) pairs: "
            + "; ".join(f"{pair[0]!r}, {pair[1]!r}" for pair in measured[:12])
        )
    return repeats


def verdict(spread: Sequence[float]) -> str:
    """'faster' or 'slower' when the whole spread of a throughput ratio lies above or below 1,
    else 'no difference measured here'."""
    low, high = spread
    if low > 1:
        return "faster"
    if high < 1:
        return "slower"
    return NO_DIFFERENCE


def compare_throughput(results: dict, numerator: Sequence[str], denominator: Sequence[str]) -> dict:
    """Throughput of ``numerator`` over ``denominator``, each a (setting, method) pair of the
    benchmark: the ratio of their medians, its spread over every pairing of their repeats
    (:func:`scaling_ml.measure.ratio_spread`) and the verdict that spread supports."""
    above = throughput_repeats(results, *numerator)
    below = throughput_repeats(results, *denominator)
    spread = measure.ratio_spread(above, below)
    measured = measure.median(above) / measure.median(below)
    return dict(numerator=list(numerator), denominator=list(denominator), measured=measured,
                spread=spread, verdict=verdict(spread), repeats=[len(above), len(below)])


def format_comparison(comparison: dict) -> str:
    """``0.74 (0.65 to 0.79 over 3 x 3 repeats): slower`` for a :func:`compare_throughput` result."""
    low, high = comparison["spread"]
    repeats = " x ".join(str(count) for count in comparison["repeats"])
    return (f"{comparison['measured']:.2f} ({low:.2f} to {high:.2f} over {repeats} repeats): "
            f"{comparison['verdict']}")


def plot_throughput_by_settings(rates: dict, methods: Sequence[str] | None = None,
                                title="Throughput on 2 cores, by process and cluster settings",
                                ax=None, ranges: dict | None = None):
    """Grouped bars of million rows/s: one group per setting (a column of the benchmark's
    table), one bar per method.

    ``rates``: {setting: {method: rows per second}}, as ``results["summary"]["rows_per_second"]``
    holds them; a method missing from a setting leaves a gap. ``methods``: the bars' order
    (default: as found). ``ranges``: {setting: {method: [lowest, highest]}} rows per second of the
    repeats (``results["summary"]["rows_per_second_range"]``), drawn as a line through each bar.
    """
    if not rates or not all(isinstance(by_method, dict) and by_method for by_method in rates.values()):
        raise BookError(
            "rates must be {setting: {method: rows per second}}, as "
            "results['summary']['rows_per_second'] holds them; got an empty or flat mapping."
        )
    if ax is None:
        figure, ax = plots.new_figure(width=9)
    settings = list(rates)
    if methods is None:
        methods = list(dict.fromkeys(method for by_method in rates.values() for method in by_method))
    width = 0.8 / len(methods)
    for number, method in enumerate(methods):
        points = [(index + (number - (len(methods) - 1) / 2) * width, rates[setting][method] / 1e6)
                  for index, setting in enumerate(settings) if method in rates[setting]]
        bars = ax.bar([x for x, _ in points], [value for _, value in points], width, label=method,
                      color=plots.COLOURS[number % len(plots.COLOURS)])
        tops = [value for _, value in points]
        if ranges is not None:
            spans = [ranges.get(setting, {}).get(method) for setting in settings
                     if method in rates[setting]]
            if any(span is None for span in spans):
                raise BookError(
                    f"ranges lacks {method!r} under a setting rates has: pass "
                    "results['summary']['rows_per_second_range'] of the same results.")
            ax.vlines([x for x, _ in points], [low / 1e6 for low, _ in spans],
                      [high / 1e6 for _, high in spans], color="black", linewidth=1)
            tops = [max(top, high / 1e6) for top, (_, high) in zip(tops, spans)]
        for bar, top, (_, value) in zip(bars, tops, points):
            ax.annotate(f"{value:.0f}", (bar.get_x() + bar.get_width() / 2, top),
                        ha="center", va="bottom", xytext=(0, 2), textcoords="offset points",
                        fontsize="x-small")
    # Long names on two lines, so that neighbouring groups' labels do not run into each other.
    ax.set_xticks(range(len(settings)), [textwrap.fill(setting, 20) for setting in settings])
    ax.set_ylabel("million rows per second")
    ax.set_ylim(0, 1.45 * max(rate for by_method in rates.values() for rate in by_method.values()) / 1e6)
    ax.set_title(title)
    ax.legend(fontsize="small", loc="upper center", ncol=3)
    return ax
