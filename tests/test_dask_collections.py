"""Tests of chapter 4: the helper module, and the notebook's own cells that the benchmark reuses."""

import sys
import time

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

from benchmarks._notebook_cells import run_reused_cells
from scaling_ml import BookError
from scaling_ml import cluster
from scaling_ml import dask_collections as chapter

NOTEBOOK = "04_dask_collections.ipynb"
# Run on a worker, this makes every import of the book's package fail, as on workers whose
# environment has only the pinned libraries. Compiled here (not imported from this module) so
# that cloudpickle sends it by value.
REFUSE_BOOK_PACKAGE = """
import sys

class RefuseBookPackage:
    def find_spec(self, name, path=None, target=None):
        if name == "scaling_ml" or name.startswith("scaling_ml."):
            raise ModuleNotFoundError(f"No module named {name!r} (refused on this worker by the test)")
        return None

def refuse_book_package():
    sys.meta_path.insert(0, RefuseBookPackage())
    for name in [name for name in sys.modules if name.split(".")[0] == "scaling_ml"]:
        del sys.modules[name]

def import_book_package():
    import scaling_ml  # noqa: F401
"""


@pytest.fixture(scope="module")
def cells():
    """The notebook's cells tagged reused-by-benchmark, executed in a fresh namespace."""
    return run_reused_cells(NOTEBOOK)


@pytest.fixture
def synchronous():
    with dask.config.set(scheduler="synchronous"):
        yield


def test_the_notebook_table_is_deterministic_with_known_divisions(cells, synchronous):
    table = cells["churn_table"](2_500, rows_per_partition=1_000, seed=3)
    assert table.npartitions == 3 and table.divisions == (0, 1000, 2000, 2499)
    first, again = table.compute(), cells["churn_table"](2_500, 1_000, seed=3).compute()
    pd.testing.assert_frame_equal(first, again)
    assert len(first) == 2_500 and first.index.is_monotonic_increasing and first.index.name == "row"
    assert list(first.columns) == [*chapter.NUMERIC_COLUMNS, "region", "plan", chapter.TARGET]
    assert set(first["region"]) == set(chapter.REGIONS) and set(first["plan"]) == set(chapter.PLANS)
    assert set(first[chapter.TARGET]) == {0, 1}
    different_seed = cells["churn_table"](2_500, 1_000, seed=4).compute()
    assert not np.allclose(first["x0"], different_seed["x0"])


def test_the_notebook_table_round_trips_through_parquet(cells, synchronous, tmp_path):
    path = f"{tmp_path}/churn"
    cells["churn_table"](3_000, 1_000, seed=1).to_parquet(path, overwrite=True, use_dictionary=["region", "plan"])
    back = dd.read_parquet(path, index="row", calculate_divisions=True)
    assert back.known_divisions and back.divisions == (0, 1000, 2000, 2999)
    expected = cells["churn_table"](3_000, 1_000, seed=1).compute()
    pd.testing.assert_frame_equal(back.compute(), expected, check_dtype=False)
    assert back.loc[:999].npartitions == 1


@pytest.mark.parametrize("name, n_rows, rows_per_partition", [
    ("n_rows", 0, 10), ("n_rows", 2.5, 10), ("n_rows", True, 10), ("n_rows", "100", 10),
    ("rows_per_partition", 100, 0), ("rows_per_partition", 100, -5),
])
def test_bad_table_sizes_are_clear_errors(cells, name, n_rows, rows_per_partition):
    with pytest.raises(BookError, match=f"{name} must be a whole number >= 1"):
        cells["churn_table"](n_rows, rows_per_partition)


def test_best_possible_accuracy_is_the_true_models_accuracy(cells):
    table = cells["make_partition"]((0, 0, 20_000, 5))
    region = table["region"].map({name: code for code, name in enumerate(chapter.REGIONS)}).to_numpy()
    plan = table["plan"].map({name: code for code, name in enumerate(chapter.PLANS)}).to_numpy()
    logit = (table[chapter.NUMERIC_COLUMNS].to_numpy() @ chapter.NUMERIC_WEIGHTS
             + chapter.REGION_EFFECTS[region] + chapter.PLAN_EFFECTS[plan])
    expected = float(((logit > 0) == table[chapter.TARGET].to_numpy()).mean())
    assert chapter.best_possible_accuracy(table) == pytest.approx(expected)
    assert 0.65 < expected < 0.85
    perfect = table.assign(churned=(logit > 0).astype("int64"))
    assert chapter.best_possible_accuracy(perfect) == 1.0
    assert chapter.best_possible_accuracy(perfect.assign(churned=1 - perfect["churned"])) == 0.0


def test_best_possible_accuracy_refuses_what_it_cannot_score(cells):
    table = cells["make_partition"]((0, 0, 100, 0))
    with pytest.raises(BookError, match="pandas DataFrame.*compute"):
        chapter.best_possible_accuracy(dd.from_pandas(table, npartitions=1))
    with pytest.raises(BookError, match=r"\['churned'\] not in the dataframe"):
        chapter.best_possible_accuracy(table.drop(columns="churned"))
    with pytest.raises(BookError, match="Unknown region or plan"):
        chapter.best_possible_accuracy(table.assign(region="atlantis"))


def test_learning_curve_figure():
    scores = np.array([[0.7, 0.72], [0.73, 0.74], [0.74, 0.745]])
    figure = chapter.plot_learning_curve([100, 1_000, 10_000], scores + 0.01, scores, best=0.75)
    assert figure.axes[0].get_legend_handles_labels()[1] == ["training score", "validation score",
                                                            "the true model, test rows"]


def test_learning_curve_figure_refuses_scores_that_do_not_match_the_sizes():
    scores = np.array([[0.7, 0.72], [0.73, 0.74]])
    with pytest.raises(BookError, match=r"one row per training size \(3\).*shape \(2, 2\)"):
        chapter.plot_learning_curve([100, 1_000, 10_000], scores, scores)
    with pytest.raises(BookError, match="test_scores"):
        chapter.plot_learning_curve([100, 1_000], scores, [0.7, 0.73])


def test_memory_figure_puts_sampled_steps_on_one_axis_that_ends_with_the_last_sample():
    from distributed.diagnostics import MemorySampler

    with dask.config.set(scheduler=None):
        client = cluster.get_client(local=True, n_workers=1)
        try:
            memory = MemorySampler()
            with memory.sample("first", client=client, interval=0.05):
                time.sleep(0.5)
            with memory.sample("second", client=client, interval=0.05):
                client.submit(np.ones, 10_000_000).result()
                time.sleep(0.5)
        finally:
            client.close()
    samples = memory.to_pandas()
    frame = chapter.memory_in_seconds(samples)
    assert frame.index[0] == 0 and frame.index.is_monotonic_increasing
    assert frame["first"].dropna().index.max() < frame["second"].dropna().index.min()
    assert frame.max().max() == pytest.approx(samples.max().max() / 2**30)
    figure = chapter.plot_cluster_memory(samples, limit_gib=2.0, dataset_gib=3.0)
    ax = figure.axes[0]
    assert ax.get_xlim() == (0, frame.index[-1])
    labels = ax.get_legend_handles_labels()[1]
    assert labels == ["first", "second", "memory limit", "the table in memory"]


def test_memory_figure_refuses_aligned_or_empty_samples():
    aligned = pd.DataFrame({"a": [1.0, 2.0]}, index=pd.to_timedelta([0, 1], unit="s"))
    with pytest.raises(BookError, match="align=False"):
        chapter.memory_in_seconds(aligned)
    with pytest.raises(BookError, match="no samples"):
        chapter.memory_in_seconds(pd.DataFrame(index=pd.DatetimeIndex([])))


@pytest.mark.cluster
def test_the_notebook_work_runs_on_workers_without_the_book_package(cells, tmp_path):
    """The chapter's worker-side code needs only the pinned libraries (cloudpickle sends it by value)."""
    from dask_ml.linear_model import LogisticRegression
    from dask_ml.model_selection import train_test_split

    namespace = {"__name__": "refuse_book_package"}
    exec(compile(REFUSE_BOOK_PACKAGE, "<refuse_book_package>", "exec"), namespace)
    with dask.config.set(scheduler=None):
        client = cluster.get_client(local=True, n_workers=1)
        try:
            client.run(namespace["refuse_book_package"])
            # The check can fail: the book's package cannot be imported on these workers. (Not
            # through a task calling one of its functions: distributed 2025.1.0 then never
            # finishes the task whose function the worker cannot unpickle.)
            with pytest.raises(ModuleNotFoundError, match="scaling_ml"):
                client.run(namespace["import_book_package"])

            path = f"{tmp_path}/churn"
            cells["churn_table"](20_000, 5_000).to_parquet(path, overwrite=True, use_dictionary=["region", "plan"])
            table = dd.read_parquet(path, index="row", calculate_divisions=True)
            X_train, _, y_train, _ = train_test_split(table.drop(columns="churned"), table["churned"],
                                                      test_size=0.2, shuffle=True, random_state=0)
            cells["preprocess"].fit(X_train)
            X, y = cells["to_arrays"](table.loc[:17_999])
            model = LogisticRegression(solver="lbfgs", max_iter=2).fit(X, y)
            accuracy = float(((model.decision_function(X) > 0) == (y == 1)).mean().compute())
            still_refused = client.run(lambda: "scaling_ml" in sys.modules)
        finally:
            client.close()
    assert 0.65 < accuracy < 0.85
    assert set(still_refused.values()) == {False}


# ---------------------------------------------------------------- the chapter's Scale up comments
def split_table_once(table, seed=0):
    """The chapter's split cell: the whole table split once, then its columns."""
    from dask_ml.model_selection import train_test_split

    train, test = train_test_split(table, test_size=0.2, shuffle=True, random_state=seed)
    return (train, test, train.drop(columns="churned"), train["churned"],
            test.drop(columns="churned"), test["churned"])


@pytest.mark.cluster
def test_bytes_per_row_match_the_scale_up_comments(cells, synchronous, tmp_path):
    """N_ROWS: 100_000_000 rows are about 13 GiB in memory; partitions of 1_000_000 rows or more
    are 100 MB to 1 GB. Measured as the chapter measures its big table: read back from parquet."""
    path = f"{tmp_path}/one_million"
    cells["churn_table"](1_000_000, 1_000_000).to_parquet(path, use_dictionary=["region", "plan"])
    table = dd.read_parquet(path, index="row", calculate_divisions=True)
    partition_bytes = table.memory_usage(deep=True).sum().compute()
    assert table.npartitions == 1 and 100e6 <= partition_bytes <= 1e9
    assert 12.5 <= partition_bytes / 1_000_000 * 100_000_000 / 2**30 <= 13.5


@pytest.mark.scale_up("04_dask_collections", "N_ROWS sets the table's size")
@pytest.mark.scale_up("04_dask_collections", "partitions of 100 MB to 1 GB")
@pytest.mark.scale_up("04_dask_collections", "a folder every worker can reach")
@pytest.mark.scale_up("04_dask_collections", "as many rows as fit comfortably")
def test_100_partition_files_split_once_keep_x_and_y_on_the_same_rows(cells, tmp_path):
    """The chapter at 100 files: a table as many times its partitions as the comments' real
    cluster (100 files of 1,000 rows, written to an fsspec URL), split once as the chapter teaches.
    The chapter's checks hold there: X and y hold the same rows (after the preprocessing and
    persist, as the model sees them), train and test are apart, the test table is the test rows,
    and a sample of every training row is training rows only, with scikit-learn on it not told
    apart from the true model. The split of X and y one by one, which the warning box shows, gives
    different rows here."""
    from dask_ml.model_selection import train_test_split

    from scaling_ml import measure

    n_rows = 100_000
    churn_url = f"file://{tmp_path}/churn"
    with dask.config.set(scheduler=None):
        client = cluster.get_client(local=True, n_workers=2)
        try:
            cells["churn_table"](n_rows, 1_000).to_parquet(churn_url, overwrite=True,
                                                           use_dictionary=["region", "plan"])
            table = dd.read_parquet(churn_url, index="row", calculate_divisions=True)
            assert table.npartitions == 100 and len(list((tmp_path / "churn").glob("*.parquet"))) == 100

            alone_X, _, alone_y, _ = train_test_split(table.drop(columns="churned"), table["churned"],
                                                      test_size=0.2, shuffle=True, random_state=0)
            assert not alone_X.index.compute().equals(alone_y.index.compute())  # the pitfall is real here

            train, test, X_train, y_train, X_test, y_test = split_table_once(table)
            preprocess = cells["preprocess"]
            X_train, y_train, X_test, y_test = dask.persist(
                preprocess.fit_transform(X_train), y_train, preprocess.transform(X_test), y_test)
            train_rows, test_rows = y_train.index.compute(), y_test.index.compute()
            assert X_train.index.compute().equals(train_rows) and X_test.index.compute().equals(test_rows)
            assert len(train_rows) + len(test_rows) == n_rows and train_rows.intersection(test_rows).empty
            test_table = test.compute()
            sample = train.head(len(train_rows), npartitions=-1)  # every training row fits here
        finally:
            client.close()
    assert test_table.index.equals(test_rows)
    assert len(sample) == len(train_rows) and sample.index.isin(train_rows).all()
    sklearn_model = cells["sklearn_model"].fit(sample.drop(columns="churned"), sample["churned"])
    labels = test_table["churned"].to_numpy()
    sklearn_correct = sklearn_model.predict(test_table.drop(columns="churned")) == labels
    true_correct = chapter.true_model_predictions(test_table) == labels
    assert measure.compare_accuracies(sklearn_correct, true_correct).endswith(measure.NO_DIFFERENCE)


@pytest.mark.scale_up("04_dask_collections", "set DASK_SCHEDULER_ADDRESS")
def test_the_chapter_runs_on_an_existing_scheduler(cells, tmp_path, client_of_external_scheduler):
    """DASK_SCHEDULER_ADDRESS set: the chapter's get_client() connects to a real `dask scheduler`
    with a `dask worker`, which writes the table; split once, X and y keep the same rows."""
    path = f"{tmp_path}/churn"
    cells["churn_table"](20_000, 2_000).to_parquet(path, overwrite=True,
                                                   use_dictionary=["region", "plan"])
    table = dd.read_parquet(path, index="row", calculate_divisions=True)
    _, _, X_train, y_train, _, _ = split_table_once(table)
    X_train, y_train = dask.persist(X_train, y_train)
    same = X_train.index.compute().equals(y_train.index.compute())
    assert same and table.npartitions == 10


def fitted_preprocess(cells, tmp_path):
    """The notebook's preprocess, fitted as the chapter does: on the training part of a small table."""
    path = f"{tmp_path}/small"
    cells["churn_table"](20_000, 5_000).to_parquet(path, overwrite=True, use_dictionary=["region", "plan"])
    _, _, X_train, _, _, _ = split_table_once(dd.read_parquet(path, index="row", calculate_divisions=True))
    return cells["preprocess"].fit(X_train)


@pytest.mark.scale_up("04_dask_collections", "the workers' memory limit is what their machines have")
@pytest.mark.scale_up("04_dask_collections", "a table many times the cluster's memory")
def test_a_table_larger_than_the_workers_memory_streams_under_their_limit(cells, tmp_path):
    """The chapter's larger-than-memory section at a proportional size: one worker with the
    chapter's 768 MiB limit (a machine's memory, scaled down) and a table larger than that, as the
    chapter's is larger than its cluster's, written, trained on without persist and scored: the
    peak stays under the limit, and the model learns."""
    from dask_ml.linear_model import LogisticRegression
    from distributed.diagnostics import MemorySampler

    with dask.config.set(scheduler=None):
        client = cluster.get_client(local=True, n_workers=1, memory_limit="768MiB")
        try:
            fitted_preprocess(cells, tmp_path)
            limit_gib = 768 / 1024
            path = f"{tmp_path}/big"
            memory = MemorySampler()
            with memory.sample("write", client=client):
                cells["churn_table"](6_500_000, 125_000).to_parquet(path, overwrite=True,
                                                                    use_dictionary=["region", "plan"])
            big = dd.read_parquet(path, index="row", calculate_divisions=True)
            table_gib = big.memory_usage(deep=True).sum().compute() / 2**30
            X_train, y_train = cells["to_arrays"](big.loc[:5_849_999])
            X_test, y_test = cells["to_arrays"](big.loc[5_850_000:])
            with memory.sample("train and score", client=client):
                model = LogisticRegression(solver="lbfgs", max_iter=1, random_state=0).fit(X_train, y_train)
                accuracy = float(((model.decision_function(X_test) > 0) == (y_test == 1)).mean().compute())
        finally:
            client.close()
    peak_gib = memory.to_pandas().max().max() / 2**30
    assert table_gib > 1.1 * limit_gib
    assert peak_gib < limit_gib, f"peak {peak_gib:.2f} GiB"
    assert accuracy > 0.7


@pytest.mark.scale_up("04_dask_collections", "raise max_iter")
def test_more_iterations_on_a_streamed_table_give_no_measurable_gain(cells, tmp_path):
    """The comment's advice followed on a streamed table: max_iter=2 (the chapter's) and 10 score
    the same test rows with no difference measured, so raising it buys nothing here."""
    from dask_ml.linear_model import LogisticRegression

    from scaling_ml import measure

    with dask.config.set(scheduler=None):
        client = cluster.get_client(local=True, n_workers=2)
        try:
            fitted_preprocess(cells, tmp_path)
            path = f"{tmp_path}/streamed"
            cells["churn_table"](500_000, 125_000).to_parquet(path, overwrite=True,
                                                              use_dictionary=["region", "plan"])
            table = dd.read_parquet(path, index="row", calculate_divisions=True)
            X_train, y_train = cells["to_arrays"](table.loc[:399_999])
            X_test, y_test = cells["to_arrays"](table.loc[400_000:])
            correct = {}
            for max_iter in (2, 10):
                model = LogisticRegression(solver="lbfgs", max_iter=max_iter, random_state=0).fit(X_train, y_train)
                correct[max_iter] = ((model.decision_function(X_test) > 0) == (y_test == 1)).compute()
        finally:
            client.close()
    assert correct[2].mean() > 0.7
    assert measure.compare_accuracies(correct[10], correct[2]).endswith(measure.NO_DIFFERENCE)


def test_the_benchmark_reclaims_its_claims_from_the_stored_runs(tmp_path):
    """--reclaim: the claims recomputed from the committed runs are the committed claims; a run whose
    split gave X and y different rows backs no claim."""
    import json
    import shutil

    from benchmarks import dask_collections as benchmark
    from scaling_ml import measure

    shutil.copy(measure.results_path(benchmark.NAME), tmp_path)
    stored = measure.load_results(benchmark.NAME, tmp_path)
    benchmark.reclaim(tmp_path)
    assert measure.load_results(benchmark.NAME, tmp_path)["claims"] == stored["claims"]
    gap = stored["claims"][0]
    assert gap["holds"] and gap["spread"][1] >= max(abs(end) for run in stored["runs"] if run["run"] == "accuracy"
                                                     for end in run["difference_spread_points"])
    broken = json.loads(json.dumps(stored["runs"]))
    broken[0]["same_rows"] = False
    with pytest.raises(BookError, match="different rows"):
        benchmark.benchmark_claims(broken)
