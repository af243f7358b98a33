"""Plumbing for chapter 6, "When scaling goes wrong": reading the benchmark's results, its figure.

Every failure the chapter shows is caused, diagnosed and fixed in the notebook's own cells
(``client.scatter``, killing a worker, ``client.get_worker_logs()``, the functions the workers
run). What is left here is what a reader need not learn: reading ``benchmarks/results/
when_scaling_goes_wrong.json`` back as tables, with clear errors, and drawing the chunk-overhead figure.
"""

from __future__ import annotations

from scaling_ml import BookError, measure, plots

BENCHMARK_NAME = "when_scaling_goes_wrong"
# The columns each case's runs must have, for the tables and the figure.
CASE_COLUMNS = {
    "6": ("variant", "data_mb", "tasks", "seconds", "repeats"),
    "7": ("rows_per_chunk", "tasks", "seconds", "repeats"),
    "8": ("method", "variant", "accuracy"),
}


def load_results(results_dir=None) -> dict:
    """The benchmark's result document (``benchmarks/results/when_scaling_goes_wrong.json``)."""
    return measure.load_results(BENCHMARK_NAME, results_dir)


def runs_table(document: dict, case: str):
    """The runs of one case of the benchmark as a DataFrame, one row per run, in the file's order."""
    import pandas as pd

    if case not in CASE_COLUMNS:
        raise BookError(f"Unknown case {case!r}: the benchmark measures cases {sorted(CASE_COLUMNS)}.")
    if not isinstance(document, dict):
        raise BookError(
            f"runs_table needs the benchmark's result document, got {type(document).__name__}: "
            "read it with chapter.load_results().")
    runs = [run for run in document.get("runs", []) if run.get("case") == case]
    if not runs:
        raise BookError(
            f"No runs for case {case!r} in the results: run `python -m benchmarks.when_scaling_goes_wrong` "
            "(or `make bench`) to measure it.")
    # Per run: a DataFrame of runs with and without a field would fill the gaps with NaN.
    missing = [column for column in CASE_COLUMNS[case] if any(column not in run for run in runs)]
    if missing:
        raise BookError(
            f"The runs of case {case!r} lack {missing}: the results file is from an older "
            "benchmark; run `python -m benchmarks.when_scaling_goes_wrong` again.")
    return pd.DataFrame(runs).drop(columns=["case"])


def plot_chunk_overhead(runs, ax=None):
    """Seconds per predict pass against rows per chunk (log-log), from the case-7 runs.

    The line joins the medians; the dots are the single passes, so the spread stays visible.
    """
    import pandas as pd

    needed = CASE_COLUMNS["7"]
    if not isinstance(runs, pd.DataFrame) or not set(needed) <= set(runs.columns):
        found = list(runs.columns) if isinstance(runs, pd.DataFrame) else type(runs).__name__
        raise BookError(
            f"plot_chunk_overhead needs the case-7 runs as a table with columns {list(needed)}, got "
            f"{found}: pass chapter.runs_table(results, \"7\").")
    if len(runs) < 2:
        raise BookError("plot_chunk_overhead needs the runs of at least two chunk sizes.")
    if ax is None:
        figure, ax = plots.new_figure()
    runs = runs.sort_values("rows_per_chunk")
    for rows, repeats in zip(runs["rows_per_chunk"], runs["repeats"]):
        ax.scatter([rows] * len(repeats), repeats, s=12, color=plots.COLOURS[0], alpha=0.35,
                   linewidths=0)
    ax.plot(runs["rows_per_chunk"], runs["seconds"], marker="o", color=plots.COLOURS[0],
            label="median of the passes")
    for index, (rows, seconds, tasks) in enumerate(zip(runs["rows_per_chunk"], runs["seconds"], runs["tasks"])):
        # Labels alternate above and below the line, so that neighbouring chunk sizes stay readable.
        ax.annotate(f"{tasks} task{'s' if tasks != 1 else ''}", (rows, seconds),
                    xytext=(4, 6 if index % 2 == 0 else -12), textcoords="offset points", fontsize="small")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("rows per chunk")
    ax.set_ylabel("seconds for one predict pass")
    ax.set_title("Tiny chunks: scheduler overhead dominates")
    ax.legend(loc="upper right", fontsize="small")
    return ax
