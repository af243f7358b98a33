"""Instructor tooling: the learners' copies of the notebooks, and a workshop schedule that adds up.

``make learner-notebooks`` (``python -m tools.workshop learner-notebooks OUT``) writes a copy of
every notebook into ``OUT``, the folder an instructor hands out:

* every code cell tagged ``solution`` is emptied down to a one-line prompt (the exercise's markdown
  cell, tagged ``exercise``, stays where it is);
* every output and execution count is cleared, so learners run the cells themselves;
* nothing else changes: the lessons, the set-up cells and the exercises are the book's.

The same tags drive the website, where solutions are folded away (``hide-cell``): the book's
notebooks are the single source, as in the scikit-learn MOOC, whose exercises are generated from
its solutions.

``python -m tools.workshop schedule`` (run by ``make notebooks``) writes
``book/workshop_schedule.md``: the 3-hour and 90-minute plans of :data:`PLANS` with each block's
minutes computed from the notebooks themselves (the reading minutes of their "Time to learn" line,
the measured execution time, the minutes each live exercise states), so the guide's numbers come
from code and change when a chapter does. A plan that does not fit its session is an error.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from scaling_ml import PROJECT_ROOT, BookError, notebook_paths
from tools import status

NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
SOLUTION_TAG = "solution"
EXERCISE_TAG = "exercise"
SOLUTION_PROMPT = "# Your solution here: the book's solution is folded away on the website.\n"
SCHEDULE_PATH = PROJECT_ROOT / "book" / "workshop_schedule.md"


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


def write_learner_notebooks(out_dir: str | Path, overwrite: bool = False) -> list[Path]:
    """Write the learner copy of every notebook into ``out_dir``; return the files written.

    ``out_dir`` must be new or empty, unless ``overwrite=True`` and it holds only a previous
    copy (notebooks): a learner's own work elsewhere is never replaced.
    """
    out_dir = Path(out_dir).expanduser().resolve()
    if out_dir == NOTEBOOKS_DIR:
        raise BookError(f"{out_dir} is the book's own notebooks folder: choose another folder.")
    if out_dir.exists() and any(out_dir.iterdir()):
        others = [path.name for path in out_dir.iterdir() if path.suffix != ".ipynb"]
        if not overwrite or others:
            raise BookError(
                f"{out_dir} is not empty ({', '.join(sorted(path.name for path in out_dir.iterdir())[:5])}"
                "...): choose a new folder, or pass --overwrite to replace a previous copy of the "
                "notebooks (a folder holding anything but notebooks is never overwritten).")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Written next to the target and moved in place: an interrupted run leaves no half copy.
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}-") as scratch:
        written = []
        for path in notebook_paths():
            copy = learner_copy(json.loads(path.read_text()))
            target = Path(scratch) / path.name
            target.write_text(json.dumps(copy, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
            written.append(out_dir / path.name)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        Path(scratch).rename(out_dir)
        Path(scratch).mkdir()  # for TemporaryDirectory's clean-up
    return written


@dataclass
class Block:
    """One block of a session: a notebook taught with some of its exercises live, or a break
    (or another block of fixed minutes, such as a wrap-up)."""

    title: str
    notebook: str | None = None       # a notebook's stem; None for a break
    live_exercises: tuple[int, ...] = ()  # 1-based numbers of the exercises done in the room
    minutes: int | None = None        # only without a notebook; a notebook's minutes are computed


@dataclass
class Plan:
    name: str
    session_minutes: int
    blocks: list[Block]

    @property
    def homework(self) -> list[str]:
        """The chapters the session leaves for afterwards, in the book's order."""
        taught = {block.notebook for block in self.blocks}
        return [path.stem for path in notebook_paths() if path.stem[:2].isdigit() and path.stem not in taught]


PLANS = [
    Plan("3-hour workshop", 180, [
        Block("Welcome, setup check, your first cluster", "00_setup"),
        Block("Distributed training: a grid search on the cluster", "01_distributed_training", (1,)),
        Block("Break", minutes=10),
        Block("Train small, predict large", "02_predict_large_data", (1,)),
        Block("Break", minutes=10),
        Block("Incremental training and Hyperband", "03_incremental_training", (1,)),
        Block("Wrap-up: what chapters 4 to 7 add, questions", minutes=10),
    ]),
    Plan("90-minute session", 90, [
        Block("Setup and your first cluster", "00_setup"),
        Block("Distributed training: a grid search on the cluster", "01_distributed_training", (1,)),
        Block("Train small, predict large", "02_predict_large_data"),
    ]),
]


def notebook_minutes(path: Path) -> dict:
    """What the schedule reads from a notebook: reading minutes, execution minutes, exercises."""
    notebook = json.loads(path.read_text())
    reading = None
    for cell in notebook["cells"]:
        text = "".join(cell["source"])
        if cell["cell_type"] == "markdown" and reading is None and status.TIME_TO_LEARN.search(text):
            found = status.READING.search(text)
            reading = int(found.group(1)) if found else None
    if reading is None:
        raise BookError(f"{path.name}: no 'about N minutes of reading' in its Time to learn line.")
    seconds = status.notebook_execution(path)["seconds"] or 0
    return {"reading": reading, "execution": math.ceil(seconds / 60),
            "exercises": status.exercise_minutes(notebook)}


def schedule_rows(plan: Plan, notebooks_dir: Path = NOTEBOOKS_DIR) -> list[dict]:
    """The plan's blocks with start times and minutes; raises BookError if it does not fit."""
    rows, start = [], 0
    for block in plan.blocks:
        if block.notebook is None:
            minutes, detail = block.minutes, ""
        else:
            facts = notebook_minutes(notebooks_dir / f"{block.notebook}.ipynb")
            missing = [number for number in block.live_exercises if number > len(facts["exercises"])]
            if missing:
                raise BookError(f"{plan.name}: {block.notebook} has no exercise {missing[0]}.")
            live = [facts["exercises"][number - 1] for number in block.live_exercises]
            minutes = facts["reading"] + facts["execution"] + sum(live)
            detail = (f"{facts['reading']} reading + {facts['execution']} running cells"
                      + "".join(f" + {m} exercise {n}" for n, m in zip(block.live_exercises, live)))
        rows.append({"start": start, "title": block.title, "notebook": block.notebook or "",
                     "minutes": minutes, "detail": detail})
        start += minutes
    if start > plan.session_minutes:
        raise BookError(f"{plan.name}: the blocks take {start} minutes, more than the session's "
                            f"{plan.session_minutes}: move a block or an exercise to the homework.")
    return rows


def _clock(minutes: int) -> str:
    return f"{minutes // 60}:{minutes % 60:02d}"


def schedule_markdown(plans=PLANS, notebooks_dir: Path = NOTEBOOKS_DIR) -> str:
    parts = ["<!-- Written by `python -m tools.workshop schedule` (make notebooks): the minutes "
             "come from the notebooks. -->"]
    for plan in plans:
        rows = schedule_rows(plan, notebooks_dir)
        end = rows[-1]["start"] + rows[-1]["minutes"]
        table = [f"### {plan.name}", "",
                 "| Time | Block | Notebook | Minutes | Made of |", "|---|---|---|---|---|"]
        table += [f"| {_clock(row['start'])} | {row['title']} | {row['notebook']} | {row['minutes']} | "
                  f"{row['detail']} |" for row in rows]
        table += [f"| {_clock(end)} | End ({plan.session_minutes - end} minutes to spare) | | | |", ""]
        if plan.homework:
            table.append("After the session, on their own: " + ", ".join(plan.homework) + ".")
        parts.append("\n".join(table))
    return "\n\n".join(parts) + "\n"


def write_schedule(path: Path = SCHEDULE_PATH) -> Path:
    path.write_text(schedule_markdown())
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.workshop", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    learner = commands.add_parser("learner-notebooks", help="write the learners' copies")
    learner.add_argument("out_dir")
    learner.add_argument("--overwrite", action="store_true",
                         help="replace a previous copy (a folder of notebooks only)")
    commands.add_parser("schedule", help=f"write {SCHEDULE_PATH.relative_to(PROJECT_ROOT)}")
    arguments = parser.parse_args(argv)
    try:
        if arguments.command == "schedule":
            print(f"wrote {write_schedule().relative_to(PROJECT_ROOT)}")
            return 0
        written = write_learner_notebooks(arguments.out_dir, overwrite=arguments.overwrite)
    except BookError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} learner notebooks to {Path(arguments.out_dir).resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
