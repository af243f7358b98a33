"""Tests of chapter 6: its helper module, and that its outputs do not depend on how it is launched."""

from __future__ import annotations

import os

import dask
import distributed  # noqa: F401  (loads its configuration, read below at import time)
import pytest

from scaling_ml import BookError
from scaling_ml import failure_modes, measure
from scaling_ml import PROJECT_ROOT as ROOT

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
    measure.write_results(failure_modes.BENCHMARK_NAME, [measure.Claim("c", 2.0, "x", 1.0, ">")], runs,
                          results_dir=tmp_path)
    return failure_modes.load_results(tmp_path)


def test_runs_table_selects_one_case_in_file_order(tmp_path):
    document = write_document(tmp_path, SHIPPING_RUNS + CHUNK_RUNS)
    shipping = failure_modes.runs_table(document, "6")
    assert list(shipping.variant) == ["shipped with every task", "scattered once"]
    assert "case" not in shipping
    assert list(failure_modes.runs_table(document, "7").rows_per_chunk) == [1000, 100]


def test_runs_table_says_how_to_get_missing_runs(tmp_path):
    document = write_document(tmp_path, SHIPPING_RUNS)
    with pytest.raises(BookError, match="benchmarks.failure_modes"):
        failure_modes.runs_table(document, "7")
    with pytest.raises(BookError, match="Unknown case '9'"):
        failure_modes.runs_table(document, "9")


def test_runs_table_refuses_results_of_an_older_benchmark(tmp_path):
    old_run = {key: value for key, value in CHUNK_RUNS[0].items() if key != "repeats"}
    document = write_document(tmp_path, [old_run, CHUNK_RUNS[1]])
    with pytest.raises(BookError, match=r"lack \['repeats'\]"):
        failure_modes.runs_table(document, "7")


def test_load_results_missing(tmp_path):
    with pytest.raises(BookError, match="run `make bench`"):
        failure_modes.load_results(tmp_path)


def test_the_committed_results_have_what_the_chapter_reads():
    document = failure_modes.load_results()
    for case in failure_modes.CASE_COLUMNS:
        assert len(failure_modes.runs_table(document, case)) >= 2


def test_plot_chunk_overhead_draws_medians_sorted_and_every_pass():
    import pandas as pd

    ax = failure_modes.plot_chunk_overhead(pd.DataFrame(CHUNK_RUNS).drop(columns="case"))
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
        failure_modes.plot_chunk_overhead(pd.DataFrame(CHUNK_RUNS[:1]))


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

