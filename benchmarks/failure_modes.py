"""Chapter 6's measured claims: shipping data with every task, tiny chunks, sorted partitions.

    .venv/bin/python benchmarks/failure_modes.py           # writes benchmarks/results/failure_modes.json
    .venv/bin/python benchmarks/failure_modes.py --quick   # a fast smoke run into a temporary folder

Case 6: the same joblib search with its data packed in a tuple (shipped with every batch) and
scattered once. Case 7: one predict pass over the same array cut into chunks of different sizes.
Case 8: accuracy of an Incremental pass and of a blockwise ensemble on label-sorted and shuffled
partitions.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import warnings

import dask.array as da
import joblib
import numpy as np
from dask_ml.ensemble import BlockwiseVotingClassifier
from dask_ml.wrappers import Incremental
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression, SGDClassifier

from scaling_ml import cluster, failure_modes, measure, plots


def case6_shipping(client, n_samples, repeats):
    X, y = make_classification(n_samples=n_samples, n_features=50, random_state=0)
    data = (X, y)
    alphas = np.logspace(-5, -1, 16).tolist()
    runs = []
    for variant, options in [("shipped with every task", {}), ("scattered once", {"scatter": [data]})]:
        def run(options=options):
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Sending large graph")  # the symptom, expected
                with joblib.parallel_config(backend="dask", **options):
                    return joblib.Parallel()(
                        joblib.delayed(failure_modes.fit_and_score)(alpha, data) for alpha in alphas)
        run()  # warm-up: imports on the workers
        seconds = measure.time_repeats(run, repeats)
        runs.append({"case": "6", "variant": variant, "data_mb": round(X.nbytes / 1e6, 1),
                     "tasks": len(alphas), "seconds": measure.median(seconds), "repeats": seconds})
    return runs


def case7_chunks(client, n_rows, row_chunks, repeats):
    X, y = make_classification(n_samples=5_000, n_features=20, random_state=0)
    model = LogisticRegression(random_state=0).fit(X, y)
    runs = []
    for rows in row_chunks:
        # Made on the workers (not da.from_array), so the data does not travel in the graph.
        X_dask = da.random.default_rng(0).standard_normal((n_rows, 20), chunks=(rows, 20)).persist()
        predictions = X_dask.map_blocks(model.predict, drop_axis=1, dtype=y.dtype)
        predictions.sum().compute()  # warm-up
        seconds = measure.time_repeats(lambda predictions=predictions: predictions.sum().compute(),
                                       repeats)
        runs.append({"case": "7", "rows_per_chunk": rows, "tasks": X_dask.npartitions,
                     "seconds": measure.median(seconds), "repeats": seconds})
        del X_dask
    return runs


def case8_accuracies(n_samples, block_rows):
    X, y = make_classification(n_samples=n_samples, n_features=20, n_informative=10, n_classes=4,
                               n_clusters_per_class=1, class_sep=1.0, random_state=0)
    X_test, y_test = X[-5_000:], y[-5_000:]
    X_train, y_train = X[:-5_000], y[:-5_000]
    shuffled = np.random.default_rng(0).permutation(len(y_train))
    variants = {"sorted by label": failure_modes.sorted_by_label(X_train, y_train),
                "shuffled": (X_train[shuffled], y_train[shuffled])}
    runs = []
    for variant, (X_part, y_part) in variants.items():
        X_dask = da.from_array(X_part, chunks=(block_rows, X_part.shape[1]))
        y_dask = da.from_array(y_part, chunks=block_rows)
        incremental = Incremental(SGDClassifier(loss="log_loss", random_state=0), random_state=0)
        incremental.fit(X_dask, y_dask, classes=np.unique(y))
        runs.append({"case": "8", "method": "Incremental, one pass", "variant": variant,
                     "accuracy": round(float(incremental.score(X_test, y_test)), 4)})
        ensemble = BlockwiseVotingClassifier(LogisticRegression(random_state=0), voting="hard",
                                             classes=np.unique(y))
        try:
            ensemble.fit(X_dask, y_dask)
            accuracy = round(float((ensemble.predict(X_test) == y_test).mean()), 4)
        except ValueError:
            accuracy = None  # a block with a single class: LogisticRegression refuses to fit
        runs.append({"case": "8", "method": "BlockwiseVotingClassifier", "variant": variant,
                     "accuracy": accuracy})
    return runs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run into a temp dir")
    args = parser.parse_args(argv)
    if args.quick:
        sizes = dict(n6=20_000, repeats=1, n7=20_000, chunks=[200, 2_000, 20_000], n8=25_000)
        results_dir, figures_dir = tempfile.mkdtemp(), tempfile.mkdtemp()
    else:
        sizes = dict(n6=100_000, repeats=3, n7=200_000, chunks=[500, 2_000, 10_000, 50_000, 200_000],
                     n8=45_000)
        results_dir, figures_dir = None, None

    client = cluster.get_client(n_workers=2, silence_logs=logging.CRITICAL)
    try:
        runs = case6_shipping(client, sizes["n6"], sizes["repeats"])
        runs += case7_chunks(client, sizes["n7"], sizes["chunks"], sizes["repeats"])
    finally:
        client.close()
    runs += case8_accuracies(sizes["n8"], block_rows=5_000)

    case6 = {run["variant"]: run["seconds"] for run in runs if run["case"] == "6"}
    case7 = [run for run in runs if run["case"] == "7"]
    case8 = {(run["method"], run["variant"]): run["accuracy"] for run in runs if run["case"] == "8"}
    claims = [
        measure.Claim("case 6: scattering once is faster than shipping the data with every task "
                      "(speed-up)", case6["shipped with every task"] / case6["scattered once"], "x",
                      1.0, ">"),
        measure.Claim("case 7: the tiniest chunks are slower than the largest (slow-down)",
                      case7[0]["seconds"] / case7[-1]["seconds"], "x", 1.0, ">"),
        measure.Claim("case 8: shuffling improves a one-pass Incremental fit (accuracy points)",
                      100 * (case8[("Incremental, one pass", "shuffled")]
                             - case8[("Incremental, one pass", "sorted by label")]), "points", 0.0, ">"),
    ]
    path = measure.write_results(failure_modes.BENCHMARK_NAME, claims, runs, results_dir=results_dir)

    figure, ax = plots.new_figure()
    import pandas as pd

    failure_modes.plot_chunk_overhead(pd.DataFrame(case7), ax=ax)
    figure_path = plots.save_figure(figure, "failure_modes_chunk_overhead", figures_dir)
    for claim in claims:
        print(measure.format_claim(claim))
    print(f"wrote {path} and {figure_path}")


if __name__ == "__main__":
    main()
