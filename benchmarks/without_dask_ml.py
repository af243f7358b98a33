"""Chapter 7 benchmark: search and prediction without dask-ml, measured against dask-ml.

Run: .venv/bin/python -m benchmarks.without_dask_ml           (writes benchmarks/results/, figs/)
     .venv/bin/python -m benchmarks.without_dask_ml --quick   (small sizes, a temporary folder)

Everything runs in one session on one 2-worker LocalCluster, with the functions of notebook 07's
cells tagged ``reused-by-benchmark`` (the chapter's own code, not a copy).

Claims (see notebooks/07_without_dask_ml.ipynb):
1. on chapter 3's search problem, the best validation accuracy of Optuna (SuccessiveHalvingPruner),
   HalvingRandomSearchCV (joblib's Dask backend) and dask-ml's HyperbandSearchCV is each within
   1 point of a full randomized search (plain futures: every candidate gets MAX_ITER partial_fit
   calls), median over the seeds of the per-seed difference;
2. each of them spends at most 1/3 of the reference's partial_fit calls (median over the seeds;
   the halving search's fits are counted as epochs * rows / rows per training block calls);
3. ``da.map_blocks(model.predict, ...)`` predicts within 5% of ``ParallelPostFit``'s throughput on
   the same persisted chunks (medians of alternating repeats).
Every route runs once per seed; a seed draws the candidates and the validation rows (the same rows
for every route of that seed). The wall time of each route is recorded with its run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import dask
import dask.array as da
import joblib
import numpy as np
import optuna
from dask_ml.model_selection import HyperbandSearchCV
from dask_ml.wrappers import ParallelPostFit
from distributed import wait
from optuna_integration import DaskStorage
from sklearn.experimental import enable_halving_search_cv  # noqa: F401
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import HalvingRandomSearchCV, ParameterSampler, PredefinedSplit

from benchmarks._notebook_cells import run_reused_cells
from scaling_ml import cluster, measure, plots
from scaling_ml import without_dask_ml as chapter

NAME = "without_dask_ml"
EPOCHS = 3  # the halving search's SGDClassifier(max_iter=EPOCHS, tol=None), as in the chapter


class HyperbandOnTheGivenSplit(HyperbandSearchCV):
    """HyperbandSearchCV that trains and validates on the rows the other routes use.

    Each bracket of dask-ml's Hyperband splits the data given to ``fit`` again, with its own
    random_state, so its brackets would score on different validation rows from each other and
    from the other routes. Every bracket here gets ``given_split`` instead, through the hook
    dask-ml's incremental searches use for their split (``_get_train_test_split``).
    """

    given_split = None

    def _get_SHAs(self, brackets):
        searches = super()._get_SHAs(brackets)
        for search in searches.values():
            search._get_train_test_split = lambda X, y, **kwargs: self.given_split
        return searches


def search_runs(client, cells, seed, n_candidates, max_iter):
    """One seed: the four routes on the same training and validation rows."""
    data = cells["split_blocks"](*search_arrays(cells), cells["N_BLOCKS"],
                                 cells["VALIDATION_FRACTION"], seed=seed)
    rows_per_train_block = len(data["train_blocks"][0][1])
    [on_workers] = client.scatter([data], broadcast=True)
    runs = []

    def record(route, seconds, best_score, calls, **extra):
        runs.append({"part": "search", "route": route, "seed": seed, "seconds": round(seconds, 3),
                     "best_score": round(float(best_score), 5),
                     "partial_fit_calls": round(float(calls), 1), **extra})
        print(runs[-1], flush=True)

    # The reference: every candidate trained fully, one task each.
    candidates = list(ParameterSampler(cells["parameters"], n_iter=n_candidates, random_state=seed))
    with measure.timer() as elapsed:
        histories = client.gather(client.map(cells["train_candidate"], candidates,
                                             data=on_workers, n_calls=max_iter))
    record("reference", elapsed(), max(history[-1] for history in histories),
           sum(map(len, histories)), n_candidates=n_candidates)

    # Optuna: a study on the scheduler, one task per trial, a sampler seeded per task.
    study = optuna.create_study(
        storage=DaskStorage(), direction="maximize",
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3))
    with measure.timer() as elapsed:
        client.gather([client.submit(cells["run_trial"], study, on_workers, max_iter,
                                     seed * 100_000 + trial, pure=False)
                       for trial in range(n_candidates)])
    trials = study.trials
    pruned = sum(trial.state == optuna.trial.TrialState.PRUNED for trial in trials)
    record("optuna", elapsed(), study.best_value,
           sum(len(trial.intermediate_values) for trial in trials), n_candidates=len(trials),
           pruned=pruned)

    # HalvingRandomSearchCV: fits on growing samples, with the same validation rows.
    X_all = np.concatenate([X for X, _ in data["train_blocks"]] + [data["X_validation"]])
    y_all = np.concatenate([y for _, y in data["train_blocks"]] + [data["y_validation"]])
    n_train = len(y_all) - len(data["y_validation"])
    halving = HalvingRandomSearchCV(
        SGDClassifier(loss="log_loss", random_state=0, max_iter=EPOCHS, tol=None),
        cells["parameters"], n_candidates=n_candidates, factor=3, resource="n_samples",
        min_resources=len(y_all) // max_iter,
        cv=PredefinedSplit(np.r_[np.full(n_train, -1), np.zeros(len(y_all) - n_train)]),
        refit=False, random_state=seed, n_jobs=-1)
    with measure.timer() as elapsed:
        with joblib.parallel_config(backend="dask"):
            halving.fit(X_all, y_all)
    record("halving", elapsed(), halving.best_score_,
           chapter.halving_partial_fit_calls(halving.cv_results_, len(y_all), n_train, EPOCHS,
                                             rows_per_train_block),
           n_candidates=int(halving.n_candidates_[0]))

    # dask-ml's HyperbandSearchCV on the same split (the pinned set only).
    split = (da.concatenate([da.from_array(X) for X, _ in data["train_blocks"]]),
             da.from_array(data["X_validation"]),
             da.concatenate([da.from_array(y) for _, y in data["train_blocks"]]),
             da.from_array(data["y_validation"]))
    hyperband = HyperbandOnTheGivenSplit(SGDClassifier(loss="log_loss", random_state=0),
                                         cells["parameters"], max_iter=max_iter, random_state=seed)
    hyperband.given_split = split
    with measure.timer() as elapsed:
        hyperband.fit(split[0], split[2], classes=[0, 1])
    record("hyperband", elapsed(), hyperband.best_score_,
           sum(hyperband.cv_results_["partial_fit_calls"]),
           n_candidates=len(hyperband.cv_results_["params"]))
    client.cancel(on_workers)
    return runs


def search_arrays(cells):
    """Chapter 3's data, computed once (the same for every seed; the split changes)."""
    if "_search_arrays" not in cells:
        cells["_search_arrays"] = dask.compute(*cells["make_search_data"](
            cells["N_BLOCKS"], cells["ROWS_PER_BLOCK"], cells["N_FEATURES"], seed=0))
    return cells["_search_arrays"]


def prediction_runs(client, cells, n_rows, chunk_rows, repeats):
    """Throughput of map_blocks and ParallelPostFit on the same persisted chunks, alternating."""
    model = cells["model"]
    rows = da.map_blocks(cells["draw_rows"], chunks=((chunk_rows,) * (n_rows // chunk_rows), (3,)),
                         dtype=float, means=cells["class_means"],
                         covariances=cells["class_covariances"], seed=0)
    X = rows[:, :2].persist()
    wait(X)

    def tasks_on_scheduler():
        return client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))

    held = tasks_on_scheduler()  # X's chunks (and anything earlier parts still hold)

    def wait_for_release(timeout=60):
        # Both routes' graphs have deterministic keys: computed right after the same route, a graph
        # whose result the scheduler has not yet forgotten comes back at once, untimed work.
        deadline = time.monotonic() + timeout
        while tasks_on_scheduler() > held:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the scheduler still holds more than {held} tasks after {timeout} s")
            time.sleep(0.02)

    def with_map_blocks():
        return da.map_blocks(model.predict, X, drop_axis=1, dtype=model.classes_.dtype)

    def with_parallel_post_fit():
        return ParallelPostFit(model).predict(X)

    methods = {"map_blocks": with_map_blocks, "ParallelPostFit": with_parallel_post_fit}
    if not bool((with_map_blocks() == with_parallel_post_fit()).all().compute()):
        raise RuntimeError("map_blocks and ParallelPostFit predicted different labels")
    for method in methods.values():  # warm-up: the model reaches the workers' caches
        method().sum().compute()
    runs = []
    for repeat in range(repeats):
        order = list(methods) if repeat % 2 == 0 else list(reversed(methods))
        for name in order:
            wait_for_release()
            with measure.timer() as elapsed:
                methods[name]().sum().compute()  # graph built and computed: what a user waits for
            runs.append({"part": "prediction", "method": name, "repeat": repeat, "rows": n_rows,
                         "chunk_rows": chunk_rows, "seconds": round(elapsed(), 4),
                         "rows_per_second": round(n_rows / elapsed(), 1)})
            print(runs[-1], flush=True)
    client.cancel(X)
    return runs


def claims_from(document) -> list[measure.Claim]:
    comparison = chapter.route_comparison(document)
    seeds = int(comparison.loc["reference", "seeds"])
    claims = []
    for route in ("optuna", "halving", "hyperband"):
        label = chapter.ROUTES[route].replace("\n", " ")
        claims.append(measure.Claim(
            f"best validation accuracy: reference minus {label} (points, median of {seeds} seeds)",
            round(comparison.loc[route, "points_below_reference"], 3), "points", 1.0, "<="))
        claims.append(measure.Claim(
            f"partial_fit calls: {label} / reference (median of {seeds} seeds)",
            round(comparison.loc[route, "share_of_reference_calls"], 4), "x", 1 / 3, "<="))
    throughput = chapter.prediction_medians(document)
    claims.append(measure.Claim(
        "|1 - throughput map_blocks / ParallelPostFit| (percent, medians, same chunks)",
        round(100 * abs(1 - throughput["map_blocks"] / throughput["ParallelPostFit"]), 2), "%",
        5.0, "<="))
    return claims


def draw_figures(document, figures_dir):
    plots.save_figure(chapter.plot_route_comparison(document), f"{NAME}_search", figures_dir)
    figure, ax = plots.new_figure(width=5)
    chapter.plot_prediction_throughput(document, ax=ax)
    plots.save_figure(figure, f"{NAME}_prediction", figures_dir)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, 2 seeds, results and figures in a temporary folder")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per search route (>= 3 for the claims)")
    parser.add_argument("--prediction-repeats", type=int, default=9,
                        help="timed repeats of each prediction method")
    parser.add_argument("--prediction-rows", type=int, default=200_000_000,
                        help="rows of the persisted array both prediction methods read (3.2 GB at the default; "
                             "long enough runs that a second of jitter weighs little)")
    parser.add_argument("--figures-only", action="store_true",
                        help="redraw figs/ from benchmarks/results/without_dask_ml.json, measure nothing")
    arguments = parser.parse_args(argv)
    if arguments.figures_only:
        draw_figures(measure.load_results(NAME), None)
        return 0
    cells = run_reused_cells("07_without_dask_ml.ipynb")
    if arguments.quick:
        seeds, max_iter = 2, 9
        n_rows, chunk_rows, repeats = 2_000_000, 500_000, 2
        results_dir = figures_dir = tempfile.mkdtemp(prefix="bench-without-dask-ml-")
    else:
        seeds, max_iter = arguments.seeds, cells["MAX_ITER"]
        # Scale up: on a real cluster, n_rows with the workers' memory (X is persisted).
        n_rows, chunk_rows, repeats = (arguments.prediction_rows, 2_000_000,
                                       arguments.prediction_repeats)
        results_dir = figures_dir = None
    # Every route tries as many candidates as Hyperband does for this max_iter (49 for 27).
    n_candidates = HyperbandSearchCV(SGDClassifier(), cells["parameters"],
                                     max_iter=max_iter).metadata["n_models"]
    if seeds < 3 and not arguments.quick:
        print(f"note: {seeds} seeds; the chapter's claims ask for at least 3", flush=True)
    start = time.perf_counter()
    client = cluster.get_client()
    try:
        cells["quiet_optuna"]()
        client.run(cells["quiet_optuna"])
        runs = []
        for seed in range(seeds):
            runs += search_runs(client, cells, seed, n_candidates, max_iter)
        runs += prediction_runs(client, cells, n_rows, chunk_rows, repeats)
        # Written before the cluster stops: a slow shutdown on a busy machine loses nothing.
        claims = claims_from({"runs": runs})
        settings = {"quick": arguments.quick, "seeds": seeds, "n_candidates": n_candidates,
                    "max_iter": max_iter, "epochs_halving": EPOCHS, "n_blocks": cells["N_BLOCKS"],
                    "rows_per_block": cells["ROWS_PER_BLOCK"], "n_features": cells["N_FEATURES"],
                    "prediction_rows": n_rows, "chunk_rows": chunk_rows,
                    "prediction_repeats": repeats}
        extra = {"settings": settings, "total_seconds": round(time.perf_counter() - start, 1),
                 "package_versions": measure.versions(("optuna", "optuna-integration", "lightgbm"))}
        path = measure.write_results(NAME, claims=claims, runs=runs, extra=extra,
                                     results_dir=results_dir)
        document = measure.load_results(NAME, results_dir)
        draw_figures(document, figures_dir)
    finally:
        try:
            with cluster.captured_logs("distributed"):  # shutdown warnings of a busy machine
                client.close(timeout=120)
        except TimeoutError:
            # Seen on a machine loaded by other jobs: the nannies stop their workers after this.
            print("note: the cluster took more than 120 s to stop", flush=True)
    print(chapter.route_comparison(document).to_string())
    for claim in claims:
        print(measure.format_claim(claim))
    print(f"wrote {path} in {extra['total_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
