"""Behaviour of ProgressiveUnfreeze: what trains when, with which optimizer state."""

import numpy as np
import keras
import pytest

import keras_transfer
from keras_transfer.unfreeze import phase as _phase
from keras_transfer.callbacks.progressive_unfreeze import GradualSchedule
from keras_transfer.callbacks.progressive_unfreeze import ProgressiveUnfreeze
from keras_transfer.errors import ConfigurationError
from keras_transfer.unfreeze.optimizer import UnfreezeOptimizer

SIZE = 32
BATCH = 8


def _data(n=32, classes=2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, SIZE, SIZE, 3)).astype("float32")
    y = rng.integers(0, classes, n)
    return x, y


def classic_model(optimizer=None, seed=0, compile_model=True):
    """The classic script: keras.applications layers inline in the model."""
    keras.utils.set_random_seed(seed)
    base = keras.applications.MobileNetV2(
        input_shape=(SIZE, SIZE, 3), include_top=False, weights=None, alpha=0.35
    )
    base.trainable = False
    x = keras.layers.GlobalAveragePooling2D()(base.output)
    outputs = keras.layers.Dense(2, activation="softmax", name="head")(x)
    model = keras.Model(base.input, outputs)
    if compile_model:
        model.compile(
            optimizer or keras.optimizers.Adam(1e-3),
            "sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
    return model, base


def tiny_model(optimizer=None, seed=0):
    """A small backbone with healthy gradients, inline in the model."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = inputs
    for i, filters in enumerate((8, 16, 16)):
        x = keras.layers.Conv2D(filters, 3, strides=2, name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
    base = keras.Model(inputs, x, name="tiny_backbone")
    base.trainable = False
    x = keras.layers.GlobalAveragePooling2D()(base.output)
    outputs = keras.layers.Dense(2, activation="softmax", name="head")(x)
    model = keras.Model(base.input, outputs)
    model.compile(optimizer or keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    return model, base


def _snapshot(layers):
    return {v.path: keras.ops.convert_to_numpy(v).copy() for l in layers for v in l.weights}


def _by_name(base, names):
    return [base.get_layer(n) for n in names]


class RecordWeights(keras.callbacks.Callback):
    """Snapshots every weight of `layers` at the start of each epoch."""

    def __init__(self, layers):
        super().__init__()
        self.layers = layers
        self.at_epoch_begin = {}

    def on_epoch_begin(self, epoch, logs=None):
        self.at_epoch_begin[epoch] = _snapshot(self.layers)


def test_unfrozen_units_train_frozen_units_stay_bit_identical():
    model, base = classic_model()
    x, y = _data()
    unfreeze = ProgressiveUnfreeze(base, {2: 6}, unit="weighted_layers", verbose=0)
    recorder = RecordWeights(base.layers)
    model.fit(x, y, batch_size=BATCH, epochs=3, callbacks=[unfreeze, recorder], verbose=0)
    weighted = [l for l in base.layers if l.weights]
    top6, rest = weighted[-6:], weighted[:-6]
    end = _snapshot(base.layers)
    # Epochs 0-1: head only, the whole backbone is bit-identical.
    for path, value in recorder.at_epoch_begin[0].items():
        np.testing.assert_array_equal(value, recorder.at_epoch_begin[2][path])
    # Epoch 2: kernels of the unfrozen units move...
    for layer in top6:
        if isinstance(layer, keras.layers.BatchNormalization):
            continue
        kernel = layer.weights[0]
        assert not np.array_equal(recorder.at_epoch_begin[2][kernel.path], end[kernel.path]), (
            layer.name
        )
    # ...units still frozen do not, nor do BatchNorm statistics (even unfrozen ones).
    for layer in rest + [l for l in top6 if isinstance(l, keras.layers.BatchNormalization)]:
        for v in layer.weights:
            np.testing.assert_array_equal(recorder.at_epoch_begin[0][v.path], end[v.path])


def test_train_bn_true_updates_batchnorm_statistics():
    model, base = classic_model()
    x, y = _data()
    unfreeze = ProgressiveUnfreeze(base, {1: 6}, unit="weighted_layers", train_bn=True, verbose=0)
    start = _snapshot(base.layers)
    model.fit(x, y, batch_size=BATCH, epochs=2, callbacks=[unfreeze], verbose=0)
    bn = [l for l in base.layers if l.weights][-6:]
    bn = [l for l in bn if isinstance(l, keras.layers.BatchNormalization)]
    assert bn
    moving = [v for l in bn for v in l.weights if "moving" in v.path]
    assert any(not np.array_equal(start[v.path], keras.ops.convert_to_numpy(v)) for v in moving)


def test_logs_record_phase_trainable_params_and_backbone_rate(tmp_path):
    model, base = classic_model()
    x, y = _data()
    csv = tmp_path / "log.csv"
    unfreeze = ProgressiveUnfreeze(base, {1: 4}, unit="weighted_layers", lr_ratio=0.1, verbose=0)
    seen = []
    watch = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append(_phase.current_phase(model))
    )
    history = model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=2,
        verbose=0,
        callbacks=[unfreeze, keras.callbacks.CSVLogger(str(csv)), watch],
    )
    assert [(i.index, i.depth, i.changed) for i in seen] == [(0, 0, True), (1, 4, True)]
    assert seen[1].trainable_units[-1] == "Conv_1_bn"
    assert set(seen[1].learning_rates) == {"head", "phase1/block_16_project-Conv_1_bn"}
    h = history.history
    assert h["unfreeze_phase"] == [0.0, 1.0]
    assert h["trainable_params"][1] > h["trainable_params"][0]
    assert h["backbone_lr"][0] == 0.0
    assert h["backbone_lr"][1] == pytest.approx(1e-4, rel=1e-5)
    header = csv.read_text().splitlines()[0]
    assert "unfreeze_phase" in header and "trainable_params" in header
    assert _phase.current_phase(model) is None  # cleared when fit ends


def test_newly_unfrozen_weights_take_no_larger_first_step_than_their_rate():
    # Adam on shared state would take ~2.5x the rate on the first step after a
    # long head phase (stale bias correction). Fresh group state must not.
    model, base = tiny_model(keras.optimizers.Adam(1e-2))
    x, y = _data(n=64)
    warmup = 4
    unfreeze = ProgressiveUnfreeze(
        base, {3: 2}, unit="weighted_layers", lr_ratio=0.5, warmup_steps=warmup, verbose=0
    )

    class FirstStep(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if not hasattr(self, "before") and unfreeze._current_phase == 1:
                self.before = _snapshot(base.layers)

        def on_train_batch_end(self, batch, logs=None):
            if hasattr(self, "before") and not hasattr(self, "after"):
                # JAX trains on a copy of the weights until they are synced.
                getattr(self.model, "jax_state_sync", lambda: None)()
                self.after = _snapshot(base.layers)

    probe = FirstStep()
    model.fit(x, y, batch_size=BATCH, epochs=4, callbacks=[unfreeze, probe], verbose=0)
    rate_at_first_step = 1e-2 * 0.5 / warmup
    steps = [
        np.max(np.abs(probe.after[p] - probe.before[p]))
        for p in probe.before
        if "kernel" in p and not np.array_equal(probe.after[p], probe.before[p])
    ]
    assert steps, "no backbone kernel moved on the first step after unfreezing"
    assert max(steps) <= rate_at_first_step * 1.01
    assert max(steps) >= rate_at_first_step * 0.5


def test_head_keeps_its_optimizer_and_state_across_phases():
    compiled = keras.optimizers.Adam(1e-3)
    model, base = tiny_model(compiled)
    x, y = _data()
    unfreeze = ProgressiveUnfreeze(base, {1: 3}, unit="weighted_layers", verbose=0)
    model.fit(x, y, batch_size=BATCH, epochs=3, callbacks=[unfreeze], verbose=0)
    assert isinstance(model.optimizer, UnfreezeOptimizer)
    assert model.optimizer.head_optimizer is compiled
    steps_per_epoch = len(x) // BATCH
    # The head trained every step of every epoch; the group only after epoch 1.
    assert int(compiled.iterations) == 3 * steps_per_epoch
    group = list(model.optimizer.group_optimizers.values())[1]
    assert int(group.iterations) == 2 * steps_per_epoch


def _train_state(model):
    trainable = sorted(v.path for v in model.trainable_variables)
    optimizer_vars = [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]
    weights = [keras.ops.convert_to_numpy(v) for v in model.weights]
    return trainable, optimizer_vars, weights


def _assert_same_state(a, b):
    assert a[0] == b[0]
    assert len(a[1]) == len(b[1])
    for u, v in zip(a[1], b[1]):
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-5)
    for u, v in zip(a[2], b[2]):
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-5)


SCHEDULE = {1: 2, 2: 4}


def _uninterrupted(x, y, epochs=4):
    model, base = tiny_model()
    model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=[ProgressiveUnfreeze(base, SCHEDULE, unit="weighted_layers", verbose=0)],
    )
    return _train_state(model)


def test_resume_with_initial_epoch_matches_uninterrupted_run():
    x, y = _data()
    expected = _uninterrupted(x, y)
    model, base = tiny_model()
    model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=[ProgressiveUnfreeze(base, SCHEDULE, unit="weighted_layers", verbose=0)],
    )
    # A fresh callback, resuming in the middle of phase 2.
    model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=4,
        initial_epoch=2,
        shuffle=False,
        verbose=0,
        callbacks=[ProgressiveUnfreeze(base, SCHEDULE, unit="weighted_layers", verbose=0)],
    )
    _assert_same_state(_train_state(model), expected)


class CrashAfterEpoch(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("simulated crash")


def test_backup_and_restore_after_crash_mid_phase_matches_uninterrupted_run(tmp_path):
    x, y = _data()
    expected = _uninterrupted(x, y)
    backup = str(tmp_path / "backup")
    # Crash at the end of epoch 2, in the middle of the last phase.
    model, base = tiny_model()
    with pytest.raises(RuntimeError, match="simulated crash"):
        model.fit(
            x,
            y,
            batch_size=BATCH,
            epochs=4,
            shuffle=False,
            verbose=0,
            callbacks=[
                keras.callbacks.BackupAndRestore(backup),
                ProgressiveUnfreeze(base, SCHEDULE, unit="weighted_layers", verbose=0),
                CrashAfterEpoch(2),
            ],
        )
    # A new process would rebuild everything: a new model and new callbacks,
    # here with the BackupAndRestore callback listed first.
    model, base = tiny_model(seed=1)
    model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=4,
        shuffle=False,
        verbose=0,
        callbacks=[
            keras.callbacks.BackupAndRestore(backup),
            ProgressiveUnfreeze(base, SCHEDULE, unit="weighted_layers", verbose=0),
        ],
    )
    _assert_same_state(_train_state(model), expected)


def test_works_with_early_stopping_checkpoint_and_reduce_lr_on_plateau(tmp_path):
    model, base = tiny_model(keras.optimizers.SGD(1e-2, momentum=0.9))
    x, y = _data()
    checkpoint = tmp_path / "best.keras"
    unfreeze = ProgressiveUnfreeze(base, {1: 4}, unit="weighted_layers", lr_ratio=0.1, verbose=0)
    history = model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=4,
        verbose=0,
        validation_data=(x, y),
        callbacks=[
            unfreeze,
            keras.callbacks.ReduceLROnPlateau(
                monitor="loss", factor=0.5, patience=0, min_delta=10.0
            ),
            keras.callbacks.ModelCheckpoint(str(checkpoint), save_best_only=True),
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=10),
        ],
    )
    assert checkpoint.exists()
    keras.models.load_model(checkpoint)
    logged = history.history
    # ReduceLROnPlateau logs the head's rate before it reduces it.
    assert logged["learning_rate"][-1] < 1e-2
    # The backbone group follows the head at its ratio.
    assert logged["backbone_lr"][-1] == pytest.approx(logged["learning_rate"][-1] * 0.1, rel=1e-4)


def test_gradual_schedule_and_adamw_with_learning_rate_schedule():
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, 10, 0.9)
    model, base = tiny_model(keras.optimizers.AdamW(schedule))
    x, y = _data()
    unfreeze = ProgressiveUnfreeze(
        base,
        GradualSchedule(start_epoch=1, every=1, max_depth=2, step=2),
        unit="weighted_layers",
        lr_decay=2.6,
        verbose=0,
    )
    history = model.fit(x, y, batch_size=BATCH, epochs=3, callbacks=[unfreeze], verbose=0)
    assert unfreeze.phases == [(0, 0), (1, 2)]
    params = history.history["trainable_params"]
    assert params[0] < params[1]


def test_gradual_schedule_resolves():
    assert GradualSchedule(2, every=2, max_depth=3).resolve(10) == {0: 0, 2: 1, 4: 2, 6: 3}
    assert GradualSchedule(0, max_depth=None, step=4).resolve(6) == {0: 4, 1: 6}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(schedule={-1: 2}), "integers >= 0"),
        (dict(schedule={2: 1.5}), "depths must be integers"),
        (dict(schedule={2: -3}), "depths must be integers"),
        (dict(schedule={2: 2}, unit="stages"), "Unknown unit"),
        (dict(schedule=[2, 2]), "must be a dict"),
        (dict(schedule=None), "needs a `schedule`"),
        (dict(schedule={}), "empty"),
        (dict(schedule={2: 2}, lr_ratio=0), "lr_ratio"),
        (dict(schedule={2: 2}, lr_decay=0.5), "lr_decay"),
        (dict(schedule={2: 2}, warmup_steps=-1), "warmup_steps"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        ProgressiveUnfreeze(None, **kwargs)


def test_depth_past_the_backbone_fails_before_any_epoch():
    model, base = classic_model()
    x, y = _data(n=8)
    count = len(base.layers)
    ran = RecordWeights([])
    with pytest.raises(ConfigurationError, match=f"only {count} layers"):
        model.fit(
            x,
            y,
            epochs=2,
            verbose=0,
            callbacks=[ProgressiveUnfreeze(base, {1: count + 1}, unit="layers"), ran],
        )
    assert ran.at_epoch_begin == {}


def test_decreasing_depth_is_refused():
    model, base = tiny_model()
    x, y = _data(n=8)
    with pytest.raises(ConfigurationError, match="must not decrease"):
        model.fit(
            x,
            y,
            epochs=1,
            verbose=0,
            callbacks=[ProgressiveUnfreeze(base, {1: 4, 2: 2}, unit="weighted_layers")],
        )


def test_backbone_not_in_the_model_is_refused():
    model, _ = tiny_model()
    _, other = tiny_model(seed=3)
    x, y = _data(n=8)
    with pytest.raises(ConfigurationError, match="not part of the model"):
        model.fit(
            x,
            y,
            epochs=1,
            verbose=0,
            callbacks=[ProgressiveUnfreeze(other, {1: 4}, unit="weighted_layers")],
        )


def test_unknown_layer_name_and_uncompiled_model_are_refused():
    model, _ = classic_model()
    with pytest.raises(ConfigurationError, match="no layer named"):
        ProgressiveUnfreeze("nope", {1: 1}, unit="weighted_layers").set_model(model)
    model, _ = classic_model(compile_model=False)
    with pytest.raises(ConfigurationError, match="compiled model"):
        ProgressiveUnfreeze(None, {1: 1}).set_model(model)


def test_blocks_of_a_keras_applications_backbone_passed_directly():
    model, base = classic_model()
    x, y = _data(n=16)
    unfreeze = ProgressiveUnfreeze(base, {1: 2}, unit="blocks", verbose=0)
    model.fit(x, y, batch_size=BATCH, epochs=2, callbacks=[unfreeze], verbose=0)
    assert unfreeze.units[-2:] == ["block_16", "Conv_1"]
    trainable_layers = {v.path.split("/")[0] for v in model.trainable_variables}
    assert {"Conv_1", "block_16_project", "block_16_expand", "head"} <= trainable_layers
    assert "block_15_project" not in trainable_layers


def test_build_classifier_model_with_default_backbone_and_blocks():
    model = keras_transfer.build_classifier(
        "mobilenet_v2_035", 2, input_shape=(SIZE, SIZE, 3), weights=None
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = _data(n=16)
    x = x * 255.0
    backbone, _ = keras_transfer.models.find_backbone(model)
    start = _snapshot(backbone.layers)
    unfreeze = ProgressiveUnfreeze(schedule={1: 1}, verbose=0)
    history = model.fit(x, y, batch_size=BATCH, epochs=2, callbacks=[unfreeze], verbose=0)
    end = _snapshot(backbone.layers)
    moved = {p.split("/")[0] for p in start if not np.array_equal(start[p], end[p])}
    assert moved == {"Conv_1"}  # the top block's kernel; its BN is frozen
    assert history.history["unfreeze_phase"] == [0.0, 1.0]


def test_mixed_precision_run_completes_and_unfreezes():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model, base = tiny_model()
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        x, y = _data(n=16)
        start = _snapshot(base.layers)
        head = RecordWeights([model.get_layer("head")])
        model.fit(
            x,
            y,
            batch_size=BATCH,
            epochs=2,
            verbose=0,
            callbacks=[ProgressiveUnfreeze(base, {1: 2}, unit="weighted_layers", verbose=0), head],
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(model.optimizer.inner_optimizer, UnfreezeOptimizer)
    end = _snapshot(base.layers)
    assert not np.array_equal(start["conv2/kernel"], end["conv2/kernel"])
    np.testing.assert_array_equal(start["conv1/kernel"], end["conv1/kernel"])
    # The head trains on in the phase where the backbone joins it.
    head_kernel = model.get_layer("head").kernel
    assert not np.array_equal(
        head.at_epoch_begin[1][head_kernel.path], keras.ops.convert_to_numpy(head_kernel)
    )


MIRRORED_SCRIPT = r"""
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from keras_transfer import ProgressiveUnfreeze
from keras_transfer.unfreeze.optimizer import UnfreezeOptimizer
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert strategy.num_replicas_in_sync == 2
keras.utils.set_random_seed(0)
with strategy.scope():
    inputs = keras.Input((16, 16, 3))
    x = inputs
    for i in range(3):
        x = keras.layers.Conv2D(8, 3, name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
    base = keras.Model(inputs, x)
    base.trainable = False
    outputs = keras.layers.Dense(2, activation="softmax")(
        keras.layers.GlobalAveragePooling2D()(base.output))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
x = np.random.rand(32, 16, 16, 3).astype("float32")
y = np.random.randint(0, 2, 32)
before = {v.path: v.numpy().copy() for v in base.weights}
history = model.fit(x, y, batch_size=8, epochs=2, verbose=0,
                    callbacks=[ProgressiveUnfreeze(base, {1: 2}, unit="weighted_layers", verbose=0)])
after = {v.path: v.numpy() for v in base.weights}
assert isinstance(model.optimizer, UnfreezeOptimizer)
assert not np.array_equal(before["conv2/kernel"], after["conv2/kernel"])
assert np.array_equal(before["conv1/kernel"], after["conv1/kernel"])
assert history.history["unfreeze_phase"] == [0.0, 1.0]
print("MIRRORED_OK")
"""


def test_mirrored_strategy_on_two_logical_cpus_unfreezes():
    # Logical devices must be configured before TensorFlow starts, hence a
    # fresh interpreter.
    import os
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert "MIRRORED_OK" in result.stdout, result.stderr[-3000:]
