"""Unit tests of scaling_ml.distributed_training (chapter 1), with a real 2-worker LocalCluster."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.datasets import fetch_20newsgroups

from scaling_ml import cluster, measure
from scaling_ml import distributed_training as ch
from scaling_ml.distributed_training import DistributedTrainingError


@pytest.fixture(scope="module")
def small_data():
    data = fetch_20newsgroups(subset="train", categories=list(ch.NOTEBOOK_CATEGORIES[:2]))
    return data.data[:150], data.target[:150]


@pytest.fixture(scope="module")
def client():
    client = cluster.get_client(n_workers=2)
    yield client
    client.close()


# --- categories ---------------------------------------------------------------------------------

def test_all_categories_match_scikit_learn():
    assert ch.ALL_CATEGORIES == tuple(fetch_20newsgroups(subset="train").target_names)


def test_chapter_categories_are_valid():
    assert ch.check_categories(ch.NOTEBOOK_CATEGORIES) == list(ch.NOTEBOOK_CATEGORIES)
    assert ch.check_categories(ch.BENCHMARK_CATEGORIES) == list(ch.BENCHMARK_CATEGORIES)


def test_unknown_category_is_named_with_a_suggestion():
    with pytest.raises(DistributedTrainingError, match=r"'sci\.spaces'.*did you mean 'sci\.space'"):
        ch.check_categories(["alt.atheism", "sci.spaces"])


@pytest.mark.parametrize("bad", [[], None, "sci.space", ["sci.space", "sci.space"]])
def test_bad_category_lists(bad):
    with pytest.raises(DistributedTrainingError):
        ch.check_categories(bad)


def test_error_is_a_value_error():
    assert issubclass(DistributedTrainingError, ValueError)


# --- pipeline and grid --------------------------------------------------------------------------

def test_pipeline_is_the_chapters():
    pipeline = ch.make_pipeline(random_state=3)
    assert [type(step).__name__ for _, step in pipeline.steps] == [
        "HashingVectorizer", "TfidfTransformer", "SGDClassifier"]
    assert pipeline.get_params()["clf__max_iter"] == 1000
    assert pipeline.get_params()["clf__random_state"] == 3


def test_grid_is_the_chapters():
    assert ch.PARAMETERS == {"tfidf__use_idf": (True, False), "tfidf__norm": ("l1", "l2"),
                             "clf__alpha": (1e-5, 1e-6)}
    assert ch.check_grid(ch.make_pipeline(), ch.PARAMETERS) == 8
    search = ch.make_search()
    assert (search.cv, search.refit, search.n_jobs) == (3, False, -1)


@pytest.mark.parametrize("grid, message", [
    ({}, "grid is empty"),
    ([("clf__alpha", (1e-5,))], "must be a dict"),
    ({"clf__alpha": ()}, "no values"),
    ({"clf__alpha": 1e-5}, "must be a list or tuple"),
    ({"tfidf__norm": "l2"}, "must be a list or tuple"),
    ({"clf__alpah": (1e-5,)}, "did you mean 'clf__alpha'"),
])
def test_bad_grids(grid, message):
    with pytest.raises(DistributedTrainingError, match=message):
        ch.check_grid(ch.make_pipeline(), grid)
    with pytest.raises(DistributedTrainingError, match=message):
        ch.make_search(grid)


# --- results, figures ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fitted_search(small_data):
    search = ch.make_search(n_jobs=1)
    search.fit(*small_data)
    return search


def test_results_table(fitted_search):
    table = ch.results_table(fitted_search.cv_results_)
    assert list(table.columns) == ["alpha", "norm", "use_idf", "mean accuracy", "std", "rank"]
    assert len(table) == 8 and table["rank"].is_monotonic_increasing
    assert table["mean accuracy"].iloc[0] == round(fitted_search.best_score_, 3)


def test_results_table_is_deterministic(small_data, fitted_search):
    again = ch.make_search(n_jobs=1).fit(*small_data)
    assert np.array_equal(again.cv_results_["mean_test_score"], fitted_search.cv_results_["mean_test_score"])


def test_results_table_rejects_unfitted_search():
    with pytest.raises(DistributedTrainingError, match="fit"):
        ch.results_table(ch.make_search())


def test_figures(tmp_path, fitted_search):
    _, pipeline_path = ch.draw_pipeline(figures_dir=tmp_path)
    assert pipeline_path.name == "pipeline.png" and pipeline_path.stat().st_size > 5_000
    _, scores_path = ch.plot_scores(ch.results_table(fitted_search.cv_results_), figures_dir=tmp_path)
    assert scores_path.name == "distributed_training_scores.png"
    with pytest.raises(DistributedTrainingError, match="columns"):
        ch.plot_scores(ch.results_table(fitted_search.cv_results_).drop(columns="norm"))


# --- timing modes on a real cluster -------------------------------------------------------------

def test_modes_need_a_known_name(small_data):
    with pytest.raises(DistributedTrainingError, match="Unknown mode"):
        ch.fit_in_mode(ch.make_search(), *small_data, "threads")
    with pytest.raises(DistributedTrainingError, match="repeats"):
        ch.time_modes(ch.make_search, *small_data, repeats=0)


def test_dask_mode_without_cluster_is_a_clear_error(small_data):
    # Runs before the module's cluster fixture is first used (tests run in file order).
    with pytest.raises(DistributedTrainingError, match="needs a Dask cluster"):
        ch.fit_in_mode(ch.make_search(), *small_data, "dask")


def test_dask_modes_give_the_same_scores(client, small_data, fitted_search):
    for mode in ("dask", "dask + scatter"):
        search = ch.make_search()
        assert ch.fit_in_mode(search, *small_data, mode) > 0
        assert np.array_equal(search.cv_results_["mean_test_score"],
                              fitted_search.cv_results_["mean_test_score"])


def test_time_modes_summary_claims_and_figure(client, small_data, tmp_path):
    runs = ch.time_modes(ch.make_search, *small_data, repeats=1, log=None)
    assert [run["mode"] for run in runs] == list(ch.MODES)
    table = ch.summarise(runs)
    assert table.loc["n_jobs=1", "speed-up"] == 1.0
    claims = ch.benchmark_claims(table)
    assert len(claims) == 4 and all(isinstance(claim.holds, bool) for claim in claims)
    path = measure.write_results(ch.NAME, claims, runs, results_dir=tmp_path,
                                 extra={"workload": {"documents": len(small_data[0])}})
    document, loaded = ch.load_benchmark(results_dir=tmp_path)
    assert json.loads(path.read_text())["claims"][0]["holds"] == claims[0].holds
    assert list(loaded.index) == list(ch.MODES)
    _, figure_path = ch.plot_speedup(loaded, ideal=2, figures_dir=tmp_path)
    assert figure_path.is_file()


def test_summarise_needs_runs_and_a_baseline():
    with pytest.raises(DistributedTrainingError, match="No runs"):
        ch.summarise([])
    with pytest.raises(DistributedTrainingError, match="n_jobs=1"):
        ch.summarise([{"mode": "dask", "repeat": 0, "seconds": 1.0}])


def test_benchmark_claims_from_a_known_table():
    runs = [{"mode": mode, "repeat": 0, "seconds": seconds}
            for mode, seconds in zip(ch.MODES, (20.0, 10.5, 11.0, 10.8))]
    claims = {claim.name: claim for claim in ch.benchmark_claims(ch.summarise(runs))}
    speed_up = claims["dask + scatter: speed-up over n_jobs=1 (2 workers)"]
    assert speed_up.measured == round(20.0 / 10.8, 2) and speed_up.holds
    assert claims["scatter saves time: dask time / dask + scatter time"].measured == round(11.0 / 10.8, 3)
    slow = [dict(run, seconds=14.0) if run["mode"] == "dask + scatter" else run for run in runs]
    slow_claims = {claim.name: claim for claim in ch.benchmark_claims(ch.summarise(slow))}
    assert not slow_claims["dask + scatter: speed-up over n_jobs=1 (2 workers)"].holds
    assert not slow_claims["scatter saves time: dask time / dask + scatter time"].holds


def test_benchmark_claims_need_every_mode():
    runs = [{"mode": mode, "repeat": 0, "seconds": 1.0} for mode in ("n_jobs=1", "dask")]
    with pytest.raises(ch.DistributedTrainingError, match="need all four modes"):
        ch.benchmark_claims(ch.summarise(runs))
