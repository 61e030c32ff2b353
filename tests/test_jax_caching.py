"""The frozen-feature cache on JAX, on one device and under `keras.distribution.DataParallel`.

Keras picks its backend once per process and JAX its devices at import, so
one fresh interpreter (`KERAS_BACKEND=jax`, two host devices) runs every
fit here and reports them in JSON; the tests read that report:

- a `ProgressiveUnfreeze` fit, cached against uncached on one device: the
  same losses and trained weights, frozen weights untouched, the cached
  boundary moving with the phase;
- random user layers before frozen layers (one found by its behaviour, one
  by its trace's random primitives, one by both) train uncached, with the
  warning naming them;
- `augmented_views=2`: the epochs alternate between two distinct views;
- `DataParallel` over the two devices: each batch split in halves across
  them, cached as uncached and as on one device; `ModelParallel` trains
  uncached with a warning naming it.
"""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Two devices sum their halves of a batch in another order than one.
RTOL, ATOL = 1e-5, 1e-6

SCRIPT = r"""
import json, os, sys, warnings
import jax, keras, numpy as np
import keras_transfer
from keras_transfer import caching
from keras_transfer.layers import classifier_head
from keras_transfer.layers import global_pooling
from keras_transfer.models import TransferClassifier

assert keras.backend.backend() == "jax" and len(jax.devices()) == 2, jax.devices()
SIZE = 32

class Shards(keras.layers.Layer):
    # After the head (in every phase's trained part): how the compiled train
    # step splits its batch over the devices, (batch, devices, per device).
    seen = []

    def call(self, x, training=None):
        if training and not isinstance(x, keras.KerasTensor):
            jax.debug.inspect_array_sharding(x, callback=lambda s: Shards.seen.append(
                [x.shape[0], s.num_devices, s.shard_shape(x.shape)[0]]))
        return x

def images(n, seed, classes=3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.uniform(0, 1, (n, SIZE, SIZE, 3)).astype("float32")
    x[..., 0] += 0.3 * y[:, None, None]
    return x, y

def tiny(cache):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = inputs
    for i, filters in enumerate((8, 16, 16)):
        x = keras.layers.Conv2D(filters, 3, strides=2, name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
    backbone = keras.Model(inputs, x, name="tiny_backbone")
    backbone.trainable = False
    x = classifier_head(3, dropout=0.0)(global_pooling()(backbone(inputs, training=False)))
    model = TransferClassifier(inputs, Shards(name="shards")(x), name="tiny",
                               cache_frozen_features=cache)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    return model

def fit(model, x, y, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(x, y, verbose=0, **kwargs)
    info = caching.feature_cache_info(model)
    return dict(
        history=history.history,
        cached=info is not None,
        boundaries=info.boundaries if info else None,
        views=info.views if info else None,
        warnings=[str(w.message) for w in caught if "cache" in str(w.message)],
    )

def weights(model):
    return {v.path: keras.ops.convert_to_numpy(v).tolist() for v in model.weights}

report = {}

# One device, then DataParallel over both, cached and not. 24 images in
# batches of 8 (a distributed batch splits evenly), shuffled as Keras
# shuffles arrays; the top conv unfreezes at the second epoch.
X, Y = images(24, 0)
VALIDATION = images(8, 1)
data_parallel = keras.distribution.DataParallel(devices=jax.devices())
for name, cache, distribution in (
    ("one_uncached", False, None), ("one_cached", True, None),
    ("parallel_cached", True, data_parallel), ("parallel_uncached", False, data_parallel),
):
    keras.distribution.set_distribution(distribution)
    model = tiny(cache)
    initial = weights(model)
    Shards.seen = []
    run = fit(model, X, Y, batch_size=8, epochs=2, shuffle=True, validation_data=VALIDATION,
              callbacks=[keras_transfer.ProgressiveUnfreeze(
                  "tiny_backbone", {1: 2}, unit="weighted_layers", verbose=0)])
    report[name] = dict(run, initial=initial, final=weights(model), shards=list(Shards.seen))

# ModelParallel (all weights replicated here): not tested, so uncached.
mesh = keras.distribution.DeviceMesh((1, 2), ["batch", "model"], jax.devices())
keras.distribution.set_distribution(keras.distribution.ModelParallel(
    layout_map=keras.distribution.LayoutMap(mesh), batch_dim_name="batch"))
report["model_parallel"] = fit(tiny(True), X[:8], Y[:8], batch_size=8, epochs=1)
keras.distribution.set_distribution(None)

class HiddenNoise(keras.layers.Layer):
    # Its seed generator in a list: not found by its class. Random by both
    # behaviour and trace.
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.generators = [keras.random.SeedGenerator(3)]

    def call(self, x, training=None):
        if training:
            return x + keras.random.uniform(keras.ops.shape(x), seed=self.generators[0])
        return x

class RareNoise(HiddenNoise):
    # Changes one batch in a billion: only its trace shows the randomness.
    def call(self, x, training=None):
        if training:
            coin = keras.random.uniform((), seed=self.generators[0])
            return keras.ops.where(coin < 1e-9, x + 1.0, x)
        return x

class NumpyNoise(keras.layers.Layer):
    # NumPy draws, which no trace shows: only its behaviour does.
    def call(self, x, training=None):
        if training:
            return x + np.float32(np.random.uniform())
        return x

def frozen_after(layers, views=None):
    keras.utils.set_random_seed(2)
    inputs = keras.Input((SIZE, SIZE, 3))
    branches = [layer(inputs) for layer in layers]
    x = branches[0] if len(branches) == 1 else keras.layers.Add()(branches)
    conv = keras.layers.Conv2D(4, 3, strides=4, name="frozen_conv")
    conv.trainable = False
    x = conv(x)
    record = RecordInputs(name="record")
    model = TransferClassifier(inputs, classifier_head(2, dropout=0.0)(global_pooling()(record(x))),
                               augmented_views=views)
    model.compile("adam", "sparse_categorical_crossentropy")
    return model, record

class RecordInputs(keras.layers.Layer):
    # A trained scale that sums its inputs in training: what an epoch trained on.
    def build(self, input_shape):
        self.scale = self.add_weight(shape=(), initializer="ones")
        self.total = self.add_weight(shape=(), initializer="zeros", trainable=False)

    def call(self, x, training=None):
        if training:
            self.total.assign(self.total + keras.ops.sum(x))
        return x * self.scale

model, _ = frozen_after([HiddenNoise(name="hidden"), RareNoise(name="rare"), NumpyNoise(name="numpy")])
report["random_layers"] = fit(model, X[:8], Y[:8] % 2, batch_size=8, epochs=1)

totals = []
model, record = frozen_after([keras.layers.RandomFlip(name="flip")], views=2)
run = fit(model, X[:8], Y[:8] % 2, batch_size=8, epochs=3, shuffle=False, callbacks=[
    keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: totals.append(
        float(keras.ops.convert_to_numpy(record.total))))])
report["augmented_views"] = dict(run, totals=totals)
json.dump(report, open(sys.argv[1], "w"))
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    if importlib.util.find_spec("jax") is None:
        pytest.fail("JAX is not installed: `pip install -e .[dev,jax]` (as .ci/run does).")
    out = tmp_path_factory.mktemp("jax_caching") / "report.json"
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        # Read when JAX starts: two host devices for DataParallel.
        "XLA_FLAGS": (
            os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
        ).strip(),
    }
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0 and out.exists(), result.stderr[-4000:]
    return json.loads(out.read_text())


def _assert_same_fit(run, reference):
    assert sorted(run["history"]) == sorted(reference["history"])
    for key, values in reference["history"].items():
        np.testing.assert_allclose(run["history"][key], values, rtol=RTOL, atol=ATOL, err_msg=key)
    for path, values in reference["final"].items():
        np.testing.assert_allclose(run["final"][path], values, rtol=RTOL, atol=ATOL, err_msg=path)


def test_cached_fit_on_jax_equals_uncached_across_unfreeze_phases(report):
    cached, plain = report["one_cached"], report["one_uncached"]
    assert cached["cached"] and not cached["warnings"], cached["warnings"]
    assert not plain["cached"]
    # The head on the pooled backbone, then conv2 from relu1's cached output.
    assert cached["boundaries"] == [["pool"], ["relu1"]]
    assert cached["history"]["unfreeze_phase"] == [0.0, 1.0]
    _assert_same_fit(cached, plain)


def test_cached_fit_on_jax_keeps_frozen_weights_bit_identical(report):
    cached = report["one_cached"]
    moved = {
        path
        for path, values in cached["initial"].items()
        if not np.array_equal(values, cached["final"][path])
    }
    assert moved == {
        "conv2/kernel",
        "conv2/bias",
        "head/predictions/kernel",
        "head/predictions/bias",
    }


def test_random_user_layers_before_frozen_layers_train_uncached_on_jax(report):
    run = report["random_layers"]
    assert not run["cached"]
    assert len(run["warnings"]) == 1, run["warnings"]
    # By behaviour and trace, by its trace only, by its behaviour only.
    assert "random layer(s) 'hidden', 'rare', 'numpy' before frozen layers" in run["warnings"][0]


def test_augmented_views_on_jax_alternate_between_distinct_views(report):
    run = report["augmented_views"]
    assert run["cached"] and run["views"] == 2 and not run["warnings"], run["warnings"]
    first, second, third = np.diff([0.0] + run["totals"])
    assert first != pytest.approx(second)  # view 0, then view 1: other flips
    assert third == pytest.approx(first, rel=1e-6)  # view 0 again


def test_data_parallel_fit_is_cached_and_splits_each_batch_over_two_devices(report):
    cached = report["parallel_cached"]
    assert cached["cached"] and not cached["warnings"], cached["warnings"]
    assert not report["parallel_uncached"]["cached"]
    # Each phase's compiled train step: batches of 8, 4 images per device.
    assert cached["shards"] == [[8, 2, 4]] * 2
    assert report["parallel_uncached"]["shards"] == cached["shards"]
    assert report["one_cached"]["shards"] == [[8, 1, 8]] * 2


@pytest.mark.parametrize("reference", ["one_uncached", "parallel_uncached"])
def test_data_parallel_cached_fit_equals_uncached_and_one_device(report, reference):
    _assert_same_fit(report["parallel_cached"], report[reference])


def test_model_parallel_trains_uncached_and_says_so(report):
    run = report["model_parallel"]
    assert not run["cached"]
    assert len(run["warnings"]) == 1, run["warnings"]
    assert "DataParallel only; the distribution is ModelParallel" in run["warnings"][0]
