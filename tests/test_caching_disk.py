"""A disk-backed feature cache trains on the same batches as an in-memory one.

Class-sorted data (what a folder scan gives) must not reach the training
steps in stored order when the fit shuffles, whatever `cache_memory_limit`.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_transfer
from keras_transfer import caching
from keras_transfer.caching.feature_batches import FeatureBatches
from keras_transfer.caching.feature_batches import FeatureSource

N, BATCH = 32, 8
SEEN = []  # labels of each training batch, in the order the steps see them


class RecordingClassifier(keras_transfer.models.TransferClassifier):
    """A TransferClassifier that records the labels of each training batch."""

    def train_step(self, data):
        x, y = data[0], data[1]
        recorded = tf.numpy_function(lambda v: SEEN.append(v.tolist()) or v, [y], y.dtype)
        recorded.set_shape(y.shape)
        return super().train_step((x, recorded, *data[2:]))


def tiny_classifier(limit, tmp_path):
    """Frozen convolution -> pooling -> dense, on 8x8 images."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(4, 3, name="frozen_conv")
    conv.trainable = False
    x = keras.layers.GlobalAveragePooling2D(name="pool")(conv(inputs))
    outputs = keras.layers.Dense(2, activation="softmax", name="dense")(x)
    model = RecordingClassifier(
        inputs, outputs, name="tiny", cache_memory_limit=limit, cache_dir=str(tmp_path)
    )
    model.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy")
    return model


@pytest.fixture(scope="module")
def sorted_images():
    """16 images of class 0, then 16 of class 1 (brighter)."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 200, (N, 8, 8, 3)).astype("float32")
    y = np.repeat([0, 1], N // 2).astype("int32")
    x[y == 1] += 55
    return x, y


def fit_and_record(data, limit, tmp_path, epochs, **kwargs):
    """Fits on `data` (a dataset, or `(x, y)`); returns the history and the labels seen."""
    SEEN.clear()
    model = tiny_classifier(limit, tmp_path)
    data = (data,) if isinstance(data, tf.data.Dataset) else data
    history = model.fit(*data, epochs=epochs, verbose=0, **kwargs)
    assert caching.feature_cache_info(model).storage == ("disk" if limit == 0 else "memory")
    return history.history, list(SEEN)


def test_spilled_arrays_are_shuffled_as_in_memory(sorted_images, tmp_path):
    on_disk, disk_batches = fit_and_record(
        sorted_images, 0, tmp_path, epochs=2, batch_size=BATCH, shuffle=True
    )
    in_memory, memory_batches = fit_and_record(
        sorted_images,
        caching.DEFAULT_MEMORY_LIMIT,
        tmp_path,
        epochs=2,
        batch_size=BATCH,
        shuffle=True,
    )
    assert len(disk_batches) == 2 * N // BATCH
    # Not the stored (class-sorted) order: the batches mix the classes...
    assert sum(len(set(b)) == 2 for b in disk_batches) >= len(disk_batches) // 2
    # ...exactly as the in-memory cache (Keras' own shuffle of arrays) does.
    assert disk_batches == memory_batches
    np.testing.assert_allclose(on_disk["loss"], in_memory["loss"], rtol=1e-5)
    assert list(tmp_path.iterdir()) == []


def test_a_reshuffling_dataset_gets_a_new_order_each_epoch_on_disk(sorted_images, tmp_path):
    def dataset():
        return (
            tf.data.Dataset.from_tensor_slices(sorted_images)
            .shuffle(N, reshuffle_each_iteration=True)
            .batch(BATCH)
        )

    epochs = 3
    for limit in (0, caching.DEFAULT_MEMORY_LIMIT):
        _, batches = fit_and_record(dataset(), limit, tmp_path, epochs=epochs)
        per_epoch = [
            sum(batches[i : i + N // BATCH], []) for i in range(0, len(batches), N // BATCH)
        ]
        assert len(per_epoch) == epochs
        for order in per_epoch:
            assert sorted(order) == sorted(sorted_images[1].tolist())
        # A new permutation at every epoch, as the dataset itself would give
        # (also under keras.utils.set_random_seed, which the model builder calls).
        assert len({tuple(order) for order in per_epoch}) == epochs


def stored(limit, tmp_path, count=30, batch=7):
    """A FeatureBatches of `count` rows: feature row i is [i, i], label i."""
    batches = FeatureBatches(lambda: str(tmp_path), "train", limit)
    for start in range(0, count, batch):
        rows = np.arange(start, min(start + batch, count))
        batches.add({"f": np.stack([rows, rows], 1).astype("float32")}, rows, None)
    batches.finish()
    return batches


def read_epoch(dataset):
    features, labels = [], []
    for x, y in dataset:
        features.append(x["g"].numpy()[:, 0])
        labels.append(y.numpy())
    return np.concatenate(features), np.concatenate(labels), [len(b) for b in labels]


def test_feature_source_reads_rows_by_index(tmp_path):
    on_disk, in_memory = stored(0, tmp_path), stored(2**30, tmp_path)
    assert on_disk.storage == "disk" and in_memory.storage == "memory"
    assert isinstance(on_disk.columns["feature/f"], np.memmap)
    for batches in (on_disk, in_memory):
        source = FeatureSource(batches, {"g": "f"})
        features, labels, sizes = read_epoch(source.dataset(8))
        np.testing.assert_array_equal(labels, np.arange(30))
        np.testing.assert_array_equal(features, labels)
        assert sizes == [8, 8, 8, 6]

    orders = {}
    for name, batches in (("disk", on_disk), ("memory", in_memory)):
        keras.utils.set_random_seed(3)
        dataset = FeatureSource(batches, {"g": "f"}).dataset(8, shuffle=True)
        epochs = [read_epoch(dataset) for _ in range(2)]
        for features, labels, sizes in epochs:
            np.testing.assert_array_equal(features, labels)  # rows stay whole
            assert sorted(labels) == list(range(30)) and sizes == [8, 8, 8, 6]
        assert list(epochs[0][1]) != list(epochs[1][1])
        orders[name] = [list(e[1]) for e in epochs]
    assert orders["disk"] == orders["memory"]


def test_recomputed_features_must_match_the_pipeline(tmp_path):
    source = FeatureSource(stored(0, tmp_path), {"g": "f"})
    other = FeatureBatches(lambda: str(tmp_path), "train", 0)
    other.add({"f": np.zeros((4, 3), "float32")}, np.arange(4), None)
    other.finish()
    with pytest.raises(keras_transfer.errors.ConfigurationError, match="shape or dtype"):
        source.use(other, {"g": "f"})
