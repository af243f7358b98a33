"""Chapter 2 benchmark: predict on a lazily generated array larger than memory.

Claims (written to benchmarks/results/predict_large_data.json):
* a run on a lazily generated array of >= 32 GiB (logical size of X) completes, predictions written
  to zarr, with peak cluster memory (distributed's MemorySampler) <= 4 GiB;
* the Dask pipeline's throughput (rows/s) on 2 workers, on a cluster set up for throughput, is
  >= 90% of this machine's ceiling: a plain 2-process concurrent.futures pool doing the same
  per-chunk work, under the process memory settings with which it is fastest. Every column of
  SETTINGS is measured (the processes' memory settings, chapter.MEMORY_SETTINGS, and the
  cluster's Dask configuration), each with a single process, the pool, the pool's per-chunk
  function as Dask futures, the pipeline, and, to size Dask's copy of every block, the pipeline
  with that copy skipped (a measurement only: the workers are patched for that row);
* keeping memory (no page faults per chunk) speeds up the Dask pipeline over Dask's default
  worker settings, and chapter.THROUGHPUT_SCHEDULING speeds it up further;
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

import numpy as np  # noqa: E402
from dask_ml.wrappers import ParallelPostFit  # noqa: E402
from sklearn.datasets import make_classification  # noqa: E402
from sklearn.linear_model import LogisticRegressionCV  # noqa: E402

from scaling_ml import measure, plots  # noqa: E402
from scaling_ml import predict_large_data as chapter  # noqa: E402

NAME = "predict_large_data"
SEED = 2025
# Columns of the throughput table: {name: (memory setting of every process, Dask configuration
# of the cluster while it starts)}. Throughput scheduling changes only Dask, so the plain rows of
# that column re-measure "memory kept", interleaved with the Dask rows they are compared with.
THROUGHPUT_SCHEDULING = "memory kept, throughput scheduling"
SETTINGS = {
    chapter.DASK_DEFAULT_SETTINGS: (chapter.DASK_DEFAULT_SETTINGS, None),
    "glibc's default": ("glibc's default", None),
    "memory kept": ("memory kept", None),
    THROUGHPUT_SCHEDULING: ("memory kept", chapter.THROUGHPUT_SCHEDULING),
}
# "dask pipeline (2 workers)" is the chapter's pipeline: ParallelPostFit.score on the lazy arrays.
METHODS = ("single process", "process pool (2)", "dask futures (2 workers)",
           "dask pipeline (2 workers)", "dask pipeline without the block copy")


def settings(quick: bool) -> dict:
    if quick:
        return dict(big_chunks=8, big_chunk_rows=1_000_000, throughput_rows=4_000_000,
                    throughput_chunk_rows=1_000_000, warm_up_rows=2_000_000, repeats=1,
                    curve_chunk_rows=[1_000, 100_000, 1_000_000], curve_min_rows=1_000_000,
                    curve_min_chunks=4)
    # 430 chunks of 5 million rows: X is 430 * 5e6 * 2 features * 8 bytes = 32.04 GiB.
    # Throughput runs of 64 chunks take 7 to 20 s each: starting a run and its last chunk, when
    # one of the two processes may already be idle, are a small share of that.
    return dict(big_chunks=430, big_chunk_rows=5_000_000, throughput_rows=320_000_000,
                throughput_chunk_rows=5_000_000, warm_up_rows=20_000_000, repeats=3,
                curve_chunk_rows=[1_000, 10_000, 100_000, 1_000_000, 5_000_000],
                curve_min_rows=1_000_000, curve_min_chunks=16)


def skip_single_block_copy():
    """On a worker: let Dask pass a lone block to the function instead of a concatenated copy.

    Only for the benchmark's diagnostic row; it changes Dask in that worker process for good.
    """
    import dask.array.core

    concatenate_axes = dask.array.core.concatenate_axes
    if getattr(concatenate_axes, "skips_single_block", False):
        return

    def concatenate_or_pass(arrays, axes):
        if len(arrays) == 1 and not isinstance(arrays[0], list):
            return arrays[0]
        return concatenate_axes(arrays, axes)

    concatenate_or_pass.skips_single_block = True
    dask.array.core.concatenate_axes = concatenate_or_pass


def measure_setting(setting, model, geometry, config, seeds) -> list[dict]:
    """Every method once to warm up, then ``repeats`` rounds of them in turn, under one setting.

    Each run draws new chunks (its own seed), so no run reuses another's results.
    """
    memory, dask_config = SETTINGS[setting]
    environment = chapter.MEMORY_SETTINGS[memory]
    estimator = model.estimator  # the fitted scikit-learn model, for the plain baselines
    chunk_rows = config["throughput_chunk_rows"]
    plain = memory != chapter.DASK_DEFAULT_SETTINGS
    single = chapter.start_process_pool(1, environment) if plain else None
    pool = chapter.start_process_pool(2, environment) if plain else None
    client = chapter.start_local_cluster(2, environment, dask_config)

    def dask_pipeline(n_rows, seed):
        X, y = chapter.make_lazy_classification(geometry, n_rows, chunk_rows, seed)
        return float(model.score(X, y))

    run_method = {
        "single process": lambda n_rows, seed: chapter.run_process_pool(
            single, estimator, geometry, n_rows, chunk_rows, seed),
        "process pool (2)": lambda n_rows, seed: chapter.run_process_pool(
            pool, estimator, geometry, n_rows, chunk_rows, seed),
        "dask futures (2 workers)": lambda n_rows, seed: chapter.run_dask_futures(
            client, estimator, geometry, n_rows, chunk_rows, seed),
        "dask pipeline (2 workers)": dask_pipeline,
        "dask pipeline without the block copy": dask_pipeline,
    }
    runs = []

    def timed(method, n_rows, repeat):
        seed = next(seeds)
        start = time.perf_counter()
        accuracy = run_method[method](n_rows, seed)
        seconds = time.perf_counter() - start
        if repeat is not None:
            runs.append(dict(kind="throughput", setting=setting, method=method, repeat=repeat,
                             n_rows=n_rows, chunk_rows=chunk_rows, seed=seed, seconds=seconds,
                             rows_per_second=n_rows / seconds, accuracy=accuracy))
            print(f"  {setting:34s} {method:38s} {n_rows / seconds / 1e6:6.2f} M rows/s  "
                  f"accuracy {accuracy:.4f}", flush=True)

    # Dask's default settings are Dask's workers' own: no plain process runs with them.
    methods = [method for method in METHODS[:-1] if plain or method.startswith("dask")]
    try:
        patched = METHODS[-1]
        for method in methods:
            timed(method, config["warm_up_rows"], None)
        for repeat in range(config["repeats"]):
            for method in methods:
                timed(method, config["throughput_rows"], repeat)
        client.run(skip_single_block_copy)  # for good: this row comes last
        timed(patched, config["warm_up_rows"], None)
        for repeat in range(config["repeats"]):
            timed(patched, config["throughput_rows"], repeat)
    finally:
        client.close()
        for executor in (pool, single):
            if executor is not None:
                executor.shutdown()
    return runs


def measure_throughput(model, geometry, config) -> list[dict]:
    seeds = iter(range(SEED + 1, SEED + 10_000))
    return [run for setting in SETTINGS
            for run in measure_setting(setting, model, geometry, config, seeds)]


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


def median_rates(runs, setting) -> dict:
    """{method: median rows/s} of the methods measured under ``setting``."""
    rates = {}
    for method in METHODS:
        measured = [run["rows_per_second"] for run in runs
                    if run.get("setting") == setting and run.get("method") == method]
        if measured:
            rates[method] = float(np.median(measured))
    return rates


def draw_throughput_figure(rates, figures_dir=None) -> Path:
    figure, ax = plots.new_figure(width=9)
    chapter.plot_throughput_by_settings(rates, methods=METHODS, ax=ax)
    return plots.save_figure(figure, f"{NAME}_throughput", figures_dir)


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run into a temp dir")
    parser.add_argument("--replot", action="store_true",
                        help="only redraw the throughput figure from the saved results")
    args = parser.parse_args(argv)
    if args.replot:
        return draw_throughput_figure(measure.load_results(NAME)["summary"]["rows_per_second"])
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

    print("throughput, by settings (the same memory settings for every process of a column)", flush=True)
    runs = measure_throughput(model, geometry, config)
    rates = {setting: median_rates(runs, setting) for setting in SETTINGS}
    pipeline, pool = "dask pipeline (2 workers)", "process pool (2)"
    # This machine's ceiling: the plain pool under the settings that suit it best.
    ceiling = max((setting for setting in rates if pool in rates[setting]),
                  key=lambda setting: rates[setting][pool])

    # The chapter's cluster, with Dask's own worker settings, for the curve and the big run.
    client = chapter.start_local_cluster(2)
    try:
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

    smallest = min(curve, key=lambda point: point["chunk_rows"])
    fastest = max(curve, key=lambda point: point["rows_per_second"])
    claims = [
        measure.Claim("logical size of the lazily generated X in the big run", big["logical_gib"],
                      "GiB", 32, ">="),
        measure.Claim("peak cluster memory during the big run (MemorySampler)",
                      big["peak_memory_gib"], "GiB", 4, "<="),
        measure.Claim(f"dask pipeline ({THROUGHPUT_SCHEDULING}) / plain 2-process pool at its "
                      f"fastest ({ceiling}): throughput",
                      rates[THROUGHPUT_SCHEDULING][pipeline] / rates[ceiling][pool], "ratio",
                      0.9, ">="),
        measure.Claim("dask pipeline throughput, memory kept / Dask's default worker settings",
                      rates["memory kept"][pipeline]
                      / rates[chapter.DASK_DEFAULT_SETTINGS][pipeline], "x", 1, ">"),
        measure.Claim("dask pipeline throughput, memory kept: throughput scheduling / Dask's "
                      "default scheduling", rates[THROUGHPUT_SCHEDULING][pipeline]
                      / rates["memory kept"][pipeline], "x", 1, ">"),
        measure.Claim(f"throughput at {fastest['chunk_rows']:,}-row chunks / at "
                      f"{smallest['chunk_rows']:,}-row chunks",
                      fastest["rows_per_second"] / smallest["rows_per_second"], "x", 2, ">="),
    ]
    summary = dict(
        quick=args.quick,
        memory_settings=chapter.MEMORY_SETTINGS,
        # {column: {"memory": a MEMORY_SETTINGS name, "dask_config": {key: value as text}}}
        settings={name: dict(memory=memory, dask_config={key: str(value) for key, value
                                                         in (dask_config or {}).items()})
                  for name, (memory, dask_config) in SETTINGS.items()},
        ceiling_setting=ceiling,
        rows_per_second=rates,  # medians of the repeats
        over_pool={setting: {method: rate / by_method[pool] for method, rate in by_method.items()}
                   for setting, by_method in rates.items() if pool in by_method},
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
    draw_throughput_figure(rates, figures_dir)

    path = measure.write_results(NAME, claims=claims, runs=runs, extra={"summary": summary},
                                 results_dir=output)
    for claim in claims:
        print(measure.format_claim(claim))
    print("wrote", path)
    return path


if __name__ == "__main__":
    main()
