"""Instructor tooling: the learners' copies of the notebooks, without solutions or outputs.

``make learner-notebooks`` (``python -m scaling_ml.workshop learner-notebooks OUT``) writes a copy of
every notebook into ``OUT``, the folder an instructor hands out:

* every code cell tagged ``solution`` is emptied down to a one-line prompt (the exercise's markdown
  cell, tagged ``exercise``, stays where it is);
* every output and execution count is cleared, so learners run the cells themselves;
* nothing else changes: the lessons, the set-up cells and the exercises are the book's.

The same tags drive the website, where solutions are folded away (``hide-cell``): the book's
notebooks are the single source, as in the scikit-learn MOOC, whose exercises are generated from
its solutions.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from . import PROJECT_ROOT

NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
SOLUTION_TAG = "solution"
EXERCISE_TAG = "exercise"
SOLUTION_PROMPT = "# Your solution here: the book's solution is folded away on the website.\n"


class WorkshopError(RuntimeError):
    """A learner copy could not be written; the message says why and how to fix it."""


def learner_copy(notebook: dict) -> dict:
    """The learners' version of a notebook (a new dict): solutions emptied, outputs cleared."""
    copy = json.loads(json.dumps(notebook))
    for cell in copy["cells"]:
        if cell["cell_type"] != "code":
            continue
        cell["outputs"] = []
        cell["execution_count"] = None
        cell["metadata"].pop("execution", None)
        if SOLUTION_TAG in cell["metadata"].get("tags", []):
            cell["source"] = [SOLUTION_PROMPT]
            # Learners type here: the cell must not be folded away in JupyterLab.
            cell["metadata"]["tags"] = [tag for tag in cell["metadata"]["tags"] if tag != "hide-cell"]
    return copy


def notebook_paths(source_dir: Path = NOTEBOOKS_DIR) -> list[Path]:
    paths = sorted(source_dir.glob("[0-9][0-9]_*.ipynb")) + sorted(source_dir.glob("appendix_*.ipynb"))
    if not paths:
        raise WorkshopError(f"No notebooks in {source_dir}: run this from the book's repository.")
    return paths


def write_learner_notebooks(out_dir: str | Path, source_dir: Path = NOTEBOOKS_DIR,
                            overwrite: bool = False) -> list[Path]:
    """Write the learner copy of every notebook into ``out_dir``; return the files written.

    ``out_dir`` must be new or empty, unless ``overwrite=True`` and it holds only a previous
    copy (notebooks): a learner's own work elsewhere is never replaced.
    """
    out_dir = Path(out_dir).expanduser().resolve()
    if out_dir == source_dir.resolve():
        raise WorkshopError(f"{out_dir} is the book's own notebooks folder: choose another folder.")
    if out_dir.exists() and any(out_dir.iterdir()):
        others = [path.name for path in out_dir.iterdir() if path.suffix != ".ipynb"]
        if not overwrite or others:
            raise WorkshopError(
                f"{out_dir} is not empty ({', '.join(sorted(path.name for path in out_dir.iterdir())[:5])}"
                "...): choose a new folder, or pass --overwrite to replace a previous copy of the "
                "notebooks (a folder holding anything but notebooks is never overwritten).")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Written next to the target and moved in place: an interrupted run leaves no half copy.
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}-") as scratch:
        written = []
        for path in notebook_paths(source_dir):
            copy = learner_copy(json.loads(path.read_text()))
            target = Path(scratch) / path.name
            target.write_text(json.dumps(copy, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
            written.append(out_dir / path.name)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        Path(scratch).rename(out_dir)
        Path(scratch).mkdir()  # for TemporaryDirectory's clean-up
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scaling_ml.workshop", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    learner = commands.add_parser("learner-notebooks", help="write the learners' copies")
    learner.add_argument("out_dir")
    learner.add_argument("--overwrite", action="store_true",
                         help="replace a previous copy (a folder of notebooks only)")
    arguments = parser.parse_args(argv)
    try:
        written = write_learner_notebooks(arguments.out_dir, overwrite=arguments.overwrite)
    except WorkshopError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} learner notebooks to {Path(arguments.out_dir).resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
