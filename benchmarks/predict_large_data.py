"""Chapter 2 benchmark: predict on a lazily generated array larger than memory.

It measures the chapter's own code: the notebook's cells tagged ``reused-by-benchmark`` (the
model, ``draw_labels`` / ``draw_features`` and ``lazy_classification``). The claims it checks
(written to benchmarks/results/predict_large_data.json, each with whether it holds; the chapter
and the appendix print the verdicts, not these sentences); every comparison carries the spread of
its repeats (``measure.ratio_spread``) and holds only when that whole spread meets its goal:

* a run on a lazily generated X of >= 32 GiB completes, predictions written to zarr, with peak
  cluster memory (distributed's MemorySampler) <= 4 GiB;
* with Dask's default settings the pipeline is slower than a plain 2-process concurrent.futures
  pool doing the same per-block work (``_predict_baselines.score_block``) with glibc's defaults,
  as any process you start yourself has them;
* keeping memory (no page faults per block) speeds up the pipeline over Dask's default worker
  settings;
* the chunk-size curve: blocks of millions of rows against the original tutorial's 1,000 rows.

It also measures, and the chapter and the appendix print with their verdicts, every column of
SETTINGS (the processes' memory settings and the cluster's Dask configuration), each with a single
process, the pool, the pool's per-block function as Dask futures, the pipeline, and, to size Dask's
copy of every block, the pipeline with that copy skipped (a measurement only: the workers are
patched for that row).

    .venv/bin/python -m benchmarks.predict_large_data            # the full run (about 30 min)
    .venv/bin/python -m benchmarks.predict_large_data --quick    # smoke run, writes to a temp dir
    .venv/bin/python -m benchmarks.predict_large_data --reclaim  # summary, claims and figures
                                                                 # again from the stored runs
    .venv/bin/python -m benchmarks.predict_large_data --curve-only  # only the chunk-size curve
                                                                    # again (a few minutes)
"""

import os

# One BLAS thread per process everywhere (Dask's nanny does the same for its workers), so the
# three ways of running compare processes with processes. Set before NumPy is imported.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import tempfile  # noqa: E402
from dataclasses import asdict  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import dask  # noqa: E402
import numpy as np  # noqa: E402
from dask_ml.metrics import accuracy_score  # noqa: E402
from distributed.diagnostics import MemorySampler  # noqa: E402

from benchmarks import _predict_baselines as baselines  # noqa: E402
from benchmarks import _predict_settings as process_settings  # noqa: E402
from benchmarks._notebook_cells import run_reused_cells  # noqa: E402
from scaling_ml import measure, plots  # noqa: E402
from scaling_ml import predict_large_data as chapter  # noqa: E402

NAME = "predict_large_data"
SEED = 2025
# Columns of the throughput table: {name: (memory setting of every process, Dask configuration
# of the cluster while it starts)}. Throughput scheduling changes only Dask, so the plain rows of
# that column re-measure "memory kept", interleaved with the Dask rows they are compared with.
DASK_DEFAULT = process_settings.DASK_DEFAULT_SETTINGS
THROUGHPUT_SCHEDULING = "memory kept, throughput scheduling"
SETTINGS = {
    DASK_DEFAULT: (DASK_DEFAULT, None),
    "glibc's default": ("glibc's default", None),
    "memory kept": ("memory kept", None),
    THROUGHPUT_SCHEDULING: ("memory kept", process_settings.THROUGHPUT_SCHEDULING),
}
# "dask pipeline (2 workers)" is the chapter's pipeline: ParallelPostFit.score on the lazy arrays.
METHODS = ("single process", "process pool (2)", "dask futures (2 workers)",
           "dask pipeline (2 workers)", "dask pipeline without the block copy")
PIPELINE, POOL = "dask pipeline (2 workers)", "process pool (2)"
GLIBC_DEFAULT = "glibc's default"


def settings(quick: bool) -> dict:
    if quick:
        return dict(big_blocks=8, big_rows_per_block=1_000_000, throughput_blocks=4,
                    throughput_rows_per_block=1_000_000, warm_up_blocks=2, repeats=1,
                    curve_rows_per_block=[1_000, 100_000, 1_000_000], curve_min_rows=1_000_000,
                    curve_min_blocks=4, curve_repeats=1, idle_seconds=1)
    # 430 blocks of 5 million rows: X is 430 * 5e6 * 2 features * 8 bytes = 32.04 GiB.
    # Throughput runs of 32 blocks take about 10 to 30 s each: starting a run and its last block,
    # when one of the two processes may already be idle, are a small share of that.
    return dict(big_blocks=430, big_rows_per_block=5_000_000, throughput_blocks=32,
                throughput_rows_per_block=5_000_000, warm_up_blocks=4, repeats=3,
                curve_rows_per_block=[1_000, 10_000, 100_000, 1_000_000, 5_000_000],
                curve_min_rows=1_000_000, curve_min_blocks=16, curve_repeats=3, idle_seconds=5)


def measure_setting(setting, cells, config, seeds) -> list[dict]:
    """Every method once to warm up, then ``repeats`` rounds of them in turn, under one setting.

    Each run draws new blocks (its own seed), so no run reuses another's results.
    """
    memory, dask_config = SETTINGS[setting]
    environment = process_settings.MEMORY_SETTINGS[memory]
    model, lazy_classification = cells["model"], cells["lazy_classification"]
    estimator = model.estimator  # the fitted scikit-learn model, for the plain baselines
    rows = config["throughput_rows_per_block"]
    plain = memory != DASK_DEFAULT
    start_pool = process_settings.start_process_pool
    single = start_pool(1, environment, baselines.notebook_cells) if plain else None
    pool = start_pool(2, environment, baselines.notebook_cells) if plain else None
    client = process_settings.start_local_cluster(2, environment, dask_config)
    client.run(baselines.notebook_cells)  # as the pools' processes do when they start

    def dask_pipeline(n_blocks, seed):
        return float(model.score(*lazy_classification(n_blocks, rows, seed)))

    run_method = {
        "single process": lambda n_blocks, seed: baselines.run_process_pool(
            single, estimator, n_blocks, rows, seed),
        POOL: lambda n_blocks, seed: baselines.run_process_pool(pool, estimator, n_blocks, rows, seed),
        "dask futures (2 workers)": lambda n_blocks, seed: baselines.run_dask_futures(
            client, estimator, n_blocks, rows, seed),
        PIPELINE: dask_pipeline,
        "dask pipeline without the block copy": dask_pipeline,
    }
    runs = []

    def timed(method, n_blocks, repeat):
        seed = next(seeds)
        start = time.perf_counter()
        accuracy = run_method[method](n_blocks, seed)
        seconds = time.perf_counter() - start
        if repeat is not None:
            n_rows = n_blocks * rows
            runs.append(dict(kind="throughput", setting=setting, method=method, repeat=repeat,
                             n_rows=n_rows, chunk_rows=rows, seed=seed, seconds=seconds,
                             rows_per_second=n_rows / seconds, accuracy=accuracy))
            print(f"  {setting:34s} {method:38s} {n_rows / seconds / 1e6:6.2f} M rows/s  "
                  f"accuracy {accuracy:.4f}", flush=True)

    # Dask's default settings are Dask's workers' own: no plain process runs with them.
    methods = [method for method in METHODS[:-1] if plain or method.startswith("dask")]
    try:
        patched = METHODS[-1]
        for method in methods:
            timed(method, config["warm_up_blocks"], None)
        for repeat in range(config["repeats"]):
            for method in methods:
                timed(method, config["throughput_blocks"], repeat)
        client.run(baselines.skip_single_block_copy)  # for good: this row comes last
        timed(patched, config["warm_up_blocks"], None)
        for repeat in range(config["repeats"]):
            timed(patched, config["throughput_blocks"], repeat)
    finally:
        client.close()
        for executor in (pool, single):
            if executor is not None:
                executor.shutdown()
    return runs


def chunk_size_curve(cells, config) -> list[dict]:
    """Throughput (rows/s) of the notebook's ``model.score`` for each block size, on enough rows,
    ``curve_repeats`` times (the sizes in turn, so that a slow moment does not hit one size only)."""
    model, lazy_classification = cells["model"], cells["lazy_classification"]
    points = []
    for repeat in range(config["curve_repeats"]):
        for rows in config["curve_rows_per_block"]:
            n_blocks = max(config["curve_min_rows"] // rows, config["curve_min_blocks"])
            X, y = lazy_classification(n_blocks, rows, SEED + repeat)
            start = time.perf_counter()
            accuracy = float(model.score(X, y))
            seconds = time.perf_counter() - start
            points.append(dict(chunk_rows=rows, repeat=repeat, n_rows=n_blocks * rows,
                               n_chunks=n_blocks, seconds=seconds,
                               rows_per_second=n_blocks * rows / seconds, accuracy=accuracy))
            print(f"  {rows:>9,} rows/block: {points[-1]['rows_per_second'] / 1e6:6.2f} M rows/s",
                  flush=True)
    return points


def big_run(client, cells, config, scratch: Path) -> dict:
    """The notebook's zarr write at full size, with MemorySampler watching (idle cluster first)."""
    n_blocks, rows = config["big_blocks"], config["big_rows_per_block"]
    X, y = cells["lazy_classification"](n_blocks, rows, SEED)
    predictions = cells["model"].predict(X)
    write = predictions.to_zarr(str(scratch / "predictions.zarr"), compute=False)
    accuracy = accuracy_score(y, predictions, compute=False)
    ms = MemorySampler()
    with ms.sample("idle cluster", client=client, interval=0.5):
        time.sleep(config["idle_seconds"])
    with ms.sample("predict into zarr", client=client, interval=0.5):
        start = time.perf_counter()
        # As the notebook does: optimising the score apart from the write (fused when it was
        # built) would draw and predict every block twice.
        _, accuracy = dask.compute(write, accuracy, optimize_graph=False)
        seconds = time.perf_counter() - start
    memory = ms.to_pandas(align=True) / 2**30
    during = memory["predict into zarr"].dropna()
    during.index = during.index.total_seconds().round(2)
    on_disk = sum(file.stat().st_size for file in scratch.rglob("*") if file.is_file())
    return dict(kind="big run", n_rows=n_blocks * rows, chunk_rows=rows, n_chunks=n_blocks,
                logical_gib=X.nbytes / 2**30, logical_gib_with_labels=(X.nbytes + y.nbytes) / 2**30,
                seconds=seconds, rows_per_second=n_blocks * rows / seconds, accuracy=float(accuracy),
                idle_memory_gib=float(memory["idle cluster"].median()),
                peak_memory_gib=float(during.max()), zarr_on_disk_gib=on_disk / 2**30,
                memory_over_time=during.round(4).to_dict())


def median_rates(runs, setting) -> dict:
    """{method: median rows/s} of the methods measured under ``setting``."""
    rates = {}
    for method in METHODS:
        measured = [run["rows_per_second"] for run in runs
                    if run.get("setting") == setting and run.get("method") == method]
        if measured:
            rates[method] = float(np.median(measured))
    return rates


def rate_ranges(runs, setting) -> dict:
    """{method: [lowest, highest] rows/s} of the repeats of the methods measured under ``setting``."""
    ranges = {}
    for method in METHODS:
        measured = [run["rows_per_second"] for run in runs
                    if run.get("setting") == setting and run.get("method") == method]
        if measured:
            ranges[method] = [float(min(measured)), float(max(measured))]
    return ranges


def curve_points(runs) -> list[dict]:
    """The chunk-size curve: per block size, the median rows/s of its repeats and their range."""
    by_size: dict[int, list[dict]] = {}
    for run in runs:
        if run.get("kind") == "chunk size":
            by_size.setdefault(run["chunk_rows"], []).append(run)
    points = []
    for rows, repeats in sorted(by_size.items()):
        rates = [run["rows_per_second"] for run in repeats]
        points.append(dict(chunk_rows=rows, n_rows=repeats[0]["n_rows"], n_chunks=repeats[0]["n_chunks"],
                           repeats=len(rates), rows_per_second=float(np.median(rates)),
                           rows_per_second_range=[float(min(rates)), float(max(rates))],
                           accuracy=float(np.median([run["accuracy"] for run in repeats]))))
    return points


def summarise(runs) -> dict:
    """What the notebooks read, computed from the runs alone (so --reclaim can redo it)."""
    throughput = [run for run in runs if run.get("kind") == "throughput"]
    settings_measured = [setting for setting in SETTINGS
                         if any(run["setting"] == setting for run in throughput)]
    rates = {setting: median_rates(throughput, setting) for setting in settings_measured}
    # This machine's ceiling: the plain pool under the settings that suit it best.
    ceiling = max((setting for setting in rates if POOL in rates[setting]),
                  key=lambda setting: rates[setting][POOL])
    [big] = [run for run in runs if run.get("kind") == "big run"]
    return dict(
        ceiling_setting=ceiling,
        rows_per_second=rates,  # medians of the repeats
        rows_per_second_range={setting: rate_ranges(throughput, setting)
                               for setting in settings_measured},
        over_pool={setting: {method: rate / by_method[POOL] for method, rate in by_method.items()}
                   for setting, by_method in rates.items() if POOL in by_method},
        big_run={key: value for key, value in big.items() if key != "memory_over_time"},
        chunk_size_curve=curve_points(runs),
    )


def comparison_claim(name, results, numerator, denominator, goal_op, goal) -> measure.Claim:
    """A claim about the throughput of two (setting, method) pairs, with the spread of their repeats."""
    comparison = chapter.compare_throughput(results, numerator, denominator)
    return measure.Claim(name, comparison["measured"], "ratio", goal, goal_op,
                         spread=comparison["spread"])


def benchmark_claims(results: dict) -> list[measure.Claim]:
    """The claims of a results document whose summary :func:`summarise` wrote: what the chapter
    and the appendix state. The tuned pipeline against the pool at its fastest, and throughput
    scheduling against Dask's, are printed there with their verdicts (no difference measured on
    this machine), so they are comparisons the book shows, not claims it makes."""
    summary = results["summary"]
    big = summary["big_run"]
    curve = summary["chunk_size_curve"]
    smallest = min(curve, key=lambda point: point["chunk_rows"])
    fastest = max(curve, key=lambda point: point["rows_per_second"])
    sizes = [run for run in results["runs"] if run.get("kind") == "chunk size"]
    fastest_repeats = [run["rows_per_second"] for run in sizes if run["chunk_rows"] == fastest["chunk_rows"]]
    smallest_repeats = [run["rows_per_second"] for run in sizes if run["chunk_rows"] == smallest["chunk_rows"]]
    # One repeat per size (runs before the curve was repeated) has no spread to give.
    curve_spread = (measure.ratio_spread(fastest_repeats, smallest_repeats)
                    if min(len(fastest_repeats), len(smallest_repeats)) > 1 else None)
    return [
        measure.Claim("logical size of the lazily generated X in the big run", big["logical_gib"],
                      "GiB", 32, ">="),
        measure.Claim("peak cluster memory during the big run (MemorySampler)",
                      big["peak_memory_gib"], "GiB", 4, "<="),
        comparison_claim(f"dask pipeline ({DASK_DEFAULT}) / plain 2-process pool ({GLIBC_DEFAULT}): "
                         "throughput, both as they start without settings",
                         results, (DASK_DEFAULT, PIPELINE), (GLIBC_DEFAULT, POOL), "<", 1),
        comparison_claim("dask pipeline throughput, memory kept / Dask's default worker settings",
                         results, ("memory kept", PIPELINE), (DASK_DEFAULT, PIPELINE), ">", 1),
        measure.Claim(f"throughput at {fastest['chunk_rows']:,}-row blocks / at "
                      f"{smallest['chunk_rows']:,}-row blocks",
                      fastest["rows_per_second"] / smallest["rows_per_second"], "x", 2, ">=",
                      spread=curve_spread),
    ]


def reclaim(results_dir=None, figures_dir=None) -> Path:
    """Recompute the stored document's summary, claims and figures from its runs (no new run);
    the runs' date, machine and versions are kept."""
    document = measure.load_results(NAME, results_dir)
    document["summary"] = {**document["summary"], **summarise(document["runs"])}
    document["claims"] = [asdict(claim) for claim in benchmark_claims(document)]
    path = measure.write_document(NAME, document, results_dir)
    draw_figures(measure.load_results(NAME, results_dir), figures_dir)
    return path


def draw_figures(results: dict, figures_dir=None) -> list[Path]:
    """The chapter's and the appendix's figures of these results, saved under figs/."""
    drawings = [
        ("memory", lambda ax: chapter.plot_big_run_memory(results, ax=ax), None),
        ("chunk_size", lambda ax: chapter.plot_chunk_size_curve(
            results["summary"]["chunk_size_curve"], ax=ax), None),
        ("throughput", lambda ax: chapter.plot_throughput_by_settings(
            results["summary"]["rows_per_second"], methods=METHODS, ax=ax,
            ranges=results["summary"].get("rows_per_second_range")), 9),
    ]
    paths = []
    for name, draw, width in drawings:
        figure, ax = plots.new_figure(width=width)
        draw(ax)
        paths.append(plots.save_figure(figure, f"{NAME}_{name}", figures_dir))
    return paths


def measure_curve_again(config) -> Path:
    """Replace the stored chunk-size runs with new ones on the chapter's cluster, then reclaim."""
    document = measure.load_results(NAME)
    cells = run_reused_cells("02_predict_large_data.ipynb")
    client = process_settings.start_local_cluster(2)
    try:
        print("chunk-size curve", flush=True)
        curve = [dict(kind="chunk size", **point) for point in chunk_size_curve(cells, config)]
    finally:
        client.close()
    document["runs"] = [run for run in document["runs"] if run.get("kind") != "chunk size"] + curve
    document["summary"]["chunk_size_measured"] = measure.machine_info() | {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    measure.write_document(NAME, document)
    return reclaim()


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run into a temp dir")
    parser.add_argument("--replot", action="store_true",
                        help="only redraw the figures from the saved results")
    parser.add_argument("--curve-only", action="store_true",
                        help="measure only the chunk-size curve again (a few minutes) and keep "
                             "the stored document's other runs")
    parser.add_argument("--reclaim", action="store_true",
                        help="no new run: recompute the summary, claims and figures from the "
                             "stored runs (after the claims changed)")
    args = parser.parse_args(argv)
    if args.replot:
        return draw_figures(measure.load_results(NAME))[0]
    if args.reclaim:
        path = reclaim()
        for claim in measure.load_results(NAME)["claims"]:
            print(measure.format_claim(measure.Claim(**{key: value for key, value in claim.items()
                                                        if key != "holds"})))
        print("rewrote", path)
        return path
    config = settings(args.quick)
    if args.curve_only:
        return measure_curve_again(config)
    output = Path(tempfile.mkdtemp(prefix="bench-predict-")) if args.quick else None

    # The notebook's model, draw_labels / draw_features and lazy_classification (the pools'
    # processes and the workers load the same cells through baselines.notebook_cells).
    cells = run_reused_cells("02_predict_large_data.ipynb")
    estimator = cells["model"].estimator

    print("cost of each step of one block (this process)", flush=True)
    breakdown = baselines.block_cost_breakdown(estimator, config["throughput_rows_per_block"],
                                               seed=SEED)
    for step, seconds in breakdown.items():
        print(f"  {step:36s} {seconds * 1000:7.1f} ms", flush=True)

    print("throughput, by settings (the same memory settings for every process of a column)",
          flush=True)
    seeds = iter(range(SEED + 1, SEED + 10_000))
    runs = [run for setting in SETTINGS for run in measure_setting(setting, cells, config, seeds)]

    # The chapter's cluster, with Dask's own settings, for the curve and the big run.
    client = process_settings.start_local_cluster(2)
    try:
        print("chunk-size curve", flush=True)
        runs += [dict(kind="chunk size", **point) for point in chunk_size_curve(cells, config)]
        print("big run", flush=True)
        with tempfile.TemporaryDirectory(prefix="predict-zarr-") as scratch:
            big = big_run(client, cells, config, Path(scratch))
        print(f"  {big['logical_gib']:.2f} GiB in {big['seconds']:.0f} s, "
              f"peak {big['peak_memory_gib']:.2f} GiB (idle {big['idle_memory_gib']:.2f} GiB)",
              flush=True)
        runs.append(big)
    finally:
        client.close()

    summary = dict(
        quick=args.quick,
        memory_settings=process_settings.MEMORY_SETTINGS,
        # {column: {"memory": a MEMORY_SETTINGS name, "dask_config": {key: value as text}}}
        settings={name: dict(memory=memory, dask_config={key: str(value) for key, value
                                                         in (dask_config or {}).items()})
                  for name, (memory, dask_config) in SETTINGS.items()},
        chunk_cost_seconds=breakdown,
        **summarise(runs),
    )
    claims = benchmark_claims({"summary": summary, "runs": runs})
    path = measure.write_results(NAME, claims=claims, runs=runs, extra={"summary": summary},
                                 results_dir=output)
    draw_figures(measure.load_results(NAME, output), output)
    for claim in claims:
        print(measure.format_claim(claim))
    print("wrote", path)
    return path


if __name__ == "__main__":
    main()
