"""Tests of chapter 2: the notebook's reused cells (the functions its workers run), the figures of
scaling_ml.predict_large_data, and the benchmark's baselines and process settings."""

import os
import subprocess
import sys
import warnings

import cloudpickle
import dask
import numpy as np
import pytest
from dask_ml.metrics import accuracy_score
from sklearn.datasets import make_classification

from benchmarks import _notebook_cells
from benchmarks import _predict_baselines as baselines
from benchmarks import _predict_settings as process_settings
from scaling_ml import BookError
from scaling_ml import cluster
from scaling_ml import predict_large_data as chapter
from scaling_ml import PROJECT_ROOT as ROOT


NOTEBOOK = "02_predict_large_data.ipynb"


@pytest.fixture(scope="module")
def cells():
    return _notebook_cells.run_reused_cells(NOTEBOOK)


@pytest.fixture(scope="module")
def client():
    client = cluster.get_client(n_workers=2, local=True)
    yield client
    client.close()


def draw_block(cells, seed, rows, block):
    y = cells["draw_labels"](seed, rows, block_id=(block,))
    X = cells["draw_features"](seed, rows, cells["class_means"], cells["class_factors"],
                               block_id=(block, 0))
    return X, y


def test_class_gaussians_are_estimated_from_the_training_rows(cells):
    X_train, y_train = cells["X_train"], cells["y_train"]
    for label in (0, 1):
        rows = X_train[y_train == label]
        np.testing.assert_allclose(cells["class_means"][label], rows.mean(axis=0))
        factor = cells["class_factors"][label]
        np.testing.assert_allclose(factor @ factor.T, np.cov(rows, rowvar=False))


def test_new_rows_follow_the_training_distribution(cells):
    X, y = draw_block(cells, seed=0, rows=400_000, block=0)
    assert abs(y.mean() - 0.5) < 0.01
    for label in (0, 1):
        rows = X[y == label]  # the labels of draw_labels pick out draw_features' classes
        np.testing.assert_allclose(rows.mean(axis=0), cells["class_means"][label], atol=0.01)
        factor = cells["class_factors"][label]
        np.testing.assert_allclose(np.cov(rows, rowvar=False), factor @ factor.T, atol=0.01)
    model = cells["model"]
    training_accuracy = model.score(cells["X_train"], cells["y_train"])
    assert abs(model.score(X, y) - training_accuracy) < 0.015
    # Another make_classification seed is another distribution: the model is no good on it.
    X_other, y_other = make_classification(n_samples=1000, n_features=2, n_redundant=0,
                                           n_informative=2, random_state=2, n_clusters_per_class=1)
    assert model.score(X_other, y_other) < 0.6


def test_each_block_has_its_own_seed_and_the_same_one_every_time(cells):
    X, y = draw_block(cells, seed=5, rows=1_000, block=3)
    X_again, y_again = draw_block(cells, seed=5, rows=1_000, block=3)
    np.testing.assert_array_equal(X, X_again)
    np.testing.assert_array_equal(y, y_again)
    for other in (draw_block(cells, seed=5, rows=1_000, block=4),
                  draw_block(cells, seed=6, rows=1_000, block=3)):
        assert not np.array_equal(X, other[0]) and not np.array_equal(y, other[1])
    assert X.shape == (1_000, 2) and X.dtype == np.float64 and y.dtype == np.int64


def test_lazy_arrays_compute_the_blocks_the_functions_draw(cells, client):
    X, y = cells["lazy_classification"](3, 10_000, seed=3)
    assert X.shape == (30_000, 2) and y.shape == (30_000,)
    assert X.chunks == ((10_000,) * 3, (2,)) and y.chunks == ((10_000,) * 3,)
    X_block, y_block = draw_block(cells, seed=3, rows=10_000, block=2)
    np.testing.assert_array_equal(X.blocks[2].compute(), X_block)
    np.testing.assert_array_equal(y.blocks[2].compute(), y_block)
    np.testing.assert_array_equal(X.compute(), X.compute())


def test_building_the_arrays_draws_nothing():
    namespace = _notebook_cells.run_reused_cells(NOTEBOOK)
    calls = []
    for name in ("draw_labels", "draw_features"):
        def counted(*args, block_id=None, _draw=namespace[name], **kwargs):
            calls.append(block_id)
            return _draw(*args, block_id=block_id, **kwargs)
        namespace[name] = counted  # lazy_classification looks them up in this namespace
    X, y = namespace["lazy_classification"](1_000, 10_000_000)  # 149 GiB of X
    assert X.nbytes / 2**30 > 100 and calls == []
    with warnings.catch_warnings():  # another test's client may be the default one
        warnings.filterwarnings("ignore", "Running on a single-machine scheduler")
        first_rows = y[:3].compute(scheduler="synchronous")
    assert first_rows.shape == (3,) and calls == [(0,)]


def test_scoring_fuses_into_one_task_per_block(cells):
    X, y = cells["lazy_classification"](4, 10_000, seed=1)
    (score,) = dask.optimize(accuracy_score(y, cells["model"].predict(X), compute=False))
    drawing = [key for key in dict(score.__dask_graph__())
               if isinstance(key, tuple) and "draw_features" in key[0]]
    assert len(drawing) == X.numblocks[0]


def test_the_functions_the_workers_run_need_nothing_of_the_book(cells, tmp_path):
    payload = cloudpickle.dumps((cells["draw_labels"], cells["draw_features"],
                                 cells["class_means"], cells["class_factors"]))
    assert b"scaling_ml" not in payload
    (tmp_path / "payload.pickle").write_bytes(payload)
    script = """
import pickle, sys
sys.modules["scaling_ml"] = None  # importing the book's package now fails
draw_labels, draw_features, means, factors = pickle.load(open(sys.argv[1], "rb"))
print(draw_labels(0, 5, block_id=(1,)).tolist(), draw_features(0, 5, means, factors, block_id=(1, 0)).shape)
"""
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "payload.pickle")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    labels = cells["draw_labels"](0, 5, block_id=(1,)).tolist()
    assert done.stdout.strip() == f"{labels} (5, 2)"


@pytest.mark.cluster
def test_baselines_do_the_pipelines_work(cells, client):
    estimator, lazy_classification = cells["model"].estimator, cells["lazy_classification"]
    pipeline = float(cells["model"].score(*lazy_classification(3, 10_000, seed=4)))
    loop = baselines.run_plain_loop(estimator, 3, 10_000, seed=4)
    futures = baselines.run_dask_futures(client, estimator, 3, 10_000, seed=4)
    pool = process_settings.start_process_pool(2, initializer=baselines.notebook_cells)
    try:
        pooled = baselines.run_process_pool(pool, estimator, 3, 10_000, seed=4)
    finally:
        pool.shutdown()
    assert loop == pytest.approx(pipeline) == pytest.approx(futures) == pytest.approx(pooled)
    assert 0.87 < loop < 0.92


def test_block_cost_breakdown_names_every_step(cells):
    steps = baselines.block_cost_breakdown(cells["model"].estimator, 20_000, repeats=2)
    assert list(steps) == ["draw labels", "draw features", "Dask's block copy (pipeline only)",
                           "predict", "compare"]
    assert all(seconds > 0 for seconds in steps.values())


def test_benchmark_diagnostic_skips_only_the_single_block_copy():
    # The benchmark's "without the block copy" row patches Dask in the workers: check, in a
    # process of its own, that it passes a lone block through and still joins several.
    script = """
import sys, numpy as np, dask.array.core as core
from benchmarks import _predict_baselines
block = np.ones((4, 2))
assert core.concatenate_axes([block], [1]) is not block
_predict_baselines.skip_single_block_copy()
_predict_baselines.skip_single_block_copy()  # idempotent
assert core.concatenate_axes([block], [1]) is block
assert core.concatenate_axes([block, block], [1]).shape == (4, 4)
"""
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True)


def test_process_environment_sets_exactly_the_settings_and_restores(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # as Dask's nanny leaves it
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    with process_settings.process_environment({"MALLOC_ARENA_MAX": 1}):
        assert os.environ.get("MALLOC_ARENA_MAX") == "1"
        assert "MALLOC_TRIM_THRESHOLD_" not in os.environ
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "65536"
    assert "MALLOC_ARENA_MAX" not in os.environ
    with process_settings.process_environment(None):
        assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "65536"


@pytest.mark.parametrize("settings", [{"PATH": "/tmp"}, "memory kept", ["MALLOC_ARENA_MAX"]])
def test_bad_memory_settings_raise(settings):
    with pytest.raises(BookError, match="MEMORY_SETTINGS"):
        with process_settings.process_environment(settings):
            pass


def _malloc_environment():
    return {name: os.environ.get(name) for name in process_settings.MALLOC_VARIABLES}


@pytest.mark.cluster
def test_pool_and_workers_start_with_the_settings_given(monkeypatch):
    # What an earlier local cluster's nanny leaves in this process; it must not win.
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    settings = process_settings.MEMORY_SETTINGS["memory kept"]
    expected = {name: settings.get(name) for name in process_settings.MALLOC_VARIABLES}
    before = _malloc_environment()
    pool = process_settings.start_process_pool(1, settings)
    try:
        assert pool.submit(_malloc_environment).result() == expected
    finally:
        pool.shutdown()
    client = process_settings.start_local_cluster(
        1, process_settings.MEMORY_SETTINGS["glibc's default"])
    try:
        workers = client.run(_malloc_environment)
    finally:
        client.close()
    assert list(workers.values()) == [{name: None for name in process_settings.MALLOC_VARIABLES}]
    assert _malloc_environment() == before  # the nanny's settings did not stay behind


def _worker_profiles():
    return dask.config.get("distributed.worker.profile.enabled")


@pytest.mark.cluster
def test_cluster_starts_with_the_dask_config_given_and_leaves_no_config_behind():
    saturation = dask.config.get("distributed.scheduler.worker-saturation")
    profiling = dask.config.get("distributed.worker.profile.enabled")
    client = process_settings.start_local_cluster(
        1, process_settings.MEMORY_SETTINGS["memory kept"], process_settings.THROUGHPUT_SCHEDULING)
    try:
        assert list(client.run(_worker_profiles).values()) == [False]
        assert client.run_on_scheduler(
            lambda dask_scheduler: dask_scheduler.WORKER_SATURATION) == float("inf")
    finally:
        client.close()
    assert dask.config.get("distributed.scheduler.worker-saturation") == saturation
    assert dask.config.get("distributed.worker.profile.enabled") == profiling


@pytest.mark.parametrize("dask_config", ["throughput", {1: True}, [("a", 1)]])
def test_bad_dask_config_raises(dask_config):
    with pytest.raises(BookError, match="THROUGHPUT_SCHEDULING"):
        process_settings.start_local_cluster(1, None, dask_config)


def test_training_and_new_rows_figure(cells):
    X_new, y_new = draw_block(cells, seed=0, rows=500, block=0)
    axes = chapter.plot_training_and_new_rows(cells["X_train"], cells["y_train"], X_new, y_new)
    assert [len(ax.collections) for ax in axes] == [2, 2]  # one scatter per class
    assert [ax.get_title() for ax in axes] == ["1,000 training rows", "500 new rows"]
    assert axes[0].get_xlim() == axes[1].get_xlim()
    with pytest.raises(BookError, match="compute"):
        chapter.plot_training_and_new_rows(cells["X_train"], cells["y_train"], X_new[:, :1], y_new)


def test_chunk_size_curve_figure():
    points = [{"chunk_rows": 100_000, "rows_per_second": 8e6},
              {"chunk_rows": 1_000, "rows_per_second": 2e5}]
    ax = chapter.plot_chunk_size_curve(points)
    np.testing.assert_allclose(ax.lines[0].get_xdata(), [1_000, 100_000])  # sorted by size
    for bad in ([], [{"chunk_rows": 1_000}]):
        with pytest.raises(BookError, match="chunk_size_curve"):
            chapter.plot_chunk_size_curve(bad)


def test_big_run_memory_figure():
    run = {"kind": "big run", "logical_gib": 32.0, "idle_memory_gib": 0.4,
           "memory_over_time": {"0.5": 0.9, "0.0": 0.5, "1.0": 1.1}}
    ax = chapter.plot_big_run_memory({"runs": [{"kind": "throughput"}, run]})
    np.testing.assert_allclose(ax.lines[0].get_xdata(), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(ax.lines[1].get_ydata(), [0.4, 0.4])  # the idle cluster
    assert ax.get_ylim()[0] == 0
    with pytest.raises(BookError, match="big run"):
        chapter.plot_big_run_memory({"runs": []})


def test_throughput_figure_has_a_bar_per_setting_and_method():
    settings = list(process_settings.MEMORY_SETTINGS)
    rates = {setting: {"process pool (2)": 3e7, "dask pipeline (2 workers)": 2.7e7}
             for setting in settings}
    del rates["Dask's default"]["process pool (2)"]  # a gap, as in the benchmark
    ax = chapter.plot_throughput_by_settings(rates)
    assert len(ax.patches) == len(settings) * 2 - 1
    assert [label.get_text() for label in ax.get_xticklabels()] == settings
    with pytest.raises(BookError, match="rows_per_second"):
        chapter.plot_throughput_by_settings({"memory kept": {}})
