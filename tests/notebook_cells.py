"""A notebook's own code cells, run inside a test with a size knob changed: what a reader who follows
a `# Scale up:` comment runs (tests/test_scale_up.py checks that every such comment has a test)."""

from __future__ import annotations

import json

from scaling_ml import PROJECT_ROOT

NOTEBOOKS = PROJECT_ROOT / "notebooks"


def cell_source(notebook: str, cell_id: str, replace: dict[str, str] | None = None) -> str:
    """The source of the code cell ``cell_id`` of ``notebooks/<notebook>.ipynb``, each ``old`` of
    ``replace`` replaced by its ``new``; an ``old`` the cell no longer holds is an error."""
    cells = json.loads((NOTEBOOKS / f"{notebook}.ipynb").read_text())["cells"]
    [cell] = [cell for cell in cells if cell.get("id") == cell_id and cell["cell_type"] == "code"]
    source = "".join(cell["source"])
    for old, new in (replace or {}).items():
        assert old in source, f"{notebook} cell {cell_id} no longer holds {old!r}: update this test"
        source = source.replace(old, new)
    return source


def run_cells(notebook: str, cell_ids: list[str], namespace: dict | None = None,
              replace: dict[str, str] | None = None) -> dict:
    """Execute the cells in order in ``namespace`` (a fresh ``__main__``-like one by default, so that
    the functions they define travel to the workers by value, as a notebook's do). Each ``old`` of
    ``replace`` is replaced in the cells that hold it, and must be found in at least one."""
    namespace = {"__name__": "__main__"} if namespace is None else namespace
    replace = replace or {}
    sources = {cell_id: cell_source(notebook, cell_id) for cell_id in cell_ids}
    unused = [old for old in replace if not any(old in source for source in sources.values())]
    assert not unused, f"no cell of {notebook} {cell_ids} holds {unused}: update this test"
    for cell_id in cell_ids:
        code = cell_source(notebook, cell_id, {old: new for old, new in replace.items()
                                               if old in sources[cell_id]})
        exec(compile(code, f"<{notebook} cell {cell_id}>", "exec"), namespace)
    return namespace
