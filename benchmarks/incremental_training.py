"""Chapter 3 benchmark: incremental training's memory, accuracy and Hyperband's budget.

Run: .venv/bin/python -m benchmarks.incremental_training           (writes benchmarks/results/;
                                                                   the stored run took 18 minutes
                                                                   on 2 busy cores: total_seconds)
     .venv/bin/python -m benchmarks.incremental_training --quick   (small sizes, a temp dir)
     .venv/bin/python -m benchmarks.incremental_training --reclaim (the claims again, from the
                                                                   stored runs; no new run)

It measures the chapter's own code: ``make_stream``, ``partial_fit_blocks`` and the Hyperband
``parameters`` come from the cells of notebooks/03_incremental_training.ipynb tagged
``reused-by-benchmark``. Memory is measured as the chapter does it (MemorySampler, the idle
baseline subtracted), on workers with the chapter's 1 GiB memory limit, ``--repeats`` times.

Claims:
1. on one worker, the peak memory above idle during ``Incremental.fit`` on 10x the data stays
   under the chapter's bound of a few (4) blocks in every repeat, and the 10x peak is within 1.5x
   of the 1x peak over every pairing of repeats (memory follows the block size, not the data);
2. on two workers the peak on 10x the data is higher than on one, over every pairing of repeats
   (a free worker makes blocks ahead of the training chain), and the cluster's memory stays under
   its total memory limit in every repeat (what bounds it there);
3. ``Incremental(shuffle_blocks=False)`` computes the chapter's ``partial_fit`` loop's model
   (accuracies within 0.5 point; the coefficients are compared too);
4. on every seed, Hyperband's best validation score is within 1 point of the best of the same
   candidates trained fully (``IncrementalSearchCV``, ``decay_rate=None``), with at most 1/3 of
   the ``partial_fit`` calls.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import asdict

import numpy as np
from benchmarks._notebook_cells import run_reused_cells
from dask_ml.model_selection import HyperbandSearchCV, IncrementalSearchCV
from dask_ml.wrappers import Incremental
from distributed.diagnostics import MemorySampler
from sklearn.linear_model import SGDClassifier

from scaling_ml import BookError, cluster, measure, plots
from scaling_ml import incremental_training as chapter

NAME = "incremental_training"
IDLE_SECONDS = 2
INTERVAL = 0.05
N_FEATURES = 20  # make_stream's default
A_FEW_BLOCKS = 4  # the chapter's bound
MEMORY_LIMIT = "1GiB"  # per worker, as in the chapter
HYPERBAND = "HyperbandSearchCV"
EVERY_FULLY = "IncrementalSearchCV (every candidate fully)"


def chapter_cells() -> dict:
    """The notebook's make_stream, partial_fit_blocks and parameters (its reused cells)."""
    return run_reused_cells("03_incremental_training.ipynb")


def sgd():
    return SGDClassifier(loss="log_loss", random_state=0)


def memory_runs(cells, n_workers, sizes, rows_per_block, repeats, memory_limit=MEMORY_LIMIT):
    """Peak memory above idle during Incremental.fit for each number of blocks, measured as the
    chapter does it, ``repeats`` times, each on a fresh cluster of ``n_workers`` workers with
    ``memory_limit`` each (so that no repeat inherits memory a previous one left behind)."""
    make_stream = cells["make_stream"]
    runs, profiles = [], None
    for repeat in range(repeats):
        client = cluster.get_client(local=True, n_workers=n_workers, memory_limit=memory_limit)
        try:
            total_limit_mib = sum(worker["memory_limit"] for worker
                                  in client.scheduler_info()["workers"].values()) / 2**20
            with client.as_current():
                client.run(__import__, "sklearn.linear_model")  # the libraries belong to the baseline
                warm_X, warm_y = make_stream(n_blocks=2 * n_workers, rows_per_block=1_000)
                Incremental(sgd(), random_state=0).fit(warm_X, warm_y, classes=[0, 1])
                sampler = MemorySampler()
                with sampler.sample("idle", client=client, interval=INTERVAL):
                    time.sleep(IDLE_SECONDS)
                for n_blocks in sizes:
                    X, y = make_stream(n_blocks=n_blocks, rows_per_block=rows_per_block)
                    label = f"{n_blocks} blocks ({X.nbytes / 2**20:,.0f} MiB), {n_workers} worker(s)"
                    with measure.timer() as elapsed:
                        with sampler.sample(label, client=client, interval=INTERVAL):
                            Incremental(sgd(), random_state=0).fit(X, y, classes=[0, 1])
                    runs.append({"part": "memory", "n_workers": n_workers, "n_blocks": n_blocks,
                                 "rows_per_block": rows_per_block, "repeat": repeat, "label": label,
                                 "data_mib": round(X.nbytes / 2**20, 1), "seconds": round(elapsed(), 2),
                                 "memory_limit_mib": total_limit_mib})
        finally:
            client.close()
        memory_mib = sampler.to_pandas(align=True) / 2**20
        idle_mib = float(memory_mib.pop("idle").median())
        for run in runs[-len(sizes):]:
            run["idle_mib"] = round(idle_mib, 1)
            run["peak_mib"] = round(float(memory_mib[run["label"]].max()), 1)
            run["peak_above_idle_mib"] = round(run["peak_mib"] - idle_mib, 1)
            print(run, flush=True)
        profiles = memory_mib - idle_mib  # the last repeat's, for the figure
    return runs, profiles


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


def hyperband_runs(cells, n_rows, n_blocks, max_iter, seeds):
    """For each seed: Hyperband, then the same candidates each trained for max_iter calls."""
    client = cluster.get_client(n_workers=2)
    try:
        make_stream = cells["make_stream"]
        X, y = make_stream(n_blocks=n_blocks, rows_per_block=n_rows // n_blocks)
        X_test, y_test = (array.compute() for array in make_stream(1, n_rows // n_blocks, seed=1))
        runs = []
        for seed in seeds:
            hyperband = HyperbandSearchCV(sgd(), cells["parameters"], max_iter=max_iter, random_state=seed)
            budget = hyperband.metadata
            with measure.timer() as elapsed:
                hyperband.fit(X, y, classes=[0, 1])
            hyperband_seconds = elapsed()
            # The same candidates as one-value grids, each trained for max_iter calls.
            candidates = [{name: [value] for name, value in params.items()}
                          for params in hyperband.cv_results_["params"]]
            full = IncrementalSearchCV(sgd(), candidates, n_initial_parameters="grid",
                                       max_iter=max_iter, decay_rate=None, random_state=seed)
            with measure.timer() as elapsed:
                full.fit(X, y, classes=[0, 1])
            full_seconds = elapsed()
            for run in (
                {"part": "search", "search": HYPERBAND, "seed": seed, "n_models": len(candidates),
                 "partial_fit_calls": int(sum(hyperband.cv_results_["partial_fit_calls"])),
                 "planned_partial_fit_calls": int(budget["partial_fit_calls"]),
                 "planned_models": int(budget["n_models"]),
                 "best_score": round(float(hyperband.best_score_), 4),
                 "test_score": round(float(hyperband.score(X_test, y_test)), 4),
                 "seconds": round(hyperband_seconds, 2)},
                {"part": "search", "search": EVERY_FULLY, "seed": seed,
                 "n_models": len(full.cv_results_["params"]),
                 "partial_fit_calls": int(sum(full.cv_results_["partial_fit_calls"])),
                 "best_score": round(float(full.best_score_), 4),
                 "test_score": round(float(full.score(X_test, y_test)), 4),
                 "seconds": round(full_seconds, 2)},
            ):
                runs.append(run)
                print(run, flush=True)
        return runs
    finally:
        client.close()


def _peaks(runs, n_workers, n_blocks, key="peak_above_idle_mib"):
    values = [run[key] for run in runs if run["part"] == "memory"
              and run["n_workers"] == n_workers and run["n_blocks"] == n_blocks]
    if not values:
        raise BookError(f"No memory runs of {n_blocks} blocks on {n_workers} worker(s): "
                             "run the benchmark again.")
    return values


def benchmark_claims(runs: list[dict], sizes) -> list[measure.Claim]:
    """The chapter's claims from the stored runs alone (so that --reclaim can recompute them)."""
    small, large = sizes
    [block_mib] = {run["rows_per_block"] * N_FEATURES * 8 / 2**20 for run in runs if run["part"] == "memory"}
    one_small, one_large = _peaks(runs, 1, small), _peaks(runs, 1, large)
    two_large = _peaks(runs, 2, large)
    one_large_blocks = [peak / block_mib for peak in one_large]
    two_large_fraction = [run["peak_mib"] / run["memory_limit_mib"] for run in runs
                          if run["part"] == "memory" and run["n_workers"] == 2 and run["n_blocks"] == large]
    claims = [
        measure.Claim("1 worker: peak memory above idle during Incremental.fit on 10x data, in blocks",
                      measure.median(one_large_blocks), "blocks", A_FEW_BLOCKS, "<",
                      spread=[min(one_large_blocks), max(one_large_blocks)]),
        measure.Claim("1 worker: peak memory above idle during Incremental.fit, 10x data / 1x data",
                      measure.median(one_large) / measure.median(one_small), "x", 1.5, "<=",
                      spread=measure.ratio_spread(one_large, one_small)),
        measure.Claim("10x data: peak memory above idle, 2 workers / 1 worker",
                      measure.median(two_large) / measure.median(one_large), "x", 1.0, ">",
                      spread=measure.ratio_spread(two_large, one_large)),
        measure.Claim("2 workers: peak cluster memory during Incremental.fit on 10x data / memory limit",
                      measure.median(two_large_fraction), "fraction", 1.0, "<",
                      spread=[min(two_large_fraction), max(two_large_fraction)]),
    ]
    accuracy = [run for run in runs if run["part"] == "accuracy"]
    if len(accuracy) != 1 or not accuracy[0]["same_coefficients"]:
        raise BookError("The accuracy run is missing, or Incremental and the loop computed "
                             "different coefficients.")
    claims.append(measure.Claim(
        "|accuracy Incremental(shuffle_blocks=False) - accuracy of the chapter's partial_fit loop|",
        round(100 * abs(accuracy[0]["incremental_accuracy"] - accuracy[0]["loop_accuracy"]), 3),
        "points", 0.5, "<="))
    searches = [run for run in runs if run["part"] == "search"]
    seeds = sorted({run["seed"] for run in searches})
    pairs = [[next(run for run in searches if run["seed"] == seed and run["search"] == name)
              for name in (HYPERBAND, EVERY_FULLY)] for seed in seeds]
    if not pairs:
        raise BookError("No search runs: run the benchmark again.")
    gaps = [100 * (full["best_score"] - hyperband["best_score"]) for hyperband, full in pairs]
    calls = [hyperband["partial_fit_calls"] / full["partial_fit_calls"] for hyperband, full in pairs]
    claims += [
        measure.Claim("best score: every candidate fully minus Hyperband (points), over the seeds",
                      measure.median(gaps), "points", 1.0, "<=", spread=[min(gaps), max(gaps)]),
        measure.Claim("partial_fit calls: Hyperband / every candidate fully, over the seeds",
                      measure.median(calls), "x", 1 / 3, "<=", spread=[min(calls), max(calls)]),
    ]
    return claims


def reclaim(results_dir=None):
    """Recompute the stored document's claims from its runs; its date, machine and versions stay."""
    document = measure.load_results(NAME, results_dir)
    claims = benchmark_claims(document["runs"], document["settings"]["memory_blocks"])
    document["claims"] = [asdict(claim) for claim in claims]
    return measure.write_document(NAME, document, results_dir), claims


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, results in a temp dir")
    parser.add_argument("--reclaim", action="store_true",
                        help="no new run: recompute the claims from the stored runs")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each memory run")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the Hyperband comparison")
    arguments = parser.parse_args(argv)
    if arguments.reclaim:
        path, claims = reclaim()
        for claim in claims:
            print(measure.format_claim(claim))
        print(f"rewrote {path}")
        return 0
    if not arguments.quick and min(arguments.repeats, arguments.seeds) < 3:
        parser.error("a comparison needs --repeats >= 3 and --seeds >= 3")
    if arguments.quick:
        sizes, rows, accuracy_size, search = (2, 6), 500_000, (5, 5_000), (20_000, 10, 9)
        arguments.repeats, arguments.seeds = 2, 2
        results_dir = figures_dir = tempfile.mkdtemp(prefix="bench-incremental-")
    else:
        # The chapter's block size, four times the chapter's data: 4 and 40 blocks of 76 MiB.
        sizes, rows, accuracy_size, search = (4, 40), 500_000, (20, 50_000), (200_000, 20, 27)
        results_dir = figures_dir = None
    start = time.perf_counter()
    cells = chapter_cells()
    runs, profiles = [], {}
    for n_workers in (1, 2):
        memory, profiles[n_workers] = memory_runs(cells, n_workers, sizes, rows, arguments.repeats)
        runs += memory
    block_mib = rows * N_FEATURES * 8 / 2**20
    figure, axes = plots.new_figure(ncols=2)
    for ax, (n_workers, above_idle) in zip(axes[0], profiles.items()):
        chapter.plot_memory_above_idle(above_idle, block_mib, f"{n_workers} worker(s), {MEMORY_LIMIT} each", ax=ax)
    plots.save_figure(figure, f"{NAME}_memory", figures_dir)

    runs.append(accuracy_run(cells, *accuracy_size))
    runs += hyperband_runs(cells, *search, seeds=range(arguments.seeds))
    claims = benchmark_claims(runs, sizes)
    path = measure.write_results(
        NAME, claims=claims, runs=runs, results_dir=results_dir,
        extra={"settings": {"memory_blocks": sizes, "rows_per_block": rows,
                            "memory_limit_per_worker": MEMORY_LIMIT, "repeats": arguments.repeats,
                            "accuracy": accuracy_size, "search": search, "seeds": arguments.seeds,
                            "quick": arguments.quick},
               "total_seconds": round(time.perf_counter() - start, 1)})
    for claim in claims:
        print(measure.format_claim(claim))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
