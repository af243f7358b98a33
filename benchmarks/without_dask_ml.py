"""Chapter 7 benchmark: search and prediction without dask-ml, measured against dask-ml.

Run: .venv/bin/python -m benchmarks.without_dask_ml         (writes benchmarks/results/, figs/)
     .venv/bin/python -m benchmarks.without_dask_ml --quick   (small sizes, a temporary folder)
     .venv/bin/python -m benchmarks.without_dask_ml --reclaim   (claims and figures from the stored runs)

Everything runs in one session on one 2-worker LocalCluster (one thread each), with the functions of
notebook 07's cells tagged ``reused-by-benchmark`` (the chapter's own code, not a copy).

The search (per seed: a seed draws the candidates and the validation rows, the same for every
route of that seed): the reference (every candidate gets MAX_ITER partial_fit calls, plain futures),
the same search on one machine (joblib's default backend, n_jobs=-1, no Dask), a third of the budget
spent evenly (every candidate MAX_ITER // 3 calls) or on a third of the candidates (fully), Optuna
with a successive halving pruner (on DaskStorage and on a journal file), HalvingRandomSearchCV on
joblib's Dask backend, and dask-ml's HyperbandSearchCV on the same split. Each route records its
best validation accuracy, its work (partial_fit calls and validation scorings), its wall time and,
from the recorded task stream, how busy each of its rounds kept the workers.

Claims (``measure.Claim`` with the range over the seeds or repeats as spread; a claim holds only
when the whole range meets the goal):
1. the halving search and Hyperband, whose budgets are fixed by their rounds and brackets, spend at
   most a third of the reference's partial_fit calls (Optuna's asynchronous pruner has no fixed
   budget: its share is printed with its range, not claimed);
2. spending a third of the budget evenly scores below the reference (the score depends on the
   budget, so the problem can rank the searches);
3. each adaptive route scores above the even split of a third of the budget;
4. the forest scattered once predicts faster than the forest inside every task.
Everything else the chapter compares (each route against the reference, wall times, map_blocks
against ParallelPostFit) it prints with its range and words it from that range
(``without_dask_ml.compare``): "no difference measured here" when the range includes none.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import tempfile
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import dask
import dask.array as da
import joblib
import numpy as np
import optuna
from dask_ml.wrappers import ParallelPostFit
from distributed import get_task_stream, wait
from joblib import Parallel, delayed
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna_integration import DaskStorage
from sklearn.ensemble import RandomForestClassifier
from sklearn.experimental import enable_halving_search_cv  # noqa: F401
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import HalvingRandomSearchCV, ParameterSampler, PredefinedSplit

from benchmarks import _without_dask_ml_figures as figures
from benchmarks._notebook_cells import run_reused_cells

from scaling_ml import cluster, measure, plots
from scaling_ml import without_dask_ml as chapter

NAME = "without_dask_ml"
EPOCHS = 3  # the halving search's SGDClassifier(max_iter=EPOCHS, tol=None), as in the chapter
# The routes that decide, while they run, which candidates get more calls.
ADAPTIVE_ROUTES = ("optuna", "optuna_journal", "halving", "hyperband")
# Those whose budget is fixed before they start (rounds, brackets); Optuna's depends on timing.
FIXED_BUDGET_ROUTES = ("halving", "hyperband")


def search_runs(client, cells, seed, n_candidates, max_iter, study_folder):
    """One seed: every route on the same training and validation rows."""
    data = cells["split_blocks"](*search_arrays(cells), cells["N_BLOCKS"],
                                 cells["VALIDATION_FRACTION"], seed=seed)
    rows_per_train_block = len(data["train_blocks"][0][1])
    threads = sum(client.nthreads().values())
    [on_workers] = client.scatter([data], broadcast=True)
    runs = []

    def timed(run, calls_per_round=None, record_stream=True):
        """Run ``run()`` and return its result, its seconds and the busy share of its rounds."""
        if not record_stream:
            with measure.timer() as elapsed:
                result = run()
            return result, elapsed(), None
        with get_task_stream(client=client) as stream, measure.timer() as elapsed:
            result = run()
        rounds = chapter.busy_by_round(stream.data, threads, calls_per_round=calls_per_round)
        return result, elapsed(), rounds

    def record(route, seconds, rounds, best_score, calls, scorings, **extra):
        runs.append({"part": "search", "route": route, "seed": seed, "seconds": round(seconds, 3),
                     "best_score": round(float(best_score), 5),
                     "partial_fit_calls": round(float(calls), 1), "scorings": int(scorings),
                     "rounds": rounds, **extra})
        print({key: value for key, value in runs[-1].items() if key != "rounds"}, flush=True)

    def best_of(histories):
        return max(history[-1] for history in histories)

    # The reference: every candidate trained fully, one task each.
    candidates = list(ParameterSampler(cells["parameters"], n_iter=n_candidates, random_state=seed))
    histories, seconds, rounds = timed(lambda: client.gather(client.map(
        cells["train_candidate"], candidates, data=on_workers, n_calls=max_iter)))
    calls = sum(map(len, histories))
    record("reference", seconds, rounds, best_of(histories), calls, calls, n_candidates=n_candidates)

    # The same search on one machine: joblib's default backend, no Dask.
    local, seconds, _ = timed(lambda: Parallel(n_jobs=-1)(
        delayed(cells["train_candidate"])(params, data, max_iter) for params in candidates),
        record_stream=False)
    if local != histories:
        raise RuntimeError("the search on one machine scored differently from the reference")
    record("single_machine", seconds, None, best_of(local), calls, calls, n_candidates=n_candidates)

    # A third of the budget, spent evenly: every candidate a third of the calls.
    even, seconds, rounds = timed(lambda: client.gather(client.map(
        cells["train_candidate"], candidates, data=on_workers, n_calls=max_iter // 3)))
    if any(part != full[: max_iter // 3] for part, full in zip(even, histories)):
        raise RuntimeError("the even split's scores are not the reference's first ones")
    calls = sum(map(len, even))
    record("even_split", seconds, rounds, best_of(even), calls, calls, n_candidates=n_candidates)

    # A third of the budget on a third of the candidates, each trained fully.
    few, seconds, rounds = timed(lambda: client.gather(client.map(
        cells["train_candidate"], candidates[: n_candidates // 3], data=on_workers, n_calls=max_iter)))
    calls = sum(map(len, few))
    record("fewer_full", seconds, rounds, best_of(few), calls, calls, n_candidates=n_candidates // 3)

    # Optuna: one task per trial, a sampler seeded per task, the study on the scheduler or a file.
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    journal = str(Path(study_folder) / f"seed-{seed}.journal")
    for route, storage in (("optuna", DaskStorage()),
                           ("optuna_journal", JournalStorage(JournalFileBackend(journal)))):
        study = optuna.create_study(storage=storage, direction="maximize", pruner=pruner)
        _, seconds, rounds = timed(lambda study=study: client.gather([
            client.submit(cells["run_trial"], study, on_workers, max_iter, seed * 100_000 + trial,
                          pure=False) for trial in range(n_candidates)]))
        trials = study.trials
        calls = sum(len(trial.intermediate_values) for trial in trials)
        pruned = sum(trial.state == optuna.trial.TrialState.PRUNED for trial in trials)
        record(route, seconds, rounds, study.best_value, calls, calls, n_candidates=len(trials),
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
        refit=False, return_train_score=False, random_state=seed, n_jobs=-1)

    def fit_halving():
        with joblib.parallel_config(backend="dask"):
            halving.fit(X_all, y_all)

    # The rounds are known only after the fit: record the stream, split it afterwards.
    with get_task_stream(client=client) as stream, measure.timer() as elapsed:
        fit_halving()
    rounds = chapter.busy_by_round(stream.data, threads, calls_per_round=halving.n_candidates_)
    record("halving", elapsed(), rounds, halving.best_score_,
           chapter.halving_partial_fit_calls(halving.cv_results_, len(y_all), n_train, EPOCHS,
                                             rows_per_train_block),
           len(halving.cv_results_["params"]), n_candidates=int(halving.n_candidates_[0]),
           rounds_of_fits=[int(count) for count in halving.n_candidates_])

    # dask-ml's HyperbandSearchCV on the same split (the pinned set only).
    split = [da.concatenate([da.from_array(X) for X, _ in data["train_blocks"]]),
             da.concatenate([da.from_array(y) for _, y in data["train_blocks"]]),
             da.from_array(data["X_validation"]), da.from_array(data["y_validation"])]
    hyperband = cells["HyperbandOnOurSplit"](SGDClassifier(loss="log_loss", random_state=0),
                                             cells["parameters"], max_iter=max_iter, random_state=seed)
    with get_task_stream(client=client) as stream, measure.timer() as elapsed:
        hyperband.fit_on_split(*split, classes=[0, 1])
    ran = sum(str(task["key"]).startswith("_partial_fit") for task in stream.data)
    record("hyperband", elapsed(), chapter.busy_by_round(stream.data, threads), hyperband.best_score_,
           sum(hyperband.cv_results_["partial_fit_calls"]), len(hyperband.history_),
           n_candidates=len(hyperband.cv_results_["params"]), partial_fit_tasks_run=ran)
    client.cancel(on_workers)
    return runs


def search_arrays(cells):
    """The chapter's search data, computed once (the same for every seed; the split changes)."""
    if "_search_arrays" not in cells:
        cells["_search_arrays"] = dask.compute(*cells["make_search_data"](
            cells["N_BLOCKS"], cells["ROWS_PER_BLOCK"], cells["N_FEATURES"], seed=0))
    return cells["_search_arrays"]


def _tasks_on_scheduler(client):
    return client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))


def _wait_for_release(client, held, timeout=60):
    # The graphs have deterministic keys: computed right after the same setting, a graph whose
    # result the scheduler has not yet forgotten would come back at once, untimed work.
    deadline = time.monotonic() + timeout
    while _tasks_on_scheduler(client) > held:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the scheduler still holds more than {held} tasks after {timeout} s")
        time.sleep(0.02)


def alternate(client, settings: dict, repeats: int, part: str, key: str, held: int, **extra):
    """Time each setting ``repeats`` times, alternating their order, after one untimed warm-up."""
    for run in settings.values():
        run()
    runs = []
    for repeat in range(repeats):
        order = list(settings) if repeat % 2 == 0 else list(reversed(settings))
        for name in order:
            _wait_for_release(client, held)
            with measure.timer() as elapsed:
                settings[name]()
            runs.append({"part": part, key: name, "repeat": repeat, "seconds": round(elapsed(), 4), **extra})
            print(runs[-1], flush=True)
    return runs


def prediction_runs(client, cells, n_rows, chunk_rows, repeats):
    """map_blocks and ParallelPostFit on the same persisted chunks, graph built and computed."""
    model = cells["model"]
    rows = da.map_blocks(cells["draw_rows"], chunks=((chunk_rows,) * (n_rows // chunk_rows), (3,)),
                         dtype=float, means=cells["class_means"],
                         covariances=cells["class_covariances"], seed=0)
    X = rows[:, :2].persist()
    wait(X)
    held = _tasks_on_scheduler(client)

    def with_map_blocks():
        return da.map_blocks(model.predict, X, drop_axis=1, dtype=model.classes_.dtype)

    def with_parallel_post_fit():
        return ParallelPostFit(model).predict(X)

    if not bool((with_map_blocks() == with_parallel_post_fit()).all().compute()):
        raise RuntimeError("map_blocks and ParallelPostFit predicted different labels")
    settings = {"map_blocks": lambda: with_map_blocks().sum().compute(),
                "ParallelPostFit": lambda: with_parallel_post_fit().sum().compute()}
    runs = alternate(client, settings, repeats, "prediction", "method", held, rows=n_rows,
                     chunk_rows=chunk_rows)
    client.cancel(X)
    return runs


def model_passing_runs(client, cells, n_trees, n_blocks, block_rows, repeats):
    """The notebook's forest, inside every predict task against scattered once (scatter timed)."""
    rows = da.map_blocks(cells["draw_rows"], chunks=((block_rows,) * n_blocks, (3,)), dtype=float,
                         means=cells["class_means"], covariances=cells["class_covariances"], seed=0)
    X, y = rows[:50_000, :2], rows[:50_000, 2].astype("int64")
    forest = RandomForestClassifier(n_estimators=n_trees, random_state=0)
    forest.fit(*dask.compute(X, y))
    blocks = rows[:, :2].persist()
    wait(blocks)
    held = _tasks_on_scheduler(client)

    def predict_with(block, model):
        return model.predict(block)

    def inside_every_task():
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sending large graph")  # what is measured
            return da.map_blocks(forest.predict, blocks, drop_axis=1,
                                 dtype=forest.classes_.dtype).compute()

    def scattered_once():
        [on_workers] = client.scatter([forest], broadcast=True)
        try:
            return da.map_blocks(predict_with, blocks, on_workers, drop_axis=1,
                                 dtype=forest.classes_.dtype).compute()
        finally:
            client.cancel(on_workers)

    if not np.array_equal(inside_every_task(), scattered_once()):
        raise RuntimeError("the scattered forest predicted differently")
    size = len(pickle.dumps(forest))
    runs = alternate(client, {"inside every task": inside_every_task, "scattered once": scattered_once},
                     repeats, "model_passing", "passing", held, tasks=n_blocks, model_bytes=size)
    client.cancel(blocks)
    return runs


def claims_from(document) -> list[measure.Claim]:
    comparison = chapter.route_comparison(document)
    seeds = int(comparison.loc["reference", "seeds"])
    claims = []

    def spread(route, column):
        return [round(comparison.loc[route, f"{column}_{end}"], 4) for end in ("low", "high")]

    for route in FIXED_BUDGET_ROUTES:
        if route not in comparison.index:
            continue
        claims.append(measure.Claim(
            f"{chapter.ROUTES[route]}: partial_fit calls / the reference's (median of {seeds} seeds)",
            round(comparison.loc[route, "calls_share"], 4), "x", 1 / 3, "<=",
            spread=spread(route, "calls_share")))
    if "even_split" in comparison.index:
        claims.append(measure.Claim(
            f"best validation accuracy, the reference minus {chapter.ROUTES['even_split']} "
            f"(points, median of {seeds} seeds)",
            round(comparison.loc["even_split", "points_below_reference"], 3), "points", 0.0, ">",
            spread=spread("even_split", "points_below_reference")))
        for route in ADAPTIVE_ROUTES:
            if route in comparison.index:
                claims.append(measure.Claim(
                    f"best validation accuracy, {chapter.ROUTES[route]} minus the even split of a "
                    f"third of the budget (points, median of {seeds} seeds)",
                    round(comparison.loc[route, "points_above_even_split"], 3), "points", 0.0, ">",
                    spread=spread(route, "points_above_even_split")))
    seconds = chapter.seconds_of(document, "model_passing", "passing")
    low, high = measure.ratio_spread(seconds["inside every task"], seconds["scattered once"])
    claims.append(measure.Claim(
        "forest inside every task / scattered once, time (medians; range over the repeats)",
        round(float(np.median(seconds["inside every task"]) / np.median(seconds["scattered once"])), 3),
        "x", 1.0, ">", spread=[round(low, 3), round(high, 3)]))
    return claims


def draw_figures(document, figures_dir):
    plots.save_figure(figures.plot_route_comparison(document), f"{NAME}_search", figures_dir)
    plots.save_figure(figures.plot_busy_rounds(document), f"{NAME}_busy_rounds", figures_dir)
    figure, axes = plots.new_figure(ncols=2, width=10)
    figures.plot_timed_pairs(document, "model_passing", "passing", chapter.MODEL_PASSING,
                             "seconds", "a 20-tree forest, 32 predict tasks", ax=axes[0][0])
    figures.plot_timed_pairs(document, "prediction", "method", chapter.PREDICTION_METHODS,
                             "seconds", "predict on the same persisted chunks", ax=axes[0][1])
    figure.tight_layout()
    plots.save_figure(figure, f"{NAME}_prediction", figures_dir)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, 2 seeds, results and figures in a temporary folder")
    parser.add_argument("--seeds", type=int, default=10, help="seeds per search route (>= 3 for the claims)")
    parser.add_argument("--search-only", action="store_true",
                        help="the search routes only; the timed parts are copied from the committed results")
    parser.add_argument("--timed-only", action="store_true",
                        help="the timed parts only (prediction, model passing); the search runs are copied "
                             "from the committed results")
    parser.add_argument("--prediction-repeats", type=int, default=9,
                        help="timed repeats of each prediction method and each way to pass the forest")
    parser.add_argument("--prediction-rows", type=int, default=200_000_000,
                        help="rows of the persisted array both prediction methods read (3.2 GB at the default; "
                             "long enough runs that a second of jitter weighs little)")
    parser.add_argument("--reclaim", action="store_true",
                        help="recompute the claims and redraw figs/ from the runs stored in "
                             "benchmarks/results/without_dask_ml.json, measure nothing")
    arguments = parser.parse_args(argv)
    if arguments.reclaim:
        document = measure.load_results(NAME)
        document["claims"] = [asdict(claim) for claim in claims_from(document)]
        measure.write_document(NAME, document)
        draw_figures(document, None)
        for claim in claims_from(document):
            print(measure.format_claim(claim))
        return 0
    if arguments.search_only and arguments.timed_only:
        parser.error("--search-only and --timed-only exclude each other")
    cells = run_reused_cells("07_without_dask_ml.ipynb")
    if arguments.quick:
        seeds, max_iter = 2, 9
        n_rows, chunk_rows, repeats = 2_000_000, 500_000, 2
        results_dir = figures_dir = tempfile.mkdtemp(prefix="bench-without-dask-ml-")
    else:
        seeds, max_iter = arguments.seeds, cells["MAX_ITER"]
        n_rows, chunk_rows, repeats = (arguments.prediction_rows, 2_000_000,
                                       arguments.prediction_repeats)
        results_dir = figures_dir = None
    # Every route tries as many candidates as Hyperband does for this max_iter (49 for 27).
    n_candidates = cells["HyperbandOnOurSplit"](SGDClassifier(), cells["parameters"],
                                                max_iter=max_iter).metadata["n_models"]
    if seeds < 3 and not arguments.quick:
        print(f"note: {seeds} seeds; the chapter's claims ask for at least 3", flush=True)
    kept = []
    if arguments.search_only or arguments.timed_only:
        committed = measure.load_results(NAME)
        keep = ("prediction", "model_passing") if arguments.search_only else ("search",)
        kept = [run for run in committed["runs"] if run["part"] in keep]
    start = time.perf_counter()
    client = cluster.get_client()
    try:
        cells["quiet_optuna"]()
        client.run(cells["quiet_optuna"])
        runs = []
        if not arguments.timed_only:
            with tempfile.TemporaryDirectory(prefix="bench-optuna-journal-") as study_folder:
                for seed in range(seeds):
                    runs += search_runs(client, cells, seed, n_candidates, max_iter, study_folder)
        if not arguments.search_only:
            runs += model_passing_runs(client, cells, n_trees=20, n_blocks=32, block_rows=10_000,
                                       repeats=repeats)
            runs += prediction_runs(client, cells, n_rows, chunk_rows, repeats)
        runs += kept
        # Written before the cluster stops: a slow shutdown on a busy machine loses nothing.
        claims = claims_from({"runs": runs})
        settings = {"quick": arguments.quick, "seeds": seeds, "n_candidates": n_candidates,
                    "max_iter": max_iter, "epochs_halving": EPOCHS, "n_blocks": cells["N_BLOCKS"],
                    "rows_per_block": cells["ROWS_PER_BLOCK"], "n_features": cells["N_FEATURES"],
                    "prediction_rows": n_rows, "chunk_rows": chunk_rows,
                    "prediction_repeats": repeats,
                    "measured_now": ("search" if arguments.search_only else "timed parts"
                                     if arguments.timed_only else "everything")}
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
