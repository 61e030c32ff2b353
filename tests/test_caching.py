"""The frozen-feature cache of `TransferClassifier.fit`: when it caches, where, and what it keeps.

That a cached fit trains exactly as an uncached one is checked case by case
in `test_caching_equivalence.py`.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_transfer
from keras_transfer import caching
from keras_transfer.caching.feature_batches import FeatureBatches
from keras_transfer.caching.feature_batches import FeatureSource
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
        "mobilenet_v2_035", 2, input_shape=(SIZE, SIZE, 3), weights=weights, dropout=0.0, **kwargs
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

    def call(inputs, **kwargs):
        counter.assign_add(tf.cast(tf.shape(inputs)[0], tf.int64))
        return original(inputs, **kwargs)

    layer.call = call
    return counter


def test_features_spill_to_disk_beyond_the_memory_limit(data, tmp_path):
    x, y, x_val, y_val = data
    results = []
    for limit in (caching.DEFAULT_MEMORY_LIMIT, 0):
        model = classifier()
        model.cache_memory_limit = limit
        model.cache_dir = str(tmp_path)
        history = model.fit(
            x,
            y,
            batch_size=8,
            epochs=2,
            shuffle=False,
            validation_data=(x_val, y_val),
            verbose=0,
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
    assert caching.inputs.inspect_dataset(train) is True
    assert caching.inputs.inspect_dataset(val) is False


def test_one_iterator_over_the_cached_features_for_the_whole_fit(image_folder, monkeypatch):
    """Keras would make a new iterator at every epoch; making one stalled fits on CPU."""
    made = []
    original = tf.data.Dataset.__iter__

    def counting_iter(self):
        made.append(self.element_spec)
        return original(self)

    monkeypatch.setattr(tf.data.Dataset, "__iter__", counting_iter)
    counts = {}
    for epochs in (2, 5):
        train, _, _ = keras_transfer.load_image_folder(
            image_folder, SIZE, batch_size=4, validation_split=0.25, verbose=False
        )
        model = classifier()
        images = count_images(model)
        made.clear()
        history = model.fit(train, epochs=epochs, verbose=0)
        assert len(history.history["loss"]) == epochs
        assert int(images.numpy()) == 8  # the cache pass read each image once
        counts[epochs] = len(made)
    # One for the cache pass over the images, one over the features.
    assert counts[2] == counts[5] == 2


def test_pipelines_run_without_the_autotuner(image_folder):
    """The autotuner left their reader idle for seconds (keras_transfer.utils.pipelines)."""
    train, val, _ = keras_transfer.load_image_folder(
        image_folder, SIZE, batch_size=4, validation_split=0.25, verbose=False
    )
    batches = FeatureBatches(lambda: "/tmp", "train", limit=2**20)
    batches.add({"f": np.zeros((4, 2), "float32")}, np.arange(4), None)
    batches.finish()
    features = FeatureSource(batches, {"f": "f"}).dataset(2, True)
    for dataset in (train, val, features):
        assert dataset.options().autotune.enabled is False
    assert len(list(features)) == 2


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
    history = model.fit(x, y, batch_size=4, epochs=5, callbacks=[checkpoint, stop], verbose=0)
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
    # Plain Keras gives a Functional of Keras' own layers; ours gives the original back.
    plain = keras.models.load_model(tmp_path / "m.keras")
    assert not isinstance(plain, keras_transfer.models.TransferClassifier)
    restored = keras_transfer.load_model(tmp_path / "m.keras")
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
        x,
        y,
        batch_size=8,
        epochs=2,
        validation_data=(x_val, y_val),
        callbacks=[unfreeze],
        verbose=0,
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


# --------------------------------------------------------------- FeatureStore


def shared_fit(model, store, x, y, x_val, y_val, schedule):
    model.feature_store = store
    unfreeze = keras_transfer.ProgressiveUnfreeze(schedule=schedule, verbose=0)
    return model.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        shuffle=False,
        validation_data=(x_val, y_val),
        callbacks=[unfreeze],
        verbose=0,
    ).history


def test_feature_store_reuses_features_of_identical_frozen_layers_and_data(data, weights_dir):
    x, y, x_val, y_val = data
    weights = weights_dir / MNV2_035
    store = caching.FeatureStore()

    first = classifier(weights)
    shared_fit(first, store, x, y, x_val, y_val, {1: 2})
    assert not caching.feature_cache_info(first).reused
    assert len(store) == 1 and store.misses == 1

    # A second model built from the same weights file: nothing goes through
    # its backbone, and it trains exactly as with features of its own.
    second = classifier(weights)
    images = count_images(second)
    history = shared_fit(second, store, x, y, x_val, y_val, {1: 2})
    assert int(images.numpy()) == 0
    info = caching.feature_cache_info(second)
    assert info.reused and info.samples == 24 and info.validation_samples == 8
    assert store.hits == 1

    alone = classifier(weights)
    expected = shared_fit(alone, None, x, y, x_val, y_val, {1: 2})
    for key in ("loss", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(history[key], expected[key], rtol=1e-5, err_msg=key)
    for a, b in zip(second.get_weights(), alone.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    # Head only needs a subset of what is stored; a deeper schedule needs
    # another cut and computes (and stores) it.
    head_only = classifier(weights)
    shared_fit(head_only, store, x, y, x_val, y_val, {0: 0})
    assert caching.feature_cache_info(head_only).reused
    deeper = classifier(weights)
    shared_fit(deeper, store, x, y, x_val, y_val, {1: 4})
    assert not caching.feature_cache_info(deeper).reused
    assert (store.hits, store.misses, len(store)) == (2, 2, 2)


def tiny_fit(model, store, x, y, **kwargs):
    model.feature_store = store
    kwargs = {"batch_size": 4, "epochs": 1, "shuffle": False, "verbose": 0, **kwargs}
    return model.fit(x, y, **kwargs).history


def test_feature_store_recomputes_when_weights_or_data_change(small_images):
    x, y = small_images
    store = caching.FeatureStore()
    validation = (x[:4], y[:4])
    tiny_fit(tiny_classifier(), store, x, y, validation_data=validation)

    changed = x.copy()
    changed[3, 5, 5, 1] += 1.0
    cases = {
        "one pixel changed": (changed, y, validation),
        "other labels": (x, 1 - y, validation),
        "other validation images": (x, y, (x[4:8], y[:4])),
    }
    for name, (images, labels, val) in cases.items():
        model = tiny_classifier()
        tiny_fit(model, store, images, labels, validation_data=val)
        assert not caching.feature_cache_info(model).reused, name

    # A frozen layer with other weights is another layer.
    model = tiny_classifier()
    kernel = model.get_layer("frozen_conv").kernel
    kernel.assign(kernel * 1.01)
    tiny_fit(model, store, x, y, validation_data=validation)
    assert not caching.feature_cache_info(model).reused
    # And the first one is still found.
    model = tiny_classifier()
    tiny_fit(model, store, x, y, validation_data=validation)
    assert caching.feature_cache_info(model).reused


def test_feature_store_knows_datasets_by_identity(small_images):
    x, y = small_images
    store = caching.FeatureStore()
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    reused = []
    for dataset in (train, train, tf.data.Dataset.from_tensor_slices((x, y)).batch(4)):
        model = tiny_classifier()
        model.feature_store = store
        model.fit(dataset, epochs=1, verbose=0)
        reused.append(caching.feature_cache_info(model).reused)
    # The same dataset object is reused; an equal but new one is not known.
    assert reused == [False, True, False]


def test_feature_store_keeps_spilled_features_until_dropped(small_images, tmp_path):
    x, y = small_images
    store = caching.FeatureStore()
    histories = []
    for _ in range(2):
        model = tiny_classifier()
        model.cache_memory_limit = 0
        model.cache_dir = str(tmp_path)
        histories.append(tiny_fit(model, store, x, y, epochs=2, validation_split=0.25))
        assert caching.feature_cache_info(model).storage == "disk"
        # The store owns the spilled files: they outlive the fit.
        assert len(list(tmp_path.iterdir())) == 1
    assert caching.feature_cache_info(model).reused
    np.testing.assert_allclose(histories[0]["loss"], histories[1]["loss"], rtol=1e-5)
    store.clear()
    assert list(tmp_path.iterdir()) == [] and len(store) == 0


def test_feature_store_stays_within_max_bytes(small_images):
    x, y = small_images
    probe = caching.FeatureStore()
    tiny_fit(tiny_classifier(), probe, x, y)
    one_entry = probe.nbytes
    assert one_entry > 0

    store = caching.FeatureStore(max_bytes=one_entry + one_entry // 2)
    for labels in (y, 1 - y):  # Two entries of the same size.
        tiny_fit(tiny_classifier(), store, x, labels)
    # The least recently used one was dropped for the second.
    assert len(store) == 1 and store.nbytes <= store.max_bytes
    model = tiny_classifier()
    tiny_fit(model, store, x, 1 - y)
    assert caching.feature_cache_info(model).reused
    tiny = caching.FeatureStore(max_bytes=one_entry - 1)
    tiny_fit(tiny_classifier(), tiny, x, y)
    assert len(tiny) == 0


def test_feature_store_arguments_are_checked():
    with pytest.raises(ConfigurationError, match="max_bytes"):
        caching.FeatureStore(max_bytes=-1)
    inputs = keras.Input((4,))
    with pytest.raises(ConfigurationError, match="feature_store"):
        keras_transfer.models.TransferClassifier(
            inputs, keras.layers.Dense(2)(inputs), feature_store={}
        )


def test_feature_store_does_not_keep_models_alive(small_images):
    import gc
    import weakref

    x, y = small_images
    store = caching.FeatureStore()
    # Other labels for the second fit: it computes, and spills to disk.
    for limit, labels in ((caching.DEFAULT_MEMORY_LIMIT, y), (0, 1 - y)):
        model = tiny_classifier()
        model.cache_memory_limit = limit
        tiny_fit(model, store, x, labels, validation_split=0.25)
        alive = weakref.ref(model)
        del model
        gc.collect()
        assert alive() is None
    assert len(store) == 2
    store.clear()


def test_the_frozen_feature_pass_shows_a_progress_bar(small_images, capsys):
    x, y = small_images
    model = tiny_classifier()
    model.fit(x, y, batch_size=4, epochs=1, verbose=1)
    out = capsys.readouterr().out
    # Keras' Progbar with the number of batches, before the cache summary line.
    assert "4/4" in out and out.index("4/4") < out.index("Cached frozen features")
