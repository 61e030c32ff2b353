"""A cached `fit` trains exactly as an uncached one: docs/speed-and-caching.md's claim, case by case.

Each case fits the same model twice from the same seed, with
`cache_frozen_features` True and False, and compares every per-epoch value
of the history (losses, metrics, validation metrics, the unfreeze logs) and
every final weight. On this project's CPU the two runs are bit-identical in
every case below; the tolerance (`RTOL`, `ATOL`) only leaves room for kernels
that sum in another order (other hardware, XLA).

The cases the cache cannot reproduce are tested for what it does instead:
random layers inside the frozen backbone (EfficientNet's stochastic depth)
run in inference mode; a `tf.data` input whose batches are uneven before the
last one trains uncached, with a warning.
"""

import collections

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_transfer
from keras_transfer import caching
from keras_transfer.layers import classifier_head
from keras_transfer.layers import global_pooling
from keras_transfer.models import TransferClassifier

SIZE = 32
RTOL, ATOL = 1e-5, 1e-6
MNV2_035 = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"


def tiny_classifier(cache, head=None, backbone_dropout=0.0, memory_limit=None):
    """A TransferClassifier whose frozen backbone has three conv/BN/ReLU blocks.

    At 32 px the blocks output 15x15, 7x7 and 3x3 maps: the cached tensors
    are spatial, and the head's pooling averages 9 positions.
    """
    keras.utils.set_random_seed(1)
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = inputs
    for i, filters in enumerate((8, 16, 16)):
        x = keras.layers.Conv2D(filters, 3, strides=2, name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
        if i == 0 and backbone_dropout:
            # EfficientNet's stochastic depth: a whole-sample Dropout.
            x = keras.layers.Dropout(
                backbone_dropout, noise_shape=(None, 1, 1, 1), name="stochastic_depth"
            )(x)
    backbone = keras.Model(inputs, x, name="tiny_backbone")
    backbone.trainable = False
    head = classifier_head(3, **{"dropout": 0.0, **(head or {})})
    outputs = head(global_pooling()(backbone(inputs, training=False)))
    model = TransferClassifier(inputs, outputs, name="tiny", cache_frozen_features=cache)
    if memory_limit is not None:
        model.cache_memory_limit = memory_limit
    model.compile(
        keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    return model


def unfreeze(**kwargs):
    """Head only, then from epoch 1 the top conv and BN layers (cached: relu1, 7x7)."""
    return keras_transfer.ProgressiveUnfreeze(
        "tiny_backbone", {1: 2}, unit="weighted_layers", verbose=0, **kwargs
    )


def images(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.uniform(0, 1, (n, SIZE, SIZE, 3)).astype("float32")
    x[..., 0] += 0.3 * y[:, None, None]  # Something to learn.
    return x, y


# 20 training images: batches of 8, 8 and a partial 4.
X, Y = images(20, 0)
X_VAL, Y_VAL = images(7, 1)
WEIGHTS = np.linspace(0.2, 2.0, len(X)).astype("float32")
VAL_WEIGHTS = np.linspace(0.5, 1.5, len(X_VAL)).astype("float32")


# One fit: its history, its model, and the model's weights before and after.
Fit = collections.namedtuple("Fit", "history model initial final")


def fit_both(build, fit_kwargs, callbacks=unfreeze, epochs=2, expect_cached=True):
    """Fits `build(cache)` cached and uncached; returns {cache: Fit}."""
    results = {}
    for cache in (True, False):
        model = build(cache)
        initial = [np.array(w) for w in model.weights]
        kwargs = fit_kwargs() if callable(fit_kwargs) else dict(fit_kwargs)
        history = model.fit(**kwargs, epochs=epochs, callbacks=[callbacks()], verbose=0)
        final = [np.array(w) for w in model.weights]
        results[cache] = Fit(history.history, model, initial, final)
    cached = caching.feature_cache_info(results[True].model) is not None
    assert cached == expect_cached, "cached" if cached else "not cached"
    assert caching.feature_cache_info(results[False].model) is None
    return results


def assert_same_training(results):
    cached, plain = results[True], results[False]
    assert sorted(cached.history) == sorted(plain.history)
    for key in plain.history:
        np.testing.assert_allclose(
            cached.history[key], plain.history[key], rtol=RTOL, atol=ATOL, err_msg=key
        )
    # model.weights: trainable and non-trainable (BN statistics), not seed states.
    for variable, a, b in zip(plain.model.weights, cached.final, plain.final):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL, err_msg=variable.path)


ARRAYS = dict(x=X, y=Y, batch_size=8)
CASES = {
    "arrays: partial batches, sample weights": dict(
        ARRAYS,
        shuffle=False,
        sample_weight=WEIGHTS,
        validation_data=(X_VAL, Y_VAL, VAL_WEIGHTS),
        validation_batch_size=3,
    ),
    # Keras draws the same permutation of the cached arrays as of the images.
    "arrays: validation_split, class_weight, shuffle=True": dict(
        ARRAYS, shuffle=True, validation_split=0.25, class_weight={0: 1.0, 1: 3.0, 2: 0.5}
    ),
    "tf.data: partial batches, sample weights": lambda: dict(
        x=tf.data.Dataset.from_tensor_slices((X, Y, WEIGHTS)).batch(8),
        validation_data=tf.data.Dataset.from_tensor_slices((X_VAL, Y_VAL)).batch(3),
    ),
    "on disk: validation_split, sample weights": dict(
        ARRAYS, shuffle=False, sample_weight=WEIGHTS, validation_split=0.25
    ),
}


@pytest.mark.parametrize("fit_kwargs", CASES.values(), ids=CASES.keys())
def test_cached_fit_equals_uncached(fit_kwargs, request):
    on_disk = "on disk" in request.node.callspec.id
    results = fit_both(
        lambda cache: tiny_classifier(cache, memory_limit=0 if on_disk else None),
        fit_kwargs,
    )
    assert_same_training(results)
    info = caching.feature_cache_info(results[True].model)
    assert info.storage == ("disk" if on_disk else "memory")
    # The cached tensors are spatial (7x7 at relu1), pooled by the head.
    assert info.boundaries == (("pool",), ("relu1",))


def test_head_dropout_and_trained_batch_normalization_match_uncached():
    # Each Dropout layer draws from its own SeedGenerator, whose state moves
    # once per training step, cached or not: the same masks in the same order.
    head = {"dropout": 0.5, "hidden_units": 8}
    results = fit_both(
        lambda cache: tiny_classifier(cache, head=head),
        dict(ARRAYS, shuffle=False, validation_data=(X_VAL, Y_VAL)),
        callbacks=lambda: unfreeze(train_bn=True),
    )
    assert_same_training(results)

    def seed_state(model):
        return model.get_layer("head").get_layer("dropout").seed_generator.state.numpy()

    initial = seed_state(tiny_classifier(True, head=head))
    for model in (fit.model for fit in results.values()):
        assert not np.array_equal(seed_state(model), initial), "dropout drew no mask"
        bn = model.get_layer("tiny_backbone").get_layer("bn2")
        assert not np.allclose(bn.moving_mean.numpy(), 0.0), "bn2 did not train"
    np.testing.assert_array_equal(seed_state(results[True].model), seed_state(results[False].model))


def test_random_layers_inside_the_frozen_backbone_run_in_inference_mode():
    # Uncached, Keras 3 runs them in training mode despite the backbone's
    # training=False (keras-team/keras#20285); the cache computes the frozen
    # backbone once, in inference mode: as uncached training without them.
    def build(cache):
        model = tiny_classifier(cache, backbone_dropout=0.5)
        if not cache:
            model.get_layer("tiny_backbone").get_layer("stochastic_depth").rate = 0.0
        return model

    results = fit_both(build, dict(ARRAYS, shuffle=False, validation_data=(X_VAL, Y_VAL)))
    assert_same_training(results)
    uncached = tiny_classifier(False, backbone_dropout=0.5)
    outputs = [uncached(X[:4], training=True).numpy() for _ in range(2)]
    assert not np.allclose(*outputs), "the backbone's Dropout is off in training"


def test_uneven_tf_data_batches_train_as_uncached():
    def batches():
        first = tf.data.Dataset.from_tensor_slices((X[:10], Y[:10])).batch(8)
        return dict(
            x=first.concatenate(tf.data.Dataset.from_tensor_slices((X[10:], Y[10:])).batch(8))
        )

    with pytest.warns(UserWarning, match="batches differ in size before the last one"):
        results = fit_both(lambda cache: tiny_classifier(cache), batches, expect_cached=False)
    assert_same_training(results)


def test_mobilenet_at_96_px_caches_spatial_block_outputs(weights_dir):
    # Real weights at 96 px: the pooled boundary averages a 3x3 map, and the
    # cache moves up the backbone with each unfreeze step (2 blocks: a 3x3
    # output, then 5 blocks: a 6x6 one).
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (8, 96, 96, 3)).astype("float32")
    y = np.arange(8) % 2
    x[y == 1] = np.clip(x[y == 1] + 40, 0, 255)

    def build(cache):
        keras.utils.set_random_seed(1)
        model = keras_transfer.build_classifier(
            "mobilenet_v2_035",
            2,
            input_shape=(96, 96, 3),
            weights=weights_dir / MNV2_035,
            dropout=0.2,
            cache_frozen_features=cache,
        )
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    results = fit_both(
        build,
        dict(x=x, y=y, batch_size=4, shuffle=False, validation_split=0.25),
        callbacks=lambda: keras_transfer.ProgressiveUnfreeze(schedule={1: 2, 2: 5}, verbose=0),
        epochs=3,
    )
    assert_same_training(results)
    cached = results[True]
    info = caching.feature_cache_info(cached.model)
    assert (info.samples, info.validation_samples, info.storage) == (6, 2, "memory")
    assert info.seconds > 0
    assert info.boundaries == (
        ("pool",),
        ("block_15_add",),
        ("block_12_add",),
    )
    backbone = {v.path for v in cached.model.get_layer("mobilenetv2_0.35_96").weights}
    assert any(
        not np.allclose(a, b)
        for v, a, b in zip(cached.model.weights, cached.initial, cached.final)
        if v.path in backbone
    ), "the unfrozen blocks did not train"
