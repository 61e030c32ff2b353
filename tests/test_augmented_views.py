"""`augmented_views`: random augmentation before frozen layers, cached as K views.

With `TransferClassifier(..., augmented_views=K)`, one pass computes K
augmented views of every training image (the random layers in training
mode) and one unaugmented view of the validation images; epoch `e` trains
on view `e % K`, in the head phase and after `ProgressiveUnfreeze` moved
the cache to the next phase's tensors.
"""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_transfer
from keras_transfer import caching
from keras_transfer.errors import ConfigurationError
from keras_transfer.models import TransferClassifier

SIZE = 32
N_TRAIN, N_VAL = 12, 5
VIEWS = 3


class CountImages(keras.layers.Layer):
    """Counts every image it sees, in any mode (the cache pass included), and its traces."""

    def build(self, input_shape):
        self.seen = self.add_weight(shape=(), dtype="int64", initializer="zeros", trainable=False)
        self.traces = 0

    def call(self, inputs):
        if not tf.executing_eagerly():
            self.traces += 1  # Python runs only while a graph is traced.
        self.seen.assign_add(tf.cast(tf.shape(inputs)[0], "int64"))
        return inputs


class NoiseOrHalf(keras.layers.Layer):
    """Random noise in training; in inference a float16 copy (not the training dtype)."""

    def call(self, inputs, training=None):
        if training:
            return inputs + tf.random.uniform(tf.shape(inputs), maxval=8.0)
        return tf.cast(inputs, "float16")


class RecordInputs(keras.layers.Layer):
    """A trained scale that sums its inputs in training mode: what an epoch trained on."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(), initializer="ones")
        self.total = self.add_weight(shape=(), initializer="zeros", trainable=False)

    def call(self, inputs, training=None):
        if training:
            self.total.assign_add(tf.reduce_sum(tf.cast(inputs, "float32")))
        return inputs * self.scale


class EpochTotals(keras.callbacks.Callback):
    def __init__(self, recorder):
        super().__init__()
        self.recorder, self.totals = recorder, []

    def on_epoch_begin(self, epoch, logs=None):
        self.recorder.total.assign(0.0)

    def on_epoch_end(self, epoch, logs=None):
        self.totals.append(float(self.recorder.total.numpy()))


def build(augmented_views=VIEWS, augmentation=None):
    """RandomFlip + RandomTranslation, then a frozen two-block backbone, then the head."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    if augmentation is None:
        x = keras.layers.RandomFlip("horizontal", name="flip")(inputs)
        x = keras.layers.RandomTranslation(0.2, 0.2, name="translate")(x)
    else:
        x = augmentation(inputs)
    image = keras.Input((SIZE, SIZE, 3))
    y = CountImages(name="count")(image)
    y = keras.layers.Conv2D(4, 3, strides=2, name="conv0")(y)
    y = keras.layers.BatchNormalization(name="bn0")(y)
    y = keras.layers.Conv2D(4, 3, strides=2, name="conv1")(y)
    backbone = keras.Model(image, y, name="tiny_backbone")
    backbone.trainable = False
    x = keras.layers.GlobalAveragePooling2D(name="pool")(backbone(x, training=False))
    x = RecordInputs(name="record")(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="dense")(x)
    model = TransferClassifier(inputs, outputs, name="tiny", augmented_views=augmented_views)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    return model


def unfreeze(at=10):
    """Head only until epoch `at`, then conv1 trains (the cache moves to bn0)."""
    return keras_transfer.ProgressiveUnfreeze("tiny_backbone", {at: 1}, unit="layers", verbose=0)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (N_TRAIN + N_VAL, SIZE, SIZE, 3)).astype("float32")
    y = np.arange(N_TRAIN + N_VAL) % 2
    return (x[:N_TRAIN], y[:N_TRAIN]), (x[N_TRAIN:], y[N_TRAIN:])


def fit(model, data, epochs, callbacks):
    (x, y), validation = data
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model.fit(
            x,
            y,
            batch_size=4,
            epochs=epochs,
            validation_data=validation,
            shuffle=False,
            callbacks=callbacks,
            verbose=0,
        )
    return [str(w.message) for w in record if "frozen-feature cache" in str(w.message)]


def test_views_are_cached_once_and_epoch_e_trains_on_view_e_mod_k(data):
    model = build()
    totals = EpochTotals(model.get_layer("record"))
    count = model.get_layer("tiny_backbone").get_layer("count")
    traces = count.traces
    warned = fit(model, data, epochs=4, callbacks=[unfreeze(), totals])
    assert warned == []
    info = caching.feature_cache_info(model)
    assert info is not None and info.views == VIEWS and info.samples == N_TRAIN
    # K passes of the prefix over the training images, one over validation.
    assert int(count.seen.numpy()) == VIEWS * N_TRAIN + N_VAL
    # One trace of the frozen part serves the augmented views and validation.
    assert count.traces - traces == 1
    assert totals.totals[0] == totals.totals[3]  # view 0, twice
    assert len({totals.totals[0], totals.totals[1], totals.totals[2]}) == 3


def test_fine_tuning_phase_trains_on_views_of_the_new_cut(data):
    model = build()
    conv1 = model.get_layer("tiny_backbone").get_layer("conv1")
    before = [np.array(w) for w in conv1.weights]
    totals = EpochTotals(model.get_layer("record"))
    warned = fit(model, data, epochs=4, callbacks=[unfreeze(at=1), totals])
    assert warned == []
    info = caching.feature_cache_info(model)
    assert info.views == VIEWS and len(info.boundaries) == 2
    assert not all(np.array_equal(a, np.array(b)) for a, b in zip(before, conv1.weights))
    count = model.get_layer("tiny_backbone").get_layer("count")
    assert int(count.seen.numpy()) == VIEWS * N_TRAIN + N_VAL
    # Epochs 1-3 fine-tune on views 1, 2, 0: three different augmentations.
    assert len(set(totals.totals[1:])) == 3


def test_a_random_layer_with_another_dtype_in_inference_still_gives_k_views(data):
    # tf.cond cannot choose between its training and inference outputs:
    # the pass traces the frozen part once per mode instead.
    model = build(augmentation=NoiseOrHalf(name="noise"))
    totals = EpochTotals(model.get_layer("record"))
    warned = fit(model, data, epochs=4, callbacks=[unfreeze(), totals])
    assert warned == []
    assert caching.feature_cache_info(model).views == VIEWS
    count = model.get_layer("tiny_backbone").get_layer("count")
    assert int(count.seen.numpy()) == VIEWS * N_TRAIN + N_VAL
    assert totals.totals[0] == totals.totals[3]
    assert len({totals.totals[0], totals.totals[1], totals.totals[2]}) == 3


def test_without_augmented_views_fit_trains_uncached_with_the_warning(data):
    model = build(augmented_views=None)
    warned = fit(model, data, epochs=2, callbacks=[unfreeze()])
    assert len(warned) == 1 and "random layer(s) 'flip'" in warned[0]
    assert caching.feature_cache_info(model) is None
    count = model.get_layer("tiny_backbone").get_layer("count")
    assert int(count.seen.numpy()) == 2 * (N_TRAIN + N_VAL)


def test_augmented_views_is_saved_in_the_config():
    model = build()
    assert model.get_config()["augmented_views"] == VIEWS
    custom = {"CountImages": CountImages, "RecordInputs": RecordInputs}
    with keras.saving.custom_object_scope(custom):
        restored = TransferClassifier.from_config(model.get_config())
    assert restored.augmented_views == VIEWS


@pytest.mark.parametrize("bad", [0.5, -1, True, "3"])
def test_bad_augmented_views_raise_configuration_error(bad):
    with pytest.raises(ConfigurationError, match="augmented_views must be an integer >= 0"):
        build(augmented_views=bad)
