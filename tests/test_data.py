"""The offline 20 Newsgroups import, against the real archive and broken copies of it."""

import io
import signal
import subprocess
import sys
import tarfile
import time

import pytest
from sklearn.datasets import fetch_20newsgroups

from scaling_ml import BookError
from scaling_ml import data


@pytest.fixture(scope="module")
def imported_data_home(newsgroups_archive, tmp_path_factory):
    data_home = tmp_path_factory.mktemp("scikit_learn_data")
    data.import_newsgroups_archive(newsgroups_archive, data_home)
    return data_home


@pytest.mark.cluster
def test_fetch_works_offline_after_the_import(imported_data_home):
    train = fetch_20newsgroups(data_home=imported_data_home, subset="train", download_if_missing=False)
    test = fetch_20newsgroups(data_home=imported_data_home, subset="test", download_if_missing=False)
    assert (len(train.data), len(test.data)) == (11_314, 7_532)
    assert len(train.target_names) == 20
    space = fetch_20newsgroups(data_home=imported_data_home, subset="train", categories=["sci.space"],
                               download_if_missing=False)
    assert len(space.data) == 593 and space.target_names == ["sci.space"]


@pytest.mark.cluster
def test_scikit_learn_data_environment_variable_is_honoured(newsgroups_archive, imported_data_home,
                                                           monkeypatch):
    monkeypatch.setenv("SCIKIT_LEARN_DATA", str(imported_data_home))
    assert data.newsgroups_cache_path() == imported_data_home / "20news-bydate_py3.pkz"
    assert data.newsgroups_cache_path().is_file()


@pytest.mark.cluster
def test_an_existing_cache_is_kept(newsgroups_archive, imported_data_home):
    cache = data.newsgroups_cache_path(imported_data_home)
    before = cache.stat().st_mtime_ns
    assert data.import_newsgroups_archive(newsgroups_archive, imported_data_home) == cache
    assert cache.stat().st_mtime_ns == before


def test_missing_archive_names_the_fix(tmp_path):
    with pytest.raises(BookError, match="No 20 Newsgroups archive at .*pass its path"):
        data.import_newsgroups_archive(tmp_path / "nowhere.tar.gz", tmp_path)
    assert not data.newsgroups_cache_path(tmp_path).is_file()


def test_truncated_archive_names_the_fix(newsgroups_archive, tmp_path):
    truncated = tmp_path / "20news-bydate.tar.gz"
    truncated.write_bytes(newsgroups_archive.read_bytes()[: newsgroups_archive.stat().st_size // 2])
    with pytest.raises(BookError, match="truncated"):
        data.import_newsgroups_archive(truncated, tmp_path / "home")
    assert not data.newsgroups_cache_path(tmp_path / "home").is_file()


def _write_archive(path, files: dict[str, str]):
    with tarfile.open(path, "w:gz") as archive:
        for name, text in files.items():
            content = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))


def test_wrong_archive_without_the_folders(tmp_path):
    wrong = tmp_path / "other.tar.gz"
    _write_archive(wrong, {"README.txt": "not the newsgroups"})
    with pytest.raises(BookError, match="no 20news-bydate-train/ folder"):
        data.import_newsgroups_archive(wrong, tmp_path / "home")


def test_wrong_archive_with_too_few_documents(tmp_path):
    wrong = tmp_path / "small.tar.gz"
    _write_archive(wrong, {f"{folder}/sci.space/{number}": "text" for number in range(3)
                           for folder in ("20news-bydate-train", "20news-bydate-test")})
    with pytest.raises(BookError, match="holds 3 documents in 1 categories.*11314 documents"):
        data.import_newsgroups_archive(wrong, tmp_path / "home")
    assert not data.newsgroups_cache_path(tmp_path / "home").is_file()


def test_not_a_gzip_file(tmp_path):
    wrong = tmp_path / "20news-bydate.tar.gz"
    wrong.write_text("<html>a login page, not an archive</html>")
    with pytest.raises(BookError, match="Cannot read .* as a .tar.gz archive"):
        data.import_newsgroups_archive(wrong, tmp_path / "home")


@pytest.mark.cluster
def test_an_interrupted_import_leaves_no_cache(newsgroups_archive, tmp_path):
    """Kill the importer mid-way: the cache must be absent (not half written)."""
    data_home = tmp_path / "home"
    importer = subprocess.Popen([sys.executable, "-m", "scaling_ml.data", "import-newsgroups",
                                 str(newsgroups_archive), "--data-home", str(data_home)])
    time.sleep(1.5)  # the import takes several seconds: this lands in the middle of it
    assert importer.poll() is None, "the import finished before it could be interrupted"
    importer.send_signal(signal.SIGKILL)
    importer.wait()
    assert not data.newsgroups_cache_path(data_home).is_file()
    # the next import clears the scratch left behind and completes
    data.import_newsgroups_archive(newsgroups_archive, data_home)
    assert data.newsgroups_cache_path(data_home).is_file()
    assert [path.name for path in data_home.iterdir()] == ["20news-bydate_py3.pkz"]


def test_command_line_reports_errors_without_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "scaling_ml.data", "import-newsgroups",
                             str(tmp_path / "missing.tar.gz"), "--data-home", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.startswith("error: No 20 Newsgroups archive")
    assert "Traceback" not in result.stderr


def test_archive_members_outside_the_destination_are_refused(tmp_path):
    evil = tmp_path / "evil.tar.gz"
    _write_archive(evil, {"../escaped.txt": "x"})
    with pytest.raises(BookError, match="outside the archive"):
        data.import_newsgroups_archive(evil, tmp_path / "home")
    assert not (tmp_path / "escaped.txt").exists()
