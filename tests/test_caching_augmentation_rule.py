"""Augmentation is augmentation wherever it sits; a frozen backbone's regularisation is not.

What the frozen-feature cache may compute once is decided by what a random
layer does, not by where it sits. Augmentation (Keras' random preprocessing
layers, and any random layer before every weighted layer) draws anew each
epoch even inside the backbone, where keras.io's EfficientNet tutorial puts
it with `input_tensor=`: the fit trains uncached with one warning naming the
layer, or caches `augmented_views`. Dropout and stochastic depth between a
frozen backbone's weighted layers run in inference mode and are cached.
"""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_transfer
from keras_transfer import caching

SIZE = 32
IMAGES = 16


class CountingFlip(keras.layers.RandomFlip):
    """Keras' RandomFlip that counts the images it sees in training mode."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen = tf.Variable(0, dtype=tf.int64, trainable=False)

    def call(self, inputs, training=True):
        if training:
            self.seen.assign_add(tf.cast(tf.shape(inputs)[0], tf.int64))
        return super().call(inputs, training=training)


class UniformNoise(keras.layers.Layer):
    """A user's augmentation: `tf.random`, no SeedGenerator for a class check to see."""

    def call(self, inputs, training=None):
        if training:
            return inputs + tf.random.uniform(tf.shape(inputs), -20.0, 20.0)
        return inputs


def backbone_layers(first=None, middle=None):
    """`(layers applied in order)`: [first], conv, [middle], conv: a two-block backbone."""
    layers = [] if first is None else [first]
    layers.append(keras.layers.Conv2D(4, 3, strides=2, name="conv_1"))
    if middle is not None:
        layers.append(middle)
    layers.append(keras.layers.Conv2D(4, 3, strides=2, name="conv_2"))
    return layers


def classifier(first=None, middle=None, nested=False, views=None):
    """A TransferClassifier with a frozen two-conv backbone and a `ProgressiveUnfreeze`.

    `nested`: the backbone is a sub-model called with `training=False` (the
    Keras guide); otherwise its layers sit inline in the model, as
    `keras.applications.X(input_tensor=...)` makes them.
    """
    keras.utils.set_random_seed(1)
    inputs = keras.Input((SIZE, SIZE, 3))
    if nested:
        backbone_input = keras.Input((SIZE, SIZE, 3))
        x = backbone_input
        for layer in backbone_layers(first, middle):
            x = layer(x)
        backbone = keras.Model(backbone_input, x, name="backbone")
        features = backbone(inputs, training=False)
    else:
        x = inputs
        for layer in backbone_layers(first, middle):
            x = layer(x)
        backbone = keras.Model(inputs, x, name="backbone")
        features = backbone.output
    backbone.trainable = False
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    outputs = keras.layers.Dense(2, activation="softmax", name="dense")(pooled)
    model = keras_transfer.TransferClassifier(
        inputs, outputs, name="tutorial", augmented_views=views
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    unfreeze = keras_transfer.ProgressiveUnfreeze(backbone, {1: 1}, unit="weighted_layers")
    return model, unfreeze


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return (
        rng.uniform(0, 255, (IMAGES, SIZE, SIZE, 3)).astype("float32"),
        np.arange(IMAGES) % 2,
    )


def fit(model, unfreeze, data, epochs=2):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model.fit(*data, epochs=epochs, batch_size=8, callbacks=[unfreeze], verbose=0)
    messages = [
        str(w.message)
        for w in record
        if "frozen-feature cache" in str(w.message) or "Caching only" in str(w.message)
    ]
    return messages, caching.feature_cache_info(model)


AUGMENTATION = {
    "keras RandomFlip": lambda: keras.layers.RandomFlip(name="augment"),
    "keras Sequential of RandomRotation, RandomContrast": lambda: keras.Sequential(
        [keras.layers.RandomRotation(0.1), keras.layers.RandomContrast(0.2)],
        name="augment",
    ),
    "custom random layer": lambda: UniformNoise(name="augment"),
    "GaussianNoise before every weighted layer": lambda: keras.layers.GaussianNoise(
        0.5, name="augment"
    ),
}


@pytest.mark.parametrize("nested", [False, True], ids=["input_tensor", "nested"])
@pytest.mark.parametrize("kind", list(AUGMENTATION))
def test_augmentation_inside_the_backbone_trains_uncached_with_one_warning(data, kind, nested):
    model, unfreeze = classifier(first=AUGMENTATION[kind](), nested=nested)
    messages, info = fit(model, unfreeze, data)
    assert info is None, "the augmentation was cached as one clean view"
    assert len(messages) == 1, messages
    assert "without the frozen-feature cache" in messages[0]
    assert "'augment'" in messages[0]
    assert "augmented_views" in messages[0]


@pytest.mark.parametrize("nested", [False, True], ids=["input_tensor", "nested"])
def test_augmentation_inside_the_backbone_is_cached_as_augmented_views(data, nested):
    flip = CountingFlip(name="augment")
    model, unfreeze = classifier(first=flip, nested=nested, views=2)
    messages, info = fit(model, unfreeze, data, epochs=2)
    assert messages == []
    assert info is not None and info.views == 2
    # Each view ran the flip in training mode over every training image.
    assert int(flip.seen.numpy()) == 2 * IMAGES


@pytest.mark.parametrize("nested", [False, True], ids=["input_tensor", "nested"])
@pytest.mark.parametrize(
    "make_layer",
    [
        lambda: keras.layers.Dropout(0.5, name="regularise"),
        # EfficientNet's stochastic depth: a whole-sample Dropout.
        lambda: keras.layers.Dropout(0.5, noise_shape=(None, 1, 1, 1), name="regularise"),
        lambda: keras.layers.GaussianNoise(0.5, name="regularise"),
    ],
    ids=["Dropout", "stochastic depth", "GaussianNoise"],
)
def test_regularisation_between_frozen_weighted_layers_is_cached_in_inference_mode(
    data, make_layer, nested
):
    model, unfreeze = classifier(middle=make_layer(), nested=nested)
    messages, info = fit(model, unfreeze, data)
    assert messages == []
    assert info is not None and info.views == 1


def test_random_layer_after_a_weighted_layer_is_still_augmentation_when_it_is_keras_augmentation(
    data,
):
    # A RandomFlip between two convolutions is odd, but it is augmentation by
    # its class: never silently turned off.
    model, unfreeze = classifier(middle=keras.layers.RandomFlip(name="augment"))
    messages, info = fit(model, unfreeze, data)
    assert len(messages) == 1 and "'augment'" in messages[0], messages
    # What comes before the flip stays constant and is cached.
    assert info is not None and "Caching only part" in messages[0]
