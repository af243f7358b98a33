"""Chapter 2 benchmark: predict on a lazily generated array larger than memory.

Claims (written to benchmarks/results/predict_large_data.json):
* a run on a lazily generated array of >= 32 GiB (logical size of X) completes, predictions written
  to zarr, with peak cluster memory (distributed's MemorySampler) <= 4 GiB;
* the Dask pipeline's throughput (rows/s) on 2 workers is >= 90% of a plain 2-process
  concurrent.futures pool doing the same per-chunk work (both also against a single-process loop);
  also measured, to explain the difference: the pool's per-chunk function run as Dask futures,
  and the cost of each step of one chunk;
* the chunk-size curve: tuned chunks against the original tutorial's 1000-row chunks.

    .venv/bin/python benchmarks/predict_large_data.py           # the full run (minutes)
    .venv/bin/python benchmarks/predict_large_data.py --quick   # smoke run, writes to a temp dir
"""

import os

# One BLAS thread per process everywhere (Dask's nanny does the same for its workers), so the
# three ways of running compare processes with processes. Set before NumPy is imported.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from dask_ml.wrappers import ParallelPostFit  # noqa: E402
from sklearn.datasets import make_classification  # noqa: E402
from sklearn.linear_model import LogisticRegressionCV  # noqa: E402

from scaling_ml import cluster, measure, plots  # noqa: E402
from scaling_ml import predict_large_data as chapter  # noqa: E402

NAME = "predict_large_data"
SEED = 2025
# "dask (2 workers)" is the chapter's pipeline: ParallelPostFit.score on the lazy arrays.
METHODS = ("single process", "process pool (2)", "dask futures (2 workers)", "dask (2 workers)")


def settings(quick: bool) -> dict:
    if quick:
        return dict(big_chunks=8, big_chunk_rows=1_000_000, throughput_rows=8_000_000,
                    throughput_chunk_rows=1_000_000, repeats=1,
                    curve_chunk_rows=[1_000, 100_000, 1_000_000], curve_min_rows=1_000_000,
                    curve_min_chunks=4)
    # 430 chunks of 5 million rows: X is 430 * 5e6 * 2 features * 8 bytes = 32.04 GiB.
    return dict(big_chunks=430, big_chunk_rows=5_000_000, throughput_rows=80_000_000,
                throughput_chunk_rows=5_000_000, repeats=3,
                curve_chunk_rows=[1_000, 10_000, 100_000, 1_000_000, 5_000_000],
                curve_min_rows=1_000_000, curve_min_chunks=16)


def measure_throughput(client, model, geometry, config) -> list[dict]:
    """Single-process loop, 2-process pool and Dask, interleaved, on the same chunks."""
    n_rows, chunk_rows = config["throughput_rows"], config["throughput_chunk_rows"]
    estimator = model.estimator  # the fitted scikit-learn model, for the plain baselines
    runs = []
    pool = chapter.start_process_pool(2)
    try:
        for repeat in range(config["repeats"]):
            for method in METHODS:
                start = time.perf_counter()
                if method == "single process":
                    accuracy = chapter.run_plain_loop(estimator, geometry, n_rows, chunk_rows, SEED)
                elif method == "process pool (2)":
                    accuracy = chapter.run_process_pool(pool, estimator, geometry, n_rows,
                                                        chunk_rows, SEED)
                elif method == "dask futures (2 workers)":
                    accuracy = chapter.run_dask_futures(client, estimator, geometry, n_rows,
                                                        chunk_rows, SEED)
                else:
                    X, y = chapter.make_lazy_classification(geometry, n_rows, chunk_rows, SEED)
                    accuracy = float(model.score(X, y))
                seconds = time.perf_counter() - start
                runs.append(dict(kind="throughput", method=method, repeat=repeat, n_rows=n_rows,
                                 chunk_rows=chunk_rows, seconds=seconds,
                                 rows_per_second=n_rows / seconds, accuracy=accuracy))
                print(f"  {method:18s} {n_rows / seconds / 1e6:6.2f} M rows/s  "
                      f"accuracy {accuracy:.4f}", flush=True)
    finally:
        pool.shutdown()
    return runs


def big_run(client, model, geometry, config, scratch: Path) -> tuple[dict, object]:
    n_rows = config["big_chunks"] * config["big_chunk_rows"]
    X, y = chapter.make_lazy_classification(geometry, n_rows, config["big_chunk_rows"], SEED)
    path = scratch / "predictions.zarr"
    with measure.sample_cluster_memory(client, "predict to zarr", interval=0.5) as sampler:
        start = time.perf_counter()
        accuracy = chapter.predict_to_zarr(model, X, path, y)
        seconds = time.perf_counter() - start
    run = dict(kind="big run", n_rows=n_rows, chunk_rows=config["big_chunk_rows"],
               n_chunks=X.numblocks[0], logical_gib=chapter.logical_gib(X),
               logical_gib_with_labels=chapter.logical_gib(X) + chapter.logical_gib(y),
               seconds=seconds, rows_per_second=n_rows / seconds, accuracy=accuracy,
               peak_memory_gib=measure.peak_memory_gib(sampler),
               zarr_on_disk_gib=chapter.directory_size_gib(path),
               memory_over_time=measure.memory_frame(sampler).iloc[:, 0].round(4).to_dict())
    return run, sampler


def best(runs, method) -> float:
    return max(run["rows_per_second"] for run in runs if run.get("method") == method)


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run into a temp dir")
    args = parser.parse_args(argv)
    config = settings(args.quick)
    output = Path(tempfile.mkdtemp(prefix="bench-predict-")) if args.quick else None
    figures_dir = output if args.quick else None

    X_train, y_train = make_classification(**chapter.TRAINING_PARAMETERS)
    geometry = chapter.training_geometry()
    model = ParallelPostFit(LogisticRegressionCV(cv=3), scoring="accuracy").fit(X_train, y_train)

    print("cost of each step of one chunk (this process)", flush=True)
    breakdown = chapter.chunk_cost_breakdown(model.estimator, geometry,
                                             config["throughput_chunk_rows"], seed=SEED)
    for step, seconds in breakdown.items():
        print(f"  {step:36s} {seconds * 1000:7.1f} ms", flush=True)

    client = cluster.get_client(n_workers=2)
    try:
        print("throughput: single process, 2-process pool, dask", flush=True)
        runs = measure_throughput(client, model, geometry, config)
        print("chunk-size curve", flush=True)
        curve = chapter.chunk_size_curve(model, geometry, config["curve_chunk_rows"],
                                         min_rows=config["curve_min_rows"],
                                         min_chunks=config["curve_min_chunks"], seed=SEED)
        for point in curve:
            print(f"  {point['chunk_rows']:>9,} rows/chunk: "
                  f"{point['rows_per_second'] / 1e6:6.2f} M rows/s", flush=True)
        runs += [dict(kind="chunk size", **point) for point in curve]
        print("big run", flush=True)
        with tempfile.TemporaryDirectory(prefix="predict-zarr-") as scratch:
            big, sampler = big_run(client, model, geometry, config, Path(scratch))
        print(f"  {big['logical_gib']:.2f} GiB in {big['seconds']:.0f} s, "
              f"peak {big['peak_memory_gib']:.2f} GiB", flush=True)
        runs.append(big)
    finally:
        client.close()

    dask_rate = best(runs, "dask (2 workers)")
    futures_rate = best(runs, "dask futures (2 workers)")
    pool_rate = best(runs, "process pool (2)")
    single_rate = best(runs, "single process")
    smallest = min(curve, key=lambda point: point["chunk_rows"])
    fastest = max(curve, key=lambda point: point["rows_per_second"])
    claims = [
        measure.Claim("logical size of the lazily generated X in the big run", big["logical_gib"],
                      "GiB", 32, ">="),
        measure.Claim("peak cluster memory during the big run (MemorySampler)",
                      big["peak_memory_gib"], "GiB", 4, "<="),
        measure.Claim("dask throughput / plain 2-process pool throughput", dask_rate / pool_rate,
                      "ratio", 0.9, ">="),
        measure.Claim(f"throughput at {fastest['chunk_rows']:,}-row chunks / at "
                      f"{smallest['chunk_rows']:,}-row chunks",
                      fastest["rows_per_second"] / smallest["rows_per_second"], "x", 2, ">="),
    ]
    summary = dict(
        quick=args.quick,
        rows_per_second={"single process": single_rate, "process pool (2)": pool_rate,
                         "dask futures (2 workers)": futures_rate, "dask (2 workers)": dask_rate},
        speedup_over_single_process={"process pool (2)": pool_rate / single_rate,
                                     "dask futures (2 workers)": futures_rate / single_rate,
                                     "dask (2 workers)": dask_rate / single_rate},
        dask_over_pool=dask_rate / pool_rate,
        dask_futures_over_pool=futures_rate / pool_rate,
        chunk_cost_seconds=breakdown,
        big_run={key: value for key, value in big.items() if key != "memory_over_time"},
        chunk_size_curve=curve,
    )

    figure, ax = plots.new_figure()
    plots.plot_memory_over_time(measure.memory_frame(sampler),
                                f"Predicting {big['logical_gib']:.0f} GiB into zarr on 2 workers",
                                ax=ax)
    plots.save_figure(figure, f"{NAME}_memory", figures_dir)
    figure, ax = plots.new_figure()
    chapter.plot_chunk_size_curve(curve, ax=ax)
    plots.save_figure(figure, f"{NAME}_chunk_size", figures_dir)
    figure, ax = plots.new_figure()
    plots.plot_speedup(["process pool (2)", "dask futures\n(the pool's function)",
                        "dask pipeline\n(ParallelPostFit.score)"],
                       [pool_rate / single_rate, futures_rate / single_rate,
                        dask_rate / single_rate],
                       "Throughput over a single-process loop", ideal=2, ax=ax)
    plots.save_figure(figure, f"{NAME}_throughput", figures_dir)

    path = measure.write_results(NAME, claims=claims, runs=runs, extra={"summary": summary},
                                 results_dir=output)
    for claim in claims:
        print(measure.format_claim(claim))
    print("wrote", path)
    return path


if __name__ == "__main__":
    main()
