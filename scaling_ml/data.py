"""Data for the book: the 20 Newsgroups corpus, online or from an archive on disk.

The notebooks call scikit-learn's own ``fetch_20newsgroups``: online, it downloads as usual. For a
workshop on bad wifi or a machine with no network, import a copy of the original
``20news-bydate.tar.gz`` once::

    python -m scaling_ml.data import-newsgroups path/to/20news-bydate.tar.gz

which fills scikit-learn's data cache (``SCIKIT_LEARN_DATA`` or ``~/scikit_learn_data``) so that the
unchanged ``fetch_20newsgroups(...)`` call then works with no download.
"""

from __future__ import annotations

import argparse
import codecs
import os
import pickle
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

from sklearn.datasets import get_data_home, load_files

from scaling_ml import BookError

# What scikit-learn's fetch_20newsgroups reads: a zlib-compressed pickle of
# {"train": load_files(train folder), "test": load_files(test folder)} at this name.
NEWSGROUPS_CACHE_NAME = "20news-bydate_py3.pkz"
NEWSGROUPS_SUBSETS = {"train": "20news-bydate-train", "test": "20news-bydate-test"}
NEWSGROUPS_EXPECTED_DOCUMENTS = {"train": 11_314, "test": 7_532}
NEWSGROUPS_EXPECTED_CATEGORIES = 20
SCRATCH_PREFIX = ".20news-import-"


def newsgroups_cache_path(data_home: str | os.PathLike | None = None) -> Path:
    """Where scikit-learn keeps (and ``fetch_20newsgroups`` looks for) the 20 Newsgroups cache."""
    return Path(get_data_home(data_home)) / NEWSGROUPS_CACHE_NAME


def _safe_members(archive: tarfile.TarFile, destination: Path):
    """The archive's members, refusing any that would be written outside ``destination``."""
    root = destination.resolve()
    for member in archive.getmembers():
        target = (root / member.name).resolve()
        if root not in target.parents and target != root:
            raise BookError(
                f"Refusing archive member {member.name!r}: it points outside the archive.")
        if not (member.isfile() or member.isdir()):
            continue
        yield member


def extract_newsgroups_archive(archive: str | os.PathLike, destination: str | os.PathLike) -> Path:
    """Extract a ``20news-bydate.tar.gz`` into ``destination`` and return the folder, which then
    holds ``20news-bydate-train/`` and ``20news-bydate-test/`` (one file per post).

    Members that would land outside ``destination`` are refused.
    """
    archive, destination = Path(archive), Path(destination)
    try:
        with tarfile.open(archive, "r:gz") as opened:
            opened.extractall(destination, members=_safe_members(opened, destination),
                              filter="data")
    except (tarfile.TarError, EOFError, OSError, ValueError) as problem:
        if isinstance(problem, BookError):
            raise
        raise BookError(
            f"Cannot read {archive} as a .tar.gz archive ({problem}). It is probably truncated "
            "or not the 20news-bydate archive: download or copy it again."
        ) from None
    for folder in NEWSGROUPS_SUBSETS.values():
        if not (destination / folder).is_dir():
            raise BookError(
                f"Wrong archive: {archive} has no {folder}/ folder. Use the original "
                "20news-bydate.tar.gz, which holds 20news-bydate-train/ and 20news-bydate-test/."
            )
    return destination


def _check_subset(name: str, bunch) -> None:
    documents, categories = len(bunch.data), len(bunch.target_names)
    expected = NEWSGROUPS_EXPECTED_DOCUMENTS[name]
    if documents != expected or categories != NEWSGROUPS_EXPECTED_CATEGORIES:
        raise BookError(
            f"Wrong archive: its {NEWSGROUPS_SUBSETS[name]}/ folder holds {documents} documents in "
            f"{categories} categories, but the 20news-bydate {name} set has {expected} documents in "
            f"{NEWSGROUPS_EXPECTED_CATEGORIES} categories. Use the original 20news-bydate.tar.gz "
            "(the file scikit-learn downloads)."
        )


def import_newsgroups_archive(archive: str | os.PathLike,
                              data_home: str | os.PathLike | None = None,
                              overwrite: bool = False) -> Path:
    """Fill scikit-learn's 20 Newsgroups cache from a ``20news-bydate.tar.gz`` on disk.

    The archive is checked (11,314 train and 7,532 test documents, 20 categories) before anything
    is written, and the cache file appears atomically: an interrupted import leaves no half cache.
    Returns the cache path. An existing cache is kept unless ``overwrite=True``.
    """
    archive = Path(archive).expanduser()
    if not archive.is_file():
        raise BookError(
            f"No 20 Newsgroups archive at {archive}. Download 20news-bydate.tar.gz (the "
            "original bydate split) or copy it from your instructor, then pass its path; "
            "online, fetch_20newsgroups() downloads it for you."
        )
    cache_path = newsgroups_cache_path(data_home)
    if cache_path.exists() and not overwrite:
        return cache_path
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    for stale in cache_path.parent.glob(SCRATCH_PREFIX + "*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by an interrupted import

    with tempfile.TemporaryDirectory(dir=cache_path.parent, prefix=SCRATCH_PREFIX) as scratch:
        scratch = Path(scratch)
        extract_newsgroups_archive(archive, scratch)
        subsets = {}
        for name, folder in NEWSGROUPS_SUBSETS.items():
            subsets[name] = load_files(scratch / folder, encoding="latin1")
            _check_subset(name, subsets[name])
        compressed = codecs.encode(pickle.dumps(subsets), "zlib_codec")
        partial = scratch / (NEWSGROUPS_CACHE_NAME + ".partial")
        partial.write_bytes(compressed)
        os.replace(partial, cache_path)
    return cache_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scaling_ml.data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    importer = commands.add_parser("import-newsgroups",
                                   help="fill scikit-learn's cache from a 20news-bydate.tar.gz")
    importer.add_argument("archive")
    importer.add_argument("--data-home", default=None,
                          help="scikit-learn data folder (default: SCIKIT_LEARN_DATA or ~/scikit_learn_data)")
    importer.add_argument("--overwrite", action="store_true")
    ensure = commands.add_parser(
        "ensure-newsgroups",
        help="make the data available offline: import ARCHIVE if given and present, else download")
    ensure.add_argument("--archive", default=None)
    ensure.add_argument("--data-home", default=None)
    arguments = parser.parse_args(argv)
    try:
        if arguments.command == "import-newsgroups":
            path = import_newsgroups_archive(arguments.archive, arguments.data_home, arguments.overwrite)
        else:
            path = ensure_newsgroups(arguments.archive, arguments.data_home)
    except BookError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"20 Newsgroups ready for offline use: {path}")
    return 0


def ensure_newsgroups(archive: str | os.PathLike | None = None,
                      data_home: str | os.PathLike | None = None) -> Path:
    """Make sure the 20 Newsgroups cache exists: from ``archive`` when it exists, else download."""
    cache_path = newsgroups_cache_path(data_home)
    if cache_path.is_file():
        return cache_path
    if archive and Path(archive).expanduser().is_file():
        return import_newsgroups_archive(archive, data_home)
    from sklearn.datasets import fetch_20newsgroups

    try:
        fetch_20newsgroups(data_home=data_home, subset="train")
    except OSError as error:
        raise BookError(
            f"Could not download 20 Newsgroups ({error}). Offline, import an archive: "
            "python -m scaling_ml.data import-newsgroups path/to/20news-bydate.tar.gz"
        ) from None
    return cache_path


if __name__ == "__main__":
    sys.exit(main())
