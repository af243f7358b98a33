"""Chapter 3 helpers: the 20 Newsgroups posts written as files, the figures, and the pitfall the
chapter warns about (persisted arrays and the incremental searches)."""

from __future__ import annotations

import codecs
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pandas as pd
import pytest
from dask_ml.model_selection import HyperbandSearchCV
from scipy.stats import loguniform
from sklearn.datasets import load_files
from sklearn.linear_model import SGDClassifier

from scaling_ml import cluster, data
from scaling_ml import incremental_training as chapter

# Three tiny newsgroups per subset; one post has a latin-1 byte, as some of the real posts do.
POSTS = {
    "train": {"alt.atheism": {"101": b"Subject: a\n\nfirst post\n", "102": b"caf\xe9 talk\n"},
              "sci.space": {"201": b"orbit\n", "202": b"launch window\n", "203": b"moon\n"},
              "rec.autos": {"301": b"engine\n"}},
    "test": {"alt.atheism": {"111": b"later post\n"},
             "sci.space": {"211": b"mars\n"},
             "rec.autos": {"311": b"brakes\n", "312": b"tyres\n"}},
}


def fill_cache(tmp_path: Path, posts=POSTS) -> Path:
    """A scikit-learn data home whose 20 Newsgroups cache holds ``posts``, in the format
    fetch_20newsgroups reads (the one its own download and scaling_ml.data write)."""
    source = tmp_path / "source"
    subsets = {}
    for subset, groups in posts.items():
        for group, files in groups.items():
            (source / subset / group).mkdir(parents=True)
            for name, content in files.items():
                (source / subset / group / name).write_bytes(content)
        subsets[subset] = load_files(source / subset, encoding="latin1")
    data_home = tmp_path / "scikit_learn_data"
    data_home.mkdir()
    cache = data.newsgroups_cache_path(data_home)
    cache.write_bytes(codecs.encode(pickle.dumps(subsets), "zlib_codec"))
    return data_home


def written_files(folder: Path) -> dict:
    return {str(path.relative_to(folder)): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file() and path.name != chapter.COMPLETE_MARKER}


def expected_files(posts=POSTS) -> dict:
    return {f"{subset}/{group}/{name}": content for subset, groups in posts.items()
            for group, files in groups.items() for name, content in files.items()}


def leftovers(parent: Path) -> list[str]:
    return sorted(path.name for path in parent.iterdir() if ".partial-" in path.name)


def test_posts_are_written_one_file_per_post_one_folder_per_newsgroup(tmp_path):
    data_home = fill_cache(tmp_path)
    folder = chapter.write_newsgroups_files(tmp_path / "posts", data_home=data_home)
    assert folder == tmp_path / "posts"
    assert written_files(folder) == expected_files()  # byte for byte, latin-1 included
    assert (folder / chapter.COMPLETE_MARKER).read_text() == "train: 6 posts\ntest: 4 posts\n"
    assert leftovers(tmp_path) == []


def test_a_complete_folder_is_reused_without_reading_the_data_again(tmp_path):
    data_home = fill_cache(tmp_path)
    folder = chapter.write_newsgroups_files(tmp_path / "posts", data_home=data_home)
    data.newsgroups_cache_path(data_home).unlink()  # a second write would now fail
    assert chapter.write_newsgroups_files(folder, data_home=data_home,
                                          download_if_missing=False) == folder
    assert written_files(folder) == expected_files()


def test_the_default_copy_is_the_processs_own_and_removed_when_it_exits(tmp_path):
    """As a kernel uses it: a new folder in the temporary directory, gone once the process ends."""
    data_home = fill_cache(tmp_path)
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    script = ("import sys; from scaling_ml import incremental_training as chapter; "
              "folder = chapter.write_newsgroups_files(data_home=sys.argv[1]); "
              "print(folder); print(sorted(p.name for p in folder.iterdir()))")
    run = subprocess.run([sys.executable, "-c", script, str(data_home)], capture_output=True, text=True,
                         env={**os.environ, "TMPDIR": str(temporary)}, check=True)
    folder_line, contents = run.stdout.splitlines()
    folder = Path(folder_line)
    assert folder.parent == temporary and folder.name.startswith(f"{chapter.DEFAULT_FOLDER_NAME}-")
    assert contents == str(sorted([chapter.COMPLETE_MARKER, "test", "train"]))
    assert not folder.exists() and list(temporary.iterdir()) == []


def test_copies_of_killed_processes_are_removed_by_the_next_call(tmp_path, monkeypatch):
    data_home = fill_cache(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setattr("tempfile.tempdir", None)  # so that gettempdir reads TMPDIR again
    (tmp_path / "tmp").mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    orphan = tmp_path / "tmp" / f"{chapter.DEFAULT_FOLDER_NAME}-{dead}-abc123"
    alive = tmp_path / "tmp" / f"{chapter.DEFAULT_FOLDER_NAME}-{os.getppid()}-def456"  # another kernel's
    unrelated = tmp_path / "tmp" / f"{chapter.DEFAULT_FOLDER_NAME}-notes"
    for folder in (orphan, alive, unrelated):
        (folder / "train").mkdir(parents=True)
    folder = chapter.write_newsgroups_files(data_home=data_home)
    try:
        assert not orphan.exists() and alive.exists() and unrelated.exists()
        assert written_files(folder) == expected_files()
    finally:
        shutil.rmtree(folder)


def test_an_interrupted_default_copy_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setattr("tempfile.tempdir", None)
    (tmp_path / "tmp").mkdir()
    empty_home = tmp_path / "empty"
    empty_home.mkdir()
    with pytest.raises(chapter.IncrementalTrainingError, match="make data"):
        chapter.write_newsgroups_files(data_home=empty_home, download_if_missing=False)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_missing_data_is_a_clear_error_and_leaves_nothing(tmp_path):
    empty_home = tmp_path / "empty"
    empty_home.mkdir()
    with pytest.raises(chapter.IncrementalTrainingError, match="make data.*import-newsgroups"):
        chapter.write_newsgroups_files(tmp_path / "posts", data_home=empty_home,
                                       download_if_missing=False)
    assert not (tmp_path / "posts").exists() and leftovers(tmp_path) == []


def test_an_interrupted_write_leaves_no_half_folder(tmp_path, monkeypatch):
    data_home = fill_cache(tmp_path)
    original_write = Path.write_text
    calls = []

    def interrupted_after_three_files(self, *args, **kwargs):
        calls.append(self)
        if len(calls) > 3:
            raise KeyboardInterrupt  # the learner pressed stop
        return original_write(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", interrupted_after_three_files)
    with pytest.raises(KeyboardInterrupt):
        chapter.write_newsgroups_files(tmp_path / "posts", data_home=data_home)
    assert len(calls) == 4
    assert not (tmp_path / "posts").exists() and leftovers(tmp_path) == []
    monkeypatch.undo()
    folder = chapter.write_newsgroups_files(tmp_path / "posts", data_home=data_home)
    assert written_files(folder) == expected_files()  # the next call starts again, completely


def test_a_damaged_cache_is_a_clear_error_and_leaves_no_half_folder(tmp_path):
    posts = {"train": POSTS["train"],
             # The same post twice in one newsgroup: two files with one name.
             "test": {"alt.atheism": {"111": b"one\n"}, "sci.space": {"211": b"two\n"}}}
    data_home = fill_cache(tmp_path, posts)
    cache = data.newsgroups_cache_path(data_home)
    subsets = pickle.loads(codecs.decode(cache.read_bytes(), "zlib_codec"))
    test = subsets["test"]
    test.data, test.target = test.data * 2, np.concatenate([test.target, test.target])
    test.filenames = np.concatenate([test.filenames, test.filenames])
    cache.write_bytes(codecs.encode(pickle.dumps(subsets), "zlib_codec"))
    with pytest.raises(chapter.IncrementalTrainingError, match="damaged.*make data"):
        chapter.write_newsgroups_files(tmp_path / "posts", data_home=data_home)
    assert not (tmp_path / "posts").exists() and leftovers(tmp_path) == []


def test_a_folder_it_did_not_write_is_left_alone(tmp_path):
    data_home = fill_cache(tmp_path)
    mine = tmp_path / "posts"
    mine.mkdir()
    (mine / "notes.txt").write_text("my own notes\n")
    with pytest.raises(chapter.IncrementalTrainingError, match="not a complete copy.*another folder"):
        chapter.write_newsgroups_files(mine, data_home=data_home)
    assert [path.name for path in mine.iterdir()] == ["notes.txt"]
    assert (mine / "notes.txt").read_text() == "my own notes\n"


def test_stale_partial_folders_are_removed_and_fresh_ones_kept(tmp_path):
    data_home = fill_cache(tmp_path)
    stale = tmp_path / ".posts.partial-stale"
    fresh = tmp_path / ".posts.partial-fresh"  # another kernel may be writing it right now
    for partial in (stale, fresh):
        (partial / "train").mkdir(parents=True)
    hours_ago = time.time() - 2 * chapter.STALE_PARTIAL_SECONDS
    os.utime(stale, (hours_ago, hours_ago))
    chapter.write_newsgroups_files(tmp_path / "posts", data_home=data_home)
    assert not stale.exists() and fresh.exists()


def test_a_writer_that_loses_the_race_uses_the_winners_copy(tmp_path, monkeypatch):
    data_home = fill_cache(tmp_path)
    folder = tmp_path / "posts"
    original_write_subset = chapter._write_subset
    winner_done = []

    def second_kernel_finishes_first(posts, destination):
        if not winner_done:
            winner_done.append(True)
            chapter.write_newsgroups_files(folder, data_home=data_home)  # completes meanwhile
        return original_write_subset(posts, destination)

    monkeypatch.setattr(chapter, "_write_subset", second_kernel_finishes_first)
    assert chapter.write_newsgroups_files(folder, data_home=data_home) == folder
    assert written_files(folder) == expected_files() and leftovers(tmp_path) == []


def test_the_written_folder_is_readable_by_other_users(tmp_path):
    folder = chapter.write_newsgroups_files(tmp_path / "posts", data_home=fill_cache(tmp_path))
    assert folder.stat().st_mode & 0o755 == 0o755


# ---------------------------------------------------------------------------------------------
# Figures


def test_memory_figure_draws_each_run_in_seconds_and_the_block_size():
    index = pd.to_timedelta([0.0, 0.5, 1.0, 1.5], unit="s")
    memory = pd.DataFrame({"1x data": [0.0, 150.0, 160.0, np.nan],
                           "10x data": [0.0, 155.0, 158.0, 5.0]}, index=index)
    ax = chapter.plot_memory_above_idle(memory, block_mib=76.3, title="one worker")
    one_x, ten_x, block = ax.get_lines()
    assert list(one_x.get_xdata()) == [0.0, 0.5, 1.0]  # the gap after a shorter run is not drawn
    assert list(ten_x.get_ydata()) == [0.0, 155.0, 158.0, 5.0]
    assert list(block.get_ydata()) == [76.3, 76.3]
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels == ["1x data", "10x data", "one block (76 MiB)"]
    assert ax.get_ylim()[0] == 0.0 and ax.get_xlabel() == "seconds since the fit started"


def test_memory_figure_shows_a_dip_below_idle():
    memory = pd.DataFrame({"run": [-12.0, 40.0]}, index=[0.0, 1.0])
    ax = chapter.plot_memory_above_idle(memory, block_mib=10, title="dip")
    assert ax.get_ylim()[0] == -12.0


def test_model_history_figure_has_a_line_per_model_in_a_fixed_order():
    history = {1: [{"partial_fit_calls": 1, "score": 0.5}, {"partial_fit_calls": 3, "score": 0.7}],
               0: [{"partial_fit_calls": 1, "score": 0.6}]}
    ax = chapter.plot_model_history(history, "search")
    first, second = ax.get_lines()
    assert list(first.get_ydata()) == [0.6] and list(second.get_xdata()) == [1, 3]


# ---------------------------------------------------------------------------------------------
# The chapter's warning box


@pytest.fixture(scope="module")
def client():
    with dask.config.set({"scheduler-address": None}):
        client = cluster.get_client(n_workers=1)
    yield client
    client.close()


def small_problem():
    rng = da.random.default_rng(0)
    X = rng.standard_normal((400, 3), chunks=(100, 3))
    y = (X.sum(axis=1) > 0).astype("int8")
    return X, y


def test_persisted_arrays_break_hyperband_with_the_pinned_versions(client):
    """The chapter's warning box. When this fails, dask or dask-ml fixed the bug: update the box
    (notebooks/03_incremental_training.ipynb) and the Versions page."""
    search = HyperbandSearchCV(SGDClassifier(random_state=0), {"alpha": loguniform(1e-5, 1e-1)},
                               max_iter=3, random_state=0)
    X, y = small_problem()
    search.fit(X, y, classes=[0, 1])  # lazy arrays: the workaround the box gives
    assert search.best_score_ > 0.5
    X_persisted, y_persisted = dask.persist(X, y)
    with pytest.raises(TypeError, match="only integer scalar arrays can be converted to a scalar index"):
        search.fit(X_persisted, y_persisted, classes=[0, 1])

