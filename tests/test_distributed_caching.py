"""The frozen-feature cache under `tf.distribute.MirroredStrategy`: two logical CPUs train as one.

A `TransferClassifier` built inside `strategy.scope()` caches as on one
device: the pass computes the features outside the replicas (inference,
with the mirrored weights, which are equal), and Keras distributes the
feature batches as it distributes images, so each replica's step runs the
head (and later the unfrozen block) on its half of every batch and the
gradients are all-reduced. The fit is compared with the same fit on one
device, uncached. Logical devices must be configured before TensorFlow
starts, hence a fresh interpreter.

Strategies this project has not tested (MultiWorkerMirroredStrategy,
TPUStrategy, ParameterServerStrategy, ...) train uncached, with one warning
that names the strategy: `test_untested_strategy_trains_uncached_and_says_which`.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_transfer import caching
from keras_transfer.layers import classifier_head
from keras_transfer.layers import global_pooling
from keras_transfer.models import TransferClassifier

# Two replicas sum their halves of a batch in another order than one device.
RTOL, ATOL = 1e-5, 1e-6

SCRIPT = r"""
import json, sys, warnings
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import keras_transfer
from keras_transfer import caching
from keras_transfer.layers import classifier_head
from keras_transfer.layers import global_pooling
from keras_transfer.models import TransferClassifier

SIZE = 32

class BatchSizes(keras.layers.Layer):
    # After the head (so in every phase's trained part): records the size
    # of each training batch that a step runs on, per replica. Adds zero.
    seen = []

    def call(self, x, training=None):
        if not training or isinstance(x, keras.KerasTensor):
            return x
        def record(n):
            BatchSizes.seen.append(int(n))
            return np.float32(0)
        zero = tf.numpy_function(record, [tf.shape(x)[0]], tf.float32, stateful=True)
        zero.set_shape(())
        return x + tf.cast(zero, x.dtype)

def build(cache, strategy):
    keras.utils.set_random_seed(1)
    with strategy.scope():
        inputs = keras.Input((SIZE, SIZE, 3), name="image")
        x = inputs
        for i, filters in enumerate((8, 16, 16)):
            x = keras.layers.Conv2D(filters, 3, strides=2, name=f"conv{i}")(x)
            x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
            x = keras.layers.ReLU(name=f"relu{i}")(x)
        backbone = keras.Model(inputs, x, name="tiny_backbone")
        backbone.trainable = False
        x = classifier_head(3, dropout=0.0)(global_pooling()(backbone(inputs, training=False)))
        outputs = BatchSizes(name="batch_sizes")(x)
        model = TransferClassifier(inputs, outputs, name="tiny", cache_frozen_features=cache)
        model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy",
                      metrics=["accuracy"])
    return model

def images(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.uniform(0, 1, (n, SIZE, SIZE, 3)).astype("float32")
    x[..., 0] += 0.3 * y[:, None, None]
    return x, y

# 20 training images in batches of 8, 8 and 4 (halves: 4, 4, 2), shuffled as
# Keras shuffles arrays. Keras reduces the first validation batch across the
# replicas before it builds, so that batch must split evenly: 8 images.
X, Y = images(20, 0)
X_VAL, Y_VAL = images(8, 1)
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert mirrored.num_replicas_in_sync == 2
runs = {}
for name, cache, strategy in (
    ("one_device", False, tf.distribute.get_strategy()),
    ("mirrored_cached", True, mirrored),
    ("mirrored_uncached", False, mirrored),
):
    model = build(cache, strategy)
    initial = {v.path: keras.ops.convert_to_numpy(v).tolist() for v in model.weights}
    BatchSizes.seen = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(
            X, Y, batch_size=8, epochs=3, shuffle=True, validation_data=(X_VAL, Y_VAL),
            verbose=0, callbacks=[keras_transfer.ProgressiveUnfreeze(
                "tiny_backbone", {1: 2}, unit="weighted_layers", verbose=0)],
        )
    replicas_agree = all(
        all(np.array_equal(c.numpy(), v.value.values[0].numpy()) for c in v.value.values)
        for v in model.weights if hasattr(v.value, "values")
    )
    runs[name] = dict(
        history=history.history,
        initial=initial,
        final={v.path: keras.ops.convert_to_numpy(v).tolist() for v in model.weights},
        cached=caching.feature_cache_info(model) is not None,
        batch_sizes=sorted(BatchSizes.seen),
        replicas_agree=replicas_agree,
        warnings=[str(w.message) for w in caught if "cache" in str(w.message)],
    )
json.dump(runs, open(sys.argv[1], "w"))
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("mirrored") / "runs.json"
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0 and out.exists(), result.stderr[-3000:]
    return json.loads(out.read_text())


def test_mirrored_fit_is_cached_and_runs_each_half_batch_on_a_replica(runs):
    cached = runs["mirrored_cached"]
    assert cached["cached"] and not cached["warnings"], cached["warnings"]
    assert not runs["mirrored_uncached"]["cached"]
    # Three epochs of batches of 8, 8 and 4: one device sees them whole,
    # each of the two replicas sees half of each, cached or not.
    assert runs["one_device"]["batch_sizes"] == sorted([8, 8, 4] * 3)
    assert cached["batch_sizes"] == sorted([4, 4, 2] * 2 * 3)
    assert runs["mirrored_uncached"]["batch_sizes"] == cached["batch_sizes"]
    # All-reduced gradients: both copies of every variable stay equal.
    assert cached["replicas_agree"]


@pytest.mark.parametrize("reference", ["one_device", "mirrored_uncached"])
def test_mirrored_cached_fit_equals_uncached_fit(runs, reference):
    cached, plain = runs["mirrored_cached"], runs[reference]
    assert sorted(cached["history"]) == sorted(plain["history"])
    assert cached["history"]["unfreeze_phase"] == [0.0, 1.0, 1.0]
    for key, values in plain["history"].items():
        np.testing.assert_allclose(
            cached["history"][key], values, rtol=RTOL, atol=ATOL, err_msg=key
        )
    for path, values in plain["final"].items():
        np.testing.assert_allclose(
            cached["final"][path], values, rtol=RTOL, atol=ATOL, err_msg=path
        )


def test_mirrored_cached_fit_keeps_frozen_weights_and_trains_the_rest(runs):
    cached = runs["mirrored_cached"]
    moved = {
        path
        for path, values in cached["initial"].items()
        if not np.array_equal(values, cached["final"][path])
    }
    # The head, then the top conv (its BatchNormalization stays frozen).
    assert moved == {
        "conv2/kernel",
        "conv2/bias",
        "head/predictions/kernel",
        "head/predictions/bias",
    }


def test_untested_strategy_trains_uncached_and_says_which():
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    keras.utils.set_random_seed(0)
    with strategy.scope():
        inputs = keras.Input((8, 8, 3))
        backbone = keras.Sequential([keras.layers.Conv2D(4, 3)], name="frozen")
        backbone.trainable = False
        outputs = classifier_head(2)(global_pooling()(backbone(inputs, training=False)))
        model = TransferClassifier(inputs, outputs)
        model.compile("adam", "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).uniform(size=(8, 8, 8, 3)).astype("float32")
    with pytest.warns(
        UserWarning, match="MirroredStrategy only; the model's strategy is OneDeviceStrategy"
    ):
        model.fit(x, np.arange(8) % 2, batch_size=4, epochs=1, verbose=0)
    assert caching.feature_cache_info(model) is None
