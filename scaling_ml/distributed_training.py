"""Chapter 1 plumbing: what the notebook shows but the reader need not type.

The notebook writes the lesson in its own cells: the pipeline, the grid, ``GridSearchCV``,
``joblib.parallel_config(backend="dask", scatter=...)``, ``client.scatter`` and
``pd.DataFrame(search.cv_results_)``. This module holds a check of the topic names with a clear
error, the chapter's figures, and the sentence that reads the benchmark's numbers back, with the
spread of its repeats. Timing the search four ways and the benchmark's claims live in
``benchmarks/distributed_training.py``, which alone writes ``figs/distributed_training_speedup.png``:
the figures drawn here are returned, never saved, so running the chapter changes no file.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence

import pandas as pd

from . import BookError, measure, plots

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
# The benchmark's four set-ups, in the order of the chapter (and of the figure).
MODES = ("n_jobs=1", "n_jobs=-1", "dask", "dask + scatter")


def check_categories(categories) -> list[str] | None:
    """Return ``categories`` as a list after checking every name is a 20 Newsgroups topic; ``None``
    (all 20 topics, as ``fetch_20newsgroups`` reads it) is returned as it is.

    scikit-learn's own message for a misspelt topic is ``'sci.spaces' is not in list``; this one
    names the closest topic and lists them all.
    """
    if categories is None:
        return None
    if isinstance(categories, str):
        raise BookError(
            f"categories must be a list of topic names, got the single string {categories!r}: "
            f"write [{categories!r}]."
        )
    if not isinstance(categories, Sequence) or len(categories) == 0:
        raise BookError(
            f"categories must be a non-empty list of topic names (or None for all 20), got "
            f"{categories!r}; for example ['alt.atheism', 'sci.space']."
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


def draw_pipeline():
    """Boxes and arrows of the pipeline (raw text -> three steps -> predicted topic), as a figure."""
    import matplotlib.patches as patches

    figure, ax = plots.new_figure(width=9.5, height=2.2)
    ax.set_axis_off()
    ax.grid(False)
    boxes = [
        ("raw text\n(list of str)", None, "#FFFFFF"),
        ("HashingVectorizer", "words -> hashed\ncounts, no vocabulary", plots.COLOURS[0]),
        ("TfidfTransformer", "counts -> tf-idf\nweights", plots.COLOURS[1]),
        ("SGDClassifier", "linear model,\nmax_iter=1000", plots.COLOURS[2]),
        ("topic", None, "#FFFFFF"),
    ]
    width, height, gap = 2.4, 0.9, 0.35
    for index, (title, note, colour) in enumerate(boxes):
        x = index * (width + gap)
        is_step = note is not None
        ax.add_patch(patches.FancyBboxPatch(
            (x, 0), width, height, boxstyle="round,pad=0.04",
            facecolor=colour, alpha=0.25 if is_step else 1.0,
            edgecolor=colour if is_step else "#555555", linewidth=1.5,
            linestyle="-" if is_step else "--"))
        ax.text(x + width / 2, height * (0.68 if is_step else 0.5), title, ha="center", va="center",
                fontsize=8.5, fontweight="bold" if is_step else "normal")
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
    return figure


def plot_scores(cv_results):
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
    return figure


# --- the benchmark's numbers, read back --------------------------------------------------------

def speedups(runs) -> pd.DataFrame:
    """Per set-up: the median, min and max seconds of its repeats, and its speed-up over n_jobs=1
    (median / median) with the spread of the repeats (``measure.ratio_spread``)."""
    frame = pd.DataFrame(list(runs))
    found = set(frame["mode"]) if "mode" in frame else set()
    missing = [mode for mode in MODES if mode not in found]
    if missing:
        raise BookError(
            f"The benchmark's runs lack the set-ups {missing}: run `python -m benchmarks.{NAME}` again.")
    seconds = {mode: frame.loc[frame["mode"] == mode, "seconds"].tolist() for mode in MODES}
    rows = []
    for mode in MODES:
        low, high = measure.ratio_spread(seconds["n_jobs=1"], seconds[mode])
        rows.append({"mode": mode, "median s": measure.median(seconds[mode]), "min s": min(seconds[mode]),
                     "max s": max(seconds[mode]), "repeats": len(seconds[mode]),
                     "speed-up": measure.median(seconds["n_jobs=1"]) / measure.median(seconds[mode]),
                     "speed-up low": low, "speed-up high": high})
    return pd.DataFrame(rows).set_index("mode")


def time_ratio(runs, mode: str, other: str) -> tuple[float, list[float]]:
    """``mode``'s median time over ``other``'s, and the spread of that ratio over the repeats."""
    frame = pd.DataFrame(list(runs))
    seconds = {name: frame.loc[frame["mode"] == name, "seconds"].tolist() for name in (mode, other)}
    return (measure.median(seconds[mode]) / measure.median(seconds[other]),
            measure.ratio_spread(seconds[mode], seconds[other]))


def compare(ratio: float, spread, mode: str, other: str) -> str:
    """``mode`` against ``other`` in words: a difference only when the spread excludes 1."""
    if spread[0] > 1:
        verdict = f"{mode} is slower"
    elif spread[1] < 1:
        verdict = f"{mode} is faster"
    else:
        verdict = "no difference measured here"
    return (f"{mode} took {ratio:.2f}x the time of {other} (over the repeats {spread[0]:.2f} to "
            f"{spread[1]:.2f}x): {verdict}")


def check_document(document: Mapping) -> Mapping:
    needed = {"runs", "workload", "machine"}
    if not isinstance(document, Mapping) or not needed <= set(document):
        raise BookError(
            f"Expected the result document of benchmarks/{NAME}.py (keys {sorted(needed)}); "
            f"read it with measure.load_results({NAME!r}), or run the benchmark first."
        )
    return document


def describe_benchmark(document: Mapping) -> str:
    """The benchmark's result in words: the workload, each set-up's speed-up over n_jobs=1 with the
    spread of its repeats, and the two comparisons the chapter makes, each called a difference only
    when its spread excludes none."""
    check_document(document)
    table = speedups(document["runs"])
    workload, runs = document["workload"], document["runs"]
    lines = [f"{workload['documents']:,} documents, {workload['candidates']} candidates x "
             f"{workload['folds']} folds, {int(table['repeats'].min())} runs of each set-up, "
             f"{workload['n_workers']} workers on {document['machine']['cores']} cores.",
             "Speed-up over n_jobs=1, median (lowest to highest over the runs):"]
    lines += [f"  {mode:<15} {row['speed-up']:.2f}x ({row['speed-up low']:.2f} to {row['speed-up high']:.2f})"
              for mode, row in table.iterrows() if mode != "n_jobs=1"]
    for mode, other in [("dask + scatter", "n_jobs=-1"), ("dask", "dask + scatter")]:
        lines.append(compare(*time_ratio(runs, mode, other), mode, other) + ".")
    return "\n".join(lines)


def plot_speedup(document: Mapping):
    """Speed-up of each set-up over n_jobs=1 (median of the benchmark's repeats, the bar's whisker
    spanning the spread of the repeats), with the ideal (one fit per worker at all times) as a
    dashed line. Returns the figure; the benchmark saves it as figs/distributed_training_speedup.png."""
    check_document(document)
    table = speedups(document["runs"])
    ideal = min(document["workload"]["n_workers"], document["machine"]["cores"])
    workload = document["workload"]
    errors = [list(table["speed-up"] - table["speed-up low"]), list(table["speed-up high"] - table["speed-up"])]
    ax = plots.plot_speedup(list(table.index), list(table["speed-up"]),
                            f"Grid search speed-up over n_jobs=1, {workload['documents']:,} documents\n"
                            "(median of the repeats; whiskers: their range)", ideal=ideal,
                            errors=errors)
    for label, speedup in zip(ax.texts, table["speed-up"]):  # inside the bar, clear of its whisker
        label.xy = (label.xy[0], speedup / 2)
        label.set_verticalalignment("center")
        label.set_backgroundcolor("white")
    ax.set_ylim(0, max(ideal, float(table["speed-up high"].max())) * 1.15)
    return ax.figure
