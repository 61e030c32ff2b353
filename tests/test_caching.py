import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_transfer
from keras_transfer import caching
from keras_transfer.errors import ConfigurationError

MNV2_035 = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
SIZE = 32


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (32, SIZE, SIZE, 3)).astype("float32")
    # A learnable signal: class 1 images are brighter.
    y = (np.arange(32) % 2).astype("int32")
    x[y == 1] = np.clip(x[y == 1] + 40, 0, 255)
    return x[:24], y[:24], x[24:], y[24:]


def classifier(weights=None, **kwargs):
    keras.utils.set_random_seed(1)
    model = keras_transfer.build_classifier(
        "mobilenet_v2_035", 2, input_shape=(SIZE, SIZE, 3), weights=weights,
        dropout=0.0, **kwargs
    )
    model.compile(
        keras.optimizers.Adam(1e-3),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def count_images(model):
    """Counts the images that go through the model's preprocessing layer."""
    layer = model.get_layer("preprocessing")
    counter = tf.Variable(0, dtype=tf.int64)
    original = layer.call

    def call(inputs):
        counter.assign_add(tf.cast(tf.shape(inputs)[0], tf.int64))
        return original(inputs)

    layer.call = call
    return counter


def test_cached_fit_matches_uncached_training(data, weights_dir):
    x, y, x_val, y_val = data
    weights = weights_dir / MNV2_035
    histories, final = {}, {}
    for cache in (True, False):
        model = classifier(weights, cache_frozen_features=cache)
        initial = model.get_layer("mobilenetv2_0.35_32").get_weights()
        images = count_images(model)
        train = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
        val = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(8)
        unfreeze = keras_transfer.ProgressiveUnfreeze(schedule={1: 2, 2: 4}, verbose=0)
        history = model.fit(
            train, validation_data=val, epochs=3, callbacks=[unfreeze], verbose=0
        )
        histories[cache] = history.history
        final[cache] = model.get_weights()
        seen = int(images.numpy())
        if cache:
            info = caching.feature_cache_info(model)
            # One pass over the 24 + 8 images, then features only.
            assert seen == 32
            assert info.samples == 24 and info.validation_samples == 8
            assert info.storage == "memory" and info.seconds > 0
            # Head-only phase from the pooled backbone output, then the cache
            # moves up with each unfreeze step (2 blocks, then 4).
            assert info.boundaries == (
                ("mobilenetv2_0.35_32:pooled",),
                ("block_15_add",),
                ("block_13_project_BN",),
            )
            backbone = model.get_layer("mobilenetv2_0.35_32")
            changed = [
                not np.allclose(a, b) for a, b in zip(initial, backbone.get_weights())
            ]
            assert any(changed), "the unfrozen blocks did not train"
        else:
            assert seen == 3 * 32
            assert caching.feature_cache_info(model) is None
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "trainable_params"):
        np.testing.assert_allclose(
            histories[True][key], histories[False][key], rtol=1e-4, atol=1e-5, err_msg=key
        )
    for a, b in zip(final[True], final[False]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_features_spill_to_disk_beyond_the_memory_limit(data, tmp_path):
    x, y, x_val, y_val = data
    results = []
    for limit in (caching.DEFAULT_MEMORY_LIMIT, 0):
        model = classifier()
        model.cache_memory_limit = limit
        model.cache_dir = str(tmp_path)
        history = model.fit(
            x, y, batch_size=8, epochs=2, shuffle=False,
            validation_data=(x_val, y_val), verbose=0,
        )
        results.append(history.history)
        assert caching.feature_cache_info(model).storage == ("memory" if limit else "disk")
    np.testing.assert_allclose(results[0]["loss"], results[1]["loss"], rtol=1e-5)
    np.testing.assert_allclose(results[0]["val_loss"], results[1]["val_loss"], rtol=1e-5)
    # The spilled features are removed after fit.
    assert list(tmp_path.iterdir()) == []


def test_a_shuffled_image_folder_is_cached_and_reshuffled(image_folder):
    train, val, _ = keras_transfer.load_image_folder(
        image_folder, SIZE, batch_size=4, validation_split=0.25, verbose=False
    )
    model = classifier()
    images = count_images(model)
    history = model.fit(train, validation_data=val, epochs=3, verbose=0)
    assert int(images.numpy()) == 12
    assert caching.feature_cache_info(model).samples == 8
    assert len(history.history["val_accuracy"]) == 3
    # The training set reshuffles itself: so do its cached features.
    assert caching._inspect_dataset(train) is True
    assert caching._inspect_dataset(val) is False


def tiny_classifier(before=None, **compile_kwargs):
    """A small TransferClassifier: [before] -> frozen conv -> pooling -> dense."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 3))
    x = inputs if before is None else before(inputs)
    conv = keras.layers.Conv2D(4, 3, name="frozen_conv")
    conv.trainable = False
    x = keras.layers.GlobalAveragePooling2D(name="pool")(conv(x))
    outputs = keras.layers.Dense(2, activation="softmax", name="dense")(x)
    model = keras_transfer.models.TransferClassifier(inputs, outputs, name="tiny")
    model.compile("adam", "sparse_categorical_crossentropy", **compile_kwargs)
    return model


@pytest.fixture(scope="module")
def small_images():
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, (16, 8, 8, 3)).astype("float32"), np.arange(16) % 2


def test_any_frozen_prefix_is_cached_xla_included(small_images):
    x, y = small_images
    model = tiny_classifier(jit_compile=True)
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    # Frozen convolution and pooling computed once; the dense layer trains.
    assert caching.feature_cache_info(model).boundaries == (("pool",),)
    assert np.all(np.isfinite(history.history["loss"]))


def test_callbacks_see_one_ordinary_fit(small_images, tmp_path):
    x, y = small_images
    model = tiny_classifier()
    checkpoint = keras.callbacks.ModelCheckpoint(tmp_path / "best.keras", monitor="loss")
    stop = keras.callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=10.0)
    history = model.fit(
        x, y, batch_size=4, epochs=5, callbacks=[checkpoint, stop], verbose=0
    )
    assert caching.feature_cache_info(model) is not None
    assert len(history.history["loss"]) == 2  # stopped by EarlyStopping
    saved = keras.models.load_model(tmp_path / "best.keras")
    np.testing.assert_allclose(saved.predict(x, verbose=0), model.predict(x, verbose=0))


def test_random_augmentation_before_frozen_layers_trains_uncached(small_images):
    x, y = small_images
    model = tiny_classifier(before=keras.layers.RandomFlip("horizontal", name="flip"))
    with pytest.warns(UserWarning, match="random layer.*'flip'.*cannot be cached"):
        model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert caching.feature_cache_info(model) is None


def test_random_tf_data_pipeline_trains_uncached(small_images):
    x, y = small_images
    model = tiny_classifier()
    augmented = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .map(lambda image, label: (tf.image.random_flip_left_right(image), label))
        .batch(4)
    )
    with pytest.warns(UserWarning, match="random operations.*RandomUniform"):
        model.fit(augmented, epochs=1, verbose=0)
    assert caching.feature_cache_info(model) is None


def test_unsupported_inputs_train_uncached(small_images):
    x, y = small_images
    model = tiny_classifier()

    def batches():
        for i in range(0, 16, 4):
            yield x[i : i + 4], y[i : i + 4]

    with pytest.warns(UserWarning, match="the training data is a generator"):
        model.fit(batches(), epochs=1, verbose=0)
    assert caching.feature_cache_info(model) is None
    with pytest.warns(UserWarning, match="steps_per_epoch"):
        model.fit(x, y, batch_size=4, steps_per_epoch=2, epochs=1, verbose=0)


def test_unfreezing_cached_layers_outside_the_schedule_is_an_error(small_images):
    x, y = small_images
    model = tiny_classifier()

    class Unfreeze(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                self.model.get_layer("frozen_conv").trainable = True

    with pytest.raises(ConfigurationError, match="frozen_conv.*became trainable"):
        model.fit(x, y, batch_size=4, epochs=2, callbacks=[Unfreeze()], verbose=0)


def test_save_and_load_after_a_cached_fit(data, tmp_path):
    x, y, _, _ = data
    model = classifier(cache_frozen_features=True)
    model.cache_memory_limit = 2**20
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    # Images, not features, after a cached fit.
    expected = model.predict(x, verbose=0)
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras")  # safe_mode=True
    assert isinstance(restored, keras_transfer.models.TransferClassifier)
    assert restored.cache_frozen_features and restored.cache_memory_limit == 2**20
    np.testing.assert_allclose(restored.predict(x, verbose=0), expected, rtol=1e-6)
    off = keras_transfer.models.TransferClassifier.from_config(
        {**restored.get_config(), "cache_frozen_features": False}
    )
    assert not off.cache_frozen_features


def test_mixed_precision_cached_fit_runs_on_cpu(data):
    x, y, x_val, y_val = data
    model = classifier(dtype="mixed_float16")
    assert keras.config.dtype_policy().name == "float32"  # restored after the build
    assert model.get_layer("mobilenetv2_0.35_32").compute_dtype == "float16"
    unfreeze = keras_transfer.ProgressiveUnfreeze(schedule={1: 1}, verbose=0)
    history = model.fit(
        x, y, batch_size=8, epochs=2, validation_data=(x_val, y_val),
        callbacks=[unfreeze], verbose=0,
    )
    assert np.all(np.isfinite(history.history["val_loss"]))
    assert caching.feature_cache_info(model) is not None
    assert model.predict(x[:2], verbose=0).dtype == np.float32
    with pytest.raises(ConfigurationError, match="dtype"):
        classifier(dtype="float17")


def test_switch_and_arguments_are_checked():
    with pytest.raises(ConfigurationError, match="cache_frozen_features"):
        classifier(cache_frozen_features="yes")
    model = classifier(cache_frozen_features=False)
    assert model.get_config()["cache_frozen_features"] is False
    inputs = keras.Input((4,))
    with pytest.raises(ConfigurationError, match="cache_memory_limit"):
        keras_transfer.models.TransferClassifier(
            inputs, keras.layers.Dense(2)(inputs), cache_memory_limit=-1
        )
