"""Chapter 3 helpers: lazy data, input checks, the partial_fit loop, newsgroups streaming."""

import tarfile

import dask
import dask.bag as db
import numpy as np
import pytest
from dask_ml.wrappers import Incremental
from sklearn.ensemble import RandomForestClassifier
from sklearn.feature_extraction.text import CountVectorizer, HashingVectorizer
from sklearn.linear_model import SGDClassifier

from scaling_ml import cluster
from scaling_ml import incremental_training as it


@pytest.fixture(scope="module")
def client():
    with dask.config.set({"scheduler-address": None}):
        client = cluster.get_client(n_workers=1)
    yield client
    client.close()


def sgd():
    return SGDClassifier(loss="log_loss", random_state=0)


def test_make_stream_is_lazy_blocked_and_deterministic():
    X, y = it.make_stream(n_blocks=3, rows_per_block=100, n_features=4, random_state=0)
    assert X.shape == (300, 4) and X.chunks[0] == (100, 100, 100) and y.chunks[0] == X.chunks[0]
    first = dask.compute(X, y, scheduler="sync")
    second = dask.compute(*it.make_stream(3, 100, 4, random_state=0), scheduler="sync")
    np.testing.assert_array_equal(first[0], second[0])
    assert set(np.unique(first[1])) == {0, 1}


@pytest.mark.parametrize("value", [0, -1, 2.5])
def test_make_stream_rejects_bad_sizes(value):
    with pytest.raises(it.IncrementalTrainingError, match="whole number"):
        it.make_stream(n_blocks=value)


def test_missing_classes_is_a_clear_error():
    X, y = it.make_stream(2, 10, 3)
    with pytest.raises(it.IncrementalTrainingError, match="classes="):
        it.check_incremental_inputs(sgd(), X, y, classes=None)
    with pytest.raises(it.IncrementalTrainingError, match="classes="):
        it.partial_fit_loop(sgd(), X, y, classes=None)


def test_estimator_without_partial_fit_is_a_clear_error():
    X, y = it.make_stream(2, 10, 3)
    with pytest.raises(it.IncrementalTrainingError, match="has no partial_fit"):
        it.check_incremental_inputs(RandomForestClassifier(), X, y, classes=[0, 1])
    with pytest.raises(it.IncrementalTrainingError, match="has no partial_fit"):
        it.check_incremental_inputs(Incremental(RandomForestClassifier()), X, y, classes=[0, 1])


def test_chunks_that_do_not_line_up_are_a_clear_error():
    X, y = it.make_stream(2, 10, 3)
    with pytest.raises(it.IncrementalTrainingError, match="do not line up"):
        it.check_incremental_inputs(sgd(), X, y.rechunk(5), classes=[0, 1])
    with pytest.raises(it.IncrementalTrainingError, match="along the columns"):
        it.check_incremental_inputs(sgd(), X.rechunk((10, 1)), y, classes=[0, 1])
    with pytest.raises(it.IncrementalTrainingError, match="must be dask arrays"):
        it.check_incremental_inputs(sgd(), np.zeros((20, 3)), y, classes=[0, 1])


def test_block_order_matches_incremental(client):
    X, y = it.make_stream(n_blocks=4, rows_per_block=200, n_features=5)
    assert sorted(it.block_order(6, random_state=0)) == list(range(6))
    assert it.block_order(6, random_state=0) != list(range(6))
    assert it.block_order(6, shuffle_blocks=False) == list(range(6))
    incremental = Incremental(sgd(), random_state=0).fit(X, y, classes=[0, 1])
    loop = it.partial_fit_loop(sgd(), X, y, classes=[0, 1], random_state=0)
    np.testing.assert_allclose(loop.coef_, incremental.estimator_.coef_)


def _tiny_archive(tmp_path):
    source = tmp_path / "src"
    for folder in it.NEWSGROUPS_FOLDERS.values():
        for group in ("alt.a", "sci.b"):
            (source / folder / group).mkdir(parents=True)
            for number in range(3):
                (source / folder / group / f"{number}").write_text(f"{group} post {number} text\n")
    archive = tmp_path / "tiny.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for folder in it.NEWSGROUPS_FOLDERS.values():
            tar.add(source / folder, arcname=folder)
    return archive


def test_missing_archive_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(it.NEWSGROUPS_ARCHIVE_ENV, str(tmp_path / "nowhere.tar.gz"))
    assert it.newsgroups_archive_path() == tmp_path / "nowhere.tar.gz"
    with pytest.raises(it.IncrementalTrainingError, match="NEWSGROUPS_ARCHIVE"):
        it.extract_newsgroups(scratch_dir=tmp_path / "scratch")


def test_bad_archives_raise_this_chapters_error_and_mark_nothing_extracted(tmp_path):
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(_tiny_archive(tmp_path).read_bytes()[:100])
    with pytest.raises(it.IncrementalTrainingError, match="truncated"):
        it.extract_newsgroups(truncated, scratch_dir=tmp_path / "scratch")
    escaping = tmp_path / "escaping.tar.gz"
    (tmp_path / "post").write_text("a post\n")
    with tarfile.open(escaping, "w:gz") as tar:
        tar.add(tmp_path / "post", arcname="../outside")
    with pytest.raises(it.IncrementalTrainingError, match="outside the archive"):
        it.extract_newsgroups(escaping, scratch_dir=tmp_path / "scratch")
    assert not (tmp_path / "outside").exists()
    assert not (tmp_path / "scratch" / ".extracted").exists()  # the next call tries again


def test_relative_archive_path_is_relative_to_the_repository(monkeypatch):
    monkeypatch.delenv(it.NEWSGROUPS_ARCHIVE_ENV, raising=False)
    expected = (it.PROJECT_ROOT / it.DEFAULT_NEWSGROUPS_ARCHIVE).resolve()
    assert it.newsgroups_archive_path() == expected


def test_extract_and_stream_a_bag_of_files(tmp_path, client):
    folder = it.extract_newsgroups(_tiny_archive(tmp_path), scratch_dir=tmp_path / "scratch")
    paths, labels, categories = it.newsgroups_files(folder, "train")
    assert categories == ["alt.a", "sci.b"] and len(paths) == 6 and list(labels) == [0, 0, 0, 1, 1, 1]
    records = list(zip(paths, labels.tolist()))
    bag = db.from_sequence(records, partition_size=4)
    vectorizer = HashingVectorizer(n_features=2**8, alternate_sign=False)
    X, y = it.bag_to_hashed_arrays(bag, vectorizer)
    assert X.shape == (6, 2**8) and X.chunks[0] == (4, 2)
    block = X.blocks[1].compute()
    assert block.shape == (2, 2**8) and block.nnz > 0
    np.testing.assert_array_equal(y.compute(), labels)
    with pytest.raises(it.IncrementalTrainingError, match="subset"):
        it.newsgroups_files(folder, "validation")


def test_bag_with_empty_partitions_is_a_clear_error(client):
    records = [(f"/nowhere/{number}", number % 2) for number in range(6)]
    bag = db.from_sequence(records, partition_size=2).filter(lambda record: int(record[0][-1]) < 2)
    with pytest.raises(it.IncrementalTrainingError, match="empty"):
        it.bag_to_hashed_arrays(bag, HashingVectorizer(n_features=2**8))


def test_vectorizer_with_a_vocabulary_is_refused():
    bag = db.from_sequence([("/nowhere", 0)])
    with pytest.raises(it.IncrementalTrainingError, match="HashingVectorizer"):
        it.bag_to_hashed_arrays(bag, CountVectorizer())


def test_same_candidates_and_capture_logs():
    grid = it.same_candidates({"params": [{"alpha": 0.1, "penalty": "l2"}]})
    assert grid == [{"alpha": [0.1], "penalty": ["l2"]}]
    import logging

    with it.capture_logs("scaling_ml.test") as lines:
        logging.getLogger("scaling_ml.test").warning("worker %s died", "tcp://1.2.3.4:5")
    assert lines == ["scaling_ml.test: worker tcp://1.2.3.4:5 died"]
    assert logging.getLogger("scaling_ml.test").propagate
