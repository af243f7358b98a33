"""Chapter 4's measured claims, on notebook 04's own code (its cells tagged reused-by-benchmark).

The notebook's `churn_table` writes the tables, its `preprocess` pipeline and `to_arrays` prepare
them, its `sklearn_model` is the in-memory comparison; this script adds only the sizes and the
measuring.

1. accuracy: dask-ml's LogisticRegression (lbfgs) trained on every training row of a parquet
   table reaches a test accuracy within 1 point of the notebook's scikit-learn pipeline trained
   on the training rows among the first ``--sample-rows`` of the table.
2. memory: on a LocalCluster whose workers have a small ``--memory-limit``, a table at least three
   times one worker's limit is written, trained on without persist (every solver pass reads the
   parquet files again) and scored, while distributed's MemorySampler records the cluster's
   memory; the peak stays below the cluster's total limit.

Full run (writes benchmarks/results/dask_collections.json and figs/dask_collections_memory.png;
about 2 GiB of scratch files under _build/data):
    .venv/bin/python -m benchmarks.dask_collections
Smoke run, small sizes, everything in a temporary folder:
    .venv/bin/python -m benchmarks.dask_collections --quick
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import dask.dataframe as dd
from dask.utils import parse_bytes
from dask_ml.linear_model import LogisticRegression
from dask_ml.model_selection import train_test_split
from distributed.diagnostics import MemorySampler
from sklearn.base import clone

from benchmarks._notebook_cells import run_reused_cells
from scaling_ml import cluster, measure, plots
from scaling_ml import dask_collections as chapter

NAME = "dask_collections"
NOTEBOOK = "04_dask_collections.ipynb"
TEXT_COLUMNS = ["region", "plan"]
# As in the notebook: dask-glm's lbfgs sets dask's old config key `fuse_ave_width`, and dask warns.
warnings.filterwarnings("ignore", message="Dask configuration key 'fuse_ave_width'", category=FutureWarning)


def write_table(cells, path: str, n_rows: int, rows_per_partition: int):
    """The notebook's writing cell: churn_table(...).to_parquet(...), then read_parquet (metadata only)."""
    cells["churn_table"](n_rows, rows_per_partition).to_parquet(path, overwrite=True, use_dictionary=TEXT_COLUMNS)
    return dd.read_parquet(path, index="row", calculate_divisions=True)


def measure_accuracy(cells, path: str, n_rows: int, rows_per_partition: int, sample_rows: int) -> dict:
    """The notebook's main line on a larger table: dask-ml on every row against scikit-learn on a sample.

    Fits the notebook's ``preprocess`` in place, as the notebook does, for the memory run to reuse.
    """
    table = write_table(cells, path, n_rows, rows_per_partition)
    X, y = table.drop(columns="churned"), table["churned"]
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, shuffle=True, random_state=0)
    preprocess = cells["preprocess"]
    X_train_array = preprocess.fit_transform(X_train).persist().to_dask_array(lengths=True).persist()
    y_train_array = y_train.persist().to_dask_array(lengths=True).persist()
    X_test_array = preprocess.transform(X_test).persist().to_dask_array(lengths=True).persist()
    y_test_array = y_test.persist().to_dask_array(lengths=True).persist()
    logistic = LogisticRegression(solver="lbfgs", random_state=0)
    with measure.timer() as dask_ml_seconds:
        logistic.fit(X_train_array, y_train_array)
    dask_ml_accuracy = float(logistic.score(X_test_array, y_test_array))

    test_table = X_test.assign(churned=y_test).compute()
    sample = X_train.assign(churned=y_train).head(sample_rows, npartitions=-1)
    sklearn_model = clone(cells["sklearn_model"])
    with measure.timer() as sklearn_seconds:
        sklearn_model.fit(sample.drop(columns="churned"), sample["churned"])
    sklearn_accuracy = float(sklearn_model.score(test_table.drop(columns="churned"), test_table["churned"]))
    return {"run": "accuracy", "n_rows": n_rows, "rows_per_partition": rows_per_partition,
            "n_train": len(y_train_array), "n_test": len(test_table),
            "sklearn_rows": len(sample), "sklearn_sample_gib": float(sample.memory_usage(deep=True).sum()) / 2**30,
            "dask_ml_accuracy": dask_ml_accuracy, "dask_ml_fit_seconds": dask_ml_seconds(),
            "sklearn_accuracy": sklearn_accuracy, "sklearn_fit_seconds": sklearn_seconds(),
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, everything into a temporary folder")
    parser.add_argument("--accuracy-rows", type=int, default=1_000_000)
    parser.add_argument("--accuracy-rows-per-partition", type=int, default=250_000)
    parser.add_argument("--sample-rows", type=int, default=250_000,
                        help="scikit-learn trains on the first SAMPLE_ROWS training rows")
    parser.add_argument("--memory-rows", type=int, default=20_000_000)
    parser.add_argument("--memory-rows-per-partition", type=int, default=125_000)
    parser.add_argument("--memory-limit", default="768MiB", help="per worker, for the memory claim")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-iter", type=int, default=2, help="lbfgs iterations in the memory run")
    parser.add_argument("--data-dir", default=chapter.DATA_FOLDER, help="scratch folder for the parquet files")
    arguments = parser.parse_args(argv)
    scratch = tempfile.TemporaryDirectory(prefix="bench-dask-collections-") if arguments.quick else None
    results_dir = figures_dir = None
    if arguments.quick:
        arguments.accuracy_rows, arguments.accuracy_rows_per_partition = 200_000, 50_000
        arguments.sample_rows = 25_000
        arguments.memory_rows, arguments.memory_rows_per_partition = 1_000_000, 125_000
        arguments.data_dir = scratch.name
        results_dir, figures_dir = Path(scratch.name) / "results", Path(scratch.name) / "figs"
    cells = run_reused_cells(NOTEBOOK)

    with cluster.get_client(local=True, n_workers=arguments.workers):
        print(f"accuracy: {arguments.accuracy_rows:,} rows", flush=True)
        accuracy_run = measure_accuracy(cells, f"{arguments.data_dir}/churn_accuracy", arguments.accuracy_rows,
                                        arguments.accuracy_rows_per_partition, arguments.sample_rows)
        accuracy_run["workers"] = arguments.workers
        print(accuracy_run, flush=True)

    limit = parse_bytes(arguments.memory_limit)
    with cluster.get_client(local=True, n_workers=arguments.workers, memory_limit=limit) as small_client:
        total_limit_gib = sum(worker["memory_limit"] for worker
                              in small_client.scheduler_info()["workers"].values()) / 2**30
        print(f"memory: {arguments.memory_rows:,} rows, {arguments.workers} workers x "
              f"{limit / 2**30:.2f} GiB limit", flush=True)
        samples, table_gib, outcome = measure_memory(
            cells, small_client, f"{arguments.data_dir}/churn_memory", arguments.memory_rows,
            arguments.memory_rows_per_partition, arguments.max_iter)
    peak_gib = float(samples.max().max()) / 2**30
    memory_run = {"run": "memory", "n_rows": arguments.memory_rows,
                  "rows_per_partition": arguments.memory_rows_per_partition, "dataset_gib": table_gib,
                  "memory_limit_per_worker_gib": limit / 2**30, "workers": arguments.workers,
                  "total_memory_limit_gib": total_limit_gib, "peak_cluster_memory_gib": peak_gib,
                  "max_iter": arguments.max_iter, **outcome}
    print(memory_run, flush=True)
    figure = chapter.plot_cluster_memory(
        samples, limit_gib=total_limit_gib, dataset_gib=table_gib,
        title=f"A {table_gib:.1f} GiB table on workers with {total_limit_gib:.1f} GiB in total")
    plots.save_figure(figure, f"{NAME}_memory", figures_dir)

    claims = [
        measure.Claim("dask-ml on all rows vs scikit-learn on an in-memory sample: accuracy gap",
                      abs(accuracy_run["dask_ml_accuracy"] - accuracy_run["sklearn_accuracy"]) * 100,
                      "points", 1.0, "<="),
        measure.Claim("dataset in memory / one worker's memory limit",
                      table_gib / memory_run["memory_limit_per_worker_gib"], "x", 3.0, ">="),
        measure.Claim("peak cluster memory / total memory limit while writing, training and scoring",
                      peak_gib / total_limit_gib, "fraction", 1.0, "<"),
    ]
    path = measure.write_results(NAME, claims=claims, runs=[accuracy_run, memory_run],
                                 extra={"quick": arguments.quick}, results_dir=results_dir)
    for claim in claims:
        print(measure.format_claim(claim))
    print(f"wrote {path}")
    if scratch is not None:
        scratch.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
