"""Chapter 1 plumbing: a scikit-learn grid search over 20 Newsgroups, run by joblib or by Dask.

The notebook writes the scikit-learn calls itself (pipeline, grid, ``GridSearchCV``,
``joblib.parallel_config``); this module holds what is not the lesson: checking inputs, drawing
the pipeline, turning ``cv_results_`` into a table and a figure, timing the search in each
parallel set-up, and reading the benchmark's numbers back.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Mapping, Sequence
from typing import Callable

import joblib
import pandas as pd
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from . import measure, plots

NAME = "distributed_training"

# The 20 topics of the 20 Newsgroups corpus, as fetch_20newsgroups names them.
ALL_CATEGORIES = (
    "alt.atheism", "comp.graphics", "comp.os.ms-windows.misc", "comp.sys.ibm.pc.hardware",
    "comp.sys.mac.hardware", "comp.windows.x", "misc.forsale", "rec.autos", "rec.motorcycles",
    "rec.sport.baseball", "rec.sport.hockey", "sci.crypt", "sci.electronics", "sci.med",
    "sci.space", "soc.religion.christian", "talk.politics.guns", "talk.politics.mideast",
    "talk.politics.misc", "talk.religion.misc",
)
# The chapter's data: 4 topics, about 2,000 training documents (the search runs in seconds).
NOTEBOOK_CATEGORIES = ("alt.atheism", "comp.graphics", "sci.space", "talk.religion.misc")
# The benchmark's workload: all 20 topics (11,314 training documents), the size the notebook's
# "Scale up" comment points to. Each fit is about 5x longer than the notebook's, so the fixed cost
# of sending a task to a worker, and the scheduler's share of the 2 cores, weigh less.
BENCHMARK_CATEGORIES = ALL_CATEGORIES
# The chapter's grid, exactly as the original tutorial gives it: 2 x 2 x 2 = 8 candidates.
PARAMETERS = {
    "tfidf__use_idf": (True, False),
    "tfidf__norm": ("l1", "l2"),
    "clf__alpha": (1e-5, 1e-6),
}
RANDOM_STATE = 0

# How the benchmark (and the notebook) run the same search.
MODES = ("n_jobs=1", "n_jobs=-1", "dask", "dask + scatter")


class DistributedTrainingError(ValueError):
    """Bad input to this chapter's helpers; the message names the problem and the fix."""


def check_categories(categories) -> list[str]:
    """Return ``categories`` as a list after checking every name is a 20 Newsgroups topic."""
    if isinstance(categories, str):
        raise DistributedTrainingError(
            f"categories must be a list of topic names, got the single string {categories!r}: "
            f"write [{categories!r}]."
        )
    if categories is None or not isinstance(categories, Sequence) or len(categories) == 0:
        raise DistributedTrainingError(
            f"categories must be a non-empty list of topic names, got {categories!r}; for example "
            f"{list(NOTEBOOK_CATEGORIES)}."
        )
    categories = list(categories)
    unknown = [name for name in categories if name not in ALL_CATEGORIES]
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(str(name), ALL_CATEGORIES, n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise DistributedTrainingError(
            f"Unknown 20 Newsgroups categories: {', '.join(hints)}. The 20 topics are: "
            f"{', '.join(ALL_CATEGORIES)}."
        )
    duplicates = sorted({name for name in categories if categories.count(name) > 1})
    if duplicates:
        raise DistributedTrainingError(f"Categories listed twice: {duplicates}; list each topic once.")
    return categories


def make_pipeline(random_state: int = RANDOM_STATE) -> Pipeline:
    """The chapter's pipeline: HashingVectorizer -> TfidfTransformer -> SGDClassifier."""
    return Pipeline([
        ("vect", HashingVectorizer()),
        ("tfidf", TfidfTransformer()),
        ("clf", SGDClassifier(max_iter=1000, random_state=random_state)),
    ])


def check_grid(pipeline: Pipeline, parameters) -> int:
    """Check a parameter grid against ``pipeline``; return its number of candidates.

    Raises DistributedTrainingError for an empty grid, an empty list of values, a value given as
    a bare string or number instead of a list, or a name the pipeline does not have.
    """
    if not isinstance(parameters, Mapping):
        raise DistributedTrainingError(
            f"The grid must be a dict of parameter name -> list of values, got "
            f"{type(parameters).__name__}; for example {{'clf__alpha': (1e-5, 1e-6)}}."
        )
    if len(parameters) == 0:
        raise DistributedTrainingError(
            "The grid is empty: there is nothing to search. Give at least one parameter with its "
            "values, for example {'clf__alpha': (1e-5, 1e-6)}."
        )
    valid = pipeline.get_params()
    candidates = 1
    for name, values in parameters.items():
        if name not in valid:
            close = difflib.get_close_matches(str(name), list(valid), n=1)
            raise DistributedTrainingError(
                f"The pipeline has no parameter {name!r}"
                + (f" (did you mean {close[0]!r}?)" if close else "")
                + ". Names are STEP__PARAMETER, for example 'tfidf__norm' or 'clf__alpha'."
            )
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise DistributedTrainingError(
                f"The values of {name!r} must be a list or tuple, got {values!r}; write ({values!r},)."
            )
        if len(values) == 0:
            raise DistributedTrainingError(
                f"{name!r} has no values to try: give at least one, or drop it from the grid."
            )
        candidates *= len(values)
    return candidates


def make_search(parameters=None, n_jobs: int = -1, random_state: int = RANDOM_STATE,
                verbose: int = 0) -> GridSearchCV:
    """The chapter's ``GridSearchCV`` (cv=3, refit=False) of :func:`make_pipeline` over ``parameters``."""
    pipeline = make_pipeline(random_state)
    parameters = PARAMETERS if parameters is None else parameters
    check_grid(pipeline, parameters)
    return GridSearchCV(pipeline, parameters, n_jobs=n_jobs, verbose=verbose, cv=3, refit=False)


def _save_and_close(figure, name: str, figures_dir, save: bool):
    """Save as figs/<name>.png and close it, so a notebook shows the saved file once, not twice."""
    if not save:
        return None
    import matplotlib.pyplot as plt

    path = plots.save_figure(figure, name, figures_dir)
    plt.close(figure)
    return path


# --- figures ------------------------------------------------------------------------------------

def draw_pipeline(save: bool = True, figures_dir=None):
    """Boxes and arrows of the pipeline (raw text -> three steps -> predicted topic): figs/pipeline.png."""
    import matplotlib.patches as patches

    figure, ax = plots.new_figure(width=9.5, height=2.2)
    ax.set_axis_off()
    ax.grid(False)
    boxes = [
        ("raw text\n(list of str)", None, "#FFFFFF"),
        ("HashingVectorizer", "words -> sparse\ncounts, no vocabulary", plots.COLOURS[0]),
        ("TfidfTransformer", "counts -> tf-idf\nweights", plots.COLOURS[1]),
        ("SGDClassifier", "linear model,\nmax_iter=1000", plots.COLOURS[2]),
        ("topic", None, "#FFFFFF"),
    ]
    width, height, gap = 2.0, 0.9, 0.45
    for index, (title, note, colour) in enumerate(boxes):
        x = index * (width + gap)
        is_step = note is not None
        ax.add_patch(patches.FancyBboxPatch(
            (x, 0), width, height, boxstyle="round,pad=0.04",
            facecolor=colour, alpha=0.25 if is_step else 1.0,
            edgecolor=colour if is_step else "#555555", linewidth=1.5,
            linestyle="-" if is_step else "--"))
        ax.text(x + width / 2, height * (0.68 if is_step else 0.5), title, ha="center", va="center",
                fontsize=9.5, fontweight="bold" if is_step else "normal")
        if is_step:
            ax.text(x + width / 2, height * 0.3, note, ha="center", va="center", fontsize=8)
        if index < len(boxes) - 1:
            ax.annotate("", xy=(x + width + gap - 0.04, height / 2), xytext=(x + width + 0.04, height / 2),
                        arrowprops=dict(arrowstyle="->", linewidth=1.5, color="#333333"))
    total_width = len(boxes) * (width + gap) - gap
    ax.text(total_width / 2, height + 0.22, "Pipeline: the search fits a fresh copy of these three "
            "steps for every candidate and fold", fontsize=9, ha="center", va="bottom", color="#333333")
    ax.set_xlim(-0.1, len(boxes) * (width + gap) - gap + 0.1)
    ax.set_ylim(-0.15, height + 0.5)
    ax.set_aspect("equal")
    return figure, _save_and_close(figure, "pipeline", figures_dir, save)


def results_table(cv_results: Mapping) -> pd.DataFrame:
    """``cv_results_`` as a readable table: one row per candidate, best first, scores rounded."""
    if not isinstance(cv_results, Mapping) or "params" not in cv_results:
        raise DistributedTrainingError(
            "Expected a fitted search's cv_results_ (a dict with a 'params' key): call "
            "search.fit(X, y) first, then pass search.cv_results_."
        )
    frame = pd.DataFrame(list(cv_results["params"]))
    frame.columns = [name.split("__", 1)[-1] for name in frame.columns]
    frame["mean accuracy"] = pd.Series(cv_results["mean_test_score"]).round(3)
    frame["std"] = pd.Series(cv_results["std_test_score"]).round(3)
    frame["rank"] = cv_results["rank_test_score"]
    frame = frame.sort_values(["rank"] + [c for c in frame.columns if c not in
                                          ("rank", "mean accuracy", "std")], kind="stable")
    return frame.reset_index(drop=True)


def plot_scores(table: pd.DataFrame, save: bool = True, figures_dir=None):
    """Mean CV accuracy of each candidate, grouped by alpha, one bar per (norm, use_idf)."""
    needed = {"alpha", "norm", "use_idf", "mean accuracy", "std"}
    if not needed <= set(table.columns):
        raise DistributedTrainingError(
            f"plot_scores needs the table of results_table(search.cv_results_) for the chapter's "
            f"grid (columns {sorted(needed)}), got columns {list(table.columns)}."
        )
    figure, ax = plots.new_figure()
    alphas = sorted(table["alpha"].unique(), reverse=True)
    groups = sorted({(norm, use_idf) for norm, use_idf in zip(table["norm"], table["use_idf"])})
    bar_width = 0.8 / len(groups)
    for index, (norm, use_idf) in enumerate(groups):
        rows = table[(table["norm"] == norm) & (table["use_idf"] == use_idf)].set_index("alpha")
        positions = [a + (index - (len(groups) - 1) / 2) * bar_width for a in range(len(alphas))]
        ax.bar(positions, rows.loc[alphas, "mean accuracy"], width=bar_width,
               yerr=rows.loc[alphas, "std"], capsize=3, color=plots.COLOURS[index],
               label=f"norm={norm}, use_idf={use_idf}")
    low = float((table["mean accuracy"] - table["std"]).min())
    ax.set_ylim(max(0.0, low - 0.03), 1.0)
    ax.set_xticks(range(len(alphas)), [f"alpha={alpha:g}" for alpha in alphas])
    ax.set_ylabel("mean CV accuracy (3 folds)")
    ax.set_title("Grid search: accuracy of each candidate (error bar: std over folds)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize="small", ncols=2,
              frameon=False)
    return figure, _save_and_close(figure, f"{NAME}_scores", figures_dir, save)


# --- timing the four ways to run the search -------------------------------------------------------

def fit_in_mode(search: GridSearchCV, X, y, mode: str) -> float:
    """Fit ``search`` on X, y in one of :data:`MODES`; return the wall-clock seconds.

    "dask" and "dask + scatter" need a connected ``distributed.Client`` (joblib uses the current one).
    """
    if mode not in MODES:
        raise DistributedTrainingError(f"Unknown mode {mode!r}: use one of {list(MODES)}.")
    if mode.startswith("dask"):
        from distributed import get_client

        try:
            get_client()
        except ValueError:
            raise DistributedTrainingError(
                f"Mode {mode!r} needs a Dask cluster: start one first with "
                "client = cluster.get_client()."
            ) from None
    search.set_params(n_jobs=1 if mode == "n_jobs=1" else -1)
    start = time.perf_counter()
    if mode == "dask":
        with joblib.parallel_config(backend="dask"):
            search.fit(X, y)
    elif mode == "dask + scatter":
        with joblib.parallel_config(backend="dask", scatter=[X, y]):
            search.fit(X, y)
    else:
        search.fit(X, y)
    return time.perf_counter() - start


def time_modes(make: Callable[[], GridSearchCV], X, y, modes=MODES, repeats: int = 3,
               warm_up: tuple | None = None, log: Callable[[str], None] | None = print) -> list[dict]:
    """Time ``make()``'s search in each mode ``repeats`` times; one dict per run.

    warm_up: optional small (X, y) fitted once per mode first, untimed, so that process start-up
    and imports in the workers (joblib's and Dask's alike) are not charged to the first repeat.
    Modes are interleaved repeat by repeat, so that a slow spell of a busy machine hits all of them.
    """
    if repeats < 1:
        raise DistributedTrainingError(f"repeats must be >= 1, got {repeats}.")
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown:
        raise DistributedTrainingError(f"Unknown modes {unknown}: use some of {list(MODES)}.")
    if warm_up is not None:
        for mode in modes:
            fit_in_mode(make(), *warm_up, mode)
    runs = []
    for repeat in range(repeats):
        for mode in modes:
            seconds = fit_in_mode(make(), X, y, mode)
            runs.append({"mode": mode, "repeat": repeat, "seconds": round(seconds, 3)})
            if log:
                log(f"repeat {repeat + 1}/{repeats}  {mode:<15} {seconds:6.2f} s")
    return runs


def summarise(runs: list[dict], baseline: str = "n_jobs=1") -> pd.DataFrame:
    """Median seconds per mode, and the speed-up over ``baseline`` (median / median)."""
    if not runs:
        raise DistributedTrainingError("No runs to summarise: time the search first (time_modes).")
    frame = pd.DataFrame(runs)
    if baseline not in set(frame["mode"]):
        raise DistributedTrainingError(f"The runs have no {baseline!r} mode to compare with.")
    order = [mode for mode in MODES if mode in set(frame["mode"])]
    table = frame.groupby("mode")["seconds"].agg(["median", "min", "max", "count"]).loc[order]
    table = table.rename(columns={"median": "median s", "min": "min s", "max": "max s",
                                  "count": "repeats"})
    table["speed-up"] = table.loc[baseline, "median s"] / table["median s"]
    return table.round(2)


def benchmark_claims(table: pd.DataFrame) -> list[measure.Claim]:
    """The chapter's claims about the dask backend, from the benchmark's summary table.

    The speed-up goal is for the dask backend used as the chapter teaches, with the list of
    documents scattered once; the plain backend is held to the n_jobs=-1 comparison, and a last
    claim checks that scattering is what saves the time.
    """
    missing = [mode for mode in MODES if mode not in table.index]
    if missing:
        raise DistributedTrainingError(
            f"The benchmark's claims need all four modes; the runs lack {missing}: time them with "
            "time_modes(..., modes=MODES)."
        )
    seconds = table["median s"]
    return [
        measure.Claim("dask + scatter: speed-up over n_jobs=1 (2 workers)",
                      round(float(table.loc["dask + scatter", "speed-up"]), 3), "x", 1.8, ">="),
        measure.Claim("dask + scatter: time / n_jobs=-1 time",
                      round(float(seconds["dask + scatter"] / seconds["n_jobs=-1"]), 3),
                      "ratio", 1.10, "<="),
        measure.Claim("dask (documents sent with every task): time / n_jobs=-1 time",
                      round(float(seconds["dask"] / seconds["n_jobs=-1"]), 3), "ratio", 1.10, "<="),
        measure.Claim("scatter saves time: dask time / dask + scatter time",
                      round(float(seconds["dask"] / seconds["dask + scatter"]), 3), "ratio", 1.0, ">"),
    ]


def plot_speedup(table: pd.DataFrame, ideal: float, save: bool = True, figures_dir=None):
    """Speed-up of each mode over n_jobs=1 with the ideal (number of cores) line."""
    ax = plots.plot_speedup(list(table.index), list(table["speed-up"]),
                            "Grid search speed-up over n_jobs=1 (median of repeats)", ideal=ideal)
    figure = ax.figure
    return figure, _save_and_close(figure, f"{NAME}_speedup", figures_dir, save)


def load_benchmark(results_dir=None) -> tuple[dict, pd.DataFrame]:
    """The benchmark's result document and its summary table (median seconds, speed-up)."""
    document = measure.load_results(NAME, results_dir)
    return document, summarise(document["runs"])
