"""Unit tests of scaling_ml.dask_collections (chapter 4's plumbing)."""

import dask
import numpy as np
import pandas as pd
import pytest

from scaling_ml import dask_collections as dc


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    with dask.config.set(scheduler="synchronous"):
        return dc.write_dataset(tmp_path_factory.mktemp("data") / "churn", n_rows=3_000,
                                rows_per_partition=1_000, seed=3)


@pytest.fixture(autouse=True)
def synchronous():
    with dask.config.set(scheduler="synchronous"):
        yield


def test_partition_is_deterministic_and_shaped():
    first, again = dc.make_partition(2, 500, seed=1, start=1000), dc.make_partition(2, 500, seed=1, start=1000)
    pd.testing.assert_frame_equal(first, again)
    assert list(first.columns) == [*dc.NUMERIC_COLUMNS, *dc.CATEGORICAL_COLUMNS, dc.TARGET]
    assert first.index[0] == 1000 and first.index[-1] == 1499 and first.index.name == dc.INDEX
    assert set(first["region"]) <= set(dc.REGIONS) and set(first[dc.TARGET]) == {0, 1}


def test_table_has_known_divisions_and_all_rows():
    table = dc.make_table(2_500, rows_per_partition=1_000)
    assert table.npartitions == 3 and table.known_divisions
    assert table.divisions == (0, 1000, 2000, 2499)
    assert len(table.compute()) == 2_500


def test_round_trip_through_parquet(dataset):
    frame = dc.read_dataset(dataset)
    assert frame.npartitions == 3 and frame.known_divisions
    expected = dc.make_table(3_000, 1_000, seed=3).compute()
    pd.testing.assert_frame_equal(frame.compute(), expected, check_dtype=False)


def test_write_reuses_same_parameters_and_rewrites_others(dataset):
    before = sorted(path.stat().st_mtime_ns for path in dataset.glob("*.parquet"))
    assert dc.write_dataset(dataset, n_rows=3_000, rows_per_partition=1_000, seed=3) == dataset
    assert sorted(path.stat().st_mtime_ns for path in dataset.glob("*.parquet")) == before


def test_write_refuses_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(dc.DaskCollectionsError, match="not written by write_dataset"):
        dc.write_dataset(tmp_path, n_rows=10)
    assert (tmp_path / "notes.txt").exists()


@pytest.mark.parametrize("n_rows", [0, -5, 2.5, True, "100"])
def test_bad_sizes(n_rows):
    with pytest.raises(dc.DaskCollectionsError, match="n_rows must be a whole number"):
        dc.make_table(n_rows)


def test_missing_parquet_path(tmp_path):
    with pytest.raises(dc.DaskCollectionsError, match="No parquet dataset at .*write_dataset"):
        dc.read_dataset(tmp_path / "does-not-exist")
    with pytest.raises(dc.DaskCollectionsError, match="No parquet dataset"):
        dc.read_dataset(tmp_path)  # exists, but holds no parquet files


def test_missing_column(dataset):
    with pytest.raises(dc.DaskCollectionsError, match=r"\['income'\] not in the dataframe"):
        dc.read_dataset(dataset, columns=["x0", "income"])
    frame = dc.read_dataset(dataset, columns=["x0", dc.TARGET])
    assert list(frame.columns) == ["x0", dc.TARGET]
    with pytest.raises(dc.DaskCollectionsError, match="not in the dataframe"):
        dc.best_possible_accuracy(frame)


def test_first_rows_reads_only_what_it_needs(dataset):
    frame = dc.read_dataset(dataset)
    head = dc.first_rows(frame, 1_500)
    assert head.npartitions == 2
    assert len(head.compute()) == 1_500


def test_first_rows_needs_known_divisions(dataset):
    frame = dc.read_dataset(dataset).clear_divisions()
    with pytest.raises(dc.DaskCollectionsError, match="unknown divisions.*calculate_divisions=True"):
        dc.first_rows(frame, 10)


def test_best_possible_accuracy_matches_pandas(dataset):
    frame = dc.read_dataset(dataset)
    table = frame.compute()
    region = table["region"].map({name: i for i, name in enumerate(dc.REGIONS)}).to_numpy()
    plan = table["plan"].map({name: i for i, name in enumerate(dc.PLANS)}).to_numpy()
    logit = (table[dc.NUMERIC_COLUMNS].to_numpy() @ dc.NUMERIC_WEIGHTS
             + dc.REGION_EFFECTS[region] + dc.PLAN_EFFECTS[plan])
    expected = float(((logit > 0).astype(int) == table[dc.TARGET].to_numpy()).mean())
    assert dc.best_possible_accuracy(frame) == pytest.approx(expected)
    assert 0.6 < expected < 0.9


def test_sizes_and_to_float(dataset):
    frame = dc.read_dataset(dataset)
    assert 0 < dc.folder_gib(dataset) < 0.01
    assert dc.dataset_gib(frame) * 2**30 > 3_000 * 8 * dc.N_NUMERIC
    converted = dc.to_float(pd.DataFrame({"a": [True, False]}))
    assert converted["a"].dtype == np.float64


def test_learning_curve_figure(tmp_path, monkeypatch):
    from scaling_ml import plots

    monkeypatch.setattr(plots, "FIGURES_DIR", tmp_path)
    sizes = [100, 1_000, 10_000]
    scores = np.array([[0.7, 0.72], [0.73, 0.74], [0.74, 0.745]])
    dc.plot_learning_curve(sizes, scores + 0.01, scores, best=0.75, name="curve")
    assert (tmp_path / "curve.png").stat().st_size > 0


def test_quiet_worker_logs_restores_levels():
    import logging

    from scaling_ml import cluster

    with dask.config.set(scheduler=None):
        client = cluster.get_client(n_workers=1)
        try:
            def level():
                return logging.getLogger("distributed.worker").level

            before = client.run(level)
            with dc.quiet_worker_logs(client):
                assert set(client.run(level).values()) == {logging.CRITICAL}
                with pytest.raises(ZeroDivisionError):
                    client.submit(lambda: 1 / 0).result()
            assert client.run(level) == before
        finally:
            client.close()
