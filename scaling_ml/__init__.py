"""Helpers for the book "Scaling Machine Learning Models Using Dask".

The notebooks teach the Dask and scikit-learn calls in their own cells; this package holds what a
reader need not learn: figures, input checks with clear errors, data preparation that is not the
lesson. One module per chapter, named like its notebook, plus the shared ones (cluster, data,
measure, plots) and the learner's setup check (check). The tools that build and test the book
live apart, in ``tools/``.
"""

from __future__ import annotations

import re
from numbers import Integral
from pathlib import Path

# The repository's root folder (the package lives directly under it).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
TABLE_OF_CONTENTS = PROJECT_ROOT / "_toc.yml"
# `root: book/intro` and every `- file: notebooks/01_...` line of Jupyter Book's _toc.yml, in order.
_TOC_ENTRY = re.compile(r"^\s*(?:root|-\s*file):\s*(\S+)\s*$", re.M)


class BookError(ValueError):
    """The book's one error for bad input to a helper: its message names the problem and the fix."""


def toc_files(toc_path: str | Path = TABLE_OF_CONTENTS) -> list[str]:
    """Every page of the table of contents, root first, in reading order (paths without extension)."""
    return _TOC_ENTRY.findall(Path(toc_path).read_text())


def notebook_paths(toc_path: str | Path = TABLE_OF_CONTENTS) -> list[Path]:
    """The book's notebooks in reading order (chapter 0, the chapters, the appendices), as
    ``_toc.yml`` lists them: the one list of chapters that the Makefile, the tests and the tools use."""
    root = Path(toc_path).parent
    return [root / f"{page}.ipynb" for page in toc_files(toc_path) if page.startswith("notebooks/")]


def require_positive_int(name: str, value) -> int:
    """Return ``value`` as an int if it is a whole number >= 1, else raise BookError naming it.

    ``True`` and ``1.0`` are refused: a size given as a bool or a float is almost always a mistake.
    """
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise BookError(f"{name} must be a whole number >= 1, got {value!r}.")
    return int(value)
