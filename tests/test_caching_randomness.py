"""The frozen-feature cache recognises random layers by what they do, not by their class.

A user-defined layer before frozen layers is called on a sample batch in
training mode: when its outputs change from call to call (or differ from
inference), or the call fails, `fit` trains uncached and says which layer.
"""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

import keras_transfer
from keras_transfer import caching

SIZE = 32


def tiny_classifier(before=None, after=None):
    """A small TransferClassifier: [before], frozen conv, pooling, [after], dense."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((SIZE, SIZE, 3))
    conv = keras.layers.Conv2D(4, 3, strides=4, name="frozen_conv")
    conv.trainable = False
    x = inputs if before is None else before(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(conv(x))
    x = x if after is None else after(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="dense")(x)
    model = keras_transfer.models.TransferClassifier(inputs, outputs, name="tiny")
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, (16, SIZE, SIZE, 3)).astype("float32"), np.arange(16) % 2


class TrainingImages:
    """Counts the images a layer sees in training mode (not in inference)."""

    def __init__(self):
        self.variable = tf.Variable(0, dtype=tf.int64, trainable=False)

    def add(self, inputs, training):
        if training:
            self.variable.assign_add(tf.cast(tf.shape(inputs)[0], tf.int64))

    def __int__(self):
        return int(self.variable.numpy())


class Augmentation(keras.layers.Layer):
    """Adds `noise(inputs)` in training, and counts the images it sees then."""

    def __init__(self, counter, **kwargs):
        super().__init__(**kwargs)
        self.counter = counter

    def call(self, inputs, training=None):
        self.counter.add(inputs, training)
        return inputs + self.noise(inputs) if training else inputs


class UniformNoise(Augmentation):
    """`tf.random` and no SeedGenerator: invisible to a class check."""

    def noise(self, inputs):
        return tf.random.uniform(tf.shape(inputs), -20.0, 20.0)


class KerasNormalNoise(Augmentation):
    """`keras.random` with the global seed generator."""

    def noise(self, inputs):
        return keras.random.normal(ops.shape(inputs), stddev=10.0)


class NumpyNoise(Augmentation):
    """Drawn by NumPy: no random operation in the traced graph."""

    def noise(self, inputs):
        rng = np.random.default_rng()
        drawn = tf.numpy_function(
            lambda shape: rng.normal(0.0, 10.0, shape).astype("float32"),
            [tf.shape(inputs)],
            tf.float32,
        )
        return tf.reshape(drawn, tf.shape(inputs))


class Scale(keras.layers.Layer):
    def call(self, inputs):
        return inputs / 255.0


class TrainingOnlyScale(keras.layers.Layer):
    """Deterministic, but not the same in training and in inference."""

    def call(self, inputs, training=None):
        return inputs * 2.0 if training else inputs


class NeedsBatchesOfEight(keras.layers.Layer):
    """Works in `fit` (unknown batch size) but raises on a batch of 4."""

    def call(self, inputs):
        if inputs.shape[0] is not None and inputs.shape[0] % 8:
            raise ValueError("needs batches of 8 images")
        return inputs


def cache_warnings(record):
    return [
        str(w.message)
        for w in record
        if "frozen-feature cache" in str(w.message) or "Caching only" in str(w.message)
    ]


@pytest.mark.parametrize(
    "layer_class, as_dataset",
    [(UniformNoise, False), (KerasNormalNoise, True), (NumpyNoise, False)],
)
def test_custom_random_layer_before_frozen_layers_trains_uncached(images, layer_class, as_dataset):
    x, y = images
    counter = TrainingImages()
    model = tiny_classifier(layer_class(counter, name="noise"))
    data = {"x": x, "y": y, "batch_size": 8}
    if as_dataset:
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
        data = {"x": dataset, "shuffle": False}
    expected = "without the frozen-feature cache: random layer.*'noise'"
    with pytest.warns(UserWarning, match=expected):
        model.fit(**data, epochs=2, verbose=0)
    assert caching.feature_cache_info(model) is None
    # The augmentation ran in every training step of both epochs.
    assert int(counter) >= 2 * len(x)


def test_custom_random_layer_after_frozen_layers_is_left_out_of_the_cache(images):
    x, y = images
    counter = TrainingImages()
    model = tiny_classifier(after=UniformNoise(counter, name="feature_noise"))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert cache_warnings(record) == []
    # The frozen part is cached up to the noise, which runs at every step.
    assert caching.feature_cache_info(model).boundaries == (("pool",),)
    assert int(counter) >= 2 * len(x)


def test_deterministic_custom_layer_before_frozen_layers_is_cached(images):
    x, y = images
    model = tiny_classifier(Scale(name="scale"))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert cache_warnings(record) == []
    assert caching.feature_cache_info(model).boundaries == (("pool",),)


def test_custom_layer_with_other_training_outputs_trains_uncached(images):
    x, y = images
    model = tiny_classifier(TrainingOnlyScale(name="train_scale"))
    expected = "'train_scale'.*other outputs in training than in inference"
    with pytest.warns(UserWarning, match=expected):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert caching.feature_cache_info(model) is None


def test_lambda_layer_is_probed(images):
    x, y = images
    noise = keras.layers.Lambda(
        lambda t: t + tf.random.normal(tf.shape(t), stddev=10.0), name="lambda_noise"
    )
    model = tiny_classifier(noise)
    with pytest.warns(UserWarning, match="random layer.*'lambda_noise'"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert caching.feature_cache_info(model) is None


def test_random_custom_layer_nested_in_a_keras_container_is_probed(images):
    x, y = images
    counter = TrainingImages()
    block = keras.Sequential(
        [keras.layers.Rescaling(1.0), UniformNoise(counter)], name="augment_block"
    )
    model = tiny_classifier(block)
    with pytest.warns(UserWarning, match="random layer.*'augment_block'"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert caching.feature_cache_info(model) is None


def test_custom_layer_that_fails_on_the_probe_trains_uncached_and_says_why(images):
    x, y = images
    model = tiny_classifier(NeedsBatchesOfEight(name="fussy"))
    with pytest.warns(
        UserWarning,
        match="'fussy' could not be checked for randomness.*ValueError: needs batches",
    ):
        history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert caching.feature_cache_info(model) is None
    assert np.isfinite(history.history["loss"][0])


def test_a_missing_graph_internal_trains_uncached_and_names_it(images, monkeypatch):
    # A Keras release that renames the functional graph's node map: the cache
    # cannot know what stays constant, so fit trains as Keras does.
    from keras_transfer.utils import internals

    monkeypatch.setattr(internals, "_NODES_BY_DEPTH", "_renamed_nodes_by_depth")
    model = tiny_classifier()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        history = model.fit(*images, epochs=1, batch_size=8, verbose=0)
    messages = cache_warnings(record)
    assert len(messages) == 1 and "_renamed_nodes_by_depth is missing" in messages[0], messages
    assert caching.feature_cache_info(model) is None
    assert np.isfinite(history.history["loss"][0])
