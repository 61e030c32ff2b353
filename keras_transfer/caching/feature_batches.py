"""Cached features in memory or on disk, and the `tf.data` pipeline that reads them.

`FeatureBatches` collects a split's features (and labels, sample weights)
batch by batch: as NumPy arrays up to a memory limit, and beyond it as raw
files opened with `np.memmap`, so that any row can be read without loading
the rest. `FeatureSource.dataset` reads them for Keras' `fit` in batches of
sample indices, drawn as Keras shuffles arrays (for arrays: the batches of
an uncached fit) or in a new permutation each epoch (for a `tf.data` input
that reshuffles). Memory stays within the limit plus a few batches, and a
disk-backed cache trains on the same batches as an in-memory one; a
shuffle buffer, which held `limit // bytes per sample` rows (one row at a
limit of 0), would keep class-sorted data in class-sorted batches. A source
can be pointed at other features until an epoch starts reading (the
session does so when a callback restored other frozen weights).
"""

import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from keras_transfer.errors import ConfigurationError
from keras_transfer.utils.internals import array_index_batches
from keras_transfer.utils.pipelines import parallel_calls
from keras_transfer.utils.pipelines import prefetched


_SPILL_CHUNK_BYTES = 256 * 2**20


def slice_structure(value, start, stop):
    if value is None:
        return None
    return keras.tree.map_structure(lambda v: np.asarray(v)[start:stop], value)


def array_batches(x, y, sample_weight, batch_size):
    x = np.asarray(x)
    for start in range(0, len(x), batch_size):
        stop = start + batch_size
        yield (
            x[start:stop],
            slice_structure(y, start, stop),
            slice_structure(sample_weight, start, stop),
        )


def dataset_batches(dataset):
    for batch in dataset:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
        yield x, _to_numpy(y), _to_numpy(sample_weight)


def _to_numpy(value):
    if value is None:
        return None
    return keras.tree.map_structure(lambda v: np.asarray(v), value)


def _nbytes(structure):
    if structure is None:
        return 0
    return sum(np.asarray(v).nbytes for v in keras.tree.flatten(structure))


def _concat(parts):
    if parts[0] is None:
        return None
    return keras.tree.map_structure(lambda *v: np.concatenate(v), *parts)


def _columns(features, y, sample_weight):
    """One flat {column name: array} for a batch: features, label and weight leaves."""
    columns = {f"feature/{name}": np.asarray(v) for name, v in features.items()}
    for prefix, value in (("y", y), ("sample_weight", sample_weight)):
        if value is not None:
            for i, leaf in enumerate(keras.tree.flatten(value)):
                columns[f"{prefix}/{i}"] = np.asarray(leaf)
    return columns


class FeatureBatches:
    """A split's features, labels and sample weights: in memory, or on disk past a limit.

    After `finish`, `columns` maps each column name (`feature/<name>`,
    `y/<leaf>`, `sample_weight/<leaf>`) to an array of `count` rows: a NumPy
    array in memory, or an `np.memmap` of a raw file on disk.

    Args:
        directory_fn: returns the folder under which features spill (called
            at the first spill; each `FeatureBatches` writes in its own
            subfolder, `directory`).
        label: `"train"` or `"validation"`, for names and messages.
        limit: int, bytes kept in memory; beyond, everything goes to disk.

    Example:

    ```python
    batches = FeatureBatches(lambda: "/tmp", "train", limit=0)
    batches.add({"f": np.ones((4, 3), "float32")}, np.arange(4), None)
    batches.finish()
    batches.storage, batches.columns["feature/f"].shape  # ('disk', (4, 3))
    ```
    """

    def __init__(self, directory_fn, label, limit):
        self._directory_fn = directory_fn
        self._label = label
        self._limit = limit
        self._parts = []
        self._part_bytes = 0
        self._files = {}  # column -> (path, dtype, row shape)
        self._rows_on_disk = 0
        self.directory = None  # its own folder, for features on disk
        self.storage = "memory"
        self.count = 0
        self.nbytes = 0
        self.batch_size = None
        # A batch after a short one, or larger than the first: the cache
        # batches by one size, so such data cannot train as it would uncached.
        self.uneven = False
        self._short_seen = False
        self.columns = None
        self.y_structure = self.sample_weight_structure = None

    def add(self, features, y, sample_weight):
        size = len(next(iter(features.values())))
        columns = _columns(features, y, sample_weight)
        if self.batch_size is None:
            self.batch_size = size
            # Only the nesting: the pipeline packs label and weight columns in it.
            self.y_structure, self.sample_weight_structure = (
                None if v is None else keras.tree.map_structure(lambda _: 0, v)
                for v in (y, sample_weight)
            )
            for name, array in columns.items():
                if array.dtype.kind not in "biufc":
                    raise ConfigurationError(
                        f"The {self._label} {name.split('/')[0]} has dtype "
                        f"{array.dtype}: the frozen-feature cache needs numbers. "
                        "Pass numeric labels and weights, or build the model "
                        "with cache_frozen_features=False."
                    )
        if size > self.batch_size or self._short_seen:
            self.uneven = True
        self._short_seen = self._short_seen or size < self.batch_size
        nbytes = _nbytes(features) + _nbytes(y) + _nbytes(sample_weight)
        self.count += size
        self.nbytes += nbytes
        self._parts.append(columns)
        self._part_bytes += nbytes
        if self.storage == "memory" and self.nbytes > self._limit:
            self.storage = "disk"
        if self.storage == "disk" and self._part_bytes >= min(
            _SPILL_CHUNK_BYTES, max(self._limit // 2, 1)
        ):
            self._spill()

    def _spill(self):
        if not self._parts:
            return
        if not self._files:
            # A folder of its own: features computed again in the same fit
            # never write into files that a pipeline still reads.
            self.directory = tempfile.mkdtemp(prefix=f"{self._label}_", dir=self._directory_fn())
            for name, array in self._parts[0].items():
                path = os.path.join(self.directory, f"{len(self._files)}.bin")
                self._files[name] = (path, array.dtype, array.shape[1:])
        chunk = _concat(self._parts)
        for name, (path, dtype, shape) in self._files.items():
            array = chunk[name]
            if array.shape[1:] != shape:
                raise ConfigurationError(
                    f"The {self._label} batches differ in shape ({name}: "
                    f"{shape} then {array.shape[1:]})."
                )
            with open(path, "ab") as f:
                np.ascontiguousarray(array.astype(dtype, casting="same_kind", copy=False)).tofile(f)
        self._rows_on_disk += len(next(iter(chunk.values())))
        self._parts, self._part_bytes = [], 0

    def finish(self):
        if self.storage == "disk":
            self._spill()
        # The directory function belongs to the fit's session: a store kept
        # in a FeatureStore must not keep the fit's model alive.
        self._directory_fn = None
        if self.count == 0:
            raise ConfigurationError(f"The {self._label} data is empty.")
        if self.storage == "disk":
            self.columns = {
                name: np.memmap(path, dtype=dtype, mode="r", shape=(self._rows_on_disk, *shape))
                for name, (path, dtype, shape) in self._files.items()
            }
        else:
            self.columns = _concat(self._parts)
        self._parts = []

    def signature(self, rename):
        """(dtype, row shape) of each column a fit reads, features under its names."""
        columns = {
            f"feature/{name}": self.columns[f"feature/{stored}"] for name, stored in rename.items()
        }
        columns.update({k: v for k, v in self.columns.items() if not k.startswith("feature/")})
        return {k: (v.dtype, v.shape[1:]) for k, v in sorted(columns.items())}


def _read_rows(columns, indices):
    """The rows `indices` of each column, read in increasing order for locality."""
    if (
        len(indices)
        and indices[-1] - indices[0] == len(indices) - 1
        and np.all(np.diff(indices) == 1)
    ):
        start, stop = int(indices[0]), int(indices[-1]) + 1
        return [np.array(c[start:stop]) for c in columns]
    order = np.argsort(indices, kind="stable")
    rows = indices[order]
    restore = np.empty_like(order)
    restore[order] = np.arange(len(order))
    return [np.asarray(c[rows])[restore] for c in columns]


class FeatureSource:
    """The features that a fit's pipelines read, and the pipelines.

    The pipeline reads through the source at each batch: `use` points it at
    other features of the same shapes, from the next epoch on.

    Args:
        batches: a finished `FeatureBatches`.
        rename: dict, feature name in the fit -> name in `batches` (features
            from a `FeatureStore` keep the names of the fit that made them).

    Example:

    ```python
    source = FeatureSource(batches, {"f": "f"})
    model_fit_x = source.dataset(32, shuffle=True)  # ({"f": ...}, y) batches
    ```
    """

    def __init__(self, batches, rename):
        self.batches = batches
        self.rename = dict(rename)
        self._signature = batches.signature(rename)

    def use(self, batches, rename):
        """Reads `batches` from now on: from the next epoch, for a pipeline in use."""
        if batches.signature(rename) != self._signature:
            raise ConfigurationError(
                "The recomputed frozen features differ in shape or dtype from "
                "the first ones. Build the model with cache_frozen_features=False."
            )
        self.batches, self.rename = batches, dict(rename)

    def _read(self, indices):
        batches, rename = self.batches, self.rename
        columns = [
            batches.columns[
                f"feature/{rename[name.split('/', 1)[1]]}" if name.startswith("feature/") else name
            ]
            for name in self._signature
        ]
        return _read_rows(columns, indices)

    def dataset(self, batch_size, shuffle=False, reshuffle_each_epoch=True):
        """Batches of `(features, y[, sample_weight])` for Keras' `fit`.

        Args:
            batch_size: int, samples per batch (the last one may be smaller).
            shuffle: False (stored order), True, or `"batch"` (as Keras'
                `fit(shuffle="batch")`).
            reshuffle_each_epoch: with `shuffle`, True draws a new order at
                every epoch, also under `keras.utils.set_random_seed`; False
                draws the order exactly as Keras' `fit` does for arrays, so
                that a cached fit matches an uncached one.
        """
        count = self.batches.count
        if shuffle is True and reshuffle_each_epoch:
            indices = _new_order_each_epoch(count, batch_size)
        elif shuffle:
            indices = array_index_batches(count, batch_size, shuffle)
        else:
            indices = tf.data.Dataset.range(count).batch(batch_size)
        names = list(self._signature)
        dtypes = [tf.as_dtype(dtype) for dtype, _ in self._signature.values()]
        shapes = [shape for _, shape in self._signature.values()]
        y_structure = self.batches.y_structure
        weight_structure = self.batches.sample_weight_structure

        def read(batch):
            values = tf.numpy_function(self._read, [batch], dtypes)
            for value, shape in zip(values, shapes):
                value.set_shape((None, *shape))
            by_name = dict(zip(names, values))
            features = {
                name.split("/", 1)[1]: value
                for name, value in by_name.items()
                if name.startswith("feature/")
            }
            element = (features, _pack(by_name, "y", y_structure))
            if weight_structure is not None:
                element += (_pack(by_name, "sample_weight", weight_structure),)
            return element

        batches = -(-count // batch_size)
        return prefetched(
            indices.map(read, num_parallel_calls=parallel_calls()).apply(
                tf.data.experimental.assert_cardinality(batches)
            )
        )


def _pack(by_name, prefix, structure):
    leaves = keras.tree.flatten(structure)
    return keras.tree.pack_sequence_as(
        structure, [by_name[f"{prefix}/{i}"] for i in range(len(leaves))]
    )


def _new_order_each_epoch(count, batch_size):
    """Batches of a uniformly random permutation of `range(count)`, new at each epoch.

    The seed is drawn per iteration (per epoch) by `Dataset.random`, which is
    deterministic under a global seed; the permutation costs 8 bytes a
    sample, where a shuffle buffer of every index would take ~200.
    """
    seeds = tf.data.Dataset.random(rerandomize_each_iteration=True).take(1)

    def batches(seed):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(count, dtype=tf.int64), seed=tf.stack([seed, seed])
        )
        full = count // batch_size
        ds = tf.data.Dataset.from_tensor_slices(
            tf.reshape(order[: full * batch_size], (full, batch_size))
        )
        if count % batch_size:
            ds = ds.concatenate(tf.data.Dataset.from_tensors(order[full * batch_size :]))
        return ds

    return seeds.flat_map(batches)
