"""Tests of chapter 2: the notebook's reused cells (the functions its workers run), the figures of
scaling_ml.predict_large_data, and the benchmark's baselines and process settings."""

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

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


def test_the_write_and_the_score_share_each_blocks_draw_only_without_graph_optimisation(
        cells, client, tmp_path):
    # The chapter's zarr cell computes both with optimize_graph=False: to_zarr fuses the blocks'
    # drawing and prediction when it is built, and optimising the score fuses another copy.
    from distributed import get_task_stream

    drawn = {}
    for optimize in (True, False):
        X, y = cells["lazy_classification"](3, 10_000)
        predictions = cells["model"].predict(X)
        write = predictions.to_zarr(tmp_path / f"optimized-{optimize}.zarr", compute=False)
        accuracy = accuracy_score(y, predictions, compute=False)
        with get_task_stream(client) as tasks:
            dask.compute(write, accuracy, optimize_graph=optimize)
        drawn[optimize] = sum(task["key"][0].startswith("draw_features") for task in tasks.data)
    assert drawn == {True: 2 * X.numblocks[0], False: X.numblocks[0]}


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


# --- The benchmark's comparisons and claims: a difference only beyond the spread of the repeats ---

def throughput_results(repeats: dict) -> dict:
    return {"runs": [dict(kind="throughput", setting=setting, method=method, repeat=number,
                          rows_per_second=rate)
                     for (setting, method), rates in repeats.items()
                     for number, rate in enumerate(rates)]}


def test_a_comparison_is_a_difference_only_beyond_the_spread_of_its_repeats():
    results = throughput_results({("a", "pool"): [10, 11, 12], ("b", "pool"): [12.5, 13, 14],
                                  ("c", "pool"): [11, 11.5, 12.6]})
    slower = chapter.compare_throughput(results, ("a", "pool"), ("b", "pool"))
    assert slower["measured"] == pytest.approx(11 / 13)
    assert slower["spread"] == pytest.approx([10 / 14, 12 / 12.5])
    assert slower["verdict"] == "slower" and slower["repeats"] == [3, 3]
    assert chapter.compare_throughput(results, ("b", "pool"), ("a", "pool"))["verdict"] == "faster"
    # Medians 11.5 against 11: a ratio of 1.05, but the ranges overlap.
    overlapping = chapter.compare_throughput(results, ("c", "pool"), ("a", "pool"))
    assert overlapping["measured"] > 1 and overlapping["verdict"] == "no difference measured here"
    assert chapter.format_comparison(slower) == "0.85 (0.71 to 0.96 over 3 x 3 repeats): slower"
    with pytest.raises(BookError, match="no timed repeats of 'pool' under 'd'"):
        chapter.compare_throughput(results, ("d", "pool"), ("a", "pool"))


RESULTS = ROOT / "benchmarks" / "results" / "predict_large_data.json"


def test_reclaim_recomputes_summary_claims_and_figures_from_the_stored_runs(tmp_path):
    import json

    from benchmarks import predict_large_data as benchmark

    document = json.loads(RESULTS.read_text())
    document["claims"] = [{"name": "an old goal", "measured": 1.0, "unit": "x", "goal": 2.0,
                           "goal_op": ">=", "holds": False}]
    document["summary"].pop("rows_per_second_range", None)
    document["summary"]["chunk_size_curve"] = []
    (tmp_path / "predict_large_data.json").write_text(json.dumps(document))
    path = benchmark.reclaim(tmp_path, tmp_path)
    rewritten = json.loads(path.read_text())
    assert rewritten["runs"] == document["runs"] and rewritten["date"] == document["date"]
    assert rewritten["machine"] == document["machine"]
    ratios = [claim for claim in rewritten["claims"] if claim["unit"] == "ratio"]
    assert len(ratios) == 2 and all(len(claim["spread"]) == 2 for claim in ratios)
    # The chapter prints the same numbers: the first ratio claim is its first comparison.
    defaults = chapter.compare_throughput(rewritten, ("Dask's default", benchmark.PIPELINE),
                                          ("glibc's default", benchmark.POOL))
    assert ratios[0]["measured"] == pytest.approx(defaults["measured"])
    assert ratios[0]["spread"] == pytest.approx(defaults["spread"])
    assert ratios[0]["holds"] == (defaults["verdict"] == "slower")
    summary = rewritten["summary"]
    assert set(summary["rows_per_second_range"]) == set(summary["rows_per_second"])
    assert [point["chunk_rows"] for point in summary["chunk_size_curve"]] == sorted(
        {run["chunk_rows"] for run in document["runs"] if run["kind"] == "chunk size"})
    assert sorted(figure.name for figure in tmp_path.glob("*.png")) == [
        "predict_large_data_chunk_size.png", "predict_large_data_memory.png",
        "predict_large_data_throughput.png"]


def test_the_committed_results_hold_the_claims_the_benchmark_computes_from_their_runs():
    from benchmarks import predict_large_data as benchmark

    from scaling_ml import measure

    stored = measure.load_results("predict_large_data")
    recomputed = benchmark.benchmark_claims(stored)
    assert [claim["name"] for claim in stored["claims"]] == [claim.name for claim in recomputed]
    for claim, again in zip(stored["claims"], recomputed):
        assert claim["measured"] == pytest.approx(again.measured)
        assert claim.get("spread") == (None if again.spread is None else pytest.approx(again.spread))
        assert claim["holds"] == again.holds


def test_throughput_figure_draws_the_range_of_the_repeats():
    rates = {"memory kept": {"process pool (2)": 3e7, "dask pipeline (2 workers)": 2.7e7}}
    ranges = {"memory kept": {"process pool (2)": [2.8e7, 3.1e7],
                              "dask pipeline (2 workers)": [2.5e7, 2.9e7]}}
    ax = chapter.plot_throughput_by_settings(rates, ranges=ranges)
    lines = [segment for collection in ax.collections for segment in collection.get_segments()]
    assert sorted((line[0][1], line[1][1]) for line in lines) == [(25, 29), (28, 31)]
    with pytest.raises(BookError, match="rows_per_second_range"):
        chapter.plot_throughput_by_settings(rates, ranges={"memory kept": {}})


# --- The notebooks' own cells in real kernels: scratch folder, scale-up comments ---------------

APPENDIX = "appendix_throughput_settings.ipynb"
# The chapter at a size that runs in seconds; each text must be in the notebook, or the test fails
# (a changed cell must be looked at here too).
SMALL_CHAPTER = {
    "n_blocks = 20": "n_blocks = 2",
    "time.sleep(3)": "time.sleep(1)",
    "rows_to_score = 200_000": "rows_to_score = 50_000",
}


def notebook_sources(notebook: str, replacements: dict | None = None, only=None) -> list[str]:
    """The code cells' sources in order, with ``replacements`` made; with ``only`` (texts), just
    the cells that contain one of them and the cells the benchmark reuses (the model, the
    functions that draw the blocks)."""
    import json

    cells = [cell for cell in json.loads((ROOT / "notebooks" / notebook).read_text())["cells"]
             if cell["cell_type"] == "code"]
    sources = ["".join(cell["source"]) for cell in cells]
    for old, new in (replacements or {}).items():
        assert any(old in source for source in sources), f"{notebook} no longer contains {old!r}"
        sources = [source.replace(old, new) for source in sources]
    if only is not None:
        for text in only:
            assert any(text in source for source in sources), f"{notebook} has no cell with {text!r}"
        sources = [source for cell, source in zip(cells, sources)
                   if any(text in source for text in only)
                   or "reused-by-benchmark" in cell["metadata"].get("tags", [])]
    return sources


class NotebookKernel:
    """A real Jupyter kernel, started in ``cwd`` with ``env``, that runs cells and returns their text."""

    def __init__(self, cwd: Path, env: dict):
        from jupyter_client import KernelManager

        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(cwd=str(cwd), env=env)
        self._connect()

    def _connect(self):
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=120)

    def run(self, source: str, timeout: float = 300) -> str:
        texts = []

        def keep(message):
            content = message["content"]
            if message["msg_type"] == "stream":
                texts.append(content["text"])
            elif message["msg_type"] in ("execute_result", "display_data"):
                texts.append(content["data"].get("text/plain", "") + "\n")
            elif message["msg_type"] == "error":
                texts.append("\n".join(content["traceback"]))

        reply = self.client.execute_interactive(source, timeout=timeout, output_hook=keep)
        text = "".join(texts)
        assert reply["content"]["status"] == "ok", f"cell failed:\n{source[:400]}\n---\n{text[-3000:]}"
        return text

    def run_all(self, sources) -> list[str]:
        return [self.run(source) for source in sources]

    def processes(self):
        import psutil

        kernel = psutil.Process(self.manager.provisioner.pid)
        return [kernel, *kernel.children(recursive=True)]

    def kill(self):
        """As a crash or `kill -9` ends it: no cell of the notebook runs any more."""
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)

    def restart(self):
        """JupyterLab's "Restart kernel"."""
        self.client.stop_channels()
        self.manager.restart_kernel(now=False)
        self._connect()

    def shutdown(self):
        self.client.stop_channels()
        if self.manager.has_kernel:
            self.manager.shutdown_kernel(now=False)


@pytest.fixture
def kernels():
    started = []

    def start(cwd, env):
        started.append(NotebookKernel(cwd, env))
        return started[-1]

    yield start
    for kernel in started:
        kernel.shutdown()


def wait_until_gone(processes, seconds=30):
    import time

    import psutil

    deadline = time.monotonic() + seconds
    alive = processes
    while alive and time.monotonic() < deadline:
        alive = [process for process in alive
                 if process.is_running() and process.status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.5)
    return alive


def kernel_environment(tmp_path: Path, **extra) -> dict:
    """This process's environment with a temp directory of the test's own (the chapter must leave
    nothing there) and no scheduler address unless given."""
    temp = tmp_path / "tmp"
    temp.mkdir(exist_ok=True)
    environment = {name: value for name, value in os.environ.items()
                   if name != "DASK_SCHEDULER_ADDRESS"}
    return {**environment, "TMPDIR": str(temp), **extra}


@pytest.mark.cluster
def test_a_killed_or_restarted_kernel_leaves_one_scratch_folder_that_the_next_run_empties(
        tmp_path, kernels):
    cwd = tmp_path / "notebooks"
    cwd.mkdir()
    env = kernel_environment(tmp_path)
    scratch = cwd / "scratch" / "02_predict_large_data"
    # The set-up, the scratch folder and the zarr write, with small blocks.
    to_first_write = notebook_sources(
        NOTEBOOK, {**SMALL_CHAPTER, "rows_per_block = 2_500_000": "rows_per_block = 100_000"},
        only=["client = cluster.get_client()", "scratch.mkdir", "# Scale up: n_blocks", ".to_zarr(scratch"])
    # The zarr write runs inside performance_report, which saves its HTML beside the stores.
    stores = ["performance_report.html", "predictions-2.zarr", "predictions-4.zarr"]

    first = kernels(cwd, env)
    first.run_all(to_first_write)
    assert sorted(path.name for path in scratch.iterdir()) == stores
    processes = first.processes()
    assert len(processes) >= 3, "the kernel started no cluster"
    first.kill()
    assert not wait_until_gone(processes), "the killed kernel's Dask workers are still running"
    (scratch / "probabilities.zarr").mkdir()  # as exercise 3 leaves it, say

    second = kernels(cwd, env)
    second.run_all(to_first_write)
    assert sorted(path.name for path in scratch.iterdir()) == stores  # emptied, then written again
    second.restart()
    second.run_all(to_first_write)
    assert [path.name for path in (cwd / "scratch").iterdir()] == ["02_predict_large_data"]
    assert sorted(path.name for path in scratch.iterdir()) == stores
    # Nothing of the chapter's in the temporary directory: only Dask's workspace, which holds the
    # live workers' folders (Dask purges those of dead workers when a cluster starts).
    temp = Path(env["TMPDIR"])
    assert [path.name for path in temp.iterdir()] == ["dask-scratch-space"]
    workspace = sorted(path.name.split("-")[0] for path in (temp / "dask-scratch-space").iterdir()
                       if path.is_dir())
    assert workspace == ["scheduler", "worker", "worker"], workspace

    second.run(notebook_sources(NOTEBOOK)[-1])  # the last cell
    assert not scratch.exists()


@pytest.fixture
def separate_cluster(tmp_path):
    """A real `dask scheduler` and two `dask worker` processes on 127.0.0.1, each started in a
    folder of its own (as on machines of their own), with Dask's default settings."""
    import signal
    import time

    from distributed import Client

    bin_dir = Path(sys.executable).parent
    environment = kernel_environment(tmp_path)
    folders = {name: tmp_path / name for name in ("scheduler", "worker-0", "worker-1")}
    for folder in folders.values():
        folder.mkdir()
    scheduler_file = folders["scheduler"] / "scheduler.json"
    processes = [subprocess.Popen(
        [str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
         "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(scheduler_file)],
        cwd=folders["scheduler"], env=environment, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        for name in ("worker-0", "worker-1"):
            processes.append(subprocess.Popen(
                [str(bin_dir / "dask"), "worker", "--scheduler-file", str(scheduler_file),
                 "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard"],
                cwd=folders[name], env=environment, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True))
        with Client(scheduler_file=str(scheduler_file), timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            address = client.scheduler.address
        yield address, folders
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.mark.scale_up("02_predict_large_data", "set DASK_SCHEDULER_ADDRESS")
@pytest.mark.scale_up("02_predict_large_data", "on a cluster of several machines")
def test_the_chapter_on_a_separately_started_cluster_writing_to_a_shared_folder(
        tmp_path, kernels, separate_cluster):
    address, folders = separate_cluster
    cwd = tmp_path / "notebooks"
    cwd.mkdir()
    kernel = kernels(cwd, kernel_environment(tmp_path, DASK_SCHEDULER_ADDRESS=address))
    # Not exercise 2's two cells: they measure memory, which needs the chapter's size (strict nbval
    # runs them); smaller, a run ends before the workers' next memory report and shows no rise.
    exercise_2 = ("by_block_size = MemorySampler()", 'print("twice the block size')
    sources = [source for source in notebook_sources(NOTEBOOK, SMALL_CHAPTER)
               if not source.startswith(exercise_2)]
    assert len(sources) == len(notebook_sources(NOTEBOOK)) - len(exercise_2)
    scratch = cwd / "scratch" / "02_predict_large_data"
    outputs = {}
    for source in sources[:-1]:
        outputs[source] = kernel.run(source)
    printed = "".join(outputs.values())
    assert "2 workers, 2 threads" in printed
    assert "distinct rows in X_large: 1000 of 100000" in printed
    assert "on disk: (5000000,) int64 in 2 files" in printed
    training = float(re.search(r"accuracy on the 1,000 training rows: +([\d.]+)", printed)[1])
    new_rows = float(re.search(r"accuracy on 5,000,000 new rows: ([\d.]+)", printed)[1])
    assert abs(new_rows - training) < 0.015
    # The workers, started in folders of their own, wrote the stores into the notebook's folder.
    assert sorted(path.name for path in scratch.iterdir()) == [
        "performance_report.html", "predictions-2.zarr", "predictions-4.zarr", "probabilities.zarr"]
    assert len([path for path in (scratch / "predictions-2.zarr").iterdir()]) == 3  # 2 blocks, metadata
    for folder in folders.values():
        assert not list(folder.rglob("*.zarr"))
    kernel.run(sources[-1])
    assert not scratch.exists()


@pytest.mark.scale_up("02_predict_large_data", "n_blocks is the size knob")
def test_more_rows_than_the_clusters_memory_with_no_other_change_than_n_blocks(tmp_path):
    import math

    import zarr

    cells = _notebook_cells.run_reused_cells(NOTEBOOK)
    rows_per_block = 2_500_000
    worker_limit = 640 * 2**20
    # X a quarter larger than all the memory the cluster may use, blocks as the chapter has them.
    n_blocks = math.ceil(1.25 * 2 * worker_limit / (rows_per_block * 2 * 8))
    [large] = [source for source in notebook_sources(NOTEBOOK) if source.startswith("# Scale up: n_blocks")]
    [write] = [source for source in notebook_sources(NOTEBOOK) if ".to_zarr(scratch" in source]
    large = large.replace("n_blocks = 20", f"n_blocks = {n_blocks}")
    assert f"rows_per_block = {rows_per_block:_}" in large
    write = write.replace("(n_blocks, 2 * n_blocks)", "(n_blocks,)").replace("time.sleep(3)", "time.sleep(1)")
    client = cluster.get_client(n_workers=2, local=True, memory_limit=worker_limit)
    try:
        cells.update(client=client, scratch=tmp_path)
        exec(large, cells)
        exec(write, cells)
        memory = cells["ms"].to_pandas()
    finally:
        client.close()
    assert cells["X_large"].nbytes > 1.25 * 2 * worker_limit
    peak = memory[f"{n_blocks} blocks"].max()
    assert peak < 2 * worker_limit, f"peak cluster memory {peak / 2**30:.2f} GiB over the limit"
    stored = zarr.open(tmp_path / f"predictions-{n_blocks}.zarr", mode="r")
    assert stored.shape == (n_blocks * rows_per_block,) and stored.nchunks == n_blocks
    assert cells["blocks_drawn"] == {n_blocks: n_blocks}  # each block drawn once
    training_accuracy = cells["model"].score(cells["X_train"], cells["y_train"])
    assert abs(float(cells["accuracies"][n_blocks]) - training_accuracy) < 0.015


@pytest.mark.scale_up("appendix_throughput_settings", "set DASK_SCHEDULER_ADDRESS")
def test_the_appendix_on_a_separately_started_cluster(tmp_path, kernels, separate_cluster):
    address, _ = separate_cluster
    cwd = tmp_path / "notebooks"
    cwd.mkdir()
    kernel = kernels(cwd, kernel_environment(tmp_path, DASK_SCHEDULER_ADDRESS=address))
    printed = "".join(kernel.run_all(notebook_sources(APPENDIX)))
    assert printed.startswith("2 workers, 2 threads")
    # `dask worker` starts its worker through a nanny, with Dask's default settings: fresh pages
    # for every array on the separate cluster, as on the local one.
    table = printed[printed.index("fresh pages for every array"):].splitlines()
    rows = {line.split("MiB")[0] + "MiB": line.split("MiB")[1].split() for line in table[1:3]}
    assert rows == {"7.6 MiB": ["True", "False", "False"], "38 MiB": ["True", "True", "False"]}


def appendix_yaml() -> str:
    import json

    cells = json.loads((ROOT / "notebooks" / APPENDIX).read_text())["cells"]
    text = "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "markdown")
    return re.search(r"```yaml\n(.*?)```", text, re.S)[1]


@pytest.mark.scale_up("appendix_throughput_settings", "put these settings in a YAML file")
def test_the_appendix_yaml_file_gives_a_separately_started_cluster_its_settings(tmp_path):
    import signal
    import time

    import dask
    from distributed import Client

    variables = process_settings.MALLOC_VARIABLES

    def worker_settings():  # defined here, so that it travels by value to a worker outside the repo
        return {**{name: os.environ.get(name) for name in variables},
                "profiling": dask.config.get("distributed.worker.profile.enabled")}

    home = tmp_path / "home"
    (home / ".config" / "dask").mkdir(parents=True)
    (home / ".config" / "dask" / "throughput.yaml").write_text(appendix_yaml())
    environment = {name: value for name, value in kernel_environment(tmp_path, HOME=str(home)).items()
                   if not name.startswith(("MALLOC_", "DASK_"))}
    scheduler_file = tmp_path / "scheduler.json"
    bin_dir = Path(sys.executable).parent
    commands = [["scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address",
                 "127.0.0.1:0", "--scheduler-file", str(scheduler_file)],
                ["worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1",
                 "--host", "127.0.0.1", "--no-dashboard"]]
    processes = []
    try:
        for command in commands:
            processes.append(subprocess.Popen([str(bin_dir / "dask"), *command], cwd=tmp_path,
                                              env=environment, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL, start_new_session=True))
            deadline = time.monotonic() + 60
            while not scheduler_file.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
        with Client(scheduler_file=str(scheduler_file), timeout=60) as client:
            client.wait_for_workers(1, timeout=120)
            [worker] = client.run(worker_settings).values()
            saturation = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.WORKER_SATURATION)
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
    assert worker == {"MALLOC_TRIM_THRESHOLD_": "4294967296", "MALLOC_MMAP_THRESHOLD_": "1073741824",
                      "MALLOC_ARENA_MAX": "1", "profiling": False}
    assert saturation == float("inf")
    # What the appendix says of DASK_* variables: Dask lowercases the names, glibc reads upper case.
    variable = "DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON__MALLOC_MMAP_THRESHOLD_"
    collected = dask.config.collect_env({variable: "1073741824"})
    assert collected["distributed"]["nanny"]["pre_spawn_environ"] == {"malloc_mmap_threshold_": 1073741824}


# --- What the chapter and the appendix say the libraries do, on the pinned versions ---------------

def test_map_blocks_without_meta_calls_the_function_without_a_block_id_and_fails(cells):
    import dask.array as da

    with pytest.raises(ValueError, match="dtype` inference failed in `map_blocks`"):
        da.map_blocks(cells["draw_labels"], 0, 10, chunks=((10, 10),))


def test_scoring_names_dask_ml_does_not_know_are_an_error_on_dask_arrays(cells):
    import dask.array as da
    from dask_ml.wrappers import ParallelPostFit
    from sklearn.linear_model import LogisticRegression

    model = ParallelPostFit(LogisticRegression(), scoring="f1").fit(cells["X_train"], cells["y_train"])
    X, y = (da.from_array(array, chunks=500) for array in (cells["X_train"], cells["y_train"]))
    with pytest.raises(ValueError, match="Valid options are .'accuracy', 'neg_log_loss', "
                                         "'neg_mean_squared_error', 'r2'."):
        model.score(X, y)


def test_of_dask_mls_four_scoring_names_neg_log_loss_fails_with_the_pinned_scikit_learn(cells):
    # dask-ml's scorer passes needs_proba=True to make_scorer, which the pinned scikit-learn no
    # longer has, so the keyword reaches log_loss. The chapter says so; when this test fails, the
    # sentence can go.
    import dask.array as da
    from dask_ml.wrappers import ParallelPostFit
    from sklearn.linear_model import LogisticRegression

    X, y = (da.from_array(array, chunks=500) for array in (cells["X_train"], cells["y_train"]))
    for name in ("accuracy", "r2", "neg_mean_squared_error"):
        model = ParallelPostFit(LogisticRegression(), scoring=name).fit(cells["X_train"], cells["y_train"])
        assert np.isfinite(float(model.score(X, y)))
    model = ParallelPostFit(LogisticRegression(), scoring="neg_log_loss").fit(cells["X_train"], cells["y_train"])
    with pytest.raises(TypeError, match="needs_proba"):
        model.score(X, y)


def test_the_original_tutorials_copies_are_one_block_referenced_a_hundred_times(cells):
    import dask.array as da

    X_train = cells["X_train"]
    X_large = da.concatenate([da.from_array(X_train, chunks=X_train.shape) for _ in range(100)])
    sources = {key[0] for key in dict(X_large.__dask_graph__()) if key[0].startswith("array-")}
    assert X_large.numblocks == (100, 1) and len(sources) == 1


GLIBC_PAGE_FAULTS = """
import resource, sys
import numpy as np
rows = int(sys.argv[1])
np.ones((rows, 2)).sum()
faults = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    np.ones((rows, 2)).sum()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(min(faults))
"""


GLIBC_THREAD_PAGE_FAULTS = """
import resource, sys, threading
import numpy as np
rows = int(sys.argv[1])
faults = []

def allocate_and_count():  # in a thread, as a Dask worker computes
    np.ones((rows, 2)).sum()
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        np.ones((rows, 2)).sum()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

thread = threading.Thread(target=allocate_and_count)
thread.start()
thread.join()
print(min(faults))
"""


@pytest.mark.cluster
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_memory_kept_needs_one_arena_for_arrays_above_a_threads_heap():
    """The appendix: a thread's own heap holds at most 64 MiB, so without MALLOC_ARENA_MAX=1 a
    76 MiB array (a block of the benchmark's 5 million rows) in a thread, where a worker computes,
    takes fresh pages whatever the mmap threshold."""
    plain = {name: value for name, value in os.environ.items() if not name.startswith("MALLOC_")}
    memory_kept = process_settings.MEMORY_SETTINGS["memory kept"]
    one_heap_per_thread = {name: value for name, value in memory_kept.items() if name != "MALLOC_ARENA_MAX"}
    fresh = {}
    for name, variables in (("memory kept", memory_kept), ("without one arena", one_heap_per_thread)):
        done = subprocess.run([sys.executable, "-c", GLIBC_THREAD_PAGE_FAULTS, "5000000"],
                              env={**plain, **variables}, capture_output=True, text=True, check=True)
        fresh[name] = int(done.stdout) > 0
    assert fresh == {"memory kept": False, "without one arena": True}


@pytest.mark.cluster
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_the_glibc_behaviour_the_appendix_describes():
    """Arrays above the mmap threshold take fresh pages each time; glibc alone raises the threshold
    to at most 32 MiB, MALLOC_TRIM_THRESHOLD_ stops that, MALLOC_ARENA_MAX alone does not, and
    "memory kept" reuses pages for arrays up to 1 GiB."""
    plain = {name: value for name, value in os.environ.items() if not name.startswith("MALLOC_")}
    settings = {"glibc's default": {}, "Dask's default": {"MALLOC_TRIM_THRESHOLD_": "65536"},
                "arena only": {"MALLOC_ARENA_MAX": "1"},
                "memory kept": process_settings.MEMORY_SETTINGS["memory kept"]}
    fresh = {}
    for name, variables in settings.items():
        for rows in (65_536, 1_000_000, 2_500_000):  # 1, 15 and 38 MiB
            done = subprocess.run([sys.executable, "-c", GLIBC_PAGE_FAULTS, str(rows)],
                                  env={**plain, **variables}, capture_output=True, text=True, check=True)
            fresh[name, rows] = int(done.stdout) > 0
    assert fresh == {
        ("glibc's default", 65_536): False, ("glibc's default", 1_000_000): False,
        ("glibc's default", 2_500_000): True,
        ("Dask's default", 65_536): True, ("Dask's default", 1_000_000): True,
        ("Dask's default", 2_500_000): True,
        ("arena only", 65_536): False, ("arena only", 1_000_000): False, ("arena only", 2_500_000): True,
        ("memory kept", 65_536): False, ("memory kept", 1_000_000): False, ("memory kept", 2_500_000): False,
    }
