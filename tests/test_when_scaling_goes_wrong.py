"""Tests of chapter 6: its helper module, and that its outputs do not depend on how it is launched."""

from __future__ import annotations

import os
import re

import dask
import distributed  # noqa: F401  (loads its configuration, read below at import time)
import pytest
from sklearn.linear_model import SGDClassifier

from benchmarks import when_scaling_goes_wrong as benchmark
from scaling_ml import PROJECT_ROOT as ROOT
from scaling_ml import BookError, measure
from scaling_ml import when_scaling_goes_wrong as chapter
NOTEBOOK = ROOT / "notebooks" / "06_when_scaling_goes_wrong.ipynb"
SHIPPING_RUNS = [
    {"case": "6", "variant": "shipped with every task", "data_mb": 40.0, "tasks": 16, "seconds": 3.0,
     "repeats": [3.0, 3.2, 2.9]},
    {"case": "6", "variant": "scattered once", "data_mb": 40.0, "tasks": 16, "seconds": 2.0,
     "repeats": [2.0, 2.1, 1.9]},
]
CHUNK_RUNS = [
    {"case": "7", "rows_per_chunk": 1000, "tasks": 1, "seconds": 0.2, "repeats": [0.2, 0.3]},
    {"case": "7", "rows_per_chunk": 100, "tasks": 10, "seconds": 1.0, "repeats": [1.0, 1.1]},
]


def write_document(tmp_path, runs):
    measure.write_results(chapter.BENCHMARK_NAME, [measure.Claim("c", 2.0, "x", 1.0, ">")], runs,
                          results_dir=tmp_path)
    return chapter.load_results(tmp_path)


def test_runs_table_selects_one_case_in_file_order(tmp_path):
    document = write_document(tmp_path, SHIPPING_RUNS + CHUNK_RUNS)
    shipping = chapter.runs_table(document, "6")
    assert list(shipping.variant) == ["shipped with every task", "scattered once"]
    assert "case" not in shipping
    assert list(chapter.runs_table(document, "7").rows_per_chunk) == [1000, 100]


def test_runs_table_says_how_to_get_missing_runs(tmp_path):
    document = write_document(tmp_path, SHIPPING_RUNS)
    with pytest.raises(BookError, match="benchmarks.when_scaling_goes_wrong"):
        chapter.runs_table(document, "7")
    with pytest.raises(BookError, match="Unknown case '9'"):
        chapter.runs_table(document, "9")


def test_runs_table_refuses_results_of_an_older_benchmark(tmp_path):
    old_run = {key: value for key, value in CHUNK_RUNS[0].items() if key != "repeats"}
    document = write_document(tmp_path, [old_run, CHUNK_RUNS[1]])
    with pytest.raises(BookError, match=r"lack \['repeats'\]"):
        chapter.runs_table(document, "7")


def test_load_results_missing(tmp_path):
    with pytest.raises(BookError, match="run `make bench`"):
        chapter.load_results(tmp_path)


def test_the_committed_results_have_what_the_chapter_reads():
    document = chapter.load_results()
    for case in chapter.CASE_COLUMNS:
        assert len(chapter.runs_table(document, case)) >= 2


def test_the_committed_claims_follow_from_their_runs_and_hold_beyond_their_spread():
    document = chapter.load_results()
    claims = benchmark.benchmark_claims(document["runs"])
    assert [(claim.name, claim.measured, claim.spread) for claim in claims] == [
        (claim["name"], claim["measured"], claim["spread"]) for claim in document["claims"]]
    assert all(claim.spread is not None and claim.holds for claim in claims)


def test_a_claim_inside_its_spread_does_not_hold():
    chunk_runs = [dict(run, repeats=[0.01, 2.0]) for run in CHUNK_RUNS]
    accuracy_runs = [{"case": "8", "method": "Incremental, one pass", "variant": variant, "accuracies": accuracies}
                     for variant, accuracies in [("sorted by label", [0.5, 0.6]),
                                                 ("shuffled on a random key", [0.7, 0.55])]]
    claims = benchmark.benchmark_claims(SHIPPING_RUNS + chunk_runs + accuracy_runs)
    assert [claim.holds for claim in claims] == [True, False, False]
    assert claims[0].spread == pytest.approx([2.9 / 2.1, 3.2 / 1.9])
    assert claims[2].spread == pytest.approx([-5.0, 20.0])


def test_plot_chunk_overhead_draws_medians_sorted_and_every_pass():
    import pandas as pd

    ax = chapter.plot_chunk_overhead(pd.DataFrame(CHUNK_RUNS).drop(columns="case"))
    [median_line] = ax.get_lines()
    assert list(median_line.get_xdata()) == [100, 1000]  # sorted by chunk size
    assert list(median_line.get_ydata()) == [1.0, 0.2]
    passes = sum(len(collection.get_offsets()) for collection in ax.collections)
    assert passes == 4
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert sorted(text.get_text() for text in ax.texts) == ["1 task", "10 tasks"]


def test_plot_chunk_overhead_needs_two_chunk_sizes():
    import pandas as pd

    with pytest.raises(BookError, match="at least two"):
        chapter.plot_chunk_overhead(pd.DataFrame(CHUNK_RUNS[:1]))


def test_plot_chunk_overhead_names_the_table_it_needs(tmp_path):
    document = write_document(tmp_path, SHIPPING_RUNS + CHUNK_RUNS)
    for wrong in (None, CHUNK_RUNS, chapter.runs_table(document, "6")):
        with pytest.raises(BookError, match=r'runs_table\(results, "7"\)'):
            chapter.plot_chunk_overhead(wrong)


def test_runs_table_names_the_document_it_needs():
    with pytest.raises(BookError, match=r"load_results\(\)"):
        chapter.runs_table(None, "7")


# ---- the chapter's outputs do not depend on how it is launched ------------------------------

# A Nanny writes these into the os.environ of the process that starts it (distributed's
# nanny.py: os.environ.update(self.pre_spawn_env)) and leaves them there. In `make test` the unit
# tests start LocalClusters inside the pytest process that then runs nbval, so every kernel nbval
# starts inherits OMP_NUM_THREADS=1 etc.; a reader's kernel, or `pytest --nbval` on the notebook
# alone, does not. With NumPy's BLAS on one thread instead of two, make_classification's matrix
# product differs in the last digit of a few values, which once changed chapter 6's printed
# accuracies (0.462/0.736 against 0.464/0.730).
NANNY_ENVIRONMENT = set(dask.config.get("distributed.nanny.pre-spawn-environ")) | {"PYTHONHASHSEED"}
# What the session started with (pytest imports this module before any test runs).
ORIGINAL_MALLOC = os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_nanny_environment_names_the_variables_a_nanny_leaves_behind():
    assert {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
            "MALLOC_TRIM_THRESHOLD_"} <= NANNY_ENVIRONMENT


def test_the_tests_leave_no_nanny_environment_for_the_notebooks_kernels():
    """tests/conftest.py's environment_as_before undoes what a test's LocalCluster sets."""
    from distributed import LocalCluster

    before = {name: os.environ.get(name) for name in NANNY_ENVIRONMENT}
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None):
        pass
    # Inside a test the nanny's variables are set (the reason for the fixture) ...
    assert any(os.environ.get(name) != before[name] for name in NANNY_ENVIRONMENT)


def test_the_previous_test_s_nanny_environment_is_gone():
    # ... and the test after it sees the environment the session started with.
    assert os.environ.get("MALLOC_TRIM_THRESHOLD_") == ORIGINAL_MALLOC



# ---- the chapter's `# Scale up:` comments, run at a proportional size -------------------------

NOTEBOOK_STEM = "06_when_scaling_goes_wrong"
SET_UP = "3151d944"  # imports, and the chapter's two-worker LocalCluster


def start_chapter(**replace) -> dict:
    """The chapter's set-up cell in a fresh namespace, with the imports earlier cases make that a
    later case's cells use."""
    from dask_ml.wrappers import Incremental
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression, SGDClassifier

    from tests.notebook_cells import run_cells

    namespace = run_cells(NOTEBOOK_STEM, [SET_UP], replace=replace)
    namespace.update(Incremental=Incremental, make_classification=make_classification,
                     LogisticRegression=LogisticRegression, SGDClassifier=SGDClassifier)
    return namespace


@pytest.fixture
def chapter_session():
    """The chapter's set-up; its cluster (and its lost-worker-timeout setting) gone afterwards."""
    with dask.config.set({"distributed.deploy.lost-worker-timeout": "15s", "scheduler-address": None}):
        namespace = start_chapter()
        try:
            yield namespace
        finally:
            namespace["client"].close()


def run_chapter_cells(namespace, cell_ids, **replace):
    from tests.notebook_cells import run_cells

    return run_cells(NOTEBOOK_STEM, cell_ids, namespace, replace=replace.pop("replace", None))


class CountingSGDClassifier(SGDClassifier):
    """The chapter's estimator, counting its partial_fit calls and the most rows one call got."""

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        self.calls_ = getattr(self, "calls_", 0) + 1
        self.most_rows_ = max(getattr(self, "most_rows_", 0), len(X))
        return super().partial_fit(X, y, classes=classes, sample_weight=sample_weight)


@pytest.mark.scale_up("06_when_scaling_goes_wrong", "millions of rows; partial_fit gets one chunk")
def test_case_1_a_million_rows_in_the_same_chunks_reach_partial_fit_one_chunk_at_a_time(chapter_session, capsys):
    """Fifty times the chapter's rows in its 5,000-row chunks: the same error without classes=, the
    same accuracy with them, and every partial_fit call got one chunk."""
    chapter_session["CountingSGDClassifier"] = CountingSGDClassifier
    run_chapter_cells(chapter_session, ["9cfe4bca", "fbdadd72"], replace={
        "(20_000, 10)": "(1_000_000, 10)", "Incremental(SGDClassifier(": "Incremental(CountingSGDClassifier("})
    output = capsys.readouterr().out
    assert "ValueError: classes must be passed on the first call to partial_fit." in output
    assert float(output.split("training accuracy: ")[1].split()[0]) >= 0.95, output  # 0.966 in the chapter
    X, fitted = chapter_session["X"], chapter_session["model"].estimator_
    assert fitted.calls_ == X.numblocks[0] == 200 and fitted.most_rows_ == X.chunksize[0] == 5_000


@pytest.mark.scale_up("06_when_scaling_goes_wrong", "real workers have GiBs")
@pytest.mark.scale_up("06_when_scaling_goes_wrong", "this is 8 chunks of 40 MB")
def test_case_3_the_steps_are_fractions_of_a_larger_limit_with_100_mb_chunks(chapter_session, capsys):
    """A 1 GiB worker (twice the chapter's) storing 8 chunks of 100 MB: the same spilling, pausing
    and restarting, each at the same fraction of the larger limit."""
    run_chapter_cells(chapter_session, ["d8f7ae72", "6dd6f7c0", "f5f8ffca", "65830c68", "c5f57da7"], replace={
        'memory_limit="500MiB"': 'memory_limit="1GiB"',
        "random((40_000, 1_000), chunks=(5_000, 1_000))": "random((100_000, 1_000), chunks=(12_500, 1_000))"})
    output = capsys.readouterr().out
    assert "1 worker, 1 thread | memory limit: 1024 MiB" in output
    assert "{'target': 0.6, 'spill': 0.7, 'pause': 0.8, 'terminate': 0.95}" in output
    assert "stored: 800 MB in 8 chunks; the 60 % target, 644.2 MB of stored results, has room for 6 of them" \
        in output
    in_memory, on_disk = map(int, re.search(r"(\d+) chunks in memory, (\d+) on disk", output).groups())
    assert in_memory + on_disk == 8 and on_disk >= 2  # 800 MB cannot stay under the 644 MB target
    assert "Pausing worker." in output and "Worker memory limit: 1.00 GiB" in output
    assert "KilledWorker: Attempted to run task" in output
    assert output.count("exceeded 95% memory budget") == 2


@pytest.mark.scale_up("06_when_scaling_goes_wrong", "more rows; past about 30,000 of them")
def test_case_4_more_rows_warn_of_a_large_graph_and_data_loaded_by_dask_do_not(chapter_session, capsys):
    """40,000 rows (X and y: 13 MB): dask-ml's search still survives a killed worker with the
    undisturbed scores, now with the large-graph warning; given dask arrays instead, as its fix
    says, it sends no large graph and scores the same. Two values of alpha instead of four keep
    the test short."""
    import warnings

    import dask.array as da
    import numpy as np

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_chapter_cells(chapter_session, ["4521d9b1", "c75bf879"], replace={
            "n_samples=20_000": "n_samples=40_000", '"alpha": [1e-5, 1e-4, 1e-3, 1e-2]': '"alpha": [1e-4, 1e-2]'})
    output = capsys.readouterr().out
    assert "every split score equals the undisturbed search's: True" in output
    assert "X and y inside the search's graph: 13.1 MB" in output
    assert any("Sending large graph" in str(warning.message) for warning in caught)

    namespace, client = chapter_session, chapter_session["client"]
    X_dask = da.from_array(namespace["X_search"], chunks=(10_000, 40)).persist()  # the data on the workers
    y_dask = da.from_array(namespace["y_search"], chunks=10_000).persist()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = namespace["dcv"].GridSearchCV(namespace["sgd"], namespace["param_grid"], cv=namespace["folds"])
        loaded.fit(X_dask, y_dask)
    assert not [warning for warning in caught if "Sending large graph" in str(warning.message)]
    for fold in range(3):
        key = f"split{fold}_test_score"
        assert np.array_equal(loaded.cv_results_[key], namespace["undisturbed"].cv_results_[key])
    assert len(client.scheduler_info()["workers"]) == 2


@pytest.mark.scale_up("06_when_scaling_goes_wrong", "hundreds of candidates, one warning each")
def test_case_6_four_times_the_candidates_warn_once_each_and_scattering_stops_them(chapter_session, capsys):
    run_chapter_cells(chapter_session, ["2076236b", "f9007e6b", "c5236c85"], replace={
        "np.logspace(-5, -1, 8)": "np.logspace(-5, -1, 32)"})
    output = capsys.readouterr().out
    assert "32 warnings, one per task; the first:" in output
    assert "large-graph warnings: 0" in output and "same scores as before: True" in output


@pytest.mark.scale_up("06_when_scaling_goes_wrong", "real data has millions of rows; keep chunks around 100 MB")
def test_case_7_two_million_rows_in_100_mb_chunks_predict_in_a_few_tasks(chapter_session, capsys):
    import numpy as np

    rows_per_100_mb = 100_000_000 // (20 * 8)  # float64 rows of 20 features
    namespace = run_chapter_cells(chapter_session, ["741945d1"], replace={
        "(100_000, 20), chunks=(500, 20)": "(2_000_000, 20), chunks=(500, 20)",
        "rows.rechunk((25_000, 20))": f"rows.rechunk(({rows_per_100_mb}, 20))"})
    output = capsys.readouterr().out
    assert "tasks per predict pass: 4000 with tiny chunks, 4 with large ones" in output
    large, classifier = namespace["large"], namespace["classifier"]
    assert large.chunksize[0] * 20 * 8 == 100_000_000
    predicted = large.map_blocks(classifier.predict, drop_axis=1, dtype=int).compute()
    assert np.array_equal(predicted, classifier.predict(large.compute()))


@pytest.mark.scale_up("06_when_scaling_goes_wrong", "partitions are your files or row groups")
def test_case_8_four_times_the_rows_in_twice_the_partitions_break_and_mend_the_same_way(chapter_session, capsys):
    run_chapter_cells(chapter_session, ["6c78df64", "6faad9a6", "e3d1b35a", "406a44f7", "cfc968b1", "5389ef61"],
                      replace={"n_samples=25_000": "n_samples=105_000", "npartitions=8": "npartitions=16"})
    output = capsys.readouterr().out
    sorted_labels = eval(output.split("labels in each partition: ")[1].splitlines()[0])
    assert len(sorted_labels) == 16 and max(sorted_labels) <= 2
    assert "ValueError: This solver needs samples of at least 2 classes" in output
    sorted_accuracy = float(output.split("one pass over sorted partitions: accuracy ")[1].split()[0])
    shuffled_labels = eval(output.split("labels in each partition: ")[2].splitlines()[0])
    assert shuffled_labels == [4] * 16
    shuffled_accuracy = chapter_session["one_pass_shuffled"]
    assert shuffled_accuracy - sorted_accuracy > 0.1, (sorted_accuracy, shuffled_accuracy)


# ---- a learner's machine stays clean ----------------------------------------------------------

@pytest.mark.cluster
def test_case_5_leaves_no_file_behind_when_its_kernel_is_stopped_in_its_middle(tmp_path):
    """Case 5 writes a module for the workers; a learner's kernel stopped right after (Jupyter's
    restart or shut-down, which ends a kernel busy closing its cluster with SIGTERM, so no atexit
    handler runs) leaves no file in the temporary folder, besides the workers' own folders in
    dask-scratch-space, which the next Dask worker to start removes."""
    from jupyter_client.manager import start_new_kernel

    from tests.notebook_cells import cell_source

    kernel, kernel_client = start_new_kernel(kernel_name="python3", cwd=str(ROOT / "notebooks"),
                                             env={**os.environ, "TMPDIR": str(tmp_path)})
    try:
        for cell_id in (SET_UP, "7e627b28", "83f0884a", "1fe00c06"):
            reply = kernel_client.execute_interactive(cell_source("06_when_scaling_goes_wrong", cell_id),
                                                      timeout=300)
            assert reply["content"]["status"] == "ok", reply["content"]
        written = [path for path in tmp_path.rglob("*") if path.is_file()
                   and "dask-scratch-space" not in path.relative_to(tmp_path).parts]
        assert not written, written
        assert list(tmp_path.rglob("text_features.py")), "the workers received no copy"
        kernel.restart_kernel(now=False)
    finally:
        kernel_client.stop_channels()
        kernel.shutdown_kernel(now=True)
    left = [path for path in tmp_path.rglob("*") if path.is_file()
            and "dask-scratch-space" not in path.relative_to(tmp_path).parts]
    assert not left, left
