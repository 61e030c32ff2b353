"""Optimizer options keep their meaning under ProgressiveUnfreeze's per-group optimizer.

The `UnfreezeOptimizer` splits the model's weights into a head group and
backbone groups, each with its own optimizer: an option of the compiled
optimizer must act as it would with one optimizer over the same weights, or
be refused with a clear error.
"""

import numpy as np
import keras
import pytest

from test_progressive_unfreeze import BATCH
from test_progressive_unfreeze import SIZE
from test_progressive_unfreeze import tiny_model

from keras_transfer.callbacks.progressive_unfreeze import ProgressiveUnfreeze
from keras_transfer.errors import ConfigurationError


def _data(n):
    rng = np.random.default_rng(0)
    return rng.uniform(0, 1, (n, SIZE, SIZE, 3)).astype("float32"), rng.integers(0, 2, n)


def _unfreeze(base, schedule):
    # One learning rate for head and backbone, no warm-up: the per-group
    # optimizer should then take the very steps of one plain optimizer.
    return ProgressiveUnfreeze(
        base, schedule, unit="weighted_layers", lr_ratio=1.0, warmup_steps=0, verbose=0
    )


def _weights(model):
    return {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}


def _fit_both(make_optimizer, depth, steps=2):
    """Weights after `steps` steps: ProgressiveUnfreeze vs one plain optimizer.

    Both train the head and the top `depth` weight layers of the tiny
    backbone (BatchNormalization frozen) from the first step.
    """
    x, y = _data(n=BATCH * steps)
    model, base = tiny_model(make_optimizer())
    model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[_unfreeze(base, {0: depth})],
    )
    unfrozen = _weights(model)

    plain, plain_base = tiny_model(make_optimizer())
    initial = _weights(plain)
    plain_base.trainable = True
    weight_layers = [layer for layer in plain_base.layers if layer.weights]
    for layer in plain_base.layers:
        top = layer in weight_layers[len(weight_layers) - depth :]
        layer.trainable = top and not isinstance(layer, keras.layers.BatchNormalization)
    plain.compile(make_optimizer(), "sparse_categorical_crossentropy")
    plain.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    return unfrozen, _weights(plain), initial


OPTIONS = {
    # Fixed by the UnfreezeOptimizer: one clip over all the model's gradients.
    "global_clipnorm": lambda: keras.optimizers.SGD(0.1, global_clipnorm=0.05),
    # Fixed: the averages go back into the right weights at the end of fit.
    "use_ema": lambda: keras.optimizers.Adam(1e-2, use_ema=True, ema_momentum=0.5),
    # Per-variable or per-step options, the same per group by construction.
    "clipnorm": lambda: keras.optimizers.SGD(0.1, clipnorm=0.01),
    "clipvalue": lambda: keras.optimizers.SGD(0.1, clipvalue=1e-3),
    "weight_decay": lambda: keras.optimizers.AdamW(1e-2, weight_decay=0.5),
    "loss_scale_factor": lambda: keras.optimizers.SGD(0.1, loss_scale_factor=128.0),
}


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_an_option_acts_as_with_one_optimizer_over_the_same_weights(option):
    # Depth 4 puts two convolutions in one group, listed top first: their
    # order differs from the model's.
    unfrozen, plain, initial = _fit_both(OPTIONS[option], depth=4)
    moved = [path for path in plain if not np.array_equal(plain[path], initial[path])]
    assert {"conv1/kernel", "conv2/kernel", "head/kernel"} <= set(moved)
    for path in plain:
        np.testing.assert_allclose(unfrozen[path], plain[path], rtol=1e-6, atol=1e-6, err_msg=path)


def test_global_clipnorm_clips_the_gradients_of_head_and_backbone_together():
    unfrozen, plain, initial = _fit_both(OPTIONS["global_clipnorm"], depth=2, steps=1)
    # SGD: the update is -lr * clipped gradient, so its total norm is lr * clip.
    update = np.sqrt(sum(np.sum((unfrozen[p] - initial[p]) ** 2) for p in initial))
    np.testing.assert_allclose(update, 0.1 * 0.05, rtol=1e-5)


@pytest.mark.parametrize("how", ["var_list", "var_names"])
def test_a_backbone_weight_excluded_from_weight_decay_is_not_decayed(how):
    lr, decay, steps = 1e-2, 0.5, 2
    optimizer = keras.optimizers.AdamW(lr, weight_decay=decay)
    model, base = tiny_model(optimizer)
    conv = base.get_layer("conv2")
    if how == "var_list":
        optimizer.exclude_from_weight_decay(var_list=[conv.kernel])
    else:
        optimizer.exclude_from_weight_decay(var_names=["kernel"])
    # A large negative bias makes the ReLU after conv2 output zeros: conv2's
    # gradients are exactly zero, so only weight decay can move its weights.
    conv.bias.assign(-100.0 * np.ones(conv.bias.shape, "float32"))
    kernel = keras.ops.convert_to_numpy(conv.kernel)
    bias = keras.ops.convert_to_numpy(conv.bias)
    x, y = _data(n=BATCH * steps)
    model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=[_unfreeze(base, {1: 2})],
    )
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(conv.kernel), kernel)
    # The bias is not excluded: AdamW decays it at each of the phase's steps.
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(conv.bias), bias * (1 - lr * decay) ** steps, rtol=1e-6
    )


@pytest.mark.parametrize(
    "option, optimizer",
    [
        (
            "gradient_accumulation_steps",
            lambda: keras.optimizers.Adam(1e-3, gradient_accumulation_steps=2),
        ),
        (
            "ema_overwrite_frequency",
            lambda: keras.optimizers.Adam(1e-3, use_ema=True, ema_overwrite_frequency=2),
        ),
    ],
)
def test_an_option_counted_per_group_is_refused_with_its_name(option, optimizer):
    model, base = tiny_model(optimizer())
    compiled = model.optimizer
    x, y = _data(n=BATCH)
    with pytest.raises(ConfigurationError, match=option):
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[_unfreeze(base, {1: 2})])
    assert model.optimizer is compiled
