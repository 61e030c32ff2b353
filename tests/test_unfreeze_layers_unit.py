"""`unit="layers"` trains what the classic script trains; `TransferClassifier.from_model`.

The first use of keras-transfer is adding callbacks to an existing Keras
script: `{k: N}, unit="layers"` must train `base_model.layers[-N:]`, as the
script's `for layer in base_model.layers[:-N]: layer.trainable = False`
does, weightless layers counted; and swapping `keras.Model` for
`TransferClassifier` must cache without changing the results.
"""

import numpy as np
import keras
import pytest

import keras_transfer
from keras_transfer.caching import feature_cache_info
from keras_transfer.errors import ConfigurationError
from keras_transfer.unfreeze.plan import UnfreezePlan

SIZE = 96


def _mobilenet(size=SIZE):
    return keras.applications.MobileNetV2(
        input_shape=(size, size, 3), include_top=False, weights=None, alpha=0.35
    )


def seed_script_model():
    """The seed script: backbone layers inline, a softmax head."""
    keras.utils.set_random_seed(0)
    base = _mobilenet()
    base.trainable = False
    x = keras.layers.GlobalAveragePooling2D()(base.output)
    outputs = keras.layers.Dense(2, activation="softmax", name="head")(x)
    return keras.Model(base.input, outputs), base


def tutorial_model():
    """TensorFlow's transfer-learning tutorial: augmentation, nested backbone, logits."""
    keras.utils.set_random_seed(0)
    base = _mobilenet()
    base.trainable = False
    augment = keras.Sequential(
        [keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.2)]
    )
    inputs = keras.Input((SIZE, SIZE, 3))
    x = augment(inputs)
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(x)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(1)(x)
    return keras.Model(inputs, outputs), base


def _is_bn_variable(base, variable):
    bn = [l for l in base.layers if isinstance(l, keras.layers.BatchNormalization)]
    return any(variable is v for l in bn for v in l.weights)


def two_fit_trainable(model, base, fine_tune_at):
    """Variable ids that the two-fit script's second fit trains (BatchNorm aside)."""
    base.trainable = True
    for layer in base.layers[:fine_tune_at]:
        layer.trainable = False
    ids = {id(v) for v in model.trainable_weights if not _is_bn_variable(base, v)}
    base.trainable = False
    return ids


def check_phase_matches_script(model, base, trainable, fine_tune_at):
    assert {id(v) for v in trainable if not _is_bn_variable(base, v)} == two_fit_trainable(
        model, base, fine_tune_at
    )
    # The script's BatchNorm layers run in inference mode; ours stay frozen.
    assert not any(_is_bn_variable(base, v) for v in trainable)


def test_seed_script_last_20_layers():
    model, base = seed_script_model()
    plan = UnfreezePlan(model, base, {3: 20}, unit="layers")
    assert plan.units == [l.name for l in base.layers]
    plan.apply_depth(20)
    trainable = list(model.trainable_weights)
    check_phase_matches_script(model, base, trainable, len(base.layers) - 20)
    plan.apply_depth(0)
    assert [v.path for v in model.trainable_weights] == [
        v.path for v in model.get_layer("head").weights
    ]


def test_tutorial_fine_tune_at_100():
    model, base = tutorial_model()
    fine_tune_at = 100
    model.compile(keras.optimizers.RMSprop(1e-4), keras.losses.BinaryCrossentropy(from_logits=True))
    unfreeze = keras_transfer.ProgressiveUnfreeze(
        base, {1: len(base.layers) - fine_tune_at}, unit="layers", verbose=0
    )
    plan = unfreeze.plan_for(model)
    plan.apply_depth(plan.depth_at(0))
    assert {id(v) for v in model.trainable_weights} == {id(v) for v in model.layers[-1].weights}
    plan.apply_depth(plan.depth_at(1))
    check_phase_matches_script(model, base, list(model.trainable_weights), fine_tune_at)
    # The old weighted count reached far below layer 100 (block_8 for MobileNetV2).
    weighted = UnfreezePlan(
        model, base, {1: len(base.layers) - fine_tune_at}, unit="weighted_layers"
    )
    assert weighted.trainable_units(weighted.phases[-1][1])[0] != base.layers[fine_tune_at].name


def test_nested_model_among_the_layers_is_one_unit():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    block = keras.Sequential(
        [
            keras.layers.Conv2D(4, 3, name="inner_conv"),
            keras.layers.BatchNormalization(name="inner_bn"),
        ],
        name="block",
    )
    x = keras.layers.Conv2D(4, 1, name="stem")(inputs)
    x = block(x)
    x = keras.layers.ReLU(name="relu")(x)
    base = keras.Model(inputs, x, name="backbone")
    base.trainable = False
    outputs = keras.layers.Dense(2, name="head")(keras.layers.Flatten()(base.output))
    model = keras.Model(base.input, outputs)
    plan = UnfreezePlan(model, base, {1: 2}, unit="layers")
    assert plan.units == [l.name for l in base.layers] and plan.num_units == 4
    plan.apply_depth(2)  # relu and the nested block
    names = {v.path.split("/")[-2] for v in model.trainable_weights}
    assert names == {"inner_conv", "head"}


def test_unknown_unit_names_all_three():
    with pytest.raises(ConfigurationError, match="'weighted_layers'"):
        keras_transfer.ProgressiveUnfreeze(None, {1: 1}, unit="layer")


def _tiny_backbone(size):
    inputs = keras.Input((size, size, 3))
    x = inputs
    for i, filters in enumerate((8, 16)):
        x = keras.layers.Conv2D(filters, 3, strides=2, name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
    return keras.Model(inputs, x, name="tiny_backbone")


def _classic(kind, size=32):
    """The classic script's model, over a small backbone (nested or inline)."""
    keras.utils.set_random_seed(0)
    base = _tiny_backbone(size)
    base.trainable = False
    if kind == "sequential":
        model = keras.Sequential(
            [
                keras.Input((size, size, 3)),
                base,
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(2, activation="softmax"),
            ]
        )
    else:
        x = keras.layers.GlobalAveragePooling2D()(base.output)
        x = keras.layers.Dropout(0.2)(x)
        model = keras.Model(base.input, keras.layers.Dense(2, activation="softmax")(x))
    model.compile(
        keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    return model, base


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="the feature cache is TensorFlow-only"
)
@pytest.mark.parametrize("kind", ["sequential", "functional"])
def test_from_model_caches_and_matches_the_plain_model(kind):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (16, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 2, 16)
    results = []
    for swap in (False, True):
        model, base = _classic(kind)
        if swap:
            model = keras_transfer.TransferClassifier.from_model(model)
            assert model.compiled
        unfreeze = keras_transfer.ProgressiveUnfreeze(base, {1: 4}, unit="layers", verbose=0)
        history = model.fit(
            x, y, batch_size=8, epochs=2, shuffle=False, callbacks=[unfreeze], verbose=0
        ).history
        assert (feature_cache_info(model) is not None) == swap
        results.append((history, [keras.ops.convert_to_numpy(w) for w in model.weights]))
    (plain, plain_weights), (swapped, swapped_weights) = results
    for key in plain:
        np.testing.assert_allclose(plain[key], swapped[key], atol=1e-5, err_msg=key)
    for a, b in zip(plain_weights, swapped_weights):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_from_model_shares_layers_and_refuses_subclassed_models():
    model, base = _classic("functional")
    swapped = keras_transfer.TransferClassifier.from_model(model, cache_memory_limit=0)
    assert swapped.layers[-1] is model.layers[-1] and swapped.cache_memory_limit == 0

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ConfigurationError, match="built functional or Sequential"):
        keras_transfer.TransferClassifier.from_model(Subclassed())
