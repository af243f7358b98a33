"""Chapter 3 benchmark: incremental training's memory, accuracy and Hyperband's budget.

Run: .venv/bin/python -m benchmarks.incremental_training          (writes benchmarks/results/)
     .venv/bin/python -m benchmarks.incremental_training --quick  (small sizes, a temp dir)

It measures the chapter's own code: ``make_stream``, ``partial_fit_blocks`` and the Hyperband
``parameters`` come from the cells of notebooks/03_incremental_training.ipynb tagged
``reused-by-benchmark``.

Claims:
1. on one worker, the peak memory above the idle worker's during ``Incremental.fit`` on 10x the
   data is within 1.5x of the peak on 1x the data, and below a quarter of the 10x data's size
   (memory follows the block size, not the data size). The same runs on two workers are recorded
   without a goal: there a free worker can generate blocks ahead of the training chain;
2. ``Incremental(shuffle_blocks=False)`` computes the chapter's ``partial_fit`` loop's model
   (accuracies within 0.5 point);
3. Hyperband's best validation score is within 1 point of the best of the same candidates
   trained fully (``IncrementalSearchCV``, ``decay_rate=None``), with at most 1/3 of the
   ``partial_fit`` calls.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import numpy as np
from benchmarks._notebook_cells import run_reused_cells
from dask_ml.model_selection import HyperbandSearchCV, IncrementalSearchCV
from dask_ml.wrappers import Incremental
from distributed.diagnostics import MemorySampler
from sklearn.linear_model import SGDClassifier

from scaling_ml import cluster, measure, plots
from scaling_ml import incremental_training as chapter

NAME = "incremental_training"
IDLE_SECONDS = 2
INTERVAL = 0.05


def chapter_cells() -> dict:
    """The notebook's make_stream, partial_fit_blocks and parameters (its reused cells)."""
    return run_reused_cells("03_incremental_training.ipynb")


def sgd():
    return SGDClassifier(loss="log_loss", random_state=0)


def memory_runs(cells, n_workers, sizes, rows_per_block):
    """Peak memory above idle during Incremental.fit for each number of blocks, on a fresh cluster,
    measured as the chapter does it (MemorySampler, the idle baseline subtracted)."""
    client = cluster.get_client(n_workers=n_workers)
    try:
        make_stream = cells["make_stream"]
        warm_X, warm_y = make_stream(n_blocks=2, rows_per_block=rows_per_block)
        Incremental(sgd(), random_state=0).fit(warm_X, warm_y, classes=[0, 1])
        sampler = MemorySampler()
        with sampler.sample("idle", client=client, interval=INTERVAL):
            time.sleep(IDLE_SECONDS)
        runs = []
        for n_blocks in sizes:
            X, y = make_stream(n_blocks=n_blocks, rows_per_block=rows_per_block)
            label = f"{n_blocks} blocks ({X.nbytes / 2**20:,.0f} MiB)"
            with measure.timer() as elapsed:
                with sampler.sample(label, client=client, interval=INTERVAL):
                    Incremental(sgd(), random_state=0).fit(X, y, classes=[0, 1])
            runs.append({"part": "memory", "n_workers": n_workers, "n_blocks": n_blocks,
                         "rows_per_block": rows_per_block, "label": label,
                         "data_mib": round(X.nbytes / 2**20, 1), "seconds": round(elapsed(), 2)})
        memory_mib = sampler.to_pandas(align=True) / 2**20
        idle_mib = float(memory_mib.pop("idle").median())
        above_idle = memory_mib - idle_mib
        for run in runs:
            run["idle_mib"] = round(idle_mib, 1)
            run["peak_above_idle_mib"] = round(float(above_idle[run["label"]].max()), 1)
            print(run, flush=True)
        return runs, above_idle
    finally:
        client.close()


def accuracy_run(cells, n_blocks, rows_per_block):
    """Incremental in the stored block order against the chapter's partial_fit loop."""
    client = cluster.get_client(n_workers=2)
    try:
        make_stream, partial_fit_blocks = cells["make_stream"], cells["partial_fit_blocks"]
        X, y = make_stream(n_blocks=n_blocks, rows_per_block=rows_per_block)
        X_test, y_test = (array.compute() for array in make_stream(1, rows_per_block, seed=1))
        incremental = Incremental(sgd(), shuffle_blocks=False).fit(X, y, classes=[0, 1])
        loop = partial_fit_blocks(sgd(), X, y, classes=[0, 1])
        run = {"part": "accuracy", "n_blocks": n_blocks, "rows_per_block": rows_per_block,
               "incremental_accuracy": round(float(incremental.score(X_test, y_test)), 4),
               "loop_accuracy": round(float(loop.score(X_test, y_test)), 4),
               "same_coefficients": bool(np.allclose(incremental.estimator_.coef_, loop.coef_))}
        print(run, flush=True)
        return run
    finally:
        client.close()


def hyperband_runs(cells, n_rows, n_blocks, max_iter):
    client = cluster.get_client(n_workers=2)
    try:
        make_stream = cells["make_stream"]
        X, y = make_stream(n_blocks=n_blocks, rows_per_block=n_rows // n_blocks)
        X_test, y_test = (array.compute() for array in make_stream(1, n_rows // n_blocks, seed=1))
        hyperband = HyperbandSearchCV(sgd(), cells["parameters"], max_iter=max_iter, random_state=0)
        budget = hyperband.metadata
        with measure.timer() as elapsed:
            hyperband.fit(X, y, classes=[0, 1])
        hyperband_seconds = elapsed()
        # The same candidates as one-value grids, each trained for max_iter calls.
        candidates = [{name: [value] for name, value in params.items()}
                      for params in hyperband.cv_results_["params"]]
        full = IncrementalSearchCV(sgd(), candidates, n_initial_parameters="grid",
                                   max_iter=max_iter, decay_rate=None, random_state=0)
        with measure.timer() as elapsed:
            full.fit(X, y, classes=[0, 1])
        full_seconds = elapsed()
        runs = [
            {"part": "search", "search": "HyperbandSearchCV", "n_models": len(candidates),
             "partial_fit_calls": int(sum(hyperband.cv_results_["partial_fit_calls"])),
             "planned_partial_fit_calls": int(budget["partial_fit_calls"]),
             "planned_models": int(budget["n_models"]),
             "best_score": round(float(hyperband.best_score_), 4),
             "test_score": round(float(hyperband.score(X_test, y_test)), 4),
             "seconds": round(hyperband_seconds, 2)},
            {"part": "search", "search": "IncrementalSearchCV (every candidate fully)",
             "n_models": len(full.cv_results_["params"]),
             "partial_fit_calls": int(sum(full.cv_results_["partial_fit_calls"])),
             "best_score": round(float(full.best_score_), 4),
             "test_score": round(float(full.score(X_test, y_test)), 4),
             "seconds": round(full_seconds, 2)},
        ]
        for run in runs:
            print(run, flush=True)
        return runs
    finally:
        client.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, results in a temp dir")
    arguments = parser.parse_args(argv)
    if arguments.quick:
        sizes, rows, accuracy_size, search = (2, 20), 50_000, (5, 5_000), (20_000, 10, 9)
        results_dir = figures_dir = tempfile.mkdtemp(prefix="bench-incremental-")
    else:
        # Scale up: on a real cluster use more and bigger blocks (the chapter's advice: a few
        # blocks must fit easily in one worker's memory).
        sizes, rows, accuracy_size, search = (4, 40), 500_000, (20, 50_000), (200_000, 20, 27)
        results_dir = figures_dir = None
    start = time.perf_counter()
    cells = chapter_cells()
    runs, claims = [], []
    profiles = {}
    for n_workers in (1, 2):
        memory, profiles[n_workers] = memory_runs(cells, n_workers, sizes, rows)
        runs += memory
    one_worker = [run for run in runs if run["part"] == "memory" and run["n_workers"] == 1]
    small, large = one_worker
    claims.append(measure.Claim(
        "1 worker: peak memory above idle during Incremental.fit, 10x data / 1x data",
        round(large["peak_above_idle_mib"] / small["peak_above_idle_mib"], 3), "x", 1.5, "<="))
    claims.append(measure.Claim(
        "1 worker: peak memory above idle during Incremental.fit on 10x data / size of that data",
        round(large["peak_above_idle_mib"] / large["data_mib"], 3), "x", 0.25, "<="))
    block_mib = rows * 20 * 8 / 2**20
    figure, axes = plots.new_figure(ncols=2)
    for ax, (n_workers, above_idle) in zip(axes[0], profiles.items()):
        chapter.plot_memory_above_idle(above_idle, block_mib, f"{n_workers} worker(s)", ax=ax)
    plots.save_figure(figure, f"{NAME}_memory", figures_dir)

    accuracy = accuracy_run(cells, *accuracy_size)
    runs.append(accuracy)
    claims.append(measure.Claim(
        "|accuracy Incremental(shuffle_blocks=False) - accuracy of the chapter's partial_fit loop|",
        round(100 * abs(accuracy["incremental_accuracy"] - accuracy["loop_accuracy"]), 3),
        "points", 0.5, "<="))

    searches = hyperband_runs(cells, *search)
    runs += searches
    hyperband, full = searches
    claims.append(measure.Claim(
        "best score: every candidate fully minus Hyperband (points)",
        round(100 * (full["best_score"] - hyperband["best_score"]), 3), "points", 1.0, "<="))
    claims.append(measure.Claim(
        "partial_fit calls: Hyperband / every candidate fully",
        round(hyperband["partial_fit_calls"] / full["partial_fit_calls"], 4), "x", 1 / 3, "<="))

    path = measure.write_results(
        NAME, claims=claims, runs=runs, results_dir=results_dir,
        extra={"settings": {"memory_blocks": sizes, "rows_per_block": rows,
                            "accuracy": accuracy_size, "search": search,
                            "quick": arguments.quick},
               "total_seconds": round(time.perf_counter() - start, 1)})
    for claim in claims:
        print(measure.format_claim(claim))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
