"""The figures of ``benchmarks/without_dask_ml.py``, drawn from its results: the search routes
compared seed by seed, how busy each route kept the workers, and the timed pairs. Chapter 7 shows
the saved PNGs; the numbers it prints come from ``scaling_ml.without_dask_ml``."""

from __future__ import annotations

import numpy as np

from scaling_ml import plots
from scaling_ml.without_dask_ml import ROUTES, runs_of, search_frame, seconds_of

# Short names for the figures' axes.
ROUTE_TICKS = {"reference": "reference", "single_machine": "one machine\nn_jobs=-1",
               "even_split": "even split\n(1/3 budget)", "fewer_full": "1/3 of the\ncandidates",
               "optuna": "Optuna\nDaskStorage", "optuna_journal": "Optuna\njournal file",
               "halving": "Halving-\nRandomSearchCV", "hyperband": "dask-ml\nHyperband"}


def _colour(route: str) -> str:
    """One colour per route, the same in every panel and figure."""
    return plots.COLOURS[list(ROUTES).index(route) % len(plots.COLOURS)]


def _dots_and_median(ax, frame, routes, column):
    for position, route in enumerate(routes):
        values = frame.loc[frame["route"] == route, column].to_numpy(dtype=float)
        ax.bar(position, np.median(values), color=_colour(route), alpha=0.8)
        ax.plot(np.full(len(values), position), values, "o", color="black", markersize=3)
    ax.set_xticks(range(len(routes)), [ROUTE_TICKS[route] for route in routes], fontsize=7)


def plot_route_comparison(results: dict):
    """Three panels, one bar per route, each bar the median over the seeds and each dot one seed:
    the reference's best validation accuracy minus the route's (points, same seed), the route's
    partial_fit calls as a share of the reference's, and its wall time over the reference's."""
    frame = search_frame(results)
    routes = [route for route in ROUTES if route in set(frame["route"]) and route != "reference"]
    figure, axes = plots.new_figure(ncols=3, width=15, height=4.2)
    _dots_and_median(axes[0][0], frame, routes, "points_below_reference")
    axes[0][0].axhline(0, color="black", linewidth=1)
    axes[0][0].set_title("points below the reference (same seed)")
    _dots_and_median(axes[0][1], frame, routes, "calls_share")
    axes[0][1].axhline(1 / 3, color="black", linestyle="--", linewidth=1, label="a third")
    axes[0][1].legend(loc="upper right", fontsize="x-small")
    axes[0][1].set_title("partial_fit calls / the reference's")
    _dots_and_median(axes[0][2], frame, routes, "seconds_ratio")
    axes[0][2].axhline(1, color="black", linewidth=1)
    axes[0][2].set_title("wall time / the reference's (same seed)")
    for ax in axes[0]:
        ax.tick_params(axis="x", labelrotation=90)
    figure.tight_layout()
    return figure


def plot_busy_rounds(results: dict, seed: int = 0):
    """How busy each route kept the workers, round by round, for one seed: a bar per round, its
    height the share of the workers' time spent computing, its label the tasks in the round."""
    runs = [run for run in runs_of(results, "search") if run["seed"] == seed and run.get("rounds")]
    routes = [route for route in ROUTES if any(run["route"] == route for run in runs)]
    figure, ax = plots.new_figure(width=10, height=3.8)
    position, ticks, labels = 0, [], []
    for route in routes:
        run = next(run for run in runs if run["route"] == route)
        for number, round_ in enumerate(run["rounds"]):
            ax.bar(position, round_["busy_share"], color=_colour(route), alpha=0.8)
            ax.annotate(f"{round_['calls']}", (position, round_["busy_share"]), ha="center",
                        va="bottom", xytext=(0, 2), textcoords="offset points", fontsize=7)
            ticks.append(position)
            labels.append(ROUTE_TICKS[route] if number == 0 else "")
            position += 1
        position += 0.6
    ax.set_xticks(ticks, labels, fontsize=7)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("busy share of the workers")
    ax.set_title(f"each bar a round (seed {seed}); above it, what the round ran: candidates, trials, "
                 "fits or (dask-ml) tasks", fontsize=9)
    figure.tight_layout()
    return figure


def plot_timed_pairs(results: dict, part: str, key: str, order, ylabel: str, title: str, ax=None):
    """Seconds of each repeat of a timed part as dots, the median as a bar."""
    if ax is None:
        figure, ax = plots.new_figure(width=5)
    seconds = seconds_of(results, part, key)
    for position, name in enumerate(order):
        values = np.asarray(seconds[name])
        ax.bar(position, np.median(values), color=plots.COLOURS[position], alpha=0.8)
        ax.plot(np.full(len(values), position), values, "o", color="black", markersize=3)
        ax.annotate(f"median {np.median(values):.2f}", (position, values.max()), ha="center",
                    va="bottom", xytext=(0, 4), textcoords="offset points")
    ax.set_ylim(0, 1.15 * max(max(values) for values in seconds.values()))
    ax.set_xticks(range(len(order)), list(order))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return ax
