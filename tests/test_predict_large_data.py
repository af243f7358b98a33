"""Unit tests of scaling_ml.predict_large_data (chapter 2)."""

import subprocess
import sys

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from dask_ml.wrappers import ParallelPostFit
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV

from scaling_ml import cluster
from scaling_ml import predict_large_data as chapter
from scaling_ml.predict_large_data import PredictLargeDataError


@pytest.fixture(scope="module")
def client():
    client = cluster.get_client(n_workers=2)
    yield client
    client.close()


@pytest.fixture(scope="module")
def training():
    return make_classification(**chapter.TRAINING_PARAMETERS)


@pytest.fixture(scope="module")
def model(training):
    X, y = training
    return ParallelPostFit(LogisticRegressionCV(cv=3), scoring="accuracy").fit(X, y)


@pytest.mark.parametrize("parameters", [
    chapter.TRAINING_PARAMETERS,
    dict(n_samples=537, n_features=7, n_informative=3, n_redundant=2, n_clusters_per_class=2,
         random_state=5),
])
def test_geometry_replays_make_classification_exactly(parameters):
    geometry = chapter.ClassificationGeometry.from_make_classification(**parameters)
    X, y = make_classification(**parameters)
    np.testing.assert_array_equal(geometry.replayed[0], X)
    np.testing.assert_array_equal(geometry.replayed[1], y)


def test_sample_follows_the_training_distribution(training, model):
    X, y = training
    X_new, y_new = chapter.training_geometry().sample(200_000, seed=0)
    for label in (0, 1):  # class means agree within the noise of 500 training rows
        np.testing.assert_allclose(X_new[y_new == label].mean(0), X[y == label].mean(0), atol=0.15)
    assert abs(model.score(X_new, y_new) - model.score(X, y)) < 0.03
    # A different seed is a different distribution: the model is no good on it.
    X_other, y_other = make_classification(**{**chapter.TRAINING_PARAMETERS, "random_state": 2})
    assert model.score(X_other, y_other) < 0.6


def test_unsupported_options_and_missing_seed_raise():
    with pytest.raises(PredictLargeDataError, match="not supported"):
        chapter.ClassificationGeometry.from_make_classification(random_state=1, flip_y=0.2)
    with pytest.raises(PredictLargeDataError, match="fixed integer seed"):
        chapter.ClassificationGeometry.from_make_classification(n_features=2, n_redundant=0)


def test_lazy_array_chunks_are_seeded_and_lazy(client):
    geometry = chapter.training_geometry()
    X, y = chapter.make_lazy_classification(geometry, 25_000, 10_000, seed=3)
    assert X.shape == (25_000, 2) and y.shape == (25_000,)
    assert X.chunks == ((10_000, 10_000, 5_000), (2,)) and y.chunks[0] == X.chunks[0]
    X_block, y_block = chapter.generate_chunk(geometry, 5_000, 3, 2)
    np.testing.assert_array_equal(X[20_000:].compute(), X_block)
    np.testing.assert_array_equal(y[20_000:].compute(), y_block)
    assert y.dtype == np.int64 and set(np.unique(y_block)) == {0, 1}
    X_again, _ = chapter.make_lazy_classification(geometry, 25_000, 10_000, seed=3)
    np.testing.assert_array_equal(X.compute(), X_again.compute())


@pytest.mark.parametrize("n_rows, chunk_rows", [(0, 10), (-5, 10), (100, 0), (100, -1), (1.5, 1)])
def test_bad_sizes_raise(n_rows, chunk_rows):
    with pytest.raises(PredictLargeDataError, match="n_rows|chunk_rows"):
        chapter.make_lazy_classification(chapter.training_geometry(), n_rows, chunk_rows)


def test_predict_to_zarr_writes_without_gathering(client, model, tmp_path):
    X, y = chapter.make_lazy_classification(chapter.training_geometry(), 40_000, 10_000, seed=1)
    accuracy = chapter.predict_to_zarr(model, X, tmp_path / "predictions.zarr", y)
    stored = zarr.open(str(tmp_path / "predictions.zarr"), mode="r")
    assert stored.shape == (40_000,) and stored.chunks == (10_000,)
    np.testing.assert_array_equal(stored[:], model.predict(X).compute())
    assert accuracy == pytest.approx(float((stored[:] == y.compute()).mean()))
    assert 0.85 < accuracy < 0.95


def test_mismatched_chunks_raise(model):
    X, y = chapter.make_lazy_classification(chapter.training_geometry(), 4_000, 1_000)
    with pytest.raises(PredictLargeDataError, match="do not line up"):
        chapter.predict_to_zarr(model, X, "unused.zarr", y.rechunk(2_000))
    with pytest.raises(PredictLargeDataError, match="dask array"):
        chapter.check_aligned(X, np.zeros(4_000))


def test_unfitted_model_raises():
    X, y = chapter.make_lazy_classification(chapter.training_geometry(), 4_000, 1_000)
    for unfitted in (ParallelPostFit(LogisticRegression()), LogisticRegression()):
        with pytest.raises(PredictLargeDataError, match="not fitted"):
            chapter.predict_to_zarr(unfitted, X, "unused.zarr", y)


def test_baselines_agree_with_dask(client, model):
    geometry = chapter.training_geometry()
    loop = chapter.run_plain_loop(model.estimator, geometry, 30_000, 10_000, seed=4)
    _, dask_accuracy = chapter.time_dask_score(model, geometry, 30_000, 10_000, seed=4)
    futures = chapter.run_dask_futures(client, model.estimator, geometry, 30_000, 10_000, seed=4)
    assert loop == pytest.approx(dask_accuracy) == pytest.approx(futures)


@pytest.mark.parametrize("clusters_per_class", [1, 2, 3])  # 2, 4 and 6 clusters
def test_features_and_labels_alone_equal_the_joint_sample(clusters_per_class):
    geometry = chapter.ClassificationGeometry.from_make_classification(
        n_samples=500, n_features=4, n_informative=3, n_redundant=1,
        n_clusters_per_class=clusters_per_class, random_state=3)
    shares = np.bincount(geometry.sample_clusters(60_000, 0)) / 60_000
    np.testing.assert_allclose(shares, 1 / geometry.n_clusters, atol=0.01)
    seed = chapter.chunk_seed(7, 3)
    X, y = geometry.sample(10_000, seed)
    np.testing.assert_array_equal(geometry.sample_features(10_000, seed), X)
    np.testing.assert_array_equal(geometry.sample_labels(10_000, seed), y)
    # Label noise: about flip_y of the rows get a random class, so about half of those differ.
    clean = np.arange(geometry.n_clusters)[geometry.sample_clusters(10_000, seed)] % 2
    assert 0 < (clean != y).sum() < 4 * geometry.flip_y * 10_000 / 2


def test_scoring_fuses_into_one_task_per_chunk(model):
    from dask_ml.metrics import accuracy_score

    X, y = chapter.make_lazy_classification(chapter.training_geometry(), 40_000, 10_000, seed=1)
    (score,) = dask.optimize(accuracy_score(y, model.predict(X), compute=False))
    per_chunk = [key for key in dict(score.__dask_graph__())
                 if isinstance(key, tuple) and len(key) == 2 and "make-classification" in key[0]]
    assert len(per_chunk) == X.numblocks[0]


def test_same_recipe_same_keys_other_recipe_other_keys():
    geometry = chapter.training_geometry()
    first, _ = chapter.make_lazy_classification(geometry, 40_000, 10_000, seed=1)
    again, _ = chapter.make_lazy_classification(geometry, 40_000, 10_000, seed=1)
    other_size, _ = chapter.make_lazy_classification(geometry, 40_000, 20_000, seed=1)
    other_seed, _ = chapter.make_lazy_classification(geometry, 40_000, 10_000, seed=2)
    assert first.name == again.name
    assert len({first.name, other_size.name, other_seed.name}) == 3


def test_names_are_the_same_in_every_process():
    # nbval compares the array's repr, which shows its name, with the one stored in the notebook.
    code = ("from scaling_ml import predict_large_data as ch; X, y = ch.make_lazy_classification("
            "ch.training_geometry(), 1_000, 100, seed=0); print(X.name, y.name)")
    names = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout for _ in range(2)}
    assert len(names) == 1 and names.pop().startswith("make-classification-X-")


def test_chunk_cost_breakdown_names_every_step(model):
    steps = chapter.chunk_cost_breakdown(model.estimator, chapter.training_geometry(), 20_000,
                                         repeats=2)
    assert list(steps) == ["draw clusters", "draw X", "draw y",
                           "Dask's block copy (pipeline only)", "predict", "compare"]
    assert all(seconds > 0 for seconds in steps.values())
    with pytest.raises(PredictLargeDataError, match="chunk_rows"):
        chapter.chunk_cost_breakdown(model.estimator, chapter.training_geometry(), 0)


def test_chunk_size_curve_points(client, model):
    points = chapter.chunk_size_curve(model, chapter.training_geometry(), [5_000, 20_000],
                                      min_rows=40_000, min_chunks=2)
    assert [point["n_chunks"] for point in points] == [8, 2]
    assert all(point["rows_per_second"] > 0 for point in points)
