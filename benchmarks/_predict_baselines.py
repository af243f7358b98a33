"""Chapter 2's per-block work without Dask's arrays: the baselines of the chapter's benchmark.

A task of the notebook's pipeline (``model.score`` on the arrays of ``lazy_classification``) draws
a block's labels and features with the notebook's ``draw_labels`` and ``draw_features``, copies the
features (Dask's concatenation before ``_predict``), predicts and compares. :func:`score_block` does
exactly that work, copy excepted, with the notebook's own functions (its cells tagged
``reused-by-benchmark``, loaded once per process), so a plain loop, a process pool and Dask futures
can run it.
"""

from __future__ import annotations

import time

import numpy as np
from benchmarks._notebook_cells import run_reused_cells

NOTEBOOK = "02_predict_large_data.ipynb"
_cells: dict | None = None


def notebook_cells() -> dict:
    """The namespace of the notebook's reused cells, loaded once per process (pool processes and
    Dask workers load it on their first block)."""
    global _cells
    if _cells is None:
        _cells = run_reused_cells(NOTEBOOK)
    return _cells


def draw_block(seed: int, rows: int, block_index: int) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of one block, as the lazy arrays of ``lazy_classification(..., seed)`` hold it."""
    cells = notebook_cells()
    y = cells["draw_labels"](seed, rows, block_id=(block_index,))
    X = cells["draw_features"](seed, rows, cells["class_means"], cells["class_factors"],
                               block_id=(block_index, 0))
    return X, y


def score_block(estimator, seed: int, rows: int, block_index: int) -> int:
    """Draw one block, predict it, return how many predictions are right."""
    X, y = draw_block(seed, rows, block_index)
    return int((estimator.predict(X) == y).sum())


def run_plain_loop(estimator, n_blocks: int, rows: int, seed: int = 0) -> float:
    """Accuracy over the blocks, one after the other in this process."""
    return sum(score_block(estimator, seed, rows, index) for index in range(n_blocks)) / (n_blocks * rows)


def run_process_pool(pool, estimator, n_blocks: int, rows: int, seed: int = 0) -> float:
    """Accuracy over the blocks, spread over ``pool``'s processes."""
    futures = [pool.submit(score_block, estimator, seed, rows, index) for index in range(n_blocks)]
    return sum(future.result() for future in futures) / (n_blocks * rows)


def run_dask_futures(client, estimator, n_blocks: int, rows: int, seed: int = 0) -> float:
    """:func:`score_block` as Dask futures (``client.map``): Dask's scheduling and workers without
    the array pipeline. Returns the accuracy."""
    [estimator_future] = client.scatter([estimator], broadcast=True)
    futures = client.map(score_block, [estimator_future] * n_blocks, [seed] * n_blocks,
                         [rows] * n_blocks, range(n_blocks), pure=False)
    correct = sum(client.gather(futures))
    client.cancel([estimator_future])
    return correct / (n_blocks * rows)


def block_cost_breakdown(estimator, rows: int, seed: int = 0, repeats: int = 5) -> dict:
    """Median seconds of each step of one block's work, in this process.

    The steps of :func:`score_block`, and the one the Dask pipeline adds: ``ParallelPostFit.predict``
    is a ``map_blocks(..., drop_axis=1)``, and Dask concatenates each block along the dropped
    feature axis before predicting, a copy of the block even when that axis is one chunk.
    """
    from dask.array.core import concatenate_axes

    cells = notebook_cells()
    steps: dict[str, list[float]] = {}
    for repeat in range(repeats):
        timings = {}
        start = time.perf_counter()
        y = cells["draw_labels"](seed, rows, block_id=(repeat,))
        timings["draw labels"] = time.perf_counter() - start
        start = time.perf_counter()
        X = cells["draw_features"](seed, rows, cells["class_means"], cells["class_factors"],
                                   block_id=(repeat, 0))
        timings["draw features"] = time.perf_counter() - start
        start = time.perf_counter()
        concatenate_axes([X], [1])
        timings["Dask's block copy (pipeline only)"] = time.perf_counter() - start
        start = time.perf_counter()
        predictions = estimator.predict(X)
        timings["predict"] = time.perf_counter() - start
        start = time.perf_counter()
        int((predictions == y).sum())
        timings["compare"] = time.perf_counter() - start
        for step, seconds in timings.items():
            steps.setdefault(step, []).append(seconds)
    return {step: float(np.median(values)) for step, values in steps.items()}


def skip_single_block_copy():
    """On a worker: let Dask pass a lone block to the function instead of a concatenated copy.

    Only for the benchmark's diagnostic row; it changes Dask in that worker process for good.
    """
    import dask.array.core

    concatenate_axes = dask.array.core.concatenate_axes
    if getattr(concatenate_axes, "skips_single_block", False):
        return

    def concatenate_or_pass(arrays, axes):
        if len(arrays) == 1 and not isinstance(arrays[0], list):
            return arrays[0]
        return concatenate_axes(arrays, axes)

    concatenate_or_pass.skips_single_block = True
    dask.array.core.concatenate_axes = concatenate_or_pass
