"""No stale features: after anything that changes the frozen part, a cached fit trains as an uncached one.

Each case runs the same sequence of fits and changes on two identical
models, one cached (sharing a `FeatureStore`, the path where features could
outlive the weights that computed them) and one with
`cache_frozen_features=False`, and compares the losses of the last fit.
The frozen part changes by a second fit after `ProgressiveUnfreeze`,
`load_weights`, `set_weights`, `keras_transfer.load_model`, or `trainable`
set by hand between fits.
"""

import keras
import numpy as np
import pytest

import keras_transfer
from keras_transfer import caching

SIZE = 32
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (24, SIZE, SIZE, 3)).astype("float32")
    y = (np.arange(24) % 2).astype("int32")
    x[y == 1] = np.clip(x[y == 1] + 40, 0, 255)
    return x, y


def classifier(cached, store=None, seed=1):
    keras.utils.set_random_seed(seed)
    model = keras_transfer.build_classifier(
        "mobilenet_v2_035",
        2,
        input_shape=(SIZE, SIZE, 3),
        weights=None,
        dropout=0.0,
        cache_frozen_features=cached,
    )
    model.feature_store = store
    compile_model(model)
    return model


def compile_model(model, learning_rate=1e-3):
    model.compile(keras.optimizers.Adam(learning_rate), "sparse_categorical_crossentropy")


def fit(model, data, epochs=2, callbacks=()):
    keras.utils.set_random_seed(7)
    history = model.fit(
        *data,
        batch_size=8,
        epochs=epochs,
        shuffle=False,
        callbacks=list(callbacks),
        validation_data=(data[0][:8], data[1][:8]),
        verbose=0,
    )
    return history.history


def backbone(model):
    return keras_transfer.backbones.find_backbone(model)[0]


def scale_backbone_weights(model, factor):
    model_backbone = backbone(model)
    model_backbone.set_weights([w * factor for w in model_backbone.get_weights()])


def assert_same_losses(cached, uncached):
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(cached[key], uncached[key], rtol=TOLERANCE, atol=TOLERANCE)


def run_twins(data, steps):
    """Runs `steps(model, store)` on a cached and an uncached twin; returns both last histories."""
    store = caching.FeatureStore()
    results = []
    for cached in (True, False):
        model = classifier(cached, store if cached else None)
        results.append((model, steps(model, data)))
    (cached_model, cached_history), (_, uncached_history) = results
    assert caching.feature_cache_info(cached_model) is not None, "the last fit was not cached"
    assert_same_losses(cached_history, uncached_history)
    return cached_model


def test_second_fit_after_progressive_unfreeze(data):
    def steps(model, data):
        fit(model, data, epochs=2, callbacks=[keras_transfer.ProgressiveUnfreeze(schedule={1: 2})])
        # The last 2 blocks are trainable now and have trained: the next
        # fit caches less, from weights that moved.
        return fit(model, data, epochs=2)

    run_twins(data, steps)


def test_fit_after_set_weights_of_frozen_layers(data):
    def steps(model, data):
        fit(model, data)
        scale_backbone_weights(model, 0.9)
        return fit(model, data)

    model = run_twins(data, steps)
    assert not caching.feature_cache_info(model).reused


def test_fit_after_load_weights(data, tmp_path):
    other = classifier(cached=False, seed=5)
    scale_backbone_weights(other, 1.1)
    path = str(tmp_path / "other.weights.h5")
    other.save_weights(path)

    def steps(model, data):
        fit(model, data)
        model.load_weights(path)
        return fit(model, data)

    model = run_twins(data, steps)
    assert not caching.feature_cache_info(model).reused


def test_fit_after_load_model_of_another_model(data, tmp_path):
    store = caching.FeatureStore()
    first = classifier(True, store)
    fit(first, data)
    # Same architecture, other frozen weights: its features are not first's.
    other = classifier(cached=True, seed=5)
    scale_backbone_weights(other, 1.1)
    path = str(tmp_path / "other.keras")
    other.save(path)

    histories = []
    for cached in (True, False):
        loaded = keras_transfer.load_model(path)
        loaded.cache_frozen_features = cached
        loaded.feature_store = store if cached else None
        compile_model(loaded)
        histories.append(fit(loaded, data))
        if cached:
            info = caching.feature_cache_info(loaded)
            assert info is not None and not info.reused
    assert_same_losses(*histories)


def test_fit_after_trainable_set_by_hand_between_fits(data):
    def steps(model, data):
        model_backbone = backbone(model)
        # Train the top layers, freeze them again by hand: their trained
        # weights are now part of what the next fit caches.
        for layer in model_backbone.layers[-10:]:
            if not isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = True
        compile_model(model)
        fit(model, data)
        for layer in model_backbone.layers:
            layer.trainable = False
        compile_model(model)
        return fit(model, data)

    model = run_twins(data, steps)
    assert not caching.feature_cache_info(model).reused


def test_unchanged_frozen_part_is_reused_from_the_store(data):
    # The counterpart that keeps the checks above honest: nothing changed,
    # the store's features are used.
    def steps(model, data):
        fit(model, data)
        return fit(model, data)

    model = run_twins(data, steps)
    assert caching.feature_cache_info(model).reused
