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
import contextlib
import multiprocessing
import os
import textwrap
import threading
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

from . import data, measure, plots

# The training data of the chapter (the original tutorial's call).
TRAINING_PARAMETERS = dict(n_samples=1000, n_features=2, n_redundant=0, n_informative=2,
                           random_state=1, n_clusters_per_class=1)
# make_classification's defaults that the geometry below reproduces.
_SUPPORTED_DEFAULTS = dict(n_repeated=0, n_classes=2, weights=None, flip_y=0.01, class_sep=1.0,
                           hypercube=True, shift=0.0, scale=1.0, shuffle=True)
BYTES_PER_GIB = 2**30
# A chunk's independent random streams (children of its seed).
_CLUSTERS, _FEATURES, _LABEL_NOISE = range(3)
# Rows per block when drawing X: 16,384 rows of temporaries (128 KiB each) fit in the CPU's cache.
_BLOCK_ROWS = 1 << 14


# Each thread's last cluster draw: (key, clusters); see ClassificationGeometry.sample_clusters.
_last_clusters = threading.local()


def _seed_sequence(seed) -> np.random.SeedSequence:
    return seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)


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
                   flip_y=flip_y, replayed=(X, y))

    def _stream(self, seed, stream: int) -> np.random.Generator:
        """One of a chunk's independent random streams (clusters, features, label noise)."""
        sequence = _seed_sequence(seed)
        # What SeedSequence.spawn gives its child number ``stream``, without spawn's state.
        return np.random.default_rng(np.random.SeedSequence(
            sequence.entropy, spawn_key=tuple(sequence.spawn_key) + (stream,)))

    def sample_clusters(self, n_rows: int, seed) -> np.ndarray:
        """The cluster of each of ``n_rows`` new rows (uint8, read-only); equal weights, as the
        call's ``weights=None``. Rows are i.i.d.: cluster sizes vary as in any fresh sample.

        X and y of a chunk are separate tasks that both need these (see
        :func:`make_lazy_classification`). Dask runs the two in one thread, one after the other,
        so the thread keeps its last draw and the second task reuses it instead of drawing again.
        For a power-of-two number of clusters, the draw is the low bits of random bytes (exactly
        uniform).
        """
        sequence = _seed_sequence(seed)
        entropy = sequence.entropy
        key = (self.n_clusters, n_rows, tuple(entropy) if isinstance(entropy, list) else entropy,
               tuple(sequence.spawn_key))
        last = getattr(_last_clusters, "draw", None)
        if last is not None and last[0] == key:
            return last[1]
        rng = self._stream(sequence, _CLUSTERS)
        if self.n_clusters & (self.n_clusters - 1) == 0 and self.n_clusters <= 256:
            clusters = (rng.integers(0, 256, size=n_rows, dtype=np.uint8)
                        & np.uint8(self.n_clusters - 1))
        else:
            clusters = rng.integers(self.n_clusters, size=n_rows,
                                    dtype=np.uint8 if self.n_clusters <= 256 else np.int64)
        clusters.flags.writeable = False  # shared by X and y
        _last_clusters.draw = (key, clusters)
        return clusters

    def sample_features(self, n_rows: int, seed, clusters: np.ndarray | None = None) -> np.ndarray:
        """X of ``n_rows`` new rows, an (n_rows, n_features) float array.

        ``clusters``: this seed's :meth:`sample_clusters`, if already drawn.
        """
        if clusters is None:
            clusters = self.sample_clusters(n_rows, seed)
        rng = self._stream(seed, _FEATURES)
        n_informative, n_features = self.n_informative, self.n_features
        n_redundant = self.redundant_factor.shape[1]
        informative = rng.standard_normal((n_informative, n_rows))
        X = np.empty((n_rows, n_features))
        # Original feature j ends up in column destination[j] (make_classification's final
        # feature shuffle).
        destination = np.argsort(self.feature_order)
        centroids = np.ascontiguousarray(self.centroids.T)                 # [j] -> per cluster
        factors = np.ascontiguousarray(self.covariance_factors.transpose(2, 1, 0))  # [j, i]
        # X_k @ A_k + centroid_k, a block of rows at a time: the temporaries stay in the CPU's
        # cache instead of allocating (and page-faulting) whole columns, which made drawing X
        # memory-bound. Same values as whole columns, bit for bit.
        block_rows = min(_BLOCK_ROWS, n_rows)
        values = np.empty((n_informative + n_redundant, block_rows))
        term = np.empty(block_rows)
        for start in range(0, n_rows, block_rows):
            stop = min(start + block_rows, n_rows)
            rows, block_clusters = stop - start, clusters[start:stop]
            for j in range(n_informative):
                column = values[j, :rows]
                np.take(centroids[j], block_clusters, out=column)
                for i in range(n_informative):
                    np.take(factors[j, i], block_clusters, out=term[:rows])
                    term[:rows] *= informative[i, start:stop]
                    column += term[:rows]
            for r in range(n_redundant):
                values[n_informative + r, :rows] = (self.redundant_factor[:, r]
                                                    @ values[:n_informative, :rows])
            for j in range(n_informative + n_redundant):
                X[start:stop, destination[j]] = values[j, :rows]
        for j in range(n_informative + n_redundant, n_features):
            X[:, destination[j]] = rng.standard_normal(n_rows)
        if np.any(self.shift != 0) or np.any(self.scale != 1):
            X += self.shift[self.feature_order]
            X *= self.scale[self.feature_order]
        return X

    def sample_labels(self, n_rows: int, seed, clusters: np.ndarray | None = None) -> np.ndarray:
        """y of ``n_rows`` new rows (int64): the class of the row's cluster, then label noise.

        As make_classification, a share ``flip_y`` of the rows gets a random class; the number of
        such rows is drawn from its binomial distribution and their places uniformly, which is the
        same distribution as one coin per row and much cheaper to draw.
        """
        if clusters is None:
            clusters = self.sample_clusters(n_rows, seed)
        rng = self._stream(seed, _LABEL_NOISE)
        class_of_cluster = np.arange(self.n_clusters, dtype=np.int64) % self.n_classes
        y = class_of_cluster[clusters]  # a lookup is cheaper than % on every row
        n_flipped = int(rng.binomial(n_rows, self.flip_y))
        y[rng.choice(n_rows, size=n_flipped, replace=False)] = rng.integers(self.n_classes,
                                                                           size=n_flipped)
        return y

    def sample(self, n_rows: int, seed) -> tuple[np.ndarray, np.ndarray]:
        """``n_rows`` new rows (X, y) of the same distribution, drawn from ``seed``.

        X and y come from separate streams of the seed (sharing only the rows' clusters), so
        :meth:`sample_features` and :meth:`sample_labels` alone give the same X and y.
        """
        clusters = self.sample_clusters(n_rows, seed)
        return (self.sample_features(n_rows, seed, clusters),
                self.sample_labels(n_rows, seed, clusters))


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
                   chunk_index: int) -> tuple[np.ndarray, np.ndarray]:
    """One chunk's (X, y), as the lazy arrays of :func:`make_lazy_classification` hold it."""
    return geometry.sample(n_rows, chunk_seed(seed, chunk_index))


def _chunk_of(block_info) -> tuple[int, int]:
    """(chunk number, rows) of the block a map_blocks call is computing."""
    info = block_info[None]
    return info["chunk-location"][0], info["chunk-shape"][0]


def _generate_features(geometry, seed, block_info=None):
    # Runs on a worker, once per chunk; block_info says which chunk.
    index, n_rows = _chunk_of(block_info)
    return geometry.sample_features(n_rows, chunk_seed(seed, index))


def _generate_labels(geometry, seed, block_info=None):
    index, n_rows = _chunk_of(block_info)
    return geometry.sample_labels(n_rows, chunk_seed(seed, index))


def make_lazy_classification(geometry: ClassificationGeometry, n_rows: int, chunk_rows: int,
                             seed: int = 0):
    """``(X, y)`` dask arrays of ``n_rows`` rows from ``geometry``, ``chunk_rows`` rows a chunk.

    Nothing is drawn until the arrays are computed; each chunk is then drawn on the worker that
    runs it, from ``SeedSequence([seed, chunk_index])``, so the same arguments give the same data.
    X and y are separate ``map_blocks`` with no input array (y draws only the rows' clusters and
    label noise), so that Dask fuses drawing a chunk with predicting and scoring it.
    """
    n_rows = _check_size("n_rows", n_rows)
    chunk_rows = _check_size("chunk_rows", chunk_rows)
    if not isinstance(geometry, ClassificationGeometry):
        raise PredictLargeDataError(
            "geometry must be a ClassificationGeometry, e.g. "
            "ClassificationGeometry.from_make_classification(**TRAINING_PARAMETERS)."
        )
    sizes = tuple(chunk_sizes(n_rows, chunk_rows))
    # map_blocks appends a hash of the function and its arguments to these names: the same
    # recipe gives the same keys, in any process; another recipe other keys.
    X = da.map_blocks(
        _generate_features, geometry, seed, chunks=(sizes, (geometry.n_features,)),
        dtype=np.float64, meta=np.empty((0, 0)), name="make-classification-X",
    )
    y = da.map_blocks(
        _generate_labels, geometry, seed, chunks=(sizes,), dtype=np.int64,
        meta=np.empty((0,), dtype=np.int64), name="make-classification-y",
    )
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
    data.check_row_blocks(X, y, PredictLargeDataError)


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
    X, y = generate_chunk(geometry, n_rows, seed, chunk_index)
    return int((estimator.predict(X) == y).sum())


def chunk_sizes(n_rows: int, chunk_rows: int) -> list[int]:
    n_rows, chunk_rows = _check_size("n_rows", n_rows), _check_size("chunk_rows", chunk_rows)
    return [chunk_rows] * (n_rows // chunk_rows) + ([n_rows % chunk_rows] if n_rows % chunk_rows else [])


def run_plain_loop(estimator, geometry, n_rows, chunk_rows, seed=0) -> float:
    """Accuracy over the chunks, one after the other in this process."""
    sizes = chunk_sizes(n_rows, chunk_rows)
    correct = sum(predict_chunk(estimator, geometry, size, seed, index)
                  for index, size in enumerate(sizes))
    return correct / sum(sizes)


# glibc's malloc reads these when a process starts. Dask's nanny sets the first for its workers
# (``distributed.nanny.pre-spawn-environ``) so that freed memory goes back to the OS at once.
MALLOC_VARIABLES = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_ARENA_MAX")
# Process memory settings the benchmark compares, each given to the pool and the workers alike.
DASK_DEFAULT_SETTINGS = "Dask's default"
MEMORY_SETTINGS = {
    # What Dask's workers get by default: every free of more than 64 KiB returns memory to the OS.
    DASK_DEFAULT_SETTINGS: {"MALLOC_TRIM_THRESHOLD_": "65536"},
    # Nothing set: what a plain Python process gets.
    "glibc's default": {},
    # Arrays up to 1 GiB come from memory the process keeps and reuses: no page faults per chunk,
    # at the price of holding on to freed memory (Dask reports it as unmanaged memory).
    "memory kept": {"MALLOC_MMAP_THRESHOLD_": str(2**30), "MALLOC_TRIM_THRESHOLD_": str(2**32),
                    "MALLOC_ARENA_MAX": "1"},
}


# Dask's scheduling defaults protect graphs that hold chunks in memory; for a stream of
# independent chunks, each reduced to a few numbers on its worker, two of them cost throughput on
# a small machine (the benchmark measures both ways):
THROUGHPUT_SCHEDULING = {
    # Queuing (a saturation of 1.1) sends a worker its next chunk only once the scheduler has
    # heard that it is ready for one, a round trip in which the worker's core can sit idle;
    # inf sends every chunk at once. Safe here because a chunk's result is a few numbers: with
    # results as big as the chunks, queuing is what keeps the workers' memory in check.
    "distributed.scheduler.worker-saturation": float("inf"),
    # Each worker samples its threads' stacks for the dashboard's Profile page, every
    # distributed.worker.profile.interval, taking Python's lock from the computing thread.
    "distributed.worker.profile.enabled": False,
}


def _check_memory_settings(settings) -> dict | None:
    if settings is None:
        return None
    unknown = sorted(set(settings) - set(MALLOC_VARIABLES)) if isinstance(settings, dict) else None
    if unknown is None or unknown:
        raise PredictLargeDataError(
            f"memory settings must be a dict of {', '.join(MALLOC_VARIABLES)} (or one of "
            f"MEMORY_SETTINGS: {', '.join(MEMORY_SETTINGS)}), got {settings!r}."
        )
    return {name: str(value) for name, value in settings.items()}


@contextlib.contextmanager
def process_environment(settings: dict | None):
    """Within the block, ``os.environ`` has exactly ``settings`` of the malloc variables (the
    others unset), so processes started inside inherit them; afterwards it is as it was.

    Dask's nanny writes its workers' settings into the starting process's ``os.environ`` and
    leaves them there: a process pool started later would silently inherit them. Start pools and
    clusters inside this block to give each the settings you mean. ``None`` changes nothing.
    """
    settings = _check_memory_settings(settings)
    saved = dict(os.environ)
    try:
        if settings is not None:
            for name in MALLOC_VARIABLES:
                os.environ.pop(name, None)
            os.environ.update(settings)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def start_process_pool(n_processes: int = 2, memory_settings: dict | None = None):
    """A started ``ProcessPoolExecutor`` (spawned processes, warmed up so timing excludes start-up).

    ``memory_settings``: malloc variables for its processes (see :data:`MEMORY_SETTINGS`).
    """
    with process_environment(memory_settings):
        pool = concurrent.futures.ProcessPoolExecutor(
            n_processes, mp_context=multiprocessing.get_context("spawn"))
        # Processes start on first use: while the environment is still set.
        list(pool.map(time.sleep, [0.2] * n_processes))
    return pool


def start_local_cluster(n_workers: int = 2, memory_settings: dict | None = None,
                        dask_config: dict | None = None):
    """A client of a new local cluster whose workers start with ``memory_settings`` (malloc
    variables, see :data:`MEMORY_SETTINGS`) in place of Dask's own; ``None``: Dask's own.

    ``dask_config``: Dask configuration for the cluster's scheduler and workers while they start,
    e.g. :data:`THROUGHPUT_SCHEDULING`; it does not stay set in this process.
    """
    from . import cluster

    settings = _check_memory_settings(memory_settings)
    if dask_config is not None and not (isinstance(dask_config, dict)
                                        and all(isinstance(key, str) for key in dask_config)):
        raise PredictLargeDataError(
            "dask_config must be a dict of Dask configuration keys, such as "
            f"chapter.THROUGHPUT_SCHEDULING, got {dask_config!r}."
        )
    config = dict(dask_config or {})
    if settings is not None:
        environ = {name: value for name, value
                   in dask.config.get("distributed.nanny.pre-spawn-environ").items()
                   if name not in MALLOC_VARIABLES}
        config["distributed.nanny.pre-spawn-environ"] = {**environ, **settings}
    with process_environment(settings), dask.config.set(config):
        return cluster.get_client(n_workers=n_workers, local=True)


def run_process_pool(pool, estimator, geometry, n_rows, chunk_rows, seed=0) -> float:
    """Accuracy over the chunks, spread over ``pool``'s processes."""
    sizes = chunk_sizes(n_rows, chunk_rows)
    futures = [pool.submit(predict_chunk, estimator, geometry, size, seed, index)
               for index, size in enumerate(sizes)]
    return sum(future.result() for future in futures) / sum(sizes)


def run_dask_futures(client, estimator, geometry, n_rows, chunk_rows, seed=0) -> float:
    """The baselines' per-chunk function as Dask futures (``client.map``): Dask's scheduling
    and workers without the array pipeline. Returns the accuracy."""
    sizes = chunk_sizes(n_rows, chunk_rows)
    [estimator_future] = client.scatter([estimator], broadcast=True)
    futures = client.map(predict_chunk, [estimator_future] * len(sizes), [geometry] * len(sizes),
                         sizes, [seed] * len(sizes), range(len(sizes)), pure=False)
    correct = sum(client.gather(futures))
    client.cancel([estimator_future])
    return correct / sum(sizes)


def chunk_cost_breakdown(estimator, geometry, chunk_rows: int, seed: int = 0,
                         repeats: int = 5) -> dict:
    """Median seconds of each step of one chunk's work, in this process.

    The steps of the plain pool (draw the clusters, X and y; predict; compare), and the one the
    Dask pipeline adds: ``ParallelPostFit.predict`` is a ``map_blocks(..., drop_axis=1)``, and
    Dask concatenates each block along the dropped feature axis before predicting, a copy of the
    block even when that axis is one chunk.
    """
    from dask.array.core import concatenate_axes

    chunk_rows = _check_size("chunk_rows", chunk_rows)
    steps = {}
    for repeat in range(repeats):
        sequence = chunk_seed(seed, repeat)
        timings = {}
        start = time.perf_counter()
        clusters = geometry.sample_clusters(chunk_rows, sequence)
        timings["draw clusters"] = time.perf_counter() - start
        start = time.perf_counter()
        X = geometry.sample_features(chunk_rows, sequence, clusters)
        timings["draw X"] = time.perf_counter() - start
        start = time.perf_counter()
        y = geometry.sample_labels(chunk_rows, sequence, clusters)
        timings["draw y"] = time.perf_counter() - start
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


def plot_throughput_by_settings(rates: dict, title="Throughput on 2 cores, by process and cluster settings",
                                methods: Sequence[str] | None = None, ax=None):
    """Grouped bars of million rows/s: one group per setting (a column of the benchmark's
    table), one bar per method.

    ``rates``: {setting: {method: rows per second}}, as the benchmark's summary holds them; a
    method missing from a setting leaves a gap. ``methods``: the bars' order (default: as found).
    """
    if ax is None:
        figure, ax = plots.new_figure(width=9)
    settings = list(rates)
    if methods is None:
        methods = list(dict.fromkeys(method for by_method in rates.values() for method in by_method))
    width = 0.8 / len(methods)
    for number, method in enumerate(methods):
        points = [(index + (number - (len(methods) - 1) / 2) * width, rates[setting][method] / 1e6)
                  for index, setting in enumerate(settings) if method in rates[setting]]
        bars = ax.bar([x for x, _ in points], [value for _, value in points], width, label=method,
                      color=plots.COLOURS[number % len(plots.COLOURS)])
        for bar, (_, value) in zip(bars, points):
            ax.annotate(f"{value:.0f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", xytext=(0, 2), textcoords="offset points",
                        fontsize="x-small")
    # Long names on two lines, so that neighbouring groups' labels do not run into each other.
    ax.set_xticks(range(len(settings)), [textwrap.fill(setting, 20) for setting in settings])
    ax.set_ylabel("million rows per second")
    ax.set_ylim(0, 1.45 * max(rate for by_method in rates.values() for rate in by_method.values()) / 1e6)
    ax.set_title(title)
    ax.legend(fontsize="small", loc="upper center", ncol=3)
    return ax


def directory_size_gib(path) -> float:
    """Bytes on disk under ``path`` (a zarr store is a folder of chunk files), in GiB."""
    from pathlib import Path

    return sum(file.stat().st_size for file in Path(path).rglob("*") if file.is_file()) / BYTES_PER_GIB


def plot_memory(sampler, title, limit_gib=None):
    frame = measure.memory_frame(sampler)
    return plots.plot_memory_over_time(frame, title, limit_gib=limit_gib)
