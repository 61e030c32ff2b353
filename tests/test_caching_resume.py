"""A cached fit resumed by `BackupAndRestore` trains on features of the restored weights.

The cache is computed before `on_train_begin`, where `BackupAndRestore`
loads the backup: a freshly built model whose frozen weights differ from the
backup's must not train on features of its own initial weights.
"""

import shutil

import keras
import numpy as np
import pytest
from test_progressive_unfreeze import CrashAfterEpoch

import keras_transfer
from keras_transfer import caching
from keras_transfer.callbacks import ProgressiveUnfreeze

EPOCHS = 3


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 200, (24, 16, 16, 3)).astype("float32")
    y = (np.arange(24) % 2).astype("int32")
    x[y == 1] += 55
    return x[:16], y[:16], x[16:], y[16:]


def frozen_conv_classifier(seed, cache=True):
    """Frozen convolutions (initialised from `seed`) -> pooling -> dense."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((16, 16, 3))
    x = inputs
    for i in range(2):
        conv = keras.layers.Conv2D(4, 3, activation="relu", name=f"frozen_conv{i}")
        conv.trainable = False
        x = conv(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="dense")(x)
    model = keras_transfer.models.TransferClassifier(
        inputs, outputs, name="tiny", cache_frozen_features=cache
    )
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    return model, None


def unfreezing_classifier(seed, cache=True):
    """A small backbone whose top layers unfreeze at epoch 1, then a dense head."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((16, 16, 3))
    x = inputs
    for i, filters in enumerate((4, 8)):
        x = keras.layers.Conv2D(filters, 3, strides=2, name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
    base = keras.Model(inputs, x, name="tiny_backbone")
    base.trainable = False
    x = keras.layers.GlobalAveragePooling2D()(base.output)
    outputs = keras.layers.Dense(2, activation="softmax", name="head")(x)
    model = keras_transfer.models.TransferClassifier(
        base.input, outputs, name="tiny", cache_frozen_features=cache
    )
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    return model, base


def fit(model, base, images, backup, extra=(), verbose=0):
    x, y, x_val, y_val = images
    callbacks = [keras.callbacks.BackupAndRestore(str(backup))]
    if base is not None:
        callbacks.append(ProgressiveUnfreeze(base, {1: 2}, unit="weighted_layers", verbose=0))
    return model.fit(
        x,
        y,
        batch_size=4,
        epochs=EPOCHS,
        shuffle=False,
        validation_data=(x_val, y_val),
        callbacks=callbacks + list(extra),
        verbose=verbose,
    ).history


def resume_cached_and_uncached(build, images, tmp_path, seed):
    """Crashes a run after epoch 1, then resumes it with models built from `seed`."""
    model, base = build(0)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(model, base, images, tmp_path / "backup", extra=[CrashAfterEpoch(1)])
    shutil.copytree(tmp_path / "backup", tmp_path / "backup_copy")
    results = {}
    for cache, backup in ((True, "backup"), (False, "backup_copy")):
        model, base = build(seed, cache=cache)
        history = fit(model, base, images, tmp_path / backup, verbose=2 if cache else 0)
        results[cache] = (history, model)
    return results


def assert_same_training(results, images):
    (cached, cached_model), (uncached, uncached_model) = results[True], results[False]
    assert len(cached["loss"]) == EPOCHS - 2  # resumed at epoch 2
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(cached[key], uncached[key], rtol=1e-4, atol=1e-5, err_msg=key)
    np.testing.assert_allclose(
        cached_model.predict(images[2], verbose=0),
        uncached_model.predict(images[2], verbose=0),
        rtol=1e-4,
        atol=1e-5,
    )


def test_features_are_computed_again_when_the_backup_holds_other_frozen_weights(
    images, tmp_path, capsys
):
    # Another seed: the new model's frozen convolutions differ from the backup's.
    results = resume_cached_and_uncached(frozen_conv_classifier, images, tmp_path, seed=1)
    assert_same_training(results, images)
    info = caching.feature_cache_info(results[True][1])
    assert info.recomputed and not info.reused
    assert "computing the cached features again" in capsys.readouterr().out


def test_layers_trained_before_the_backup_do_not_recompute_the_features(images, tmp_path):
    # The same seed, resumed in the fine-tuning phase: the top layers differ
    # from the backup's (they trained at epoch 1), but only the head-only
    # phase, which is over, cached their output.
    results = resume_cached_and_uncached(unfreezing_classifier, images, tmp_path, seed=0)
    assert_same_training(results, images)
    assert not caching.feature_cache_info(results[True][1]).recomputed
