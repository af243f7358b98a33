"""Benchmark of chapter 1: the chapter's grid search run four ways on this machine.

    .venv/bin/python benchmarks/distributed_training.py          # writes benchmarks/results/ and figs/
    .venv/bin/python benchmarks/distributed_training.py --quick  # smoke run into a temporary folder

Modes: sequential (n_jobs=1), joblib's own processes (n_jobs=-1), joblib's dask backend on a
2-worker LocalCluster, and the dask backend with the training data scattered once (scatter=[X, y]).
Each mode is warmed up once on a small sample (process start-up and imports are not timed) and then
timed `--repeats` times, the modes interleaved. Claims: the dask backend with scatter is >= 1.8x
faster than n_jobs=1; with and without scatter it takes <= 1.10x the time of n_jobs=-1; and
scattering saves time.

Process memory settings (see chapter 2): the cluster starts first, and its nanny leaves Dask's
MALLOC_TRIM_THRESHOLD_=65536 in this process's environment, so joblib's n_jobs=-1 processes,
started later, run with the same setting as the Dask workers: those two compare like for like.
n_jobs=1 runs in this process, started without it (glibc's default), which chapter 2 measures
as the faster setting on this machine: if anything, the speed-ups over n_jobs=1 are understated.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from sklearn.datasets import fetch_20newsgroups

from scaling_ml import cluster, measure
from scaling_ml import distributed_training as ch

N_WORKERS = 2


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="400 documents, 1 repeat, results and figure in a temporary folder")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--categories", type=int, default=len(ch.BENCHMARK_CATEGORIES),
                        help="use the first N of the 20 topics (default: all 20)")
    arguments = parser.parse_args(argv)

    if not 1 <= arguments.categories <= len(ch.BENCHMARK_CATEGORIES):
        parser.error(f"--categories must be 1..{len(ch.BENCHMARK_CATEGORIES)}")
    categories = list(ch.BENCHMARK_CATEGORIES[:arguments.categories])
    repeats = arguments.repeats
    results_dir = figures_dir = None
    if repeats < 3 and not arguments.quick:
        parser.error("a measurement needs --repeats >= 3")
    if arguments.quick:
        categories, repeats = list(ch.NOTEBOOK_CATEGORIES[:2]), 1
        results_dir = figures_dir = Path(tempfile.mkdtemp(prefix="bench-distributed-training-"))
    ch.check_categories(categories)

    data = fetch_20newsgroups(subset="train", categories=categories)
    X, y = data.data, data.target
    if arguments.quick:  # a smoke run of every code path, not a measurement
        X, y = X[:400], y[:400]
    # Enough documents that every topic has a few in each fold of the warm-up.
    warm_up = (X[:1000], y[:1000]) if len(X) > 1000 else (X[:300], y[:300])
    print(f"{len(X):,} documents in {len(categories)} categories; "
          f"{ch.check_grid(ch.make_pipeline(), ch.PARAMETERS)} candidates x 3 folds; "
          f"{os.cpu_count()} cores", flush=True)

    client = cluster.get_client(n_workers=N_WORKERS, threads_per_worker=1)
    try:
        runs = ch.time_modes(ch.make_search, X, y, repeats=repeats, warm_up=warm_up,
                             log=lambda line: print(line, flush=True))
    finally:
        client.close()

    table = ch.summarise(runs)
    print(table.to_string())
    claims = ch.benchmark_claims(table)
    path = measure.write_results(
        ch.NAME, claims=claims, runs=runs, results_dir=results_dir,
        extra={"workload": {"categories": categories, "documents": len(X),
                            "candidates": ch.check_grid(ch.make_pipeline(), ch.PARAMETERS),
                            "folds": 3, "n_workers": N_WORKERS, "threads_per_worker": 1,
                            "warm_up_documents": len(warm_up[0])},
               "summary": table.reset_index().to_dict(orient="records")})
    _, figure_path = ch.plot_speedup(table, ideal=min(N_WORKERS, os.cpu_count() or 1),
                                     figures_dir=figures_dir)
    for claim in claims:
        print(measure.format_claim(claim))
    print(f"wrote {path} and {figure_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
