"""The book's figure style and the figure kinds several chapters share.

One convention for every figure: a function (here for a kind several chapters share, in the
chapter's module otherwise) draws it on :func:`new_figure` and returns it, and the notebook shows it
inline. Only benchmarks write figure files: each saves the figures of its results with
:func:`save_figure` as ``figs/<benchmark>_<what>.png``, one writer per file. Running a notebook
changes no file of the repository (the root conftest.py fails a run that does).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt

from scaling_ml import PROJECT_ROOT

FIGURES_DIR = PROJECT_ROOT / "figs"

BOOK_STYLE = {
    "figure.figsize": (6.4, 3.6),
    "figure.dpi": 100,
    "savefig.dpi": 120,
    "savefig.bbox": "tight",
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.size": 10,
    "svg.hashsalt": "scaling-ml",  # deterministic SVG ids
}
# Colour-blind-safe palette (Okabe-Ito), in the order the book uses them.
COLOURS = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]


def apply_style() -> None:
    plt.rcParams.update(BOOK_STYLE)
    plt.rcParams["axes.prop_cycle"] = matplotlib.cycler(color=COLOURS)


def new_figure(ncols: int = 1, nrows: int = 1, width: float | None = None, height: float | None = None):
    """A figure and axes in the book's style."""
    apply_style()
    width = width or BOOK_STYLE["figure.figsize"][0] * (1 if ncols == 1 else 0.75 * ncols)
    height = height or BOOK_STYLE["figure.figsize"][1] * (1 if nrows == 1 else 0.8 * nrows)
    return plt.subplots(nrows, ncols, figsize=(width, height), squeeze=ncols * nrows == 1)


def save_figure(figure, name: str, figures_dir: str | Path | None = None) -> Path:
    """Save a benchmark's ``figure`` as ``figs/<name>.png`` (no timestamp in the metadata, so reruns
    are stable)."""
    path = Path(figures_dir or FIGURES_DIR) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, metadata={"Software": None})
    return path


def plot_memory_over_time(memory_frame, title: str, limit_gib: float | None = None, ax=None):
    """Cluster memory (GiB) against seconds, one line per label; an optional memory-limit line."""
    if ax is None:
        figure, ax = new_figure()
    for label in memory_frame.columns:
        ax.plot(memory_frame.index, memory_frame[label], label=str(label))
    if limit_gib is not None:
        ax.axhline(limit_gib, color="black", linestyle="--", linewidth=1, label="memory limit")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("cluster memory (GiB)")
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.legend(loc="best", fontsize="small")
    return ax


def plot_speedup(labels, speedups, title: str, ideal: float | None = None, errors=None, ax=None):
    """Bars of speed-up over a baseline, with the ideal speed-up as a dashed line."""
    if ax is None:
        figure, ax = new_figure()
    positions = range(len(labels))
    bars = ax.bar(positions, speedups, yerr=errors, color=COLOURS[: len(labels)], capsize=4)
    for bar, speedup in zip(bars, speedups):
        ax.annotate(f"{speedup:.2f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", xytext=(0, 3), textcoords="offset points")
    if ideal is not None:
        ax.axhline(ideal, color="black", linestyle="--", linewidth=1, label=f"ideal ({ideal:g}x)")
        ax.legend(loc="lower right", fontsize="small")
    ax.set_xticks(list(positions), labels)
    ax.set_ylabel("speed-up (x)")
    ax.set_title(title)
    return ax


def draw_book_icon(path: str | Path) -> Path:
    """The site's favicon: three rising bars in the book's colours (a small cluster scaling up)."""
    figure = plt.figure(figsize=(0.64, 0.64), dpi=50)
    axes = figure.add_axes([0, 0, 1, 1])
    axes.axis("off")
    for position, colour in enumerate(COLOURS[:3]):
        axes.add_patch(plt.Rectangle((0.1 + 0.27 * position, 0.1), 0.22, 0.25 + 0.25 * position, color=colour))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, metadata={"Software": None})
    plt.close(figure)
    return path
