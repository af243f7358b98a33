"""Chapter 7: prediction and search without dask-ml, against dask-ml, on a real LocalCluster.

The functions under test are the notebook's own (the cells tagged ``reused-by-benchmark``), so
these tests check the code the chapter teaches, not a copy of it.
"""

from __future__ import annotations


import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import optuna
import pandas as pd
import pytest
from dask_ml.wrappers import ParallelPostFit
from sklearn.experimental import enable_halving_search_cv  # noqa: F401
from sklearn.linear_model import LogisticRegressionCV, SGDClassifier
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import HalvingRandomSearchCV, PredefinedSplit

from benchmarks import without_dask_ml as benchmark
from benchmarks._notebook_cells import run_reused_cells
from scaling_ml import BookError
from scaling_ml import cluster, measure
from scaling_ml import without_dask_ml as chapter

NOTEBOOK = "07_without_dask_ml.ipynb"


@pytest.fixture(scope="module")
def cells():
    return run_reused_cells(NOTEBOOK)


@pytest.fixture(scope="module")
def client():
    with dask.config.set({"scheduler-address": None}):
        client = cluster.get_client(n_workers=2)
    yield client
    client.close()


def generated_rows(cells, n_rows=400_000, chunk_rows=100_000, seed=0):
    """The chapter's lazily generated array, as its cell builds it."""
    rows = da.map_blocks(cells["draw_rows"], chunks=((chunk_rows,) * (n_rows // chunk_rows), (3,)),
                         dtype=float, means=cells["class_means"],
                         covariances=cells["class_covariances"], seed=seed)
    return rows[:, :2], rows[:, 2].astype("int64")


# ---------------------------------------------------------------------------------------------
# Prediction


@pytest.mark.cluster
def test_map_blocks_predictions_are_parallel_post_fits(cells, client):
    model = cells["model"]
    X, _ = generated_rows(cells)
    ours = da.map_blocks(model.predict, X, drop_axis=1, dtype=model.classes_.dtype)
    theirs = ParallelPostFit(model).predict(X)
    assert ours.chunks == theirs.chunks and ours.dtype == theirs.dtype
    ours, theirs = dask.compute(ours, theirs)
    assert ours.shape == (400_000,)
    np.testing.assert_array_equal(ours, theirs)
    assert 0.3 < ours.mean() < 0.7  # both classes are predicted, so equality is not trivial

    probabilities = da.map_blocks(model.predict_proba, X, dtype=float,
                                  chunks=(X.chunks[0], (2,)))
    ours, theirs = dask.compute(probabilities, ParallelPostFit(model).predict_proba(X))
    np.testing.assert_array_equal(ours, theirs)


def test_map_partitions_predictions_are_parallel_post_fits(cells, client):
    X, _ = generated_rows(cells, n_rows=200_000, chunk_rows=50_000)
    features = dd.from_dask_array(X, columns=["x0", "x1"])
    frame_model = LogisticRegressionCV(cv=3).fit(
        pd.DataFrame(cells["X_train"], columns=["x0", "x1"]), cells["y_train"])
    ours = features.map_partitions(frame_model.predict, meta=np.array([], dtype="int64"))
    theirs = ParallelPostFit(frame_model).predict(features)
    ours, theirs = dask.compute(ours, theirs)
    assert len(ours) == 200_000
    np.testing.assert_array_equal(ours, theirs)
    # The same labels as the array route: the dataframe is the same rows.
    np.testing.assert_array_equal(ours, cells["model"].predict(X.compute()))


def test_generated_rows_are_deterministic_per_block_and_like_the_training_set(cells, client):
    X, y = generated_rows(cells)
    X_all, y_all = dask.compute(X, y)
    block_2 = X.blocks[2].compute(scheduler="synchronous")  # drawn alone, in this process
    np.testing.assert_array_equal(block_2, X_all[200_000:300_000])
    other_seed = generated_rows(cells, seed=1)[0].blocks[0].compute()
    assert not np.array_equal(other_seed, X_all[:100_000])
    assert abs(y_all.mean() - 0.5) < 0.01
    model = cells["model"]
    # The chapter says the model scores on the drawn rows about as on its training set.
    assert abs(model.score(X_all, y_all) - model.score(cells["X_train"], cells["y_train"])) < 0.02


def test_confusion_counts_from_bincount_are_scikit_learns(cells, client):
    model = cells["model"]
    X, y = generated_rows(cells, n_rows=200_000, chunk_rows=50_000)
    predictions = da.map_blocks(model.predict, X, drop_axis=1, dtype=model.classes_.dtype)
    counts, y_true, y_predicted = dask.compute(
        da.bincount(2 * y + predictions, minlength=4).reshape(2, 2), y, predictions)
    np.testing.assert_array_equal(counts, confusion_matrix(y_true, y_predicted))


def test_blocks_that_split_the_columns_are_a_clear_error(cells):
    X, _ = generated_rows(cells)
    with pytest.raises(BookError, match=r"rechunk\(\{1: -1\}\)"):
        chapter.check_blocks_hold_whole_rows(X.rechunk({1: 1}))
    chapter.check_blocks_hold_whole_rows(X)
    chapter.check_blocks_hold_whole_rows(X.rechunk({1: 1}).rechunk({1: -1}))
    with pytest.raises(BookError, match="Expected a dask array"):
        chapter.check_blocks_hold_whole_rows(np.zeros((3, 2)))
    with pytest.raises(BookError, match="2-d"):
        chapter.check_blocks_hold_whole_rows(da.zeros(10, chunks=5))


# ---------------------------------------------------------------------------------------------
# Search


@pytest.fixture(scope="module")
def search_data(cells):
    X, y = dask.compute(*cells["make_search_data"](4, 1_000, cells["N_FEATURES"], seed=0),
                        scheduler="synchronous")
    return cells["split_blocks"](X, y, 4, 0.25, seed=0)


def test_the_split_holds_out_a_share_of_every_block_and_loses_no_row(cells, search_data):
    assert len(search_data["train_blocks"]) == 4
    assert [len(y) for _, y in search_data["train_blocks"]] == [750] * 4
    assert len(search_data["y_validation"]) == 1_000
    X, _ = dask.compute(*cells["make_search_data"](4, 1_000, cells["N_FEATURES"], seed=0),
                        scheduler="synchronous")
    every_row = np.concatenate([X for X, _ in search_data["train_blocks"]]
                               + [search_data["X_validation"]])
    assert sorted(map(tuple, every_row)) == sorted(map(tuple, X))


def test_train_candidate_scores_after_every_call(cells, search_data):
    scores = cells["train_candidate"]({"alpha": 1e-4}, search_data, n_calls=6)
    assert len(scores) == 6 and all(0.5 < score <= 1 for score in scores)
    again = cells["train_candidate"]({"alpha": 1e-4}, search_data, n_calls=6)
    assert scores == again


def test_the_objective_reports_every_call_and_can_be_pruned(cells, search_data):
    cells["quiet_optuna"]()
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3))
    study.optimize(lambda trial: cells["objective"](trial, search_data, 9), n_trials=12)
    states = [trial.state for trial in study.trials]
    assert optuna.trial.TrialState.PRUNED in states and optuna.trial.TrialState.COMPLETE in states
    for trial in study.trials:
        steps = sorted(trial.intermediate_values)
        assert steps == list(range(1, len(steps) + 1))
        assert (len(steps) == 9) == (trial.state == optuna.trial.TrialState.COMPLETE)


def test_a_sampler_seeded_in_each_task_draws_different_candidates(cells, client):
    """The chapter's trap: a study sent to tasks carries one seeded sampler, copied to each."""
    from optuna_integration import DaskStorage

    cells["quiet_optuna"]()
    client.run(cells["quiet_optuna"])
    storage = DaskStorage()

    def draw(study, seed):
        if seed is not None:
            study.sampler = optuna.samplers.TPESampler(seed=seed)
        study.optimize(lambda trial: trial.suggest_float("alpha", 1e-6, 1e-1, log=True), n_trials=1)

    distinct = {}
    for label, seeds in (("copied", [None] * 6), ("per task", range(6))):
        study = optuna.create_study(storage=storage, sampler=optuna.samplers.TPESampler(seed=0))
        client.gather([client.submit(draw, study, seed, pure=False) for seed in seeds])
        distinct[label] = len({trial.params["alpha"] for trial in study.trials})
    assert distinct == {"copied": 1, "per task": 6}


class RowCountingSGD(SGDClassifier):
    """A real SGDClassifier that also records how many rows each fit saw (shared list)."""

    def fit(self, X, y, **kwargs):
        FITTED_ROWS.append(len(y))
        return super().fit(X, y, **kwargs)


FITTED_ROWS: list[int] = []


def test_halving_work_counts_the_rows_each_fit_saw(search_data):
    X_all = np.concatenate([X for X, _ in search_data["train_blocks"]] + [search_data["X_validation"]])
    y_all = np.concatenate([y for _, y in search_data["train_blocks"]] + [search_data["y_validation"]])
    n_train = len(y_all) - len(search_data["y_validation"])
    FITTED_ROWS.clear()
    halving = HalvingRandomSearchCV(
        RowCountingSGD(loss="log_loss", random_state=0, max_iter=2, tol=None),
        {"alpha": [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1e-6, 3e-4, 3e-3, 3e-2]}, n_candidates=9,
        factor=3, resource="n_samples", min_resources=len(y_all) // 9,
        cv=PredefinedSplit(np.r_[np.full(n_train, -1), np.zeros(len(y_all) - n_train)]),
        refit=False, random_state=0, n_jobs=1)
    halving.fit(X_all, y_all)
    assert list(halving.n_candidates_) == [9, 3, 1]
    counted = chapter.halving_partial_fit_calls(halving.cv_results_, len(y_all), n_train, 2, 750)
    # Up to one row per fit: the subsample size is rounded down.
    assert abs(counted - 2 * sum(FITTED_ROWS) / 750) <= 2 * len(FITTED_ROWS) / 750


@pytest.mark.parametrize("arguments, message", [
    (dict(n_samples=10, n_train=20), "cannot exceed"),
    (dict(epochs=0), "epochs must be a whole number"),
    (dict(rows_per_block=2.5), "rows_per_block must be a whole number"),
])
def test_halving_work_rejects_bad_input(arguments, message):
    values = dict(n_samples=100, n_train=90, epochs=3, rows_per_block=10) | arguments
    with pytest.raises(BookError, match=message):
        chapter.halving_partial_fit_calls({"n_resources": [10]}, **values)
    with pytest.raises(BookError, match="n_resources"):
        chapter.halving_partial_fit_calls({"params": []}, 100, 90, 3, 10)


def test_hyperband_in_the_benchmark_uses_the_given_split(cells, search_data, client):
    """Every bracket scores on the given validation rows (dask-ml would split again per bracket)."""
    split = (da.concatenate([da.from_array(X) for X, _ in search_data["train_blocks"]]),
             da.from_array(search_data["X_validation"]),
             da.concatenate([da.from_array(y) for _, y in search_data["train_blocks"]]),
             da.from_array(search_data["y_validation"]))
    search = benchmark.HyperbandOnTheGivenSplit(SGDClassifier(loss="log_loss", random_state=0),
                                                cells["parameters"], max_iter=3, random_state=0)
    search.given_split = split
    search.fit(split[0], split[2], classes=[0, 1])
    rescored = search.best_estimator_.score(search_data["X_validation"], search_data["y_validation"])
    assert search.best_score_ == pytest.approx(rescored)


# ---------------------------------------------------------------------------------------------
# Results and figures


def example_results() -> dict:
    runs = []
    for seed in range(3):
        for route, calls, score in (("reference", 1323, 0.889), ("optuna", 170, 0.888),
                                    ("halving", 230, 0.887), ("hyperband", 357, 0.889)):
            runs.append({"part": "search", "route": route, "seed": seed, "seconds": 10.0 + seed,
                         "best_score": score - 0.001 * seed, "partial_fit_calls": calls})
    for repeat in range(3):
        for method, speed in (("map_blocks", 1e7), ("ParallelPostFit", 1.01e7)):
            runs.append({"part": "prediction", "method": method, "repeat": repeat,
                         "rows_per_second": speed + repeat})
    return {"runs": runs, "claims": []}


def test_route_medians_and_figures_from_results(tmp_path):
    results = example_results()
    medians = chapter.route_comparison(results)
    assert list(medians.index) == list(chapter.ROUTES)
    assert medians.loc["optuna", "partial_fit_calls"] == 170
    assert medians.loc["reference", "best_score"] == pytest.approx(0.888)
    assert medians.loc["reference", "seeds"] == 3
    # Paired by seed: the reference of the same seed, not the reference's median.
    assert medians.loc["halving", "points_below_reference"] == pytest.approx(0.2)
    assert medians.loc["optuna", "share_of_reference_calls"] == pytest.approx(170 / 1323)
    assert medians.loc["reference", "points_below_reference"] == 0
    assert chapter.prediction_medians(results) == {"ParallelPostFit": 1.01e7 + 1, "map_blocks": 1e7 + 1}
    figure = chapter.plot_route_comparison(results)
    assert len(figure.axes) == 3
    from scaling_ml import plots

    assert plots.save_figure(figure, "search", tmp_path).stat().st_size > 10_000
    ax = chapter.plot_prediction_throughput(results)
    assert [tick.get_text() for tick in ax.get_xticklabels()] == list(chapter.PREDICTION_METHODS)
    ax = chapter.plot_score_histories([[0.8, 0.85], [0.7]], "t", max_calls=3)
    assert len(ax.lines) == 2


def test_results_without_runs_are_a_clear_error():
    with pytest.raises(BookError, match="benchmarks.without_dask_ml"):
        chapter.route_comparison({"runs": []})
    with pytest.raises(BookError, match="reference"):
        chapter.route_comparison({"runs": [run for run in example_results()["runs"]
                                           if run.get("route") != "reference"]})
    with pytest.raises(BookError, match="prediction"):
        chapter.prediction_medians({"runs": example_results()["runs"][:4]})


def test_the_committed_results_have_the_books_shape():
    results = measure.load_results("without_dask_ml")
    assert {"benchmark", "date", "machine", "versions", "claims", "runs"} <= set(results)
    assert not results["settings"]["quick"], "commit results of the full benchmark, not --quick"
    seeds = {run["seed"] for run in results["runs"] if run["part"] == "search"}
    assert len(seeds) >= 3, "the claims are medians of at least 3 seeds"
    assert set(chapter.route_comparison(results).index) == set(chapter.ROUTES)
    assert {claim["name"] for claim in results["claims"]} == {
        claim.name for claim in benchmark_claims(results)}


def benchmark_claims(results):
    return benchmark.claims_from(results)
