"""Chapter 7: prediction and search without dask-ml, against dask-ml, on real Dask clusters.

The functions under test are the notebook's own (the cells tagged ``reused-by-benchmark``), so
these tests check the code the chapter teaches, not a copy of it. The tests marked ``scale_up``
run the chapter's `# Scale up:` comments at a proportional size (tests/test_scale_up.py); the
``bare_scheduler`` tests start a real ``dask scheduler`` from an environment without Optuna, as a
cluster started elsewhere may be.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import textwrap
import time
import warnings
from pathlib import Path

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import optuna
import pandas as pd
import psutil
import pytest
from dask_ml.wrappers import ParallelPostFit
from distributed import Client, LocalCluster, get_task_stream, wait
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from sklearn.ensemble import RandomForestClassifier
from sklearn.experimental import enable_halving_search_cv  # noqa: F401
from sklearn.linear_model import LogisticRegressionCV, SGDClassifier
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import HalvingRandomSearchCV, ParameterSampler, PredefinedSplit

from benchmarks import _without_dask_ml_figures as figures
from benchmarks._notebook_cells import run_reused_cells
from scaling_ml import PROJECT_ROOT as ROOT
from scaling_ml import BookError, cluster, measure
from scaling_ml import without_dask_ml as chapter

NOTEBOOK = "07_without_dask_ml.ipynb"


@pytest.fixture(scope="module")
def cells():
    return run_reused_cells(NOTEBOOK)


def local_client(n_workers=2):
    with dask.config.set({"scheduler-address": None}):
        return cluster.get_client(n_workers=n_workers)


@pytest.fixture(scope="module")
def client():
    client = local_client()
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


def test_parallel_post_fit_rechunks_split_columns_and_learns_its_meta_from_one_row(cells):
    """What the chapter says the wrapper does beyond map_blocks."""
    X, _ = generated_rows(cells)
    split = X.rechunk({0: 50_000, 1: 1})
    predicted = ParallelPostFit(cells["model"]).predict_proba(split)
    assert predicted.numblocks[1] == 1  # all columns of a block together
    assert predicted.chunks[0] != split.chunks[0]  # and the row blocks chosen anew ("auto")
    calls = []

    class Recording(LogisticRegressionCV):
        def predict(self, X):
            calls.append(X.shape)
            return super().predict(X)

    recording = Recording(cv=3).fit(cells["X_train"], cells["y_train"])
    ParallelPostFit(recording).predict(X)  # graph only: the meta is learned when it is built
    assert calls == [(1, 2)]


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


@pytest.mark.scale_up("07_without_dask_ml", "2_000_000_000 rows")
@pytest.mark.scale_up("07_without_dask_ml", "blocks of 1-5 million rows")
def test_ten_times_the_rows_in_blocks_of_millions_only_the_scores_reach_the_notebook(cells, client):
    """The notebook's scores at 10x its rows (640 MB of features) in 5-million-row blocks: the
    same numbers as ParallelPostFit's, while this process (the notebook) grows by far less than
    the data."""
    model = cells["model"]
    X, y = generated_rows(cells, n_rows=40_000_000, chunk_rows=5_000_000)
    this_process = psutil.Process()
    before = this_process.memory_info().rss
    predictions = da.map_blocks(model.predict, X, drop_axis=1, dtype=model.classes_.dtype)
    accuracy, confusion = dask.compute((predictions == y).mean(),
                                       da.bincount(2 * y + predictions, minlength=4).reshape(2, 2))
    grown = this_process.memory_info().rss - before
    assert confusion.sum() == 40_000_000
    assert accuracy == pytest.approx((confusion[0, 0] + confusion[1, 1]) / 40_000_000)
    assert accuracy == pytest.approx(ParallelPostFit(model, scoring="accuracy").score(X, y))
    assert grown < 0.1 * X.nbytes, f"the notebook's process grew by {grown / 2**20:.0f} MiB"


# ---------------------------------------------------------------------------------------------
# A large model, sent once


def run_spec_sizes(client, key_prefix):
    """Pickled size of the specification of every task whose key starts with ``key_prefix``, as
    the scheduler holds it (what it sends to a worker with each task)."""
    def sizes(dask_scheduler, prefix):
        from distributed.protocol.pickle import dumps  # pickles notebook functions too

        return [len(dumps(state.run_spec)) for key, state in dask_scheduler.tasks.items()
                if str(key).startswith(prefix) or (isinstance(key, tuple) and str(key[0]).startswith(prefix))]
    return client.run_on_scheduler(sizes, prefix=key_prefix)


def test_a_model_in_the_graph_travels_with_every_task_and_a_scattered_one_does_not(cells, client):
    X, y = generated_rows(cells, n_rows=160_000, chunk_rows=10_000)
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(*dask.compute(X[:20_000], y[:20_000]))
    model_bytes = len(pickle.dumps(forest))
    blocks = X.persist()
    wait(blocks)

    in_graph = da.map_blocks(forest.predict, blocks, drop_axis=1, dtype=forest.classes_.dtype,
                             name="in-graph-predict").persist()
    wait(in_graph)
    carried = run_spec_sizes(client, "in-graph-predict")
    assert len(carried) == 16 and min(carried) > model_bytes  # each task: a copy of the model

    [on_workers] = client.scatter([forest], broadcast=True)
    assert set(client.who_has([on_workers])[on_workers.key]) == set(client.scheduler_info()["workers"])

    def predict_with(block, model):
        return model.predict(block)

    scattered = da.map_blocks(predict_with, blocks, on_workers, drop_axis=1,
                              dtype=forest.classes_.dtype, name="scattered-predict").persist()
    wait(scattered)
    light = run_spec_sizes(client, "scattered-predict")
    assert len(light) == 16 and max(light) < model_bytes / 20  # a reference to the copy on the worker
    np.testing.assert_array_equal(*dask.compute(in_graph, scattered))
    client.cancel([in_graph, scattered, blocks, on_workers])


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


def test_the_search_features_have_the_scales_the_chapter_states(cells):
    X, y = dask.compute(*cells["make_search_data"](2, 20_000, cells["N_FEATURES"], seed=0),
                        scheduler="synchronous")
    deviations = X.std(axis=0)
    assert X.shape[1] == cells["N_FEATURES"] == 50
    assert 0.09 < deviations.min() < 0.11 and 28 < deviations.max() < 33  # "from 0.1 to about 32"
    assert 0.4 < y.mean() < 0.6
    # The halving search's last round fits on every row: 27 * an integer rows in all.
    assert (cells["N_BLOCKS"] * cells["ROWS_PER_BLOCK"]) % cells["MAX_ITER"] == 0


def test_train_candidate_scores_after_every_call_and_prefixes_are_shorter_runs(cells, search_data):
    scores = cells["train_candidate"]({"alpha": 1e-4}, search_data, n_calls=6)
    assert len(scores) == 6 and all(0.5 < score <= 1 for score in scores)
    assert cells["train_candidate"]({"alpha": 1e-4}, search_data, n_calls=2) == scores[:2]


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
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert len(steps) == 9
        # Pruned only at the pruner's rungs, 1, 3 and 9 calls (at 9, after the last call).
        if trial.state == optuna.trial.TrialState.PRUNED:
            assert steps[-1] in (1, 3, 9)


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


def test_a_journal_study_is_written_by_the_workers_and_read_by_a_new_process(cells, client, search_data,
                                                                            tmp_path):
    cells["quiet_optuna"]()
    client.run(cells["quiet_optuna"])
    path = str(tmp_path / "search.journal")
    study = optuna.create_study(
        study_name="journal-test", storage=JournalStorage(JournalFileBackend(path)),
        direction="maximize",
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3))
    [data] = client.scatter([search_data], broadcast=True)
    client.gather([client.submit(cells["run_trial"], study, data, 9, seed, pure=False) for seed in range(8)])
    assert len(study.trials) == 8
    code = textwrap.dedent(f"""
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend
        study = optuna.load_study(study_name="journal-test",
                                  storage=JournalStorage(JournalFileBackend({path!r})))
        print(len(study.trials), study.best_value)
    """)
    count, best = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True).stdout.split()
    assert int(count) == 8 and float(best) == study.best_value


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
        refit=False, return_train_score=False, random_state=0, n_jobs=1)
    halving.fit(X_all, y_all)
    assert list(halving.n_candidates_) == [9, 3, 1]
    counted = chapter.halving_partial_fit_calls(halving.cv_results_, len(y_all), n_train, 2, 750)
    # Up to one row per fit: the subsample size is rounded down.
    assert abs(counted - 2 * sum(FITTED_ROWS) / 750) <= 2 * len(FITTED_ROWS) / 750
    assert "mean_train_score" not in halving.cv_results_  # no scoring of the training rows


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


def test_the_task_stream_of_a_halving_search_splits_into_its_rounds(cells, client, search_data):
    import joblib

    X_all = np.concatenate([X for X, _ in search_data["train_blocks"]] + [search_data["X_validation"]])
    y_all = np.concatenate([y for _, y in search_data["train_blocks"]] + [search_data["y_validation"]])
    n_train = len(y_all) - len(search_data["y_validation"])
    halving = HalvingRandomSearchCV(
        SGDClassifier(loss="log_loss", random_state=0, max_iter=2, tol=None), cells["parameters"],
        n_candidates=27, factor=3, resource="n_samples", min_resources=len(y_all) // 9,
        cv=PredefinedSplit(np.r_[np.full(n_train, -1), np.zeros(len(y_all) - n_train)]),
        refit=False, return_train_score=False, random_state=0, n_jobs=-1)
    with joblib.parallel_config(backend="dask"), get_task_stream(client=client) as stream:
        halving.fit(X_all, y_all)
    rounds = chapter.busy_by_round(stream.data, 2, calls_per_round=halving.n_candidates_)
    assert [round_["calls"] for round_ in rounds] == [27, 9, 3]
    for round_ in rounds:
        assert 0 < round_["busy_share"] <= 1 and 1 <= round_["most_at_once"] <= 2
        assert round_["tasks"] <= round_["calls"]  # joblib may batch several fits in one task
    with pytest.raises(BookError, match="round 0 needs"):
        chapter.busy_by_round(stream.data, 2, calls_per_round=[1000])
    with pytest.raises(BookError, match="left after"):
        chapter.busy_by_round(stream.data, 2, calls_per_round=[27])


def test_busy_by_round_reads_a_stream_it_is_given():
    def task(key, start, stop, worker):
        return {"key": key, "worker": worker,
                "startstops": ({"action": "transfer", "start": start - 1, "stop": start},
                               {"action": "compute", "start": start, "stop": stop})}

    stream = [task("a", 0, 2, "w1"), task("b", 1, 3, "w2"), task("batch_of_f_3_calls-x", 4, 6, "w1")]
    [whole] = chapter.busy_by_round(stream, 2)
    assert whole == {"tasks": 3, "calls": 5, "seconds": 6, "busy_share": 0.5, "most_at_once": 2}
    first, second = chapter.busy_by_round(stream, 2, calls_per_round=[2, 3])
    assert first["busy_share"] == pytest.approx(4 / (2 * 3), abs=1e-4) and second["most_at_once"] == 1
    # One worker's intervals that overlap (clock shifts) count once.
    [overlapping] = chapter.busy_by_round([task("c", 0, 2, "w1"), task("d", 1.9, 4, "w1")], 2)
    assert overlapping["most_at_once"] == 1 and overlapping["busy_share"] == pytest.approx(0.5)
    with pytest.raises(BookError, match="no computed tasks"):
        chapter.busy_by_round([{"key": "x", "startstops": ()}], 2)
    with pytest.raises(BookError, match="n_threads"):
        chapter.busy_by_round(stream, 0)


def test_hyperband_on_our_split_scores_every_bracket_on_the_given_rows(cells, search_data, client):
    """Every bracket scores on the given validation rows (dask-ml would split again per bracket)."""
    split = (da.concatenate([da.from_array(X) for X, _ in search_data["train_blocks"]]),
             da.concatenate([da.from_array(y) for _, y in search_data["train_blocks"]]),
             da.from_array(search_data["X_validation"]), da.from_array(search_data["y_validation"]))
    search = cells["HyperbandOnOurSplit"](SGDClassifier(loss="log_loss", random_state=0),
                                          cells["parameters"], max_iter=9, random_state=0)
    with get_task_stream(client=client) as stream:
        search.fit_on_split(*split, classes=[0, 1])
    assert len(search.metadata["brackets"]) > 1  # several brackets, each one given our split
    rescored = search.best_estimator_.score(search_data["X_validation"], search_data["y_validation"])
    assert search.best_score_ == pytest.approx(rescored)
    ran = sum(str(task["key"]).startswith("_partial_fit") for task in stream.data)
    assert ran >= sum(search.cv_results_["partial_fit_calls"])  # speculative calls come on top
    assert len(search.history_) < sum(search.cv_results_["partial_fit_calls"])  # scored when deciding


@pytest.mark.scale_up("07_without_dask_ml", "more candidates, more tasks; they run as workers free up")
def test_twice_the_candidates_are_twice_the_tasks_run_as_workers_free_up(cells, client, search_data):
    candidates = list(ParameterSampler(cells["parameters"], n_iter=98, random_state=0))
    [data] = client.scatter([search_data], broadcast=True)
    with get_task_stream(client=client) as stream:
        histories = client.gather(client.map(cells["train_candidate"], candidates, data=data, n_calls=2))
    assert len(histories) == 98 and all(len(history) == 2 for history in histories)
    tasks = [task for task in stream.data if str(task["key"]).startswith("train_candidate")]
    assert len(tasks) == 98
    [whole] = chapter.busy_by_round(tasks, 2)
    assert whole["most_at_once"] <= 2  # never more at once than the workers' threads


@pytest.mark.scale_up("07_without_dask_ml", "N_TRIALS with the number of workers")
def test_trials_scaled_with_the_workers_run_as_workers_free_up(cells, search_data):
    from optuna_integration import DaskStorage

    with LocalCluster(n_workers=3, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0") as local, \
            Client(local) as three:
        cells["quiet_optuna"]()
        three.run(cells["quiet_optuna"])
        study = optuna.create_study(
            storage=DaskStorage(client=three), direction="maximize",
            pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3))
        [data] = three.scatter([search_data], broadcast=True)
        with get_task_stream(client=three) as stream:
            three.gather([three.submit(cells["run_trial"], study, data, 9, seed, pure=False)
                          for seed in range(36)])
        assert len(study.trials) == 36
        assert all(trial.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
                   for trial in study.trials)
        tasks = [task for task in stream.data if str(task["key"]).startswith("run_trial")]
        [whole] = chapter.busy_by_round(tasks, 3)
        assert len(tasks) == 36 and whole["most_at_once"] <= 3


@pytest.mark.scale_up("07_without_dask_ml", "more blocks; every worker holds a copy of them all")
def test_three_times_the_blocks_are_a_full_copy_on_every_worker(cells, client):
    X, y = dask.compute(*cells["make_search_data"](30, 1_000, cells["N_FEATURES"], seed=0))
    data = cells["split_blocks"](X, y, 30, 1 / 30, seed=0)
    [on_workers] = client.scatter([data], broadcast=True)
    holders = client.who_has([on_workers])[on_workers.key]
    assert set(holders) == set(client.scheduler_info()["workers"])
    stored = client.run(lambda dask_worker, key=on_workers.key: dask_worker.data[key] is not None)
    assert all(stored.values())
    scores = client.gather(client.map(cells["train_candidate"], [{"alpha": 1e-4}, {"alpha": 1e-3}],
                                      data=on_workers, n_calls=3))
    assert all(len(history) == 3 for history in scores)
    client.cancel(on_workers)


# ---------------------------------------------------------------------------------------------
# A cluster started elsewhere: a bare `dask scheduler` without Optuna


def environment_without(destination: Path, left_out: tuple[str, ...]) -> Path:
    """This environment's packages minus ``left_out`` (hard links: seconds, the same pins)."""
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", "--without-pip", str(destination)], check=True)
    site_packages = Path(sysconfig.get_paths()["purelib"])
    target = destination / site_packages.relative_to(sys.prefix)
    shutil.rmtree(target)
    subprocess.run(["cp", "-al", str(site_packages), str(target)], check=True)
    for entry in target.iterdir():
        if any(re.match(rf"{name}([-_.]|$)", entry.name) for name in left_out):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    return destination / "bin" / "python"


@contextlib.contextmanager
def external_cluster(folder: Path, scheduler_python: Path):
    """A `dask scheduler` run by ``scheduler_python`` and two `dask worker`s from this environment,
    each process in a working folder of its own; stopped on exit."""
    scheduler_file = folder / "scheduler.json"
    started = []

    def start(command, name):
        home = folder / name
        home.mkdir()
        with open(folder / f"{name}.log", "w") as log:
            started.append(subprocess.Popen(command, cwd=home, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True))

    try:
        start([str(scheduler_python), "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
               "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(scheduler_file)], "scheduler")
        deadline = time.monotonic() + 120
        while not (scheduler_file.is_file() and scheduler_file.stat().st_size):
            assert time.monotonic() < deadline and started[0].poll() is None, (
                (folder / "scheduler.log").read_text())
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        for number in range(2):
            start([sys.executable, "-m", "dask", "worker", address, "--nthreads", "1", "--nworkers", "1",
                   "--host", "127.0.0.1", "--no-dashboard"], f"worker-{number}")
        with Client(address, timeout=60) as probe:
            probe.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for process in reversed(started):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in started:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture(scope="module")
def bare_scheduler(tmp_path_factory):
    """A cluster whose scheduler comes from an environment without Optuna (its workers have it)."""
    folder = tmp_path_factory.mktemp("bare-scheduler")
    python = environment_without(folder / "env", ("optuna", "optuna_integration"))
    probe = subprocess.run([str(python), "-c", "import optuna"], capture_output=True, text=True)
    assert "No module named 'optuna'" in probe.stderr
    with external_cluster(folder, python) as address:
        yield address


@pytest.fixture(scope="module")
def separate_processes(tmp_path_factory):
    """A cluster of separately started processes, all from this environment."""
    with external_cluster(tmp_path_factory.mktemp("separate-processes"), Path(sys.executable)) as address:
        yield address


@pytest.mark.scale_up("07_without_dask_ml", "on a real cluster set DASK_SCHEDULER_ADDRESS")
def test_the_setup_cell_connects_to_the_scheduler_the_reader_names(bare_scheduler, cells):
    code = textwrap.dedent(f"""
        import dask.array as da
        from dask_ml.wrappers import ParallelPostFit
        from scaling_ml import cluster
        from benchmarks._notebook_cells import run_reused_cells

        cells = run_reused_cells({NOTEBOOK!r})
        client = cluster.get_client()
        print(client.scheduler.address, cluster.describe(client))
        model = cells["model"]
        rows = da.map_blocks(cells["draw_rows"], chunks=((100_000,) * 4, (3,)), dtype=float,
                             means=cells["class_means"], covariances=cells["class_covariances"], seed=0)
        X = rows[:, :2]
        ours = da.map_blocks(model.predict, X, drop_axis=1, dtype=model.classes_.dtype)
        print("same predictions:", bool((ours == ParallelPostFit(model).predict(X)).all().compute()))
        client.close()
    """)
    environment = {**os.environ, "DASK_SCHEDULER_ADDRESS": bare_scheduler}
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env=environment, cwd=ROOT, timeout=300).stdout
    assert output.splitlines()[-2:] == [f"{bare_scheduler} 2 workers, 2 threads", "same predictions: True"]


def test_dask_storage_needs_optuna_on_the_scheduler(bare_scheduler):
    from optuna_integration import DaskStorage

    def installed_version(package):
        from importlib import metadata

        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    with Client(bare_scheduler) as bare:
        assert bare.run_on_scheduler(installed_version, "optuna-integration") is None
        assert set(bare.run(installed_version, "optuna-integration").values()) == {
            measure.versions(("optuna-integration",))["optuna-integration"]}
        with pytest.raises(ModuleNotFoundError, match="No module named 'optuna_integration'"):
            DaskStorage(client=bare)


def test_the_scheduler_unpickles_every_task_so_a_study_needs_optuna_there_too(bare_scheduler, cells,
                                                                            search_data, tmp_path):
    """distributed 2025.1.0 deserializes each task graph on the scheduler: a task that carries a
    study (journal storage included) cannot reach a scheduler without Optuna."""
    cells["quiet_optuna"]()
    study = optuna.create_study(storage=JournalStorage(JournalFileBackend(str(tmp_path / "s.journal"))),
                                direction="maximize")
    with Client(bare_scheduler) as bare:
        with pytest.raises(RuntimeError, match="Error during deserialization of the task graph"):
            bare.gather(bare.submit(cells["run_trial"], study, search_data, 3, 0, pure=False))
        # Tasks that carry nothing of Optuna's run there as before.
        assert bare.submit(sum, [1, 2]).result() == 3


@pytest.mark.scale_up("07_without_dask_ml", "a folder every worker can reach")
def test_a_journal_on_a_folder_the_workers_share_holds_one_study(separate_processes, cells, search_data,
                                                                 tmp_path):
    """Workers started on their own, in folders of their own, write one study to a shared path; a
    new process reads it."""
    path = str(tmp_path / "shared" / "search.journal")
    Path(path).parent.mkdir()
    with Client(separate_processes) as external:
        external.run(cells["quiet_optuna"])
        cells["quiet_optuna"]()
        study = optuna.create_study(
            study_name="shared-folder", storage=JournalStorage(JournalFileBackend(path)),
            direction="maximize",
            pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3))
        [data] = external.scatter([search_data], broadcast=True)
        futures = [external.submit(cells["run_trial"], study, data, 9, seed, pure=False)
                   for seed in range(12)]
        external.gather(futures)
        ran_on = {worker for future in futures for worker in external.who_has([future])[future.key]}
    assert len(ran_on) == 2  # both workers wrote to the same file
    code = textwrap.dedent(f"""
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend
        study = optuna.load_study(study_name="shared-folder",
                                  storage=JournalStorage(JournalFileBackend({path!r})))
        print(len(study.trials), study.best_value)
    """)
    count, best = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True).stdout.split()
    assert int(count) == 12 and float(best) == study.best_value


# ---------------------------------------------------------------------------------------------
# Results and figures


def example_results() -> dict:
    runs = []
    for seed in range(3):
        for route, calls, scorings, score in (
                ("reference", 1323, 1323, 0.889), ("single_machine", 1323, 1323, 0.889),
                ("even_split", 441, 441, 0.86), ("fewer_full", 432, 432, 0.87),
                ("optuna", 250, 250, 0.885), ("optuna_journal", 240, 240, 0.884),
                ("halving", 230, 74, 0.887), ("hyperband", 357, 91, 0.889)):
            runs.append({"part": "search", "route": route, "seed": seed, "seconds": 10.0 + seed,
                         "best_score": score - 0.001 * seed, "partial_fit_calls": calls,
                         "scorings": scorings,
                         "rounds": [{"tasks": 49, "calls": 49, "seconds": 1.0, "busy_share": 0.9,
                                     "most_at_once": 2}]})
    for repeat in range(3):
        for method, seconds in (("map_blocks", 1.0), ("ParallelPostFit", 1.01)):
            runs.append({"part": "prediction", "method": method, "repeat": repeat,
                         "seconds": seconds + 0.1 * repeat})
        for passing, seconds in (("inside every task", 3.0), ("scattered once", 1.0)):
            runs.append({"part": "model_passing", "passing": passing, "repeat": repeat,
                         "seconds": seconds + 0.01 * repeat})
    return {"runs": runs, "claims": []}


def test_route_comparison_pairs_each_seed_with_its_reference(tmp_path):
    results = example_results()
    table = chapter.route_comparison(results)
    assert list(table.index) == list(chapter.ROUTES)
    assert table.loc["optuna", "partial_fit_calls"] == 250
    assert table.loc["reference", "best_score"] == pytest.approx(0.888)
    assert table.loc["reference", "seeds"] == 3
    # Paired by seed: the reference of the same seed, not the reference's median.
    assert table.loc["even_split", "points_below_reference"] == pytest.approx(2.9)
    assert table.loc["even_split", "points_below_reference_low"] == pytest.approx(2.9)
    assert table.loc["halving", "points_above_even_split"] == pytest.approx(2.7)
    assert table.loc["optuna", "calls_share"] == pytest.approx(250 / 1323)
    assert table.loc["halving", "scorings_share"] == pytest.approx(74 / 1323)
    assert table.loc["reference", "points_below_reference"] == 0
    text = chapter.describe_routes(results)
    assert "3 seeds" in text and "2.90 (range 2.90 to 2.90): below" in text
    assert ("wall time / the reference's (same seed): 1.00x (range 1.00 to 1.00): no difference "
            "measured here") in text
    summary = chapter.summarize_routes(results)
    assert summary.splitlines()[0].startswith("below the reference: even_split, fewer_full")
    assert "no difference measured here with the reference: hyperband" in summary
    assert "above the even split: fewer_full, optuna, optuna_journal, halving, hyperband" in summary
    for route in ("reference", "halving"):
        assert chapter.ROUTES[route] in text or route == "reference"


def test_compare_calls_a_difference_only_beyond_its_range():
    assert chapter.compare(1.0, 0.2, 2.0, "", "below", "above").endswith(": below")
    assert chapter.compare(-1.0, -2.0, -0.1, "", "below", "above").endswith(": above")
    assert chapter.compare(0.5, -0.1, 2.0, "", "below", "above").endswith("no difference measured here")
    assert chapter.compare(1.3, 1.1, 1.5, "x", "slower", "faster", none=1).endswith(": slower")


def test_timed_comparisons_and_figures_from_results(tmp_path):
    results = example_results()
    assert chapter.describe_timing(results, "model_passing").endswith(": scattered once faster")
    assert chapter.describe_timing(results, "prediction").endswith("no difference measured here")
    with pytest.raises(BookError, match="part must be one of"):
        chapter.describe_timing(results, "search")
    from scaling_ml import plots

    figure = figures.plot_route_comparison(results)
    assert len(figure.axes) == 3
    assert plots.save_figure(figure, "search", tmp_path).stat().st_size > 10_000
    assert plots.save_figure(figures.plot_busy_rounds(results), "busy", tmp_path).stat().st_size > 5_000
    ax = figures.plot_timed_pairs(results, "prediction", "method", chapter.PREDICTION_METHODS, "s", "t")
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
        chapter.seconds_of({"runs": example_results()["runs"][:4]}, "prediction", "method")


def test_the_committed_results_have_the_books_shape():
    results = measure.load_results("without_dask_ml")
    assert {"benchmark", "date", "machine", "versions", "claims", "runs"} <= set(results)
    assert not results["settings"]["quick"], "commit results of the full benchmark, not --quick"
    seeds = {run["seed"] for run in results["runs"] if run["part"] == "search"}
    assert len(seeds) >= 3, "the claims are medians of at least 3 seeds"
    assert set(chapter.route_comparison(results).index) == set(chapter.ROUTES)
    assert {part for part in ("prediction", "model_passing")
            if any(run["part"] == part for run in results["runs"])} == {"prediction", "model_passing"}
    from benchmarks import without_dask_ml as benchmark

    assert [claim["name"] for claim in results["claims"]] == [
        claim.name for claim in benchmark.claims_from(results)]
    for claim in results["claims"]:
        assert claim["spread"] is not None, f"{claim['name']} has no spread"


def test_standardised_features_would_make_the_search_problem_easy_again(cells):
    """The chapter says so: on raw features a third of the calls loses points, on standardised
    features it loses almost nothing (seed 0, the chapter's 49 candidates)."""
    X, y = dask.compute(*cells["make_search_data"](cells["N_BLOCKS"], cells["ROWS_PER_BLOCK"],
                                                    cells["N_FEATURES"], seed=0), scheduler="synchronous")
    candidates = list(ParameterSampler(cells["parameters"], n_iter=49, random_state=0))
    lost = {}
    for label, features in (("raw", X), ("standardised", (X - X.mean(axis=0)) / X.std(axis=0))):
        data = cells["split_blocks"](features, y, cells["N_BLOCKS"], cells["VALIDATION_FRACTION"], seed=0)
        histories = np.array([cells["train_candidate"](params, data, cells["MAX_ITER"])
                              for params in candidates])
        lost[label] = 100 * (histories[:, -1].max() - histories[:, cells["MAX_ITER"] // 3 - 1].max())
    assert lost["raw"] > 1 and lost["standardised"] < 0.2, lost
