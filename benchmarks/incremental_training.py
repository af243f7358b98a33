"""Chapter 3 benchmark: incremental training's memory, accuracy and Hyperband's budget.

Run: .venv/bin/python benchmarks/incremental_training.py          (writes benchmarks/results/)
     .venv/bin/python benchmarks/incremental_training.py --quick  (small sizes, a temp dir)

Claims (see notebooks/03_incremental_training.ipynb):
1. peak cluster memory during Incremental.fit at 10x the data is within 1.2x of the peak at 1x
   (measured on a 1-worker and on a 2-worker LocalCluster);
2. Incremental's accuracy equals the plain partial_fit loop's over the same blocks in the same
   order (within 0.5 point);
3. Hyperband's best validation score is within 1 point of the best of the same candidates
   trained fully (IncrementalSearchCV, decay_rate=None), with at most 1/3 of the partial_fit calls.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

from dask_ml.model_selection import HyperbandSearchCV, IncrementalSearchCV
from dask_ml.wrappers import Incremental
from scipy.stats import loguniform, uniform
from sklearn.linear_model import SGDClassifier

from scaling_ml import cluster, measure, plots
from scaling_ml import incremental_training as it

NAME = "incremental_training"


def sgd():
    return SGDClassifier(loss="log_loss", random_state=0)


def memory_runs(n_workers, sizes, rows_per_block):
    """Peak cluster memory of Incremental.fit for each number of blocks, on a fresh cluster."""
    client = cluster.get_client(n_workers=n_workers)
    try:
        warm_X, warm_y = it.make_stream(n_blocks=2, rows_per_block=rows_per_block)
        Incremental(sgd(), random_state=0).fit(warm_X, warm_y, classes=[0, 1])
        runs, profiles = [], {}
        for n_blocks in sizes:
            X, y = it.make_stream(n_blocks=n_blocks, rows_per_block=rows_per_block)
            label = f"{n_blocks} blocks ({X.nbytes / 2**20:,.0f} MiB)"
            with measure.sample_cluster_memory(client, label=label, interval=0.05) as sampler:
                with measure.timer() as elapsed:
                    Incremental(sgd(), random_state=0).fit(X, y, classes=[0, 1])
            profiles[label] = measure.memory_frame(sampler)
            runs.append({"part": "memory", "n_workers": n_workers, "n_blocks": n_blocks,
                         "data_mib": round(X.nbytes / 2**20, 1),
                         "peak_gib": round(measure.peak_memory_gib(sampler), 4),
                         "seconds": round(elapsed(), 2)})
            print(runs[-1], flush=True)
        return runs, profiles
    finally:
        client.close()


def accuracy_run(n_blocks, rows_per_block):
    client = cluster.get_client(n_workers=2)
    try:
        X, y = it.make_stream(n_blocks=n_blocks, rows_per_block=rows_per_block, random_state=0)
        X_test, y_test = it.make_stream(n_blocks=1, rows_per_block=rows_per_block, random_state=1)
        X_test, y_test = X_test.compute(), y_test.compute()
        incremental = Incremental(sgd(), random_state=0).fit(X, y, classes=[0, 1])
        loop = it.partial_fit_loop(sgd(), X, y, classes=[0, 1], random_state=0)
        run = {"part": "accuracy", "n_blocks": n_blocks, "rows_per_block": rows_per_block,
               "incremental_accuracy": round(float(incremental.score(X_test, y_test)), 4),
               "loop_accuracy": round(float(loop.score(X_test, y_test)), 4)}
        print(run, flush=True)
        return run
    finally:
        client.close()


def hyperband_runs(n_rows, n_blocks, max_iter):
    parameters = {
        "alpha": loguniform(1e-6, 1e-1),
        "l1_ratio": uniform(0, 1),
        "penalty": ["l2", "l1", "elasticnet"],
        "average": [True, False],
    }
    client = cluster.get_client(n_workers=2)
    try:
        X, y = it.make_stream(n_blocks=n_blocks, rows_per_block=n_rows // n_blocks)
        hyperband = HyperbandSearchCV(sgd(), parameters, max_iter=max_iter, random_state=0)
        budget = hyperband.metadata
        with measure.timer() as elapsed:
            hyperband.fit(X, y, classes=[0, 1])
        hyperband_seconds = elapsed()
        candidates = it.same_candidates(hyperband.cv_results_)
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
             "seconds": round(hyperband_seconds, 2)},
            {"part": "search", "search": "IncrementalSearchCV (every candidate fully)",
             "n_models": len(full.cv_results_["params"]),
             "partial_fit_calls": int(sum(full.cv_results_["partial_fit_calls"])),
             "best_score": round(float(full.best_score_), 4),
             "seconds": round(full_seconds, 2)},
        ]
        for run in runs:
            print(run, flush=True)
        figure, ax = plots.new_figure()
        it.plot_model_history(hyperband.model_history_, "HyperbandSearchCV: every model", ax=ax)
        return runs, figure
    finally:
        client.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, results in a temp dir")
    arguments = parser.parse_args(argv)
    if arguments.quick:
        sizes, rows, acc, search = (2, 20), 20_000, (5, 5_000), (20_000, 10, 9)
        results_dir = figures_dir = tempfile.mkdtemp(prefix="bench-incremental-")
    else:
        # Scale up: on a real cluster use more and bigger blocks (rows_per_block 1_000_000).
        sizes, rows, acc, search = (4, 40), 100_000, (20, 50_000), (200_000, 20, 27)
        results_dir = figures_dir = None
    start = time.perf_counter()
    runs, claims = [], []
    memory_profiles = {}
    for n_workers in (1, 2):
        memory, profiles = memory_runs(n_workers, sizes, rows)
        runs += memory
        memory_profiles[n_workers] = profiles
        ratio = memory[1]["peak_gib"] / memory[0]["peak_gib"]
        claims.append(measure.Claim(
            f"peak memory at 10x data / at 1x, Incremental.fit, {n_workers} worker(s)",
            round(ratio, 3), "x", 1.2, "<="))
    figure, axes = plots.new_figure(ncols=2)
    for ax, (n_workers, profiles) in zip(axes[0], memory_profiles.items()):
        it.plot_memory_profiles(profiles, f"{n_workers} worker(s)", ax=ax)
    plots.save_figure(figure, f"{NAME}_memory", figures_dir)

    accuracy = accuracy_run(*acc)
    runs.append(accuracy)
    claims.append(measure.Claim(
        "|accuracy Incremental - accuracy partial_fit loop| (points)",
        round(100 * abs(accuracy["incremental_accuracy"] - accuracy["loop_accuracy"]), 3),
        "points", 0.5, "<="))

    searches, figure = hyperband_runs(*search)
    runs += searches
    plots.save_figure(figure, f"{NAME}_hyperband_history", figures_dir)
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
                            "accuracy": acc, "search": search, "quick": arguments.quick},
               "total_seconds": round(time.perf_counter() - start, 1)})
    for claim in claims:
        print(measure.format_claim(claim))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
