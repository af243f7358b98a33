"""Benchmarks measure the chapters' own code: the cells they reuse exist and run (no cluster needed)."""

from __future__ import annotations

import re

import pytest

from benchmarks import _notebook_cells as notebook_cells
from scaling_ml import BookError
from scaling_ml import PROJECT_ROOT as ROOT


REUSE = re.compile(r"run_reused_cells\(\s*[\"']([^\"']+\.ipynb)[\"']")
REUSED = sorted({(script.name, match) for script in (ROOT / "benchmarks").glob("*.py")
                 if not script.name.startswith("_")
                 for match in REUSE.findall(script.read_text())})


@pytest.mark.parametrize("script, notebook", REUSED or [pytest.param(None, None, marks=pytest.mark.skip(
    reason="no benchmark reuses notebook cells yet"))])
def test_the_cells_a_benchmark_reuses_exist_and_run(script, notebook):
    namespace = notebook_cells.run_reused_cells(notebook)
    defined = {name for name in namespace if not name.startswith("__")}
    assert defined, f"{script}: the reused cells of {notebook} define nothing"


def test_a_notebook_without_reused_cells_is_a_clear_error(tmp_path):
    path = tmp_path / "x.ipynb"
    path.write_text('{"cells": [{"cell_type": "code", "metadata": {}, "source": ["a = 1"]}]}')
    with pytest.raises(BookError, match="no code cell tagged"):
        notebook_cells.run_reused_cells(path)


def test_reused_cells_run_in_order_in_one_namespace(tmp_path):
    path = tmp_path / "x.ipynb"
    tag = '"metadata": {"tags": ["reused-by-benchmark"]}'
    path.write_text('{"cells": ['
                    f'{{"cell_type": "code", {tag}, "source": ["a = 2"]}},'
                    '{"cell_type": "code", "metadata": {}, "source": ["a = 100"]},'
                    f'{{"cell_type": "code", {tag}, "source": ["def double():\\n", "    return 2 * a"]}}]}}')
    namespace = notebook_cells.run_reused_cells(path)
    assert namespace["double"]() == 4
