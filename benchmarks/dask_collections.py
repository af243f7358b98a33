"""Chapter 4's measured claims: dask-ml on parquet versus scikit-learn, and training past memory.

1. accuracy: dask-ml's LogisticRegression trained on the whole training part of a parquet dataset
   reaches a test accuracy within 1 point of scikit-learn's LogisticRegression trained on the
   sample that fits in memory (``--sklearn-rows``).
2. memory: on a cluster whose workers have a small ``--memory-limit``, the same training on a
   dataset several times larger than that limit (never persisted: every pass reads the parquet
   files again) completes, and the cluster's peak memory (distributed's MemorySampler) stays under
   the total limit.

Run ``.venv/bin/python benchmarks/dask_collections.py`` (writes benchmarks/results/dask_collections.json
and figs/dask_collections_memory.png), or ``--quick`` for a small smoke run into a temp folder.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

from dask.utils import parse_bytes
from dask_ml.linear_model import LogisticRegression
from dask_ml.preprocessing import Categorizer, DummyEncoder, StandardScaler
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LogisticRegression as SklearnLogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.preprocessing import StandardScaler as SklearnStandardScaler

from scaling_ml import cluster, measure, plots
from scaling_ml import dask_collections as dc

NAME = "dask_collections"
# dask-glm 0.4.0's lbfgs solver sets the old config key `fuse_ave_width`; dask warns it is renamed.
warnings.filterwarnings("ignore", message="Dask configuration key 'fuse_ave_width'", category=FutureWarning)


def dask_arrays(encoder, frame):
    """Encode a dataframe on the workers and split it into feature and target dask arrays.

    The target stays in the frame until it is an array so that features and target come from the
    same graph and have the same (unknown) chunks: no pass over the data to count rows.
    """
    encoded = encoder.transform(frame).astype("float64")
    columns = list(encoded.columns)
    target = columns.index(dc.TARGET)
    features = [i for i in range(len(columns)) if i != target]
    array = encoded.to_dask_array()
    return array[:, features], array[:, target]


def train_dask_ml(frame, n_train: int, max_iter: int, persist: bool):
    train, test = dc.first_rows(frame, n_train), frame.loc[n_train:]
    encoder = make_pipeline(Categorizer(columns=dc.CATEGORICAL_COLUMNS),
                            DummyEncoder(columns=dc.CATEGORICAL_COLUMNS)).fit(train)
    X_train, y_train = dask_arrays(encoder, train)
    X_test, y_test = dask_arrays(encoder, test)
    if persist:
        X_train, y_train = X_train.persist(), y_train.persist()
    scaler = StandardScaler().fit(X_train)
    model = LogisticRegression(solver="lbfgs", max_iter=max_iter)
    with measure.timer() as elapsed:
        model.fit(scaler.transform(X_train), y_train)
    # predict() stacks probabilities, which needs known chunk sizes; the sign of the decision
    # function is the same prediction and works on chunks of unknown length.
    predicted = model.decision_function(scaler.transform(X_test)) > 0
    accuracy = float((predicted == (y_test > 0.5)).mean().compute())
    return accuracy, elapsed()


def train_sklearn(frame, n_train: int, n_rows: int):
    sample = dc.first_rows(frame, n_rows).compute()
    test = frame.loc[n_train:].compute()
    model = make_pipeline(
        make_column_transformer((SklearnStandardScaler(), dc.NUMERIC_COLUMNS),
                                (OneHotEncoder(), dc.CATEGORICAL_COLUMNS)),
        SklearnLogisticRegression(max_iter=1000),
    )
    features = dc.NUMERIC_COLUMNS + dc.CATEGORICAL_COLUMNS
    with measure.timer() as elapsed:
        model.fit(sample[features], sample[dc.TARGET])
    accuracy = float(model.score(test[features], test[dc.TARGET]))
    return accuracy, elapsed(), float(sample.memory_usage(deep=True).sum()) / 2**30


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, results into a temp folder")
    parser.add_argument("--accuracy-rows", type=int, default=1_000_000)
    parser.add_argument("--sklearn-rows", type=int, default=200_000)
    parser.add_argument("--memory-rows", type=int, default=24_000_000)
    parser.add_argument("--rows-per-partition", type=int, default=250_000)
    parser.add_argument("--memory-limit", default="1GiB", help="per worker, for the memory claim")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-iter", type=int, default=100, help="lbfgs iterations, accuracy claim")
    parser.add_argument("--memory-max-iter", type=int, default=2, help="lbfgs iterations, memory claim")
    parser.add_argument("--data-dir", default=None, help="scratch folder for the parquet files")
    arguments = parser.parse_args(argv)
    scratch = tempfile.TemporaryDirectory(prefix="bench-dask-collections-") if arguments.quick else None
    if arguments.quick:
        arguments.accuracy_rows, arguments.sklearn_rows = 200_000, 40_000
        arguments.memory_rows, arguments.rows_per_partition = 400_000, 50_000
        arguments.memory_max_iter = 3
        arguments.data_dir = scratch.name
    data_dir = Path(arguments.data_dir) if arguments.data_dir else dc.DATA_DIR
    results_dir = Path(scratch.name) / "results" if arguments.quick else None
    figures_dir = Path(scratch.name) / "figs" if arguments.quick else None
    runs = []

    # 1. Accuracy: dask-ml on everything versus scikit-learn on an in-memory sample.
    with cluster.get_client(n_workers=arguments.workers) as client:
        path = dc.write_dataset(data_dir / f"churn_{arguments.accuracy_rows}", arguments.accuracy_rows,
                                arguments.rows_per_partition)
        frame = dc.read_dataset(path)
        n_train = int(arguments.accuracy_rows * 0.8)
        print(f"accuracy: {n_train:,} training rows, dask-ml LogisticRegression (lbfgs)", flush=True)
        dask_accuracy, dask_seconds = train_dask_ml(frame, n_train, arguments.max_iter, persist=True)
        print(f"accuracy: scikit-learn on the first {arguments.sklearn_rows:,} rows", flush=True)
        sklearn_accuracy, sklearn_seconds, sample_gib = train_sklearn(frame, n_train, arguments.sklearn_rows)
        best = dc.best_possible_accuracy(frame.loc[n_train:])
        runs.append({"run": "accuracy", "n_rows": arguments.accuracy_rows, "n_train": n_train,
                     "sklearn_rows": arguments.sklearn_rows, "sklearn_sample_gib": sample_gib,
                     "dask_ml_accuracy": dask_accuracy, "dask_ml_fit_seconds": dask_seconds,
                     "sklearn_accuracy": sklearn_accuracy, "sklearn_fit_seconds": sklearn_seconds,
                     "best_possible_accuracy": best, "dataset_gib": dc.dataset_gib(frame),
                     "workers": arguments.workers})
        print(runs[-1], flush=True)

    # 2. Memory: a dataset several times the workers' memory limit, never persisted.
    limit = parse_bytes(arguments.memory_limit)
    with cluster.get_client(n_workers=arguments.workers, memory_limit=limit) as client:
        path = dc.write_dataset(data_dir / f"churn_{arguments.memory_rows}", arguments.memory_rows,
                                arguments.rows_per_partition)
        frame = dc.read_dataset(path)
        size_gib = dc.dataset_gib(frame)
        n_train = int(arguments.memory_rows * 0.9)
        print(f"memory: {size_gib:.2f} GiB in memory, {arguments.workers} workers x "
              f"{limit / 2**30:.2f} GiB limit", flush=True)
        with measure.sample_cluster_memory(client, label="dask-ml LogisticRegression", interval=0.5) as sampler:
            accuracy, seconds = train_dask_ml(frame, n_train, arguments.memory_max_iter, persist=False)
        peak = measure.peak_memory_gib(sampler)
        total_limit_gib = arguments.workers * limit / 2**30
        runs.append({"run": "memory", "n_rows": arguments.memory_rows, "dataset_gib": size_gib,
                     "parquet_gib": dc.folder_gib(path), "memory_limit_per_worker_gib": limit / 2**30,
                     "workers": arguments.workers, "total_memory_limit_gib": total_limit_gib,
                     "peak_cluster_memory_gib": peak, "fit_and_score_seconds": seconds,
                     "max_iter": arguments.memory_max_iter, "accuracy": accuracy})
        print(runs[-1], flush=True)
        figure, ax = plots.new_figure()
        plots.plot_memory_over_time(measure.memory_frame(sampler),
                                    f"Training on {size_gib:.1f} GiB with {total_limit_gib:g} GiB of workers",
                                    limit_gib=total_limit_gib, ax=ax)
        plots.save_figure(figure, f"{NAME}_memory", figures_dir)

    accuracy_run, memory_run = runs
    claims = [
        measure.Claim("dask-ml on all rows vs scikit-learn on an in-memory sample: accuracy gap",
                      abs(accuracy_run["dask_ml_accuracy"] - accuracy_run["sklearn_accuracy"]) * 100,
                      "points", 1.0, "<="),
        measure.Claim("dataset in memory / one worker's memory limit",
                      memory_run["dataset_gib"] / memory_run["memory_limit_per_worker_gib"], "x", 3.0, ">="),
        measure.Claim("peak cluster memory / total memory limit while training",
                      memory_run["peak_cluster_memory_gib"] / total_limit_gib, "fraction", 1.0, "<"),
    ]
    path = measure.write_results(NAME, claims=claims, runs=runs,
                                 extra={"quick": arguments.quick}, results_dir=results_dir)
    for claim in claims:
        print(measure.format_claim(claim))
    print(f"wrote {path}")
    if scratch is not None:
        scratch.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
