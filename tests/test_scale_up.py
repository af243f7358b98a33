"""Every `# Scale up:` comment in a notebook is taken by a test at a proportional size.

A reader who follows a `# Scale up:` comment must get what it promises, so each comment is claimed by
at least one test marked ``@pytest.mark.scale_up(notebook, words)``: ``notebook`` is the notebook's
stem and ``words`` a piece of the comment's first line (after "Scale up:"). The test runs what the
comment says at a size this machine can hold, with the chapter's own checks. This module reads the
markers from the test files' source (no test is imported or run here) and fails on a comment no test
claims and on a marker whose comment is gone.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from scaling_ml import PROJECT_ROOT, notebook_paths

NOTEBOOKS = notebook_paths()
SCALE_UP = re.compile(r"#.*?\bScale up:\s*(?P<words>.*)$")


def normalise(text: str) -> str:
    return " ".join(text.split())


def scale_up_comments(path: Path) -> list[str]:
    """The first line of every `Scale up:` comment in the notebook's code cells."""
    comments = []
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        for line in "".join(cell["source"]).splitlines():
            match = SCALE_UP.search(line)
            if match:
                comments.append(normalise(match["words"]))
    return comments


def scale_up_markers(tests_dir: Path = PROJECT_ROOT / "tests") -> list[tuple[str, str, str]]:
    """(notebook, words, test) for every ``pytest.mark.scale_up(notebook, words)`` in tests/."""
    markers = []
    for path in sorted(tests_dir.rglob("test_*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for decorator in node.decorator_list:
                if (isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Attribute)
                        and decorator.func.attr == "scale_up"):
                    notebook, words = (ast.literal_eval(argument) for argument in decorator.args)
                    markers.append((notebook, normalise(words), f"{path.name}::{node.name}"))
    return markers


MARKERS = scale_up_markers()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_every_scale_up_comment_is_run_by_a_test(path):
    claimed = [words for notebook, words, _ in MARKERS if notebook == path.stem]
    unclaimed = [comment for comment in scale_up_comments(path)
                 if not any(words in comment for words in claimed)]
    assert not unclaimed, (
        f"{path.name}: no test runs these `# Scale up:` comments at a proportional size:\n  "
        + "\n  ".join(unclaimed)
        + "\nMark the test that does with @pytest.mark.scale_up(notebook, words), or rewrite the comment.")


def test_every_scale_up_marker_names_a_comment_that_exists():
    comments = {path.stem: scale_up_comments(path) for path in NOTEBOOKS}
    stale = [f"{test}: {notebook} {words!r}" for notebook, words, test in MARKERS
             if not any(words in comment for comment in comments.get(notebook, []))]
    assert not stale, "markers whose `# Scale up:` comment is gone:\n" + "\n".join(stale)


def test_the_readers_of_this_module_find_comments_and_markers(tmp_path):
    notebook = tmp_path / "99_example.ipynb"
    notebook.write_text(json.dumps({"cells": [
        {"cell_type": "markdown", "source": ["# Scale up: prose is not a comment"]},
        {"cell_type": "code", "source": ["n = 10  # Scale up: 1_000 blocks\n", "# why. Scale up: more  rows\n"]},
    ]}))
    assert scale_up_comments(notebook) == ["1_000 blocks", "more rows"]
    (tmp_path / "test_example.py").write_text(
        "import pytest\n\n@pytest.mark.scale_up('99_example', '1_000')\ndef test_big():\n    pass\n")
    assert scale_up_markers(tmp_path) == [("99_example", "1_000", "test_example.py::test_big")]
