"""Run a chapter's own cells inside a benchmark, so that it measures the code the chapter teaches.

The lesson's code lives in the notebook's cells (a reader copies it from there), not in the helper
package. A benchmark that needs the same functions (a chunk generator, a preprocessing pipeline)
executes the cells tagged ``reused-by-benchmark`` of that notebook, in order, in a fresh namespace,
and takes the names it needs from it. Such cells must be cheap and must not need a cluster: they
define functions, constants and estimators. ``tests/test_benchmarks.py`` checks that every
benchmark's cells exist and run.
"""

from __future__ import annotations

import json
from pathlib import Path

from scaling_ml import PROJECT_ROOT, BookError

TAG = "reused-by-benchmark"
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"


def reused_sources(notebook: str | Path) -> list[str]:
    """The source of every code cell tagged ``reused-by-benchmark``, in notebook order."""
    path = Path(notebook)
    if not path.is_absolute():
        path = NOTEBOOKS_DIR / path
    cells = json.loads(path.read_text())["cells"]
    sources = ["".join(cell["source"]) for cell in cells
               if cell["cell_type"] == "code" and TAG in cell["metadata"].get("tags", [])]
    if not sources:
        raise BookError(f"{path.name} has no code cell tagged {TAG!r}.")
    return sources


def run_reused_cells(notebook: str | Path, namespace: dict | None = None) -> dict:
    """Execute the notebook's ``reused-by-benchmark`` cells in ``namespace`` (a new dict by default)
    and return it, so that ``run_reused_cells("02_predict_large_data.ipynb")["draw_features"]``
    is the notebook's own function."""
    namespace = {"__name__": f"notebook_cells_{Path(notebook).stem}"} if namespace is None else namespace
    for number, code in enumerate(reused_sources(notebook)):
        try:
            exec(compile(code, f"<{Path(notebook).name}: reused cell {number}>", "exec"), namespace)
        except Exception as error:  # noqa: BLE001 - re-raised with the notebook's name
            raise BookError(
                f"Reused cell {number} of {Path(notebook).name} failed: {type(error).__name__}: "
                f"{error}") from error
    return namespace
