"""Unit tests of scaling_ml.predict_large_data (chapter 2)."""

import subprocess
import sys

import dask
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


def test_drawing_x_in_blocks_equals_the_whole_column_formula():
    # More rows than one block, and a block boundary inside: X_k @ A_k + centroid_k for each row,
    # computed here for all rows at once from the same random stream.
    geometry = chapter.ClassificationGeometry.from_make_classification(
        n_samples=500, n_features=6, n_informative=3, n_redundant=1, n_clusters_per_class=2,
        random_state=4)
    n_rows = chapter._BLOCK_ROWS * 2 + 123
    seed = chapter.chunk_seed(11, 0)
    clusters = geometry.sample_clusters(n_rows, seed)
    X = geometry.sample_features(n_rows, seed, clusters)
    rng = geometry._stream(seed, chapter._FEATURES)
    informative = rng.standard_normal((geometry.n_informative, n_rows)).T
    values = (np.einsum("ri,rij->rj", informative, geometry.covariance_factors[clusters])
              + geometry.centroids[clusters])
    destination = np.argsort(geometry.feature_order)
    np.testing.assert_allclose(X[:, destination[:3]], values, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(X[:, destination[3]], values @ geometry.redundant_factor[:, 0],
                               rtol=1e-12, atol=1e-12)


def test_clusters_are_drawn_once_per_chunk_and_shared_read_only():
    geometry = chapter.training_geometry()
    first = geometry.sample_clusters(1000, chapter.chunk_seed(3, 0))
    again = geometry.sample_clusters(1000, chapter.chunk_seed(3, 0))
    assert again is first and not first.flags.writeable
    other = geometry.sample_clusters(1000, chapter.chunk_seed(3, 1))
    assert other is not first and not np.array_equal(other, first)
    fresh = geometry.sample_clusters(1000, chapter.chunk_seed(3, 0))
    assert fresh is not first and np.array_equal(fresh, first)  # a new draw, the same values


def test_process_environment_sets_exactly_the_settings_and_restores(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # as Dask's nanny leaves it
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    with chapter.process_environment({"MALLOC_ARENA_MAX": 1}):
        assert chapter.os.environ.get("MALLOC_ARENA_MAX") == "1"
        assert "MALLOC_TRIM_THRESHOLD_" not in chapter.os.environ
    assert chapter.os.environ["MALLOC_TRIM_THRESHOLD_"] == "65536"
    assert "MALLOC_ARENA_MAX" not in chapter.os.environ
    with chapter.process_environment(None):
        assert chapter.os.environ["MALLOC_TRIM_THRESHOLD_"] == "65536"


@pytest.mark.parametrize("settings", [{"PATH": "/tmp"}, "memory kept", ["MALLOC_ARENA_MAX"]])
def test_bad_memory_settings_raise(settings):
    with pytest.raises(PredictLargeDataError, match="MEMORY_SETTINGS"):
        with chapter.process_environment(settings):
            pass


def _malloc_environment():
    import os
    return {name: os.environ.get(name) for name in chapter.MALLOC_VARIABLES}


def test_pool_and_workers_start_with_the_settings_given(monkeypatch):
    # What an earlier local cluster's nanny leaves in this process; it must not win.
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    settings = chapter.MEMORY_SETTINGS["memory kept"]
    expected = {name: settings.get(name) for name in chapter.MALLOC_VARIABLES}
    before = _malloc_environment()
    pool = chapter.start_process_pool(1, settings)
    try:
        assert pool.submit(_malloc_environment).result() == expected
    finally:
        pool.shutdown()
    client = chapter.start_local_cluster(1, chapter.MEMORY_SETTINGS["glibc's default"])
    try:
        workers = client.run(_malloc_environment)
    finally:
        client.close()
    assert list(workers.values()) == [{name: None for name in chapter.MALLOC_VARIABLES}]
    assert _malloc_environment() == before  # the nanny's settings did not stay behind


def _worker_profiles():
    import dask
    return dask.config.get("distributed.worker.profile.enabled")


def test_cluster_starts_with_the_dask_config_given_and_leaves_no_config_behind():
    import dask

    saturation = dask.config.get("distributed.scheduler.worker-saturation")
    profiling = dask.config.get("distributed.worker.profile.enabled")
    client = chapter.start_local_cluster(1, chapter.MEMORY_SETTINGS["memory kept"],
                                         chapter.THROUGHPUT_SCHEDULING)
    try:
        assert list(client.run(_worker_profiles).values()) == [False]
        assert client.run_on_scheduler(
            lambda dask_scheduler: dask_scheduler.WORKER_SATURATION) == float("inf")
        # Arrays still compute the same on such a cluster.
        geometry = chapter.training_geometry()
        X, y = chapter.make_lazy_classification(geometry, 30_000, 10_000)
        expected = sum(int(chapter.generate_chunk(geometry, 10_000, 0, index)[1].sum())
                       for index in range(3))
        assert int(y.sum().compute()) == expected
    finally:
        client.close()
    assert dask.config.get("distributed.scheduler.worker-saturation") == saturation
    assert dask.config.get("distributed.worker.profile.enabled") == profiling


@pytest.mark.parametrize("dask_config", ["throughput", {1: True}, [("a", 1)]])
def test_bad_dask_config_raises(dask_config):
    with pytest.raises(PredictLargeDataError, match="THROUGHPUT_SCHEDULING"):
        chapter.start_local_cluster(1, None, dask_config)


def test_throughput_figure_has_a_bar_per_setting_and_method():
    rates = {setting: {"process pool (2)": 3e7, "dask pipeline (2 workers)": 2.7e7}
             for setting in chapter.MEMORY_SETTINGS}
    del rates["Dask's default"]["process pool (2)"]  # a gap, as in the benchmark
    ax = chapter.plot_throughput_by_settings(rates)
    assert len(ax.patches) == len(chapter.MEMORY_SETTINGS) * 2 - 1
    assert [label.get_text() for label in ax.get_xticklabels()] == list(chapter.MEMORY_SETTINGS)


def test_benchmark_diagnostic_skips_only_the_single_block_copy():
    # The benchmark's "without the block copy" row patches Dask in the workers: check, in a
    # process of its own, that it passes a lone block through and still joins several.
    script = """
import runpy, numpy as np, dask.array.core as core
benchmark = runpy.run_path("benchmarks/predict_large_data.py", run_name="benchmark")
block = np.ones((4, 2))
assert core.concatenate_axes([block], [1]) is not block
benchmark["skip_single_block_copy"]()
benchmark["skip_single_block_copy"]()  # idempotent
assert core.concatenate_axes([block], [1]) is block
assert core.concatenate_axes([block, block], [1]).shape == (4, 4)
"""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", script], cwd=root, check=True)
