"""Behaviour of PhaseTimer: what its event files and a real TensorBoard server show."""

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
import types
import urllib.parse
import urllib.request

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.util import tensor_util
from test_progressive_unfreeze import tiny_model

import keras_transfer
from keras_transfer import PhaseTimer
from keras_transfer.callbacks.progressive_unfreeze import ProgressiveUnfreeze
from keras_transfer.errors import ConfigurationError

# KerasTuner gives each trial a TensorBoard directory on TensorFlow only, and
# the custom train step below is written with tf.GradientTape.
tensorflow_only = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="written for the TensorFlow backend"
)

SIZE = 32
BATCH = 8

PER_EPOCH_TAGS = {
    "phase/index",
    "epoch/seconds",
    "epoch/steps_per_second",
    "epoch/images_per_second",
    "model/trainable_params",
    "learning_rate/head",
}
PER_PHASE_TAGS = {
    "phase/duration_seconds",
    "phase/retrace_seconds",
    "phase/epochs",
    "phase/steps",
    "phase/images_per_second",
    "phase/summary",
}


def _accumulator(run_dir):
    acc = event_accumulator.EventAccumulator(
        str(run_dir), size_guidance={event_accumulator.TENSORS: 0}
    )
    acc.Reload()
    return acc


def _scalars(run_dir):
    """{tag: [(step, value), ...]} of a run, as TensorBoard reads it."""
    acc = _accumulator(run_dir)
    result = {}
    for tag in acc.Tags()["tensors"]:
        events = acc.Tensors(tag)
        if events[0].tensor_proto.dtype == tf.string.as_datatype_enum:
            result[tag] = [
                (e.step, tensor_util.make_ndarray(e.tensor_proto).item().decode()) for e in events
            ]
        else:
            result[tag] = [
                (e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in events
            ]
    return result


def _values(series):
    return [value for _, value in series]


def _dense_model(steps_per_execution=1):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(
        keras.optimizers.SGD(0.1),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
    return model


def _dense_data(n):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 4)).astype("float32"), rng.integers(0, 2, n)


@pytest.fixture(scope="module")
def two_phase_run(tmp_path_factory):
    """Head only in epoch 0, the last 2 blocks from epoch 1: a real 2-phase fit."""
    log_dir = tmp_path_factory.mktemp("two_phase") / "logs"
    keras.utils.set_random_seed(0)
    model = keras_transfer.build_classifier(
        "mobilenet_v2_035", 2, input_shape=(SIZE, SIZE, 3), weights=None
    )
    model.compile(
        keras.optimizers.Adam(1e-3),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (48, SIZE, SIZE, 3)).astype("float32")
    y = rng.integers(0, 2, 48)
    # PhaseTimer comes first on purpose: it must not depend on running after
    # ProgressiveUnfreeze's on_epoch_begin.
    callbacks = [
        PhaseTimer(log_dir),
        ProgressiveUnfreeze(schedule={0: 0, 1: 2}, verbose=0),
    ]
    start = time.perf_counter()
    model.fit(
        x[:40],
        y[:40],
        batch_size=BATCH,
        epochs=3,
        validation_data=(x[40:], y[40:]),
        callbacks=callbacks,
        verbose=0,
    )
    wall = time.perf_counter() - start
    return types.SimpleNamespace(
        log_dir=log_dir, wall=wall, steps_per_epoch=5, samples_per_epoch=40
    )


def test_two_phase_fit_writes_every_tag(two_phase_run):
    phases = _scalars(two_phase_run.log_dir / "phases")
    assert PER_EPOCH_TAGS | PER_PHASE_TAGS <= set(phases)
    # ProgressiveUnfreeze's backbone group, next to the head.
    assert len([t for t in phases if t.startswith("learning_rate/")]) == 2
    # Loss and accuracy in Keras' own run layout.
    for run in ("train", "validation"):
        tags = set(_scalars(two_phase_run.log_dir / run))
        assert {"epoch_loss", "epoch_accuracy"} <= tags


def test_phase_durations_one_per_phase_and_add_up_to_the_fit(two_phase_run):
    phases = _scalars(two_phase_run.log_dir / "phases")
    durations = phases["phase/duration_seconds"]
    assert [step for step, _ in durations] == [0, 1]
    total = sum(_values(durations))
    assert abs(total - two_phase_run.wall) <= 0.1 * two_phase_run.wall
    assert _values(phases["phase/epochs"]) == [1, 2]
    assert _values(phases["phase/steps"]) == [5, 10]
    retrace = _values(phases["phase/retrace_seconds"])
    assert len(retrace) == 2
    assert all(0 <= r < d for r, d in zip(retrace, _values(durations)))
    # Tracing a MobileNetV2 train step takes far longer than running one.
    assert retrace[1] > 1 / _values(phases["epoch/steps_per_second"])[2]
    summaries = _values(phases["phase/summary"])
    assert "head only" in summaries[0]
    assert "block_16" in summaries[1] and "Conv_1" in summaries[1]


def test_trainable_params_go_up_at_the_unfreeze_epoch(two_phase_run):
    phases = _scalars(two_phase_run.log_dir / "phases")
    assert _values(phases["phase/index"]) == [0, 1, 1]
    params = _values(phases["model/trainable_params"])
    assert params[0] < params[1] == params[2]
    # The backbone group's rate appears when its weights start training.
    rate_tags = {t for t in phases if t.startswith("learning_rate/")}
    [backbone] = rate_tags - {"learning_rate/head"}
    assert [step for step, _ in phases[backbone]] == [1, 2]
    assert [step for step, _ in phases["learning_rate/head"]] == [0, 1, 2]


def test_images_per_second_counts_the_images_of_a_partial_batch(tmp_path):
    # 20 images in batches of 8: 3 steps, 20 images (not 24), run 2 steps
    # per train-function call.
    model = _dense_model(steps_per_execution=2)
    x, y = _dense_data(20)
    timer = PhaseTimer(tmp_path)
    model.fit(x, y, batch_size=8, epochs=2, callbacks=[timer], verbose=0)
    phases = _scalars(tmp_path / "phases")
    images = _values(phases["epoch/images_per_second"])
    steps = _values(phases["epoch/steps_per_second"])
    np.testing.assert_allclose(np.divide(images, steps), 20 / 3, rtol=1e-6)
    assert _values(phases["phase/steps"]) == [6]


class CustomStepModel(keras.Model):
    """A train_step that does not feed Keras' loss tracker."""

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(self(x, training=True) - y))
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        return {"loss": loss}


@tensorflow_only
@pytest.mark.parametrize("batch_size", [None, 8])
def test_batch_size_is_the_fallback_for_a_custom_train_step(tmp_path, batch_size):
    inputs = keras.Input((4,))
    model = CustomStepModel(inputs, keras.layers.Dense(1)(inputs))
    model.compile(keras.optimizers.SGD(0.01), "mse")
    x, _ = _dense_data(32)
    model.fit(
        x,
        x[:, :1],
        batch_size=8,
        epochs=1,
        callbacks=[PhaseTimer(tmp_path, batch_size=batch_size)],
        verbose=0,
    )
    phases = _scalars(tmp_path / "phases")
    assert "epoch/steps_per_second" in phases
    if batch_size is None:
        assert "epoch/images_per_second" not in phases
    else:
        [(_, images)] = phases["epoch/images_per_second"]
        [(_, steps)] = phases["epoch/steps_per_second"]
        assert images / steps == pytest.approx(8)


def test_phases_follow_progressive_unfreeze_on_a_small_model(tmp_path):
    # The small twin of `two_phase_run`, cheap enough for the JAX run (test_backends.py).
    model, base = tiny_model()
    x = np.random.default_rng(0).uniform(0, 1, (24, SIZE, SIZE, 3)).astype("float32")
    y = np.arange(24) % 2
    unfreeze = ProgressiveUnfreeze(base, {1: 2}, unit="weighted_layers", verbose=0)
    model.fit(
        x, y, batch_size=BATCH, epochs=3, verbose=0, callbacks=[PhaseTimer(tmp_path), unfreeze]
    )
    phases = _scalars(tmp_path / "phases")
    assert _values(phases["phase/index"]) == [0.0, 1.0, 1.0]
    assert [step for step, _ in phases["phase/duration_seconds"]] == [0, 1]
    assert _values(phases["phase/epochs"]) == [1.0, 2.0]
    assert _values(phases["phase/steps"]) == [3.0, 6.0]
    params = _values(phases["model/trainable_params"])
    assert params[0] < params[1] == params[2]
    assert len([t for t in phases if t.startswith("learning_rate/")]) == 2


def test_without_progressive_unfreeze_the_fit_is_one_phase(tmp_path):
    model = _dense_model()
    x, y = _dense_data(32)
    start = time.perf_counter()
    timer = PhaseTimer(tmp_path)
    model.fit(x, y, batch_size=8, epochs=3, callbacks=[timer], verbose=0)
    wall = time.perf_counter() - start
    phases = _scalars(tmp_path / "phases")
    assert _values(phases["phase/index"]) == [0, 0, 0]
    [(step, duration)] = phases["phase/duration_seconds"]
    # The phase spans the fit from on_train_begin to on_train_end: every
    # epoch, inside the wall time of `fit` (whose data set-up comes before).
    assert step == 0 and sum(_values(phases["epoch/seconds"])) <= duration <= wall
    assert _values(phases["phase/epochs"]) == [3]
    assert _values(phases["learning_rate/all"]) == pytest.approx([0.1] * 3)
    assert "as compiled" in phases["phase/summary"][0][1]
    # Loss in Keras' layout; no validation data, no empty validation run.
    assert len(_scalars(tmp_path / "train")["epoch_loss"]) == 3
    assert not (tmp_path / "validation").exists()


def test_beside_keras_tensorboard_nothing_is_written_twice(tmp_path):
    model = _dense_model()
    x, y = _dense_data(32)
    tensorboard = keras.callbacks.TensorBoard(tmp_path, write_graph=False)
    model.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        validation_split=0.25,
        callbacks=[tensorboard, PhaseTimer(tensorboard)],
        verbose=0,
    )
    # One value per epoch in each of Keras' runs: PhaseTimer left them alone.
    for run in ("train", "validation"):
        assert len(os.listdir(tmp_path / run)) == 1
        assert [s for s, _ in _scalars(tmp_path / run)["epoch_loss"]] == [0, 1]
    assert len(_scalars(tmp_path / "phases")["epoch/seconds"]) == 2


def test_write_metrics_true_writes_keras_layout(tmp_path):
    model = _dense_model()
    x, y = _dense_data(32)
    history = model.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        validation_split=0.25,
        callbacks=[PhaseTimer(tmp_path)],
        verbose=0,
    )
    train = _scalars(tmp_path / "train")
    validation = _scalars(tmp_path / "validation")
    np.testing.assert_allclose(_values(train["epoch_loss"]), history.history["loss"], rtol=1e-6)
    np.testing.assert_allclose(
        _values(validation["epoch_accuracy"]),
        history.history["val_accuracy"],
        rtol=1e-6,
    )


@tensorflow_only
def test_keras_tuner_trials_write_into_their_own_directories(tmp_path):
    import keras_tuner

    def build(hp):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        model.compile(
            keras.optimizers.SGD(hp.Choice("learning_rate", [0.1, 0.01])),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        return model

    tuner = keras_tuner.GridSearch(
        build,
        objective="val_loss",
        max_trials=2,
        directory=tmp_path / "tuner",
        project_name="search",
    )
    x, y = _dense_data(32)
    log_dir = tmp_path / "logs"
    tensorboard = keras.callbacks.TensorBoard(log_dir, write_graph=False)
    tuner.search(
        x,
        y,
        batch_size=8,
        epochs=1,
        validation_split=0.25,
        callbacks=[tensorboard, PhaseTimer(tensorboard)],
        verbose=0,
    )
    trial_ids = sorted(os.listdir(log_dir))
    assert len(trial_ids) == 2
    searched = set()
    for trial_id in trial_ids:
        trial_dir = log_dir / trial_id / "execution0"
        phases = _scalars(trial_dir / "phases")
        assert len(phases["phase/duration_seconds"]) == 1
        # The HParams dashboard reads the trial's values from its directory.
        content = _accumulator(trial_dir).PluginTagToContent("hparams")
        session = plugin_data_pb2.HParamsPluginData.FromString(
            content["_hparams_/session_start_info"]
        ).session_start_info
        searched.add(session.hparams["learning_rate"].number_value)
    assert searched == {0.1, 0.01}
    # The PhaseTimer given to search still points at the original directory.
    assert not (log_dir / "phases").exists()


def test_hparams_are_written_for_the_hparams_dashboard(tmp_path):
    model = _dense_model()
    x, y = _dense_data(16)
    hparams = {
        "learning_rate": 0.1,
        "unfreeze_blocks": np.int64(2),
        "backbone": "mobilenet",
    }
    timer = PhaseTimer(tmp_path, hparams=hparams)
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[timer], verbose=0)
    content = _accumulator(tmp_path).PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]
    ).session_start_info
    assert session.hparams["learning_rate"].number_value == 0.1
    assert session.hparams["unfreeze_blocks"].number_value == 2
    assert session.hparams["backbone"].string_value == "mobilenet"


def test_keras_tuner_hyperparameters_are_accepted_as_hparams():
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    hp.Int("unfreeze_blocks", 0, 4)
    assert PhaseTimer("logs", hparams=hp).hparams == {"unfreeze_blocks": 0}


def test_constructor_opens_nothing_and_copies_follow_the_tensorboard_copy(tmp_path):
    PhaseTimer(tmp_path / "logs")
    assert not (tmp_path / "logs").exists()
    tensorboard = keras.callbacks.TensorBoard(tmp_path / "a")
    callbacks = copy.deepcopy([tensorboard, PhaseTimer(tensorboard)])
    callbacks[0].log_dir = str(tmp_path / "trial")
    assert callbacks[1].log_dir == str(tmp_path / "trial")
    assert PhaseTimer(tensorboard).log_dir == str(tmp_path / "a")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"log_dir": 3}, "log_dir: 3"),
        ({"write_metrics": "yes"}, "write_metrics: 'yes'"),
        ({"batch_size": 0}, "batch_size: 0"),
        ({"batch_size": 8.0}, "batch_size: 8.0"),
        ({"hparams": [("lr", 0.1)]}, "hparams"),
        ({"hparams": {"layers": [1, 2]}}, r"hparams\['layers'\]: \[1, 2\]"),
    ],
)
def test_invalid_arguments_are_named_in_the_error(kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        PhaseTimer(**kwargs)


class _FailAtEpoch(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("interrupted")


def test_a_fit_that_raises_keeps_its_finished_epochs(tmp_path):
    model = _dense_model()
    x, y = _dense_data(16)
    timer = PhaseTimer(tmp_path)
    with pytest.raises(RuntimeError, match="interrupted"):
        model.fit(x, y, epochs=3, callbacks=[timer, _FailAtEpoch(1)], verbose=0)
    # Flushed at the end of epoch 0, while the writers are still open.
    phases = _scalars(tmp_path / "phases")
    assert [step for step, _ in phases["epoch/seconds"]] == [0]
    assert "phase/duration_seconds" not in phases
    # The same callback closes the stale writers and works in the next fit.
    model.fit(x, y, epochs=1, callbacks=[timer], verbose=0)
    assert "phase/duration_seconds" in _scalars(tmp_path / "phases")


# The real TensorBoard server ------------------------------------------------


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get_json(url):
    # No proxy: the server is on the loopback interface.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        return json.load(response)


def _scalars_url(base_url, run, tag):
    query = urllib.parse.urlencode({"run": run, "tag": tag})
    return f"{base_url}/data/plugin/scalars/scalars?{query}"


def _wait_for_tag(base_url, run, tag, server, timeout=45):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, "tensorboard exited early"
        try:
            tags = _get_json(f"{base_url}/data/plugin/scalars/tags")
            if tag in tags.get(run, {}):
                return
        except OSError:
            pass  # Not listening yet.
        time.sleep(0.5)
    raise AssertionError(f"tensorboard did not serve {run}/{tag} within {timeout} s")


def _stop_process_group(server):
    # The server runs the data server as a child: stop the whole group.
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=15)
    except ProcessLookupError:
        server.wait(timeout=15)
    # Children that outlive the server die with a kill of the group.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _live_members(server.pid):
        os.killpg(server.pid, signal.SIGKILL)
        time.sleep(0.2)


def _live_members(group):
    """Processes of a process group that are not zombies (Linux /proc)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, pgrp = fields[0], int(fields[2])
        if pgrp == group and state != "Z":
            members.append(int(entry))
    return members


def test_tensorboard_server_serves_the_phase_scalars(two_phase_run, tmp_path):
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    with open(tmp_path / "tensorboard.log", "wb") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tensorboard.main",
                "--logdir",
                str(two_phase_run.log_dir),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for_tag(base_url, "phases", "phase/duration_seconds", server)
        served = _get_json(_scalars_url(base_url, "phases", "phase/duration_seconds"))
        accuracy = _get_json(_scalars_url(base_url, "validation", "epoch_accuracy"))
    finally:
        _stop_process_group(server)
    assert not _live_members(server.pid)
    written = _scalars(two_phase_run.log_dir / "phases")["phase/duration_seconds"]
    # Each point is [wall_time, step, value].
    assert [(step, value) for _, step, value in served] == [
        (step, pytest.approx(value, rel=1e-6)) for step, value in written
    ]
    assert [step for _, step, _ in accuracy] == [0, 1, 2]
