"""Chapter 1 plumbing: what the notebook shows but the reader need not type.

The notebook writes the lesson in its own cells: the pipeline, the grid, ``GridSearchCV``,
``joblib.parallel_config(backend="dask", scatter=...)``, ``client.scatter`` and
``pd.DataFrame(search.cv_results_)``. This module holds a check of the topic names with a clear
error, the chapter's figures, and the sentence that reads the benchmark's numbers back. Timing the
search four ways and the benchmark's claims live in ``benchmarks/distributed_training.py``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence

import pandas as pd

from . import BookError, plots

NAME = "distributed_training"

# The 20 topics of the 20 Newsgroups corpus, as fetch_20newsgroups names them.
ALL_CATEGORIES = (
    "alt.atheism", "comp.graphics", "comp.os.ms-windows.misc", "comp.sys.ibm.pc.hardware",
    "comp.sys.mac.hardware", "comp.windows.x", "misc.forsale", "rec.autos", "rec.motorcycles",
    "rec.sport.baseball", "rec.sport.hockey", "sci.crypt", "sci.electronics", "sci.med",
    "sci.space", "soc.religion.christian", "talk.politics.guns", "talk.politics.mideast",
    "talk.politics.misc", "talk.religion.misc",
)
# The grid's parameters as cv_results_ names them, for the scores figure.
SCORE_COLUMNS = ("param_clf__alpha", "param_tfidf__norm", "param_tfidf__use_idf",
                 "mean_test_score", "std_test_score")


def check_categories(categories) -> list[str]:
    """Return ``categories`` as a list after checking every name is a 20 Newsgroups topic.

    scikit-learn's own message for a misspelt topic is ``'sci.spaces' is not in list``; this one
    names the closest topic and lists them all.
    """
    if isinstance(categories, str):
        raise BookError(
            f"categories must be a list of topic names, got the single string {categories!r}: "
            f"write [{categories!r}]."
        )
    if categories is None or not isinstance(categories, Sequence) or len(categories) == 0:
        raise BookError(
            f"categories must be a non-empty list of topic names, got {categories!r}; for example "
            "['alt.atheism', 'sci.space']."
        )
    categories = list(categories)
    unknown = [name for name in categories if name not in ALL_CATEGORIES]
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(str(name), ALL_CATEGORIES, n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise BookError(
            f"Unknown 20 Newsgroups categories: {', '.join(hints)}. The 20 topics are: "
            f"{', '.join(ALL_CATEGORIES)}."
        )
    duplicates = sorted({name for name in categories if categories.count(name) > 1})
    if duplicates:
        raise BookError(f"Categories listed twice: {duplicates}; list each topic once.")
    return categories


def _save_and_close(figure, name: str, figures_dir, save: bool):
    """Save as figs/<name>.png and close it, so a notebook shows the saved file once, not twice."""
    if not save:
        return None
    import matplotlib.pyplot as plt

    path = plots.save_figure(figure, name, figures_dir)
    plt.close(figure)
    return path


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
    ax.set_xlim(-0.1, total_width + 0.1)
    ax.set_ylim(-0.15, height + 0.5)
    ax.set_aspect("equal")
    return figure, _save_and_close(figure, "pipeline", figures_dir, save)


def plot_scores(cv_results, save: bool = True, figures_dir=None):
    """Mean CV accuracy of each candidate of the chapter's grid, grouped by alpha, one bar per
    (norm, use_idf), with the standard deviation over folds as error bars.

    cv_results: a fitted search's ``cv_results_`` or ``pd.DataFrame(search.cv_results_)``.
    """
    if isinstance(cv_results, Mapping):
        cv_results = pd.DataFrame(cv_results)
    if not isinstance(cv_results, pd.DataFrame) or not set(SCORE_COLUMNS) <= set(cv_results.columns):
        found = list(cv_results.columns) if isinstance(cv_results, pd.DataFrame) else type(cv_results).__name__
        raise BookError(
            f"plot_scores needs the cv_results_ of a search over the chapter's grid (columns "
            f"{list(SCORE_COLUMNS)}), got {found}: fit the search first and pass search.cv_results_."
        )
    table = cv_results[list(SCORE_COLUMNS)].rename(columns=lambda name: name.split("__")[-1])
    figure, ax = plots.new_figure()
    alphas = sorted(table["alpha"].unique(), reverse=True)
    groups = sorted(set(zip(table["norm"], table["use_idf"])))
    bar_width = 0.8 / len(groups)
    for index, (norm, use_idf) in enumerate(groups):
        rows = table[(table["norm"] == norm) & (table["use_idf"] == use_idf)].set_index("alpha")
        positions = [a + (index - (len(groups) - 1) / 2) * bar_width for a in range(len(alphas))]
        ax.bar(positions, rows.loc[alphas, "mean_test_score"], width=bar_width,
               yerr=rows.loc[alphas, "std_test_score"], capsize=3, color=plots.COLOURS[index],
               label=f"norm={norm}, use_idf={use_idf}")
    low = float((table["mean_test_score"] - table["std_test_score"]).min())
    ax.set_ylim(max(0.0, low - 0.03), 1.0)
    ax.set_xticks(range(len(alphas)), [f"alpha={alpha:g}" for alpha in alphas])
    ax.set_ylabel("mean CV accuracy (3 folds)")
    ax.set_title("Grid search: accuracy of each candidate (error bar: std over folds)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize="small", ncols=2,
              frameon=False)
    return figure, _save_and_close(figure, f"{NAME}_scores", figures_dir, save)


# --- the benchmark's numbers, read back --------------------------------------------------------

def benchmark_summary(document: Mapping) -> pd.DataFrame:
    """The benchmark's summary (median seconds and speed-up over n_jobs=1 per set-up) as a table."""
    needed = {"summary", "workload", "machine"}
    if not isinstance(document, Mapping) or not needed <= set(document):
        raise BookError(
            f"Expected the result document of benchmarks/{NAME}.py (keys {sorted(needed)}); "
            f"read it with measure.load_results({NAME!r}), or run the benchmark first."
        )
    table = pd.DataFrame(document["summary"]).set_index("mode")
    missing = {"n_jobs=1", "n_jobs=-1", "dask", "dask + scatter"} - set(table.index)
    if missing:
        raise BookError(
            f"The benchmark's summary lacks the set-ups {sorted(missing)}: run the benchmark again.")
    return table


def describe_benchmark(document: Mapping) -> str:
    """The benchmark's result in one sentence: workload, speed-ups, and how the set-ups compare."""
    table = benchmark_summary(document)
    workload, seconds = document["workload"], table["median s"]
    repeats = int(table["repeats"].min())
    speedups = ", ".join(f"{mode} {table.loc[mode, 'speed-up']:.2f}x" for mode in table.index
                         if mode != "n_jobs=1")
    return (
        f"On {workload['documents']:,} documents ({workload['candidates']} candidates x "
        f"{workload['folds']} folds, median of {repeats} runs, {workload['n_workers']} workers on "
        f"{document['machine']['cores']} cores), speed-up over n_jobs=1: {speedups}. "
        f"dask + scatter took {seconds['dask + scatter'] / seconds['n_jobs=-1']:.2f}x the time of "
        f"n_jobs=-1 and {seconds['dask + scatter'] / seconds['dask']:.2f}x the time of dask "
        "without scatter."
    )


def plot_speedup(document: Mapping, save: bool = True, figures_dir=None):
    """Speed-up of each set-up over n_jobs=1 (median of the benchmark's repeats), with the ideal
    (one fit per worker at all times) as a dashed line: figs/distributed_training_speedup.png."""
    table = benchmark_summary(document)
    ideal = min(document["workload"]["n_workers"], document["machine"]["cores"])
    workload = document["workload"]
    ax = plots.plot_speedup(list(table.index), list(table["speed-up"]),
                            f"Grid search speed-up over n_jobs=1, {workload['documents']:,} documents "
                            "(median of repeats)", ideal=ideal)
    ax.set_ylim(0, ideal * 1.15)
    return ax.figure, _save_and_close(ax.figure, f"{NAME}_speedup", figures_dir, save)
