"""Chapter 4's measured claims, on notebook 04's own code (its cells tagged reused-by-benchmark).

The notebook's `churn_table` writes the tables, its `preprocess` pipeline and `to_arrays` prepare
them, its `sklearn_model` is the in-memory comparison; this script adds only the sizes, the
splits and the measuring.

1. accuracy: on each of ``--seeds`` random splits of a parquet table (the whole table split once,
   as the chapter teaches, with the check that X and y hold the same rows), dask-ml's
   LogisticRegression (lbfgs) trained on every training row and the notebook's scikit-learn
   pipeline trained on the first ``--sample-rows`` training rows are scored on the same test rows.
   Claim: their accuracy difference stays within 1 point, over every split and the whole spread of
   each (the middle 95 % over resamples of the test rows), so that no difference is measured.
2. memory: on a LocalCluster whose workers have a small ``--memory-limit``, a table at least three
   times one worker's limit is written, trained on without persist (every solver pass reads the
   parquet files again) and scored, while distributed's MemorySampler records the cluster's
   memory; the peak stays below the cluster's total limit.

Full run (writes benchmarks/results/dask_collections.json and figs/dask_collections_memory.png;
about 2 GiB of scratch files under _build/data/bench_dask_collections, removed at the end; in the
stored run, on 2 cores busy with other work, the memory part alone took 14 minutes, its steps'
"seconds" in the results, and the whole run's time is recorded as total_seconds):
    .venv/bin/python -m benchmarks.dask_collections
Smoke run, small sizes, everything in a temporary folder:
    .venv/bin/python -m benchmarks.dask_collections --quick
Recompute the claims from the stored runs (no new measurement):
    .venv/bin/python -m benchmarks.dask_collections --reclaim
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import dask
import dask.dataframe as dd
from dask.utils import parse_bytes
from dask_ml.linear_model import LogisticRegression
from dask_ml.model_selection import train_test_split
from distributed.diagnostics import MemorySampler
from sklearn.base import clone

from benchmarks._notebook_cells import run_reused_cells
from scaling_ml import PROJECT_ROOT, BookError, cluster, measure, plots
from scaling_ml import dask_collections as chapter

NAME = "dask_collections"
NOTEBOOK = "04_dask_collections.ipynb"
TEXT_COLUMNS = ["region", "plan"]
DATA_DIR = str(PROJECT_ROOT / "_build" / "data" / "bench_dask_collections")
GAP_GOAL_POINTS = 1.0
# As in the notebook: dask-glm's lbfgs sets dask's old config key `fuse_ave_width`, and dask warns.
warnings.filterwarnings("ignore", message="Dask configuration key 'fuse_ave_width'", category=FutureWarning)


def write_table(cells, path: str, n_rows: int, rows_per_partition: int):
    """The notebook's writing cell: churn_table(...).to_parquet(...), then read_parquet (metadata only)."""
    cells["churn_table"](n_rows, rows_per_partition).to_parquet(path, overwrite=True, use_dictionary=TEXT_COLUMNS)
    return dd.read_parquet(path, index="row", calculate_divisions=True)


def accuracy_on_one_split(cells, table, seed: int, sample_rows: int) -> dict:
    """The notebook's main line on one random split: the table split once, then its columns;
    dask-ml on every training row against scikit-learn on a sample, scored on the same test rows.

    Fits the notebook's ``preprocess`` in place, as the notebook does, for the memory run to reuse.
    """
    train, test = train_test_split(table, test_size=0.2, shuffle=True, random_state=seed)
    X_train, y_train = train.drop(columns="churned"), train["churned"]
    X_test, y_test = test.drop(columns="churned"), test["churned"]
    preprocess = cells["preprocess"]
    X_train, y_train, X_test, y_test = dask.persist(
        preprocess.fit_transform(X_train), y_train, preprocess.transform(X_test), y_test)
    train_rows, test_rows = y_train.index.compute(), y_test.index.compute()
    same_rows = bool(X_train.index.compute().equals(train_rows) and X_test.index.compute().equals(test_rows))
    X_train_array, y_train_array, X_test_array, y_test_array = dask.persist(
        *(part.to_dask_array(lengths=True) for part in (X_train, y_train, X_test, y_test)))
    logistic = LogisticRegression(solver="lbfgs", random_state=0)
    with measure.timer() as dask_ml_seconds:
        logistic.fit(X_train_array, y_train_array)
    dask_ml_correct = (logistic.predict(X_test_array) == y_test_array).compute()

    test_table = test.compute()
    sample = train.head(sample_rows, npartitions=-1)
    sklearn_model = clone(cells["sklearn_model"])
    with measure.timer() as sklearn_seconds:
        sklearn_model.fit(sample.drop(columns="churned"), sample["churned"])
    sklearn_correct = sklearn_model.predict(test_table.drop(columns="churned")) == test_table["churned"].to_numpy()
    difference, spread = measure.accuracy_difference(dask_ml_correct, sklearn_correct)
    return {"run": "accuracy", "seed": seed, "n_rows": table.divisions[-1] + 1,
            "n_train": len(train_rows), "n_test": len(test_rows),
            "same_rows": same_rows and bool(test_table.index.equals(test_rows))
            and bool(sample.index.isin(train_rows).all()) and train_rows.intersection(test_rows).empty,
            "sklearn_rows": len(sample), "sklearn_sample_gib": float(sample.memory_usage(deep=True).sum()) / 2**30,
            "dask_ml_accuracy": float(dask_ml_correct.mean()), "dask_ml_fit_seconds": dask_ml_seconds(),
            "sklearn_accuracy": float(sklearn_correct.mean()), "sklearn_fit_seconds": sklearn_seconds(),
            "difference_points": 100 * difference, "difference_spread_points": [100 * value for value in spread],
            "best_possible_accuracy": chapter.best_possible_accuracy(test_table)}


def measure_memory(cells, small_client, path: str, n_rows: int, rows_per_partition: int, max_iter: int):
    """The notebook's larger-than-memory section on ``small_client``: write, train, score, sampled."""
    memory = MemorySampler()
    with memory.sample("write the table", client=small_client):
        big = write_table(cells, path, n_rows, rows_per_partition)
    table_gib = float(big.memory_usage(deep=True).sum().compute()) / 2**30
    n_train = int(0.9 * n_rows)
    X_train, y_train = cells["to_arrays"](big.loc[: n_train - 1])
    X_test, y_test = cells["to_arrays"](big.loc[n_train:])
    model = LogisticRegression(solver="lbfgs", max_iter=max_iter, random_state=0)
    with memory.sample("train", client=small_client):
        model.fit(X_train, y_train)
    with memory.sample("score", client=small_client):
        accuracy = float(((model.decision_function(X_test) > 0) == (y_test == 1)).mean().compute())
    samples = memory.to_pandas()
    steps = {label: {"seconds": (samples[label].dropna().index.max()
                                 - samples[label].dropna().index.min()).total_seconds(),
                     "peak_gib": float(samples[label].max()) / 2**30} for label in samples}
    return samples, table_gib, {"accuracy": accuracy, "steps": steps}


def benchmark_claims(runs: list[dict]) -> list[measure.Claim]:
    """The chapter's claims, from the stored runs alone (so that --reclaim can recompute them)."""
    accuracy_runs = [run for run in runs if run["run"] == "accuracy"]
    memory_runs = [run for run in runs if run["run"] == "memory"]
    if not accuracy_runs or len(memory_runs) != 1:
        raise BookError(f"Expected accuracy runs and one memory run, got {len(accuracy_runs)} and "
                             f"{len(memory_runs)}: run the benchmark again.")
    if not all(run.get("same_rows") for run in accuracy_runs):
        raise BookError("A split gave X and y different rows: the accuracies compare nothing.")
    [memory_run] = memory_runs
    gaps = [abs(run["difference_points"]) for run in accuracy_runs]
    widest = max(max(abs(end) for end in run["difference_spread_points"]) for run in accuracy_runs)
    limit = memory_run["memory_limit_per_worker_gib"]
    return [
        measure.Claim(f"dask-ml on all rows vs scikit-learn on an in-memory sample: largest |accuracy "
                      f"difference| over {len(accuracy_runs)} splits (spread: up to the far end of the "
                      "widest resampling spread)",
                      max(gaps), "points", GAP_GOAL_POINTS, "<=", spread=[min(gaps), max(widest, max(gaps))]),
        measure.Claim("dataset in memory / one worker's memory limit",
                      memory_run["dataset_gib"] / limit, "x", 3.0, ">="),
        measure.Claim("peak cluster memory / total memory limit while writing, training and scoring",
                      memory_run["peak_cluster_memory_gib"] / memory_run["total_memory_limit_gib"],
                      "fraction", 1.0, "<"),
    ]


def reclaim(results_dir=None) -> Path:
    """Recompute the stored document's claims from its runs; its date, machine and versions stay."""
    document = measure.load_results(NAME, results_dir)
    document["claims"] = [asdict(claim) for claim in benchmark_claims(document["runs"])]
    return measure.write_document(NAME, document, results_dir)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, everything into a temporary folder")
    parser.add_argument("--reclaim", action="store_true",
                        help="no new run: recompute the claims from the stored runs")
    parser.add_argument("--accuracy-rows", type=int, default=1_000_000)
    parser.add_argument("--accuracy-rows-per-partition", type=int, default=250_000)
    parser.add_argument("--sample-rows", type=int, default=250_000,
                        help="scikit-learn trains on the first SAMPLE_ROWS training rows")
    parser.add_argument("--seeds", type=int, default=3, help="random splits of the accuracy table")
    parser.add_argument("--memory-rows", type=int, default=20_000_000)
    parser.add_argument("--memory-rows-per-partition", type=int, default=125_000)
    parser.add_argument("--memory-limit", default="768MiB", help="per worker, for the memory claim")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-iter", type=int, default=2, help="lbfgs iterations in the memory run")
    parser.add_argument("--data-dir", default=DATA_DIR,
                        help="scratch folder for the parquet files (its own: removed at the end)")
    arguments = parser.parse_args(argv)
    if arguments.reclaim:
        path = reclaim()
        for claim in measure.load_results(NAME)["claims"]:
            print(("HOLDS  " if claim["holds"] else "MISSED ") + claim["name"])
        print(f"rewrote {path}")
        return 0
    if arguments.seeds < 3 and not arguments.quick:
        parser.error("a comparison needs --seeds >= 3")
    start = time.perf_counter()
    scratch = tempfile.TemporaryDirectory(prefix="bench-dask-collections-") if arguments.quick else None
    results_dir = figures_dir = None
    if arguments.quick:
        arguments.accuracy_rows, arguments.accuracy_rows_per_partition = 200_000, 50_000
        arguments.sample_rows, arguments.seeds = 25_000, 2
        arguments.memory_rows, arguments.memory_rows_per_partition = 1_000_000, 125_000
        arguments.data_dir = f"{scratch.name}/data"
        results_dir, figures_dir = Path(scratch.name) / "results", Path(scratch.name) / "figs"
    cells = run_reused_cells(NOTEBOOK)
    try:
        runs = []
        with cluster.get_client(local=True, n_workers=arguments.workers):
            print(f"accuracy: {arguments.accuracy_rows:,} rows, {arguments.seeds} splits", flush=True)
            table = write_table(cells, f"{arguments.data_dir}/churn_accuracy", arguments.accuracy_rows,
                                arguments.accuracy_rows_per_partition)
            for seed in range(arguments.seeds):
                run = accuracy_on_one_split(cells, table, seed, arguments.sample_rows)
                run["workers"] = arguments.workers
                runs.append(run)
                print(run, flush=True)

        limit = parse_bytes(arguments.memory_limit)
        with cluster.get_client(local=True, n_workers=arguments.workers, memory_limit=limit) as small_client:
            total_limit_gib = sum(worker["memory_limit"] for worker
                                  in small_client.scheduler_info()["workers"].values()) / 2**30
            print(f"memory: {arguments.memory_rows:,} rows, {arguments.workers} workers x "
                  f"{limit / 2**30:.2f} GiB limit", flush=True)
            samples, table_gib, outcome = measure_memory(
                cells, small_client, f"{arguments.data_dir}/churn_memory", arguments.memory_rows,
                arguments.memory_rows_per_partition, arguments.max_iter)
    finally:
        shutil.rmtree(arguments.data_dir, ignore_errors=True)
    peak_gib = float(samples.max().max()) / 2**30
    memory_run = {"run": "memory", "n_rows": arguments.memory_rows,
                  "rows_per_partition": arguments.memory_rows_per_partition, "dataset_gib": table_gib,
                  "memory_limit_per_worker_gib": limit / 2**30, "workers": arguments.workers,
                  "total_memory_limit_gib": total_limit_gib, "peak_cluster_memory_gib": peak_gib,
                  "max_iter": arguments.max_iter, **outcome}
    runs.append(memory_run)
    print(memory_run, flush=True)
    figure = chapter.plot_cluster_memory(
        samples, limit_gib=total_limit_gib, dataset_gib=table_gib,
        title=f"A {table_gib:.1f} GiB table on workers with {total_limit_gib:.1f} GiB in total")
    plots.save_figure(figure, f"{NAME}_memory", figures_dir)

    claims = benchmark_claims(runs)
    path = measure.write_results(NAME, claims=claims, runs=runs, results_dir=results_dir,
                                 extra={"quick": arguments.quick,
                                        "total_seconds": round(time.perf_counter() - start, 1)})
    for claim in claims:
        print(measure.format_claim(claim))
    print(f"wrote {path}")
    if scratch is not None:
        scratch.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
