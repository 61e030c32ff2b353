"""Interrupted runs lose nothing: a real process, a real SIGKILL, the same command again.

Each test starts the run twice at once: one is killed with SIGKILL in the
middle of the fine-tuning phase (as soon as the first fine-tuning epoch is
recorded) and then started again with the same command; the other runs
uninterrupted as the reference.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import PROJECT_ROOT
from conftest import write_image_folder

import keras
import keras_transfer  # noqa: F401  (registers the layers saved models hold)

# Head epochs 0-1, fine-tuning epochs 2-3.
HEAD_EPOCHS, FINE_TUNE_EPOCHS = 2, 2
EPOCHS = HEAD_EPOCHS + FINE_TUNE_EPOCHS
TIMEOUT = 240


def _start(argv, log_path, env):
    log = open(log_path, "w")
    process = subprocess.Popen(
        [sys.executable, *map(str, argv)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    return process


def _finish(process, log_path):
    try:
        process.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return log_path.read_text()


def _kill_when(process, ready, log_path):
    """SIGKILLs `process` as soon as `ready()` is true."""
    deadline = time.monotonic() + TIMEOUT
    while not ready():
        if process.poll() is not None:
            pytest.fail(
                f"The run ended (status {process.returncode}) before it could be "
                f"killed:\n{log_path.read_text()[-3000:]}"
            )
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("The run did not reach the fine-tuning phase in time.")
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL


def _environment():
    # KERAS_HOME (the seeded weights cache) comes from the fixture's monkeypatch.
    # PYTHONPATH: a script outside the project imports this checkout's
    # keras_transfer, installed or not.
    path = os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
    return {
        **os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1", "PYTHONPATH": path,
    }  # fmt: skip


def _epochs(history_path):
    try:
        return json.loads(history_path.read_text())["epochs"]
    except (OSError, ValueError, KeyError):
        return []


def _files(folder):
    """{relative path: bytes} of every file under `folder`."""
    return {
        os.path.relpath(os.path.join(root, name), folder): open(
            os.path.join(root, name), "rb"
        ).read()
        for root, _, names in os.walk(folder)
        for name in names
    }


def _steps(run_dir, tag):
    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(
        str(run_dir), size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    return sorted(event.step for event in accumulator.Tensors(tag))


# Tiny data (8 validation images, so one image is 12.5 points of accuracy):
# the final validation accuracy of the resumed run must be within 25 points
# of the uninterrupted run's, i.e. differ by at most two images.
ACCURACY_TOLERANCE = 0.25


def test_killed_train_command_resumes_where_it_was(tmp_path, seeded_keras_home):
    data_dir = write_image_folder(tmp_path / "images", per_class=16, size=(36, 36))

    def command(out):
        return ["-m", "keras_transfer", "train", data_dir,
                "--backbone", "mobilenet_v2_035", "--image-size", 32,
                "--epochs", HEAD_EPOCHS, "--fine-tune-epochs", FINE_TUNE_EPOCHS,
                "--unfreeze-blocks", 2, "--batch-size", 8, "--validation-split", 0.25,
                "--output", out / "model.keras", "--log-dir", out / "logs",
                "--checkpoint", out / "best.keras"]  # fmt: skip

    run, reference = tmp_path / "run", tmp_path / "reference"
    env = _environment()
    killed = _start(command(run), tmp_path / "killed.log", env)
    uninterrupted = _start(command(reference), tmp_path / "reference.log", env)
    history = run / "history.json"
    _kill_when(
        killed,
        lambda: any(e["epoch"] == HEAD_EPOCHS for e in _epochs(history)),
        tmp_path / "killed.log",
    )

    before_kill = _epochs(history)
    logs_before = _files(run / "logs")
    best_before = (run / "best.keras").read_bytes()
    assert (run / "model.backup" / "training_metadata.json").exists()
    assert not (run / "model.keras").exists()

    resumed = _start(command(run), tmp_path / "resumed.log", env)
    resumed_out = _finish(resumed, tmp_path / "resumed.log")
    assert resumed.returncode == 0, resumed_out
    reference_out = _finish(uninterrupted, tmp_path / "reference.log")
    assert uninterrupted.returncode == 0, reference_out

    # It resumed after the last backed-up epoch (the one recorded before the
    # kill, or the one before it if the kill came between the history and
    # the backup), in the fine-tuning phase.
    first = min(e["epoch"] for e in _epochs(history) if e not in before_kill)
    assert first in (HEAD_EPOCHS, HEAD_EPOCHS + 1)
    assert f"Resuming from the backup in {run / 'model.backup'}: {first} of {EPOCHS}" in (
        resumed_out
    )
    assert f"ProgressiveUnfreeze: epoch {first + 1}: phase 1, last 2 blocks" in resumed_out
    assert "Traceback" not in resumed_out

    # Every epoch exactly once; the records of the epochs done before the
    # kill are kept as they were; the same weights trained in each epoch.
    epochs = _epochs(history)
    expected = _epochs(reference / "history.json")
    assert [e["epoch"] for e in epochs] == list(range(EPOCHS))
    assert epochs[:first] == before_kill[:first]
    for key in ("unfreeze_phase", "trainable_params", "backbone_lr"):
        assert [e[key] for e in epochs] == [e[key] for e in expected], key
    seconds = [e["seconds"] for e in epochs]
    assert seconds == sorted(seconds)
    assert abs(epochs[-1]["val_accuracy"] - expected[-1]["val_accuracy"]) <= (ACCURACY_TOLERANCE)
    assert expected[-1]["val_accuracy"] >= 0.75  # It learned: the check is not vacuous.

    # Saved models load with Keras' default safe_mode=True.
    model = keras.saving.load_model(run / "model.keras")
    assert model.output_shape == (None, 2)
    keras.saving.load_model(run / "best.keras")
    # The best checkpoint was only replaced by a better epoch.
    best_done = max(e["val_accuracy"] for e in epochs[:first])
    if max(e["val_accuracy"] for e in epochs[first:]) <= best_done:
        assert (run / "best.keras").read_bytes() == best_before

    # Event files written before the kill are untouched; the resumed run
    # added its own, and TensorBoard reads every epoch across them.
    logs_after = _files(run / "logs")
    for name, content in logs_before.items():
        assert hashlib.sha256(logs_after[name]).digest() == hashlib.sha256(content).digest()
    assert len(logs_after) > len(logs_before)
    for run_dir, tag in (("train", "epoch_loss"), ("validation", "epoch_accuracy"),
                         ("phases", "epoch/seconds")):  # fmt: skip
        assert set(_steps(run / "logs" / run_dir, tag)) == set(range(EPOCHS)), run_dir

    # The backup is gone; nothing half-written is left.
    assert sorted(os.listdir(run)) == ["best.keras", "history.json", "logs", "model.keras"]


FIT_SCRIPT = """
import json, os, sys
import numpy as np
import keras
import keras_transfer

out = sys.argv[1]
keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
y = np.arange(32) % 2
x = np.clip(rng.normal(80 + 90 * y[:, None, None, None], 40, (32, 32, 32, 3)), 0, 255)
model = keras_transfer.build_classifier(
    "mobilenet_v2_035", 2, input_shape=(32, 32, 3), weights=None, dropout=0.0)
model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
              metrics=["accuracy"])


class EpochLog(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        groups = self.model.optimizer.group_optimizers
        record = {
            "epoch": epoch,
            "pid": os.getpid(),
            "phase": logs["unfreeze_phase"],
            "trainable": [w.path for w in self.model.trainable_weights],
            "iterations": {
                k: int(keras.ops.convert_to_numpy(o.iterations))
                for k, o in groups.items()
            },
        }
        with open(os.path.join(out, "epochs.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\\n")


model.fit(
    x.astype("float32"), y, batch_size=8, epochs=4, shuffle=False, verbose=0,
    callbacks=[
        keras_transfer.ProgressiveUnfreeze(schedule={2: 2}, verbose=0),
        keras.callbacks.BackupAndRestore(os.path.join(out, "backup")),
        # After the backup: a logged epoch is a backed-up epoch.
        EpochLog(),
    ],
)
np.savez(os.path.join(out, "weights.npz"), *model.get_weights())
"""


def test_killed_model_fit_with_backup_and_restore_resumes_in_the_right_phase(tmp_path):
    script = tmp_path / "fit.py"
    script.write_text(FIT_SCRIPT)
    run, reference = tmp_path / "run", tmp_path / "reference"
    run.mkdir()
    reference.mkdir()
    env = _environment()
    killed = _start([script, run], tmp_path / "killed.log", env)
    uninterrupted = _start([script, reference], tmp_path / "reference.log", env)

    def records(folder):
        path = folder / "epochs.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    _kill_when(
        killed,
        lambda: any(r["epoch"] == 2 for r in records(run)),
        tmp_path / "killed.log",
    )
    resumed = _start([script, run], tmp_path / "resumed.log", env)
    assert resumed.wait(timeout=TIMEOUT) == 0, (tmp_path / "resumed.log").read_text()
    assert uninterrupted.wait(timeout=TIMEOUT) == 0, (tmp_path / "reference.log").read_text()

    got, expected = records(run), records(reference)
    # Epochs 0-2 ran before the kill, 3 after, in phase 1 with the same
    # trainable weights and the optimizer groups' step counts continued.
    assert [r["epoch"] for r in got] == list(range(4))
    assert len({r["pid"] for r in got[:3]}) == 1 and got[3]["pid"] != got[2]["pid"]
    for mine, theirs in zip(got, expected):
        assert mine["phase"] == theirs["phase"]
        assert mine["trainable"] == theirs["trainable"]
        assert mine["iterations"] == theirs["iterations"]
    assert got[-1]["iterations"]["head"] == 4 * 4
    # Same data, same order, no dropout: resuming changes nothing.
    final = np.load(run / "weights.npz")
    reference_final = np.load(reference / "weights.npz")
    for name in reference_final.files:
        np.testing.assert_allclose(final[name], reference_final[name], rtol=1e-4, atol=1e-6)
    assert not (run / "backup").exists()
