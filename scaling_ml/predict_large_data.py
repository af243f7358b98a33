"""Chapter 2 plumbing: train small, predict on data larger than memory.

* :class:`ClassificationGeometry` replays ``make_classification`` once on the client to recover the
  distribution it samples from (cluster centroids, covariance matrices, shift, scale, label noise,
  feature order): these depend on the seed, so a different seed is a different distribution.
* :func:`make_lazy_classification` builds a dask array from that distribution whose chunks are
  drawn on the workers, each from its own seed; its size is one knob and the client never holds it.
* :func:`predict_to_zarr` writes predictions chunk by chunk to a zarr store without gathering them.
* :func:`predict_chunk` / :func:`run_plain_loop` / :func:`run_process_pool`: the same per-chunk work
  done without Dask, the baselines the benchmark compares the Dask pipeline against.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import time
from dataclasses import dataclass, field
from typing import Sequence

import dask
import dask.array as da
import numpy as np
from sklearn.exceptions import NotFittedError
from sklearn.utils import check_random_state
from sklearn.utils.random import sample_without_replacement
from sklearn.utils.validation import check_is_fitted

from . import measure, plots

# The training data of the chapter (the original tutorial's call).
TRAINING_PARAMETERS = dict(n_samples=1000, n_features=2, n_redundant=0, n_informative=2,
                           random_state=1, n_clusters_per_class=1)
# make_classification's defaults that the geometry below reproduces.
_SUPPORTED_DEFAULTS = dict(n_repeated=0, n_classes=2, weights=None, flip_y=0.01, class_sep=1.0,
                           hypercube=True, shift=0.0, scale=1.0, shuffle=True)
BYTES_PER_GIB = 2**30


class PredictLargeDataError(ValueError):
    """Bad input to this chapter's helpers; the message says what is wrong and how to fix it."""


# --------------------------------------------------------------------------------------------
# The distribution behind make_classification


@dataclass
class ClassificationGeometry:
    """Everything ``make_classification`` draws once from its seed; rows are then i.i.d. from it.

    Build it with :meth:`from_make_classification` (same arguments as ``make_classification``);
    :meth:`sample` draws any number of new rows from the same distribution.
    """

    n_features: int
    n_informative: int
    n_classes: int
    centroids: np.ndarray            # (n_clusters, n_informative)
    covariance_factors: np.ndarray   # (n_clusters, n_informative, n_informative): X_k @ A_k
    redundant_factor: np.ndarray     # (n_informative, n_redundant)
    shift: np.ndarray                # (n_features,)
    scale: np.ndarray                # (n_features,)
    feature_order: np.ndarray        # (n_features,): the final column permutation
    cluster_weights: np.ndarray      # (n_clusters,): share of rows in each cluster
    flip_y: float
    replayed: tuple = field(default=None, repr=False)  # (X, y) of the replayed call, to verify

    def __getstate__(self):
        # Workers only need the parameters, not the replayed training data.
        return {**self.__dict__, "replayed": None}

    @property
    def n_clusters(self) -> int:
        return len(self.centroids)

    @classmethod
    def from_make_classification(cls, n_samples=100, n_features=20, *, n_informative=2,
                                 n_redundant=2, n_clusters_per_class=2, random_state=None,
                                 **options) -> "ClassificationGeometry":
        """Replay ``make_classification(...)`` draw by draw, keeping what defines the distribution.

        Only the arguments of the chapter's call are supported (the other ones must keep
        make_classification's defaults). ``geometry.replayed`` holds the (X, y) the call returns.
        """
        unsupported = {name: value for name, value in options.items()
                       if name not in _SUPPORTED_DEFAULTS or _SUPPORTED_DEFAULTS[name] != value}
        if unsupported:
            raise PredictLargeDataError(
                f"make_classification options {sorted(unsupported)} are not supported here; keep "
                f"their defaults ({ {k: _SUPPORTED_DEFAULTS.get(k) for k in unsupported} })."
            )
        if random_state is None or isinstance(random_state, np.random.RandomState):
            raise PredictLargeDataError(
                "random_state must be a fixed integer seed (for example random_state=1): the "
                "distribution itself is drawn from it, so without a seed it cannot be reproduced."
            )
        n_classes, flip_y = 2, _SUPPORTED_DEFAULTS["flip_y"]
        generator = check_random_state(random_state)
        n_clusters = n_classes * n_clusters_per_class
        n_random = n_features - n_informative - n_redundant
        if n_random < 0 or n_informative > 30 or n_informative < np.log2(n_clusters):
            raise PredictLargeDataError(
                f"Need n_informative + n_redundant <= n_features, n_informative <= 30 and "
                f"2**n_informative >= {n_clusters} clusters; got n_features={n_features}, "
                f"n_informative={n_informative}, n_redundant={n_redundant}."
            )
        weights = [1.0 / n_classes] * n_classes
        per_cluster = [int(n_samples * weights[k % n_classes] / n_clusters_per_class)
                       for k in range(n_clusters)]
        for i in range(n_samples - sum(per_cluster)):
            per_cluster[i % n_clusters] += 1

        # The same draws, in the same order, as sklearn 1.7's make_classification.
        codes = sample_without_replacement(2**n_informative, n_clusters, random_state=generator)
        codes = codes.astype(">u4", copy=False)
        centroids = np.unpackbits(codes.view(">u1")).reshape((-1, 32))[:, -n_informative:]
        centroids = centroids.astype(float) * 2 - 1  # class_sep = 1
        X = np.zeros((n_samples, n_features))
        y = np.zeros(n_samples, dtype=int)
        X[:, :n_informative] = generator.standard_normal(size=(n_samples, n_informative))
        factors, stop = [], 0
        for k, centroid in enumerate(centroids):
            start, stop = stop, stop + per_cluster[k]
            y[start:stop] = k % n_classes
            factor = 2 * generator.uniform(size=(n_informative, n_informative)) - 1
            X[start:stop, :n_informative] = X[start:stop, :n_informative] @ factor + centroid
            factors.append(factor)
        redundant = np.zeros((n_informative, n_redundant))
        if n_redundant > 0:
            redundant = 2 * generator.uniform(size=(n_informative, n_redundant)) - 1
            X[:, n_informative:n_informative + n_redundant] = X[:, :n_informative] @ redundant
        if n_random > 0:
            X[:, -n_random:] = generator.standard_normal(size=(n_samples, n_random))
        flip_mask = generator.uniform(size=n_samples) < flip_y
        y[flip_mask] = generator.randint(n_classes, size=flip_mask.sum())
        # make_classification's defaults shift=0.0 and scale=1.0 draw nothing.
        shift, scale = np.zeros(n_features), np.ones(n_features)
        rows = np.arange(n_samples)
        generator.shuffle(rows)  # what sklearn.utils.shuffle does with this generator
        X, y = X[rows], y[rows]
        order = np.arange(n_features)
        generator.shuffle(order)
        X = X[:, order]
        return cls(n_features=n_features, n_informative=n_informative, n_classes=n_classes,
                   centroids=centroids, covariance_factors=np.array(factors),
                   redundant_factor=redundant, shift=shift, scale=scale, feature_order=order,
                   cluster_weights=np.array(weights * n_clusters_per_class) / n_clusters_per_class,
                   flip_y=flip_y, replayed=(X, y))

    def cluster_sizes(self, n_rows: int) -> np.ndarray:
        """Rows per cluster, split as make_classification splits them (remainder to the first)."""
        sizes = (n_rows * self.cluster_weights).astype(int)
        sizes[: n_rows - sizes.sum()] += 1
        return sizes

    def sample_block(self, n_rows: int, seed) -> np.ndarray:
        """``n_rows`` new rows drawn from ``seed``, as one (n_rows, n_features + 1) float array:
        the features, then the label (one array, so that a chunk is drawn once for X and y).

        As make_classification: exact cluster sizes, rows in random order, then label noise.
        The rows are built in place, column by column, to keep memory traffic low.
        """
        rng = np.random.default_rng(seed)
        n_informative, n_features = self.n_informative, self.n_features
        n_redundant = self.redundant_factor.shape[1]
        # The cluster of every row: exact sizes, in random order.
        clusters = np.repeat(np.arange(self.n_clusters, dtype=np.int8), self.cluster_sizes(n_rows))
        rng.shuffle(clusters)
        informative = rng.standard_normal((n_informative, n_rows))
        block = np.empty((n_rows, n_features + 1))
        # Original feature j ends up in column destination[j] (make_classification's final
        # feature shuffle).
        destination = np.argsort(self.feature_order)
        values = np.empty((n_informative + n_redundant, n_rows))
        for j in range(n_informative):  # X_k @ A_k + centroid_k, one output column at a time
            column = values[j]
            np.take(self.centroids[:, j], clusters, out=column)
            for i in range(n_informative):
                column += informative[i] * np.take(self.covariance_factors[:, i, j], clusters)
        for r in range(n_redundant):
            values[n_informative + r] = self.redundant_factor[:, r] @ values[:n_informative]
        for j in range(n_informative + n_redundant):
            block[:, destination[j]] = values[j]
        for j in range(n_informative + n_redundant, n_features):
            block[:, destination[j]] = rng.standard_normal(n_rows)
        labels = block[:, n_features]
        np.remainder(clusters, self.n_classes, out=labels, casting="unsafe")
        flip_mask = rng.random(n_rows) < self.flip_y
        labels[flip_mask] = rng.integers(self.n_classes, size=int(flip_mask.sum()))
        if np.any(self.shift != 0) or np.any(self.scale != 1):
            block[:, :n_features] += self.shift[self.feature_order]
            block[:, :n_features] *= self.scale[self.feature_order]
        return block

    def sample(self, n_rows: int, seed) -> tuple[np.ndarray, np.ndarray]:
        """``n_rows`` new rows (X, y) of the same distribution, drawn from ``seed``."""
        block = self.sample_block(n_rows, seed)
        return block[:, :-1], block[:, -1].astype(np.int64)


def training_geometry() -> ClassificationGeometry:
    """The distribution of the chapter's training data (``TRAINING_PARAMETERS``)."""
    return ClassificationGeometry.from_make_classification(**TRAINING_PARAMETERS)


# --------------------------------------------------------------------------------------------
# A lazily generated dask array


def _check_size(name: str, value) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise PredictLargeDataError(f"{name} must be a whole number of rows, got {value!r}.")
    if value <= 0:
        raise PredictLargeDataError(
            f"{name} must be at least 1 row, got {value}: pick a positive size (the notebook's "
            "default is small; the `# Scale up:` comment shows a size larger than memory)."
        )
    return int(value)


def chunk_seed(seed: int, chunk_index: int) -> np.random.SeedSequence:
    """The seed of one chunk: independent streams for every (seed, chunk) pair."""
    return np.random.SeedSequence([seed, chunk_index])


def generate_chunk(geometry: ClassificationGeometry, n_rows: int, seed: int,
                   chunk_index: int) -> np.ndarray:
    """One chunk as an (n_rows, n_features + 1) float array: the features, then the label."""
    return geometry.sample_block(n_rows, chunk_seed(seed, chunk_index))


def _generate_block(chunk_index, geometry, chunk_rows, seed):
    # Runs on a worker: chunk_index is this block's one-element slice of arange(n_chunks).
    index = int(chunk_index[0])
    return generate_chunk(geometry, int(chunk_rows[index]), seed, index)


def make_lazy_classification(geometry: ClassificationGeometry, n_rows: int, chunk_rows: int,
                             seed: int = 0):
    """``(X, y)`` dask arrays of ``n_rows`` rows from ``geometry``, ``chunk_rows`` rows a chunk.

    Nothing is drawn until the arrays are computed; each chunk is then drawn on the worker that
    runs it, from ``SeedSequence([seed, chunk_index])``, so the same arguments give the same data.
    """
    n_rows = _check_size("n_rows", n_rows)
    chunk_rows = _check_size("chunk_rows", chunk_rows)
    if not isinstance(geometry, ClassificationGeometry):
        raise PredictLargeDataError(
            "geometry must be a ClassificationGeometry, e.g. "
            "ClassificationGeometry.from_make_classification(**TRAINING_PARAMETERS)."
        )
    sizes = (chunk_rows,) * (n_rows // chunk_rows) + ((n_rows % chunk_rows,) if n_rows % chunk_rows else ())
    chunk_indices = da.arange(len(sizes), chunks=1)
    features_and_label = da.map_blocks(
        _generate_block, chunk_indices, geometry=geometry, chunk_rows=np.array(sizes), seed=seed,
        new_axis=1, chunks=(sizes, (geometry.n_features + 1,)), dtype=np.float64,
        meta=np.empty((0, 0)), name=f"make-classification-{seed}",
    )
    X = features_and_label[:, :-1]
    y = features_and_label[:, -1].astype(np.int64)
    return X, y


def logical_gib(array) -> float:
    return array.nbytes / BYTES_PER_GIB


# --------------------------------------------------------------------------------------------
# Checked prediction helpers


def check_fitted(model) -> None:
    """Raise PredictLargeDataError unless ``model`` (or the estimator it wraps) is fitted."""
    try:
        check_is_fitted(getattr(model, "estimator", model))
    except NotFittedError:
        raise PredictLargeDataError(
            f"{type(model).__name__} is not fitted: call model.fit(X_train, y_train) on the small "
            "training data first, then predict on the large array."
        ) from None


def check_aligned(X, y) -> None:
    """Raise PredictLargeDataError unless X and y are dask arrays with the same row chunks."""
    for name, array in (("X", X), ("y", y)):
        if not isinstance(array, da.Array):
            raise PredictLargeDataError(
                f"{name} must be a dask array, got {type(array).__name__}: wrap NumPy data with "
                "da.from_array(..., chunks=...)."
            )
    if X.chunks[0] != y.chunks[0]:
        raise PredictLargeDataError(
            f"X and y have different row chunks ({len(X.chunks[0])} chunks of {X.chunks[0][:3]}... "
            f"vs {len(y.chunks[0])} chunks of {y.chunks[0][:3]}...), so their blocks do not line "
            "up: rechunk one to the other's chunks, e.g. y = y.rechunk(X.chunks[0])."
        )
    if X.ndim != 2 or len(X.chunks[1]) != 1:
        raise PredictLargeDataError(
            "X must be 2-D with all columns in one chunk (predict works block by block on whole "
            "rows): use X.rechunk({1: -1})."
        )


def predict_to_zarr(model, X, path, y=None):
    """Write ``model.predict(X)`` to a zarr store at ``path`` chunk by chunk, never gathering it.

    With ``y``, the accuracy is computed in the same pass (each chunk is generated once) and
    returned; otherwise None. ``model`` is a fitted ``ParallelPostFit``.
    """
    from dask_ml.metrics import accuracy_score

    check_fitted(model)
    if y is not None:
        check_aligned(X, y)
    elif not isinstance(X, da.Array):
        raise PredictLargeDataError(f"X must be a dask array, got {type(X).__name__}.")
    from numcodecs import Blosc

    predictions = model.predict(X)
    # Bit-shuffled zstd: a column of class labels takes little more than a bit per row on disk.
    store = predictions.to_zarr(str(path), compute=False, overwrite=True,
                                compressor=Blosc(cname="zstd", clevel=3, shuffle=Blosc.BITSHUFFLE))
    if y is None:
        dask.compute(store)
        return None
    accuracy = accuracy_score(y, predictions, compute=False)
    _, accuracy = dask.compute(store, accuracy)
    return float(accuracy)


# --------------------------------------------------------------------------------------------
# The same work without Dask: the baselines


def predict_chunk(estimator, geometry, n_rows: int, seed: int, chunk_index: int) -> int:
    """Generate one chunk, predict it, return how many predictions are right."""
    block = generate_chunk(geometry, n_rows, seed, chunk_index)
    predictions = estimator.predict(block[:, :-1])
    return int((predictions == block[:, -1]).sum())


def chunk_sizes(n_rows: int, chunk_rows: int) -> list[int]:
    n_rows, chunk_rows = _check_size("n_rows", n_rows), _check_size("chunk_rows", chunk_rows)
    return [chunk_rows] * (n_rows // chunk_rows) + ([n_rows % chunk_rows] if n_rows % chunk_rows else [])


def run_plain_loop(estimator, geometry, n_rows, chunk_rows, seed=0) -> float:
    """Accuracy over the chunks, one after the other in this process."""
    sizes = chunk_sizes(n_rows, chunk_rows)
    correct = sum(predict_chunk(estimator, geometry, size, seed, index)
                  for index, size in enumerate(sizes))
    return correct / sum(sizes)


def start_process_pool(n_processes: int = 2):
    """A started ``ProcessPoolExecutor`` (spawned processes, warmed up so timing excludes start-up)."""
    pool = concurrent.futures.ProcessPoolExecutor(
        n_processes, mp_context=multiprocessing.get_context("spawn"))
    list(pool.map(time.sleep, [0.2] * n_processes))
    return pool


def run_process_pool(pool, estimator, geometry, n_rows, chunk_rows, seed=0) -> float:
    """Accuracy over the chunks, spread over ``pool``'s processes."""
    sizes = chunk_sizes(n_rows, chunk_rows)
    futures = [pool.submit(predict_chunk, estimator, geometry, size, seed, index)
               for index, size in enumerate(sizes)]
    return sum(future.result() for future in futures) / sum(sizes)


def time_dask_score(model, geometry, n_rows, chunk_rows, seed=0) -> tuple[float, float]:
    """(seconds, accuracy) of ``model.score`` on a lazily generated array."""
    X, y = make_lazy_classification(geometry, n_rows, chunk_rows, seed)
    check_fitted(model)
    start = time.perf_counter()
    accuracy = model.score(X, y)
    return time.perf_counter() - start, float(accuracy)


def chunk_size_curve(model, geometry, chunk_rows_list: Sequence[int], min_rows: int = 2_000_000,
                     min_chunks: int = 16, max_rows: int = 200_000_000, seed=0) -> list[dict]:
    """Throughput (rows/s) of ``model.score`` for each chunk size, on enough rows for each."""
    points = []
    for chunk_rows in chunk_rows_list:
        n_rows = int(min(max(min_rows, min_chunks * chunk_rows), max_rows))
        seconds, accuracy = time_dask_score(model, geometry, n_rows, chunk_rows, seed)
        points.append(dict(chunk_rows=int(chunk_rows), n_rows=n_rows, n_chunks=-(-n_rows // chunk_rows),
                           seconds=seconds, rows_per_second=n_rows / seconds, accuracy=accuracy))
    return points


# --------------------------------------------------------------------------------------------
# Figures


def plot_chunk_size_curve(points, title="Predict throughput against chunk size", ax=None):
    if ax is None:
        figure, ax = plots.new_figure()
    rows = [point["chunk_rows"] for point in points]
    throughput = [point["rows_per_second"] / 1e6 for point in points]
    ax.plot(rows, throughput, marker="o")
    for x, value in zip(rows, throughput):
        ax.annotate(f"{value:.2g}", (x, value), textcoords="offset points", xytext=(0, 5),
                    ha="center", fontsize="small")
    ax.set_xscale("log")
    ax.set_xlabel("rows per chunk")
    ax.set_ylabel("million rows per second")
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    return ax


def directory_size_gib(path) -> float:
    """Bytes on disk under ``path`` (a zarr store is a folder of chunk files), in GiB."""
    from pathlib import Path

    return sum(file.stat().st_size for file in Path(path).rglob("*") if file.is_file()) / BYTES_PER_GIB


def plot_memory(sampler, title, limit_gib=None):
    frame = measure.memory_frame(sampler)
    return plots.plot_memory_over_time(frame, title, limit_gib=limit_gib)
