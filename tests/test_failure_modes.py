"""Unit tests of scaling_ml.failure_modes (chapter 6), with a real LocalCluster where needed."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from scaling_ml import cluster, failure_modes, measure
from scaling_ml.failure_modes import FailureModesError


@pytest.fixture(scope="module")
def client():
    client = cluster.get_client(n_workers=2, silence_logs=logging.ERROR)
    yield client
    client.close()


# ---- log reading -------------------------------------------------------------------------

def test_sanitize_replaces_variable_parts():
    line = ("Worker tcp://127.0.0.1:40123 (pid=4242) exceeded 95% memory budget. "
            "Process memory: 478.21 MiB key fit-0123456789abcdef0123456789abcdef "
            "mixed_batch_of__fit_and_score_2_calls-0123456789abcdef0123456789abcdef")
    clean = failure_modes.sanitize(line)
    assert "127.0.0.1" not in clean and "4242" not in clean and "95%" not in clean
    assert "WORKER-ADDRESS" in clean and "pid=PID" in clean and "N MiB" in clean
    assert "fit-KEY" in clean and "BATCH-KEY" in clean
    assert failure_modes.sanitize(clean) == clean


def test_sanitize_rejects_non_text():
    with pytest.raises(FailureModesError, match="expects a str"):
        failure_modes.sanitize(42)


def test_captured_logs_collects_and_restores():
    logger = logging.getLogger("distributed.test_failure_modes")
    parent = logging.getLogger("distributed")
    handlers_before = list(parent.handlers)
    with failure_modes.captured_logs() as records:
        logger.warning("Removing worker %s", "tcp://127.0.0.1:1234")
        logger.info("not collected below WARNING")
    assert failure_modes.messages(records) == [
        "WARNING distributed.test_failure_modes: Removing worker WORKER-ADDRESS"]
    assert failure_modes.messages(records, contains="nothing") == []
    assert parent.handlers == handlers_before


def test_messages_rejects_other_objects():
    with pytest.raises(FailureModesError, match="LogRecord"):
        failure_modes.messages([{"message": "x"}])


def test_worker_log_lines_bad_level(client):
    with pytest.raises(FailureModesError, match="logging level name"):
        failure_modes.worker_log_lines(client, level="LOUD")


# ---- killing a worker --------------------------------------------------------------------

def test_choose_victim_prefers_scattered_data_then_busy():
    assert failure_modes.choose_victim({"a": [0, 5], "b": [0, 0]}) is None
    assert failure_modes.choose_victim({"a": [1, 0], "b": [3, 0]}) == "b"
    assert failure_modes.choose_victim({"a": [1, 2], "b": [3, 0]}) == "a"


def test_kill_worker_when_busy_bad_arguments(client):
    with pytest.raises(FailureModesError, match="delay"):
        failure_modes.kill_worker_when_busy(client, delay=-1)
    with pytest.raises(FailureModesError, match="timeout"):
        failure_modes.kill_worker_when_busy(client, timeout=0)


def test_kill_worker_when_busy_kills_and_nanny_restarts(client):
    import time

    def slow(i):
        time.sleep(0.3)
        return i

    with failure_modes.captured_logs():
        record = failure_modes.kill_worker_when_busy(client, delay=0.1)
        futures = client.map(slow, range(8), pure=False)
        assert client.gather(futures) == list(range(8))  # re-run elsewhere, same results
        record.wait(30)
        assert record.killed and record.tasks_in_flight > 0 and record.error is None
        assert failure_modes.wait_for_workers(client, 2, timeout=60) == 2


def test_wait_for_workers_bad_count(client):
    with pytest.raises(FailureModesError, match="n_workers"):
        failure_modes.wait_for_workers(client, 0)


def test_search_scores_needs_fitted_search():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV

    with pytest.raises(FailureModesError, match="fitted search"):
        failure_modes.search_scores(GridSearchCV(LogisticRegression(), {"C": [1.0]}))


def test_search_scores_equal_for_equal_searches():
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV

    X, y = make_classification(n_samples=200, random_state=0)
    first = GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, cv=3).fit(X, y)
    second = GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, cv=3).fit(X, y)
    assert failure_modes.search_scores(first) == failure_modes.search_scores(second)
    assert set(failure_modes.search_scores(first)) == {
        "params", "split0_test_score", "split1_test_score", "split2_test_score"}


# ---- memory ------------------------------------------------------------------------------

def test_hold_memory_bad_arguments():
    with pytest.raises(FailureModesError, match="fraction_of_limit"):
        failure_modes.hold_memory(0, 1)
    with pytest.raises(FailureModesError, match="seconds"):
        failure_modes.hold_memory(0.5, -1)


def test_hold_memory_outside_a_worker():
    with pytest.raises(FailureModesError, match="client.submit"):
        failure_modes.hold_memory(0.5, 0)


def test_hold_memory_and_spilled_keys_on_a_worker(client):
    allocated = client.submit(failure_modes.hold_memory, 0.01, 0, pure=False).result()
    assert allocated >= 0
    counts = client.run(failure_modes.spilled_keys)
    assert all(set(c) == {"in_memory", "on_disk"} for c in counts.values())


# ---- shipping data, sorted partitions -----------------------------------------------------

def test_fit_and_score_needs_a_pair():
    with pytest.raises(FailureModesError, match="pair"):
        failure_modes.fit_and_score(1e-4, np.zeros((4, 2)))


def test_fit_and_score_is_deterministic():
    from sklearn.datasets import make_classification

    data = make_classification(n_samples=300, random_state=0)
    assert failure_modes.fit_and_score(1e-3, data) == failure_modes.fit_and_score(1e-3, data)


def test_sorted_by_label_and_classes_per_block():
    X = np.arange(12).reshape(6, 2)
    y = np.array([1, 0, 1, 0, 2, 2])
    X_sorted, y_sorted = failure_modes.sorted_by_label(X, y)
    assert y_sorted.tolist() == [0, 0, 1, 1, 2, 2]
    assert X_sorted[:, 0].tolist() == [2, 6, 0, 4, 8, 10]  # stable: original order within a class
    assert failure_modes.classes_per_block(y_sorted, 2) == [1, 1, 1]
    assert failure_modes.classes_per_block(y, 3) == [2, 2]


def test_sorted_by_label_bad_shapes():
    with pytest.raises(FailureModesError, match="shape"):
        failure_modes.sorted_by_label(np.zeros((5, 2)), np.zeros(4))
    with pytest.raises(FailureModesError, match="shape"):
        failure_modes.sorted_by_label(np.zeros(5), np.zeros(5))


def test_classes_per_block_bad_block_size():
    with pytest.raises(FailureModesError, match="block_rows"):
        failure_modes.classes_per_block([0, 1], 0)


# ---- results -----------------------------------------------------------------------------

def test_runs_table_and_unknown_case(tmp_path):
    runs = [{"case": "7", "rows_per_chunk": 100, "tasks": 10, "seconds": 1.0},
            {"case": "7", "rows_per_chunk": 1000, "tasks": 1, "seconds": 0.1}]
    measure.write_results(failure_modes.BENCHMARK_NAME, [measure.Claim("c", 10, "x", 1, ">")], runs,
                          results_dir=tmp_path)
    document = failure_modes.load_results(tmp_path)
    table = failure_modes.runs_table(document, "7")
    assert list(table.rows_per_chunk) == [100, 1000] and "case" not in table
    with pytest.raises(FailureModesError, match="known cases"):
        failure_modes.runs_table(document, "9")
    ax = failure_modes.plot_chunk_overhead(table)
    assert ax.get_xscale() == "log"


def test_load_results_missing(tmp_path):
    with pytest.raises(measure.MeasureError, match="run `make bench`"):
        failure_modes.load_results(tmp_path)


def test_losing_the_only_copy_of_scattered_data_cancels_its_tasks():
    from distributed.client import FutureCancelledError

    with cluster.get_client(local=True, n_workers=2) as client:
        error, killed = failure_modes.lose_scattered_data(client, list(range(1000)), n_tasks=2, seconds=1.0)
        assert isinstance(error, FutureCancelledError)
        assert killed.startswith("tcp://127.0.0.1:")
        failure_modes.wait_for_workers(client, 2, timeout=120)
