"""Helpers for the book "Scaling Machine Learning Models Using Dask".

The notebooks teach the Dask and scikit-learn calls in their own cells; this package holds what a
reader need not learn: figures, input checks with clear errors, data preparation that is not the
lesson. One module per chapter, named like its notebook, plus a few shared ones (cluster, data,
measure, plots, check, status).
"""

from __future__ import annotations

from numbers import Integral
from pathlib import Path

# The repository's root folder (the package lives directly under it).
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def require_positive_int(name: str, value, error: type[Exception] = ValueError) -> int:
    """Return ``value`` as an int if it is a whole number >= 1, else raise ``error`` naming it.

    ``True`` and ``1.0`` are refused: a size given as a bool or a float is almost always a mistake.
    """
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise error(f"{name} must be a whole number >= 1, got {value!r}.")
    return int(value)
