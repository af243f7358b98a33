"""Chapter 6's measured claims: shipping data with every task, tiny chunks, sorted partitions.

    .venv/bin/python -m benchmarks.when_scaling_goes_wrong            # the full run: writes
        # benchmarks/results/when_scaling_goes_wrong.json and figs/when_scaling_goes_wrong_chunk_overhead.png
    .venv/bin/python -m benchmarks.when_scaling_goes_wrong --quick    # a fast smoke run into a temporary folder
    .venv/bin/python -m benchmarks.when_scaling_goes_wrong --reclaim  # claims from the stored runs, no new run

Case 6: the same joblib search with its data packed in a tuple (shipped with every task) and
scattered once (``scatter=[data]``). Case 7: one predict pass over the same array cut into chunks
of different sizes, the median of several passes. Case 8: accuracy of an Incremental pass, for
several seeds, and of a blockwise ensemble on label-sorted partitions and on partitions shuffled on
a random key.

Every claim carries the spread of what it compares: the range of a ratio of two timed settings over
their repeats (``measure.ratio_spread``), the range over the seeds of an accuracy difference; it
holds only when the whole spread meets its goal. The full run takes about five minutes on two
quiet cores.

The functions the workers run (``fit_and_score``) and the shuffle (``shuffle_rows``) are the
notebook's own cells (tagged ``reused-by-benchmark``), so this measures the code the chapter teaches.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from dataclasses import asdict

import dask.array as da
import dask.dataframe as dd
import joblib
import numpy as np
import pandas as pd
from benchmarks._notebook_cells import run_reused_cells
from dask_ml.ensemble import BlockwiseVotingClassifier
from dask_ml.wrappers import Incremental
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression, SGDClassifier

from scaling_ml import cluster, measure, plots
from scaling_ml import when_scaling_goes_wrong as chapter

NOTEBOOK = "06_when_scaling_goes_wrong.ipynb"
# The full run and the smoke run (--quick).
SIZES = {
    "full": dict(shipping_rows=100_000, fits=16, shipping_repeats=5,
                 chunk_rows=1_000_000, row_chunks=[500, 2_000, 10_000, 50_000, 250_000, 500_000,
                                                   1_000_000], chunk_repeats=9,
                 sorted_rows=25_000, partitions=8, seeds=5),
    "quick": dict(shipping_rows=10_000, fits=4, shipping_repeats=1,
                  chunk_rows=20_000, row_chunks=[500, 5_000, 20_000], chunk_repeats=2,
                  sorted_rows=13_000, partitions=4, seeds=2),
}


def case6_shipping(fit_and_score, n_samples, fits, repeats):
    X, y = make_classification(n_samples=n_samples, n_features=50, random_state=0)
    data = (X, y)
    alphas = np.logspace(-5, -1, fits).tolist()
    runs = []
    for variant, options in [("shipped with every task", {}), ("scattered once", {"scatter": [data]})]:
        def run(options=options):
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Sending large graph")  # the symptom, expected
                with joblib.parallel_config(backend="dask", **options):
                    return joblib.Parallel()(joblib.delayed(fit_and_score)(alpha, data) for alpha in alphas)
        run()  # warm-up: imports on the workers
        seconds = measure.time_repeats(run, repeats)
        runs.append({"case": "6", "variant": variant, "data_mb": round(X.nbytes / 1e6, 1),
                     "tasks": len(alphas), "seconds": measure.median(seconds), "repeats": seconds})
    return runs


def case7_chunks(n_rows, row_chunks, repeats):
    X, y = make_classification(n_samples=5_000, n_features=20, random_state=0)
    model = LogisticRegression(random_state=0).fit(X, y)
    runs = []
    for chunk_rows in row_chunks:
        # Made on the workers (not da.from_array), so the data does not travel in the graph, and
        # spread over them as the scheduler places the chunks; persisted, so a pass only predicts.
        X_dask = da.random.default_rng(0).standard_normal((n_rows, 20), chunks=(chunk_rows, 20)).persist()
        predictions = X_dask.map_blocks(model.predict, drop_axis=1, dtype=y.dtype)
        predictions.sum().compute()  # warm-up
        seconds = measure.time_repeats(lambda predictions=predictions: predictions.sum().compute(),
                                       repeats)
        runs.append({"case": "7", "rows_per_chunk": chunk_rows, "tasks": X_dask.npartitions,
                     "seconds": measure.median(seconds), "repeats": seconds})
        del X_dask, predictions
    return runs


def case8_accuracies(cells, n_samples, partitions, seeds):
    X, y = make_classification(n_samples=n_samples, n_features=20, n_informative=10, n_classes=4,
                               n_clusters_per_class=1, random_state=0)
    X_holdout, y_holdout = X[-5_000:], y[-5_000:]
    table = pd.DataFrame(X[:-5_000]).add_prefix("x").assign(label=y[:-5_000])
    table = table.sort_values("label", kind="stable", ignore_index=True)
    frame = dd.from_pandas(table, npartitions=partitions, sort=False)
    variants = {"sorted by label": frame,
                "shuffled on a random key": cells["shuffle_rows"](frame).persist()}
    classes = np.unique(y)
    runs = []
    for variant, data in variants.items():
        X_dask = data.drop(columns="label").to_dask_array(lengths=True)
        y_dask = data["label"].to_dask_array(lengths=True)
        accuracies = []
        for seed in range(seeds):  # the seed of SGD's own shuffling and of Incremental's block order
            incremental = Incremental(SGDClassifier(loss="log_loss", alpha=1e-3, random_state=seed),
                                      random_state=seed)
            incremental.fit(X_dask, y_dask, classes=classes)
            accuracies.append(round(float(incremental.score(X_holdout, y_holdout)), 4))
        runs.append({"case": "8", "method": "Incremental, one pass", "variant": variant,
                     "labels_per_partition": cells["labels_per_partition"](data),
                     "accuracy": accuracies[0], "seeds": list(range(seeds)), "accuracies": accuracies})
        ensemble = BlockwiseVotingClassifier(LogisticRegression(random_state=0), voting="hard",
                                             classes=classes)
        try:
            ensemble.fit(X_dask, y_dask)
            accuracy = round(float((ensemble.predict(X_holdout) == y_holdout).mean()), 4)
        except ValueError:
            accuracy = None  # a partition with a single class: LogisticRegression refuses to fit
        runs.append({"case": "8", "method": "BlockwiseVotingClassifier", "variant": variant,
                     "accuracy": accuracy})
    return runs


def benchmark_claims(runs) -> list[measure.Claim]:
    """The chapter's three claims, each with the spread of its repeats or seeds."""
    case6 = {run["variant"]: run["repeats"] for run in runs if run["case"] == "6"}
    case7 = [run for run in runs if run["case"] == "7"]
    fastest = min(case7, key=lambda run: run["seconds"])
    incremental = {run["variant"]: run["accuracies"] for run in runs
                   if run["case"] == "8" and run["method"] == "Incremental, one pass"}
    # Paired by seed: the same seeds on sorted and on shuffled partitions.
    gains = [100 * (shuffled - sorted_) for shuffled, sorted_ in
             zip(incremental["shuffled on a random key"], incremental["sorted by label"])]
    shipped, scattered = case6["shipped with every task"], case6["scattered once"]
    return [
        measure.Claim("case 6: scattering once is faster than shipping the data with every task "
                      "(speed-up)", measure.median(shipped) / measure.median(scattered), "x", 1.0, ">",
                      spread=measure.ratio_spread(shipped, scattered)),
        measure.Claim("case 7: the tiniest chunks are slower than the chunking with the smallest median "
                      "(slow-down)", case7[0]["seconds"] / fastest["seconds"], "x", 1.0, ">",
                      spread=measure.ratio_spread(case7[0]["repeats"], fastest["repeats"])),
        measure.Claim("case 8: shuffling on a random key improves a one-pass Incremental fit "
                      "(accuracy points, paired by seed)", measure.median(gains), "points", 0.0, ">",
                      spread=[min(gains), max(gains)]),
    ]


def draw_figure(chunk_runs, figures_dir=None):
    figure, ax = plots.new_figure()
    chapter.plot_chunk_overhead(chunk_runs, ax=ax)
    return plots.save_figure(figure, "when_scaling_goes_wrong_chunk_overhead", figures_dir)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run into a temp dir")
    parser.add_argument("--replot", action="store_true", help="only redraw the figure from the saved results")
    parser.add_argument("--reclaim", action="store_true",
                        help="recompute the claims from the stored runs (their date and machine are kept)")
    args = parser.parse_args(argv)
    if args.reclaim:
        document = chapter.load_results()
        document["claims"] = [asdict(claim) for claim in benchmark_claims(document["runs"])]
        print("rewrote", measure.write_document(chapter.BENCHMARK_NAME, document))
        return
    if args.replot:
        print("wrote", draw_figure(chapter.runs_table(chapter.load_results(), "7")))
        return
    sizes = SIZES["quick" if args.quick else "full"]
    results_dir, figures_dir = (tempfile.mkdtemp(), tempfile.mkdtemp()) if args.quick else (None, None)
    # The notebook's cells use numpy as np, as the notebook's set-up cell imports it.
    cells = run_reused_cells(NOTEBOOK, {"__name__": "notebook_cells_06", "np": np})

    client = cluster.get_client(local=True, n_workers=2)
    try:
        runs = case6_shipping(cells["fit_and_score"], sizes["shipping_rows"], sizes["fits"],
                              sizes["shipping_repeats"])
        runs += case7_chunks(sizes["chunk_rows"], sizes["row_chunks"], sizes["chunk_repeats"])
        runs += case8_accuracies(cells, sizes["sorted_rows"], sizes["partitions"], sizes["seeds"])
    finally:
        client.close()

    claims = benchmark_claims(runs)
    case7 = [run for run in runs if run["case"] == "7"]
    path = measure.write_results(chapter.BENCHMARK_NAME, claims, runs, results_dir=results_dir)

    figure_path = draw_figure(chapter.runs_table({"runs": case7}, "7"), figures_dir)
    for claim in claims:
        print(measure.format_claim(claim))
    print(f"wrote {path} and {figure_path}")


if __name__ == "__main__":
    main()
