"""Feature batches collected in memory, or spilled to disk through `tf.data` past a limit."""

import os

import keras
import numpy as np
import tensorflow as tf

from keras_transfer.errors import ConfigurationError


_SPILL_CHUNK_BYTES = 256 * 2**20

def slice_structure(value, start, stop):
    if value is None:
        return None
    return keras.tree.map_structure(lambda v: np.asarray(v)[start:stop], value)

def array_batches(x, y, sample_weight, batch_size):
    x = np.asarray(x)
    for start in range(0, len(x), batch_size):
        stop = start + batch_size
        yield x[start:stop], slice_structure(y, start, stop), slice_structure(sample_weight, start, stop)

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

class FeatureBatches:
    """Collects feature batches in memory, or on disk past a memory limit."""

    def __init__(self, directory_fn, label, limit):
        self._directory_fn = directory_fn
        self._label = label
        self._limit = limit
        self._parts = []
        self._part_bytes = 0
        self._chunks = []
        self.storage = "memory"
        self.count = 0
        self.nbytes = 0
        self.batch_size = None
        self.x = self.y = self.sample_weight = None

    def add(self, features, y, sample_weight):
        size = len(next(iter(features.values())))
        if self.batch_size is None:
            self.batch_size = size
        nbytes = _nbytes(features) + _nbytes(y) + _nbytes(sample_weight)
        self.count += size
        self.nbytes += nbytes
        self._parts.append((features, y, sample_weight))
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
        features, y, sample_weight = (_concat(list(p)) for p in zip(*self._parts))
        element = (features, y) if sample_weight is None else (features, y, sample_weight)
        path = os.path.join(self._directory_fn(), f"{self._label}_{len(self._chunks)}")
        tf.data.Dataset.from_tensor_slices(element).save(path)
        self._chunks.append(path)
        self._parts, self._part_bytes = [], 0

    def finish(self):
        if self.storage == "disk":
            self._spill()
        # The directory function belongs to the fit's session: a store kept
        # in a FeatureStore must not keep the fit's model alive.
        self._directory_fn = None
        if self.storage == "disk":
            return
        if not self._parts:
            raise ConfigurationError(f"The {self._label} data is empty.")
        self.x, self.y, self.sample_weight = (_concat(list(p)) for p in zip(*self._parts))
        self._parts = []

    def select(self, rename):
        """The in-memory features under the names of the fit that reads them."""
        return {name: self.x[stored] for name, stored in rename.items()}

    def dataset(self, shuffle, batch_size, memory_limit, rename):
        ds = tf.data.Dataset.load(self._chunks[0])
        for path in self._chunks[1:]:
            ds = ds.concatenate(tf.data.Dataset.load(path))
        if any(name != stored for name, stored in rename.items()) or len(
            rename
        ) != len(ds.element_spec[0]):
            ds = ds.map(
                lambda features, *rest: (
                    {name: features[stored] for name, stored in rename.items()},
                    *rest,
                )
            )
        if shuffle:
            per_sample = max(1, self.nbytes // max(self.count, 1))
            buffer = int(max(1, min(self.count, memory_limit // per_sample)))
            ds = ds.shuffle(buffer, reshuffle_each_iteration=True)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
