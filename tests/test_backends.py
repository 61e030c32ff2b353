"""The unfreeze mechanics on JAX: the core behavioural tests, and the same training as TensorFlow.

Keras picks its backend once per process (`KERAS_BACKEND`), so JAX runs in
one fresh interpreter: a chosen subset of the unfreeze tests, then one fixed
fit whose numbers are compared with the same fit here, on TensorFlow; and
`keras-transfer train` on JAX, whose file TensorFlow's Keras then loads. JAX is the `[jax]` extra (`pip install -e .[dev,jax]`, as
`.ci/run` does); without it these tests fail, naming that command.
"""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import write_image_folder
from test_progressive_unfreeze import BATCH
from test_progressive_unfreeze import _data
from test_progressive_unfreeze import tiny_model

from keras_transfer.callbacks.progressive_unfreeze import ProgressiveUnfreeze

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Small models only, to fit CI's budget. The first-step and optimizer-option
# tests are left out: the fixed fit below matches TensorFlow's to 1e-5, so
# JAX takes the same steps as TensorFlow, where the whole suite runs.
JAX_SUBSET = (
    "tests/test_progressive_unfreeze.py::test_head_keeps_its_optimizer_and_state_across_phases",
    "tests/test_progressive_unfreeze.py::test_resume_with_initial_epoch_matches_uninterrupted_run",
    "tests/test_progressive_unfreeze.py::test_works_with_early_stopping_checkpoint_and_reduce_lr_on_plateau",
    "tests/test_progressive_unfreeze.py::test_mixed_precision_run_completes_and_unfreezes",
    "tests/test_unfreeze_plan.py::test_the_callback_training_follows_its_plan",
    "tests/test_phase_timer.py::test_phases_follow_progressive_unfreeze_on_a_small_model",
)

SCHEDULE = {1: 2, 2: 4}
EPOCHS = 3


# One JAX interpreter for both tests: the subset, then the fixed fit.
JAX_SCRIPT = """
import json, sys, pytest
code = pytest.main(["-q", "-p", "no:cacheprovider", *sys.argv[1:]])
import test_backends
print("TRAJECTORY " + json.dumps(test_backends.unfreeze_trajectory()))
print("PYTEST_EXIT", int(code))
"""


@pytest.fixture(scope="module")
def jax_run():
    """The JAX process's output, and its fixed fit (`unfreeze_trajectory`) or None."""
    if importlib.util.find_spec("jax") is None:
        pytest.fail("JAX is not installed: `pip install -e .[dev,jax]` (as .ci/run does).")
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT, *JAX_SUBSET],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    lines = [l for l in result.stdout.splitlines() if l.startswith("TRAJECTORY ")]
    trajectory = json.loads(lines[-1][len("TRAJECTORY ") :]) if lines else None
    return output, trajectory


def test_unfreeze_mechanics_pass_on_jax(jax_run):
    output, _ = jax_run
    assert "PYTEST_EXIT 0" in output, output[-4000:]
    assert f"{len(JAX_SUBSET)} passed" in output, output[-4000:]


def _fixed_weights(model):
    # Backends draw different initial weights from one seed: set them here.
    rng = np.random.default_rng(0)
    values = []
    for variable in model.weights:
        name = variable.path.rsplit("/", 1)[-1]
        if name in ("gamma", "moving_variance"):
            values.append(np.ones(variable.shape, "float32"))
        elif name in ("beta", "bias", "moving_mean"):
            values.append(np.zeros(variable.shape, "float32"))
        else:
            values.append(rng.normal(0, 0.3, variable.shape).astype("float32"))
    model.set_weights(values)


def unfreeze_trajectory():
    """A fixed-seed `ProgressiveUnfreeze` fit: epoch losses, moved weights, final weights."""
    model, base = tiny_model(keras.optimizers.Adam(1e-2))
    _fixed_weights(model)
    start = {v.path: keras.ops.convert_to_numpy(v).copy() for v in model.weights}
    x, y = _data(n=32)
    history = model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=EPOCHS,
        shuffle=False,
        verbose=0,
        callbacks=[ProgressiveUnfreeze(base, SCHEDULE, unit="weighted_layers", verbose=0)],
    )
    end = {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}
    return {
        "backend": keras.backend.backend(),
        "loss": [float(v) for v in history.history["loss"]],
        "trainable_params": history.history["trainable_params"],
        "moved": sorted(p for p in start if not np.array_equal(start[p], end[p])),
        "weights": {p: end[p].tolist() for p in end},
    }


def test_tensorflow_and_jax_train_alike(jax_run):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("compares this process's TensorFlow run with a JAX one")
    output, jax_fit = jax_run
    assert jax_fit is not None, output[-4000:]
    tf_run = unfreeze_trajectory()
    assert jax_fit["backend"] == "jax"
    # The same weights train: the head, then conv2 and conv1 (BatchNorm frozen).
    assert jax_fit["moved"] == tf_run["moved"]
    assert {p.split("/")[0] for p in tf_run["moved"]} == {"head", "conv1", "conv2"}
    assert jax_fit["trainable_params"] == tf_run["trainable_params"]
    # Float32 kernels and reductions differ in the last bits only (6e-8 measured).
    np.testing.assert_allclose(jax_fit["loss"], tf_run["loss"], rtol=1e-4)
    for path, value in tf_run["weights"].items():
        np.testing.assert_allclose(jax_fit["weights"][path], value, atol=1e-5, err_msg=path)


def test_cli_train_on_jax_unfreezes_and_saves_a_model_tensorflow_loads(tmp_path):
    # `keras-transfer train` end to end on JAX (cached, as on TensorFlow), then the file
    # read back by plain Keras on TensorFlow, in this process.
    if importlib.util.find_spec("jax") is None:
        pytest.fail("JAX is not installed: `pip install -e .[dev,jax]` (as .ci/run does).")
    images = write_image_folder(tmp_path / "images")
    output = tmp_path / "out.keras"
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "keras_transfer",
            "train",
            str(images),
            "--backbone",
            "mobilenet_v2_035",
            "--weights",
            "none",
            "--image-size",
            "32",
            "--epochs",
            "1",
            "--fine-tune-epochs",
            "1",
            "--unfreeze-blocks",
            "2",
            "--keep",
            "last",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Cached frozen features" in result.stdout, result.stdout[-2000:]
    epochs = json.loads((tmp_path / "history.json").read_text())["epochs"]
    assert [e["unfreeze_phase"] for e in epochs] == [0.0, 1.0]
    assert epochs[1]["trainable_params"] > epochs[0]["trainable_params"]
    assert all(np.isfinite(e["loss"]) for e in epochs)
    model = keras.models.load_model(output)
    probabilities = model.predict(np.zeros((2, 32, 32, 3), "float32"), verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
