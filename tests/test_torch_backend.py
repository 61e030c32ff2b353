"""The unfreeze mechanics on PyTorch: the core behavioural tests, and the same training as TensorFlow.

As in `test_backends.py` (JAX), PyTorch runs in one fresh interpreter with
`KERAS_BACKEND=torch`: the same subset of the unfreeze tests, then one fixed
fit in float32 and one under `mixed_float16` (a `LossScaleOptimizer` around
the `UnfreezeOptimizer`), whose numbers are compared with the same fits here,
on TensorFlow. On PyTorch, Keras' train step hands the optimizer the
gradients of `model.trainable_weights` only; matching TensorFlow's weights
shows that they reach the right groups and that the head's state carries on.

PyTorch is the `[torch]` extra (`pip install -e .[torch]`). CI installs only
`[dev,jax]`, because the torch wheel is large (190 MB for the CPU build,
several GB with the CUDA libraries PyPI's build pulls in), so without torch
these tests skip, naming that command.
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
from test_backends import JAX_SUBSET
from test_backends import unfreeze_trajectory

ROOT = pathlib.Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None,
    reason="PyTorch is not installed: `pip install -e .[torch]` (CI leaves it out: the wheel is large).",
)

# The JAX subset: what the train step and the optimizer do per backend.
TORCH_SUBSET = JAX_SUBSET

# One PyTorch interpreter for every test: the subset, then the fixed fits.
TORCH_SCRIPT = """
import json, sys, pytest
code = pytest.main(["-q", "-p", "no:cacheprovider", *sys.argv[1:]])
import test_torch_backend
for policy in test_torch_backend.TOLERANCES:
    print(f"TRAJECTORY {policy} " + json.dumps(test_torch_backend.trajectory(policy)))
print("PYTEST_EXIT", int(code))
"""


# (loss rtol, weight atol) per dtype policy. Float32 kernels differ in the
# last bits only (8e-8 on the losses, 1.2e-7 on the weights measured).
# Float16 activations round differently per backend (1.4e-4 relative on the
# losses and 1.4e-3 on the weights measured); one Adam step more or less
# moves a weight by about the learning rate, 1e-2.
TOLERANCES = {"float32": (1e-4, 1e-5), "mixed_float16": (1e-3, 5e-3)}


def trajectory(policy):
    """`unfreeze_trajectory` under the dtype policy `policy`."""
    keras.mixed_precision.set_global_policy(policy)
    try:
        return unfreeze_trajectory()
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="module")
def torch_run():
    """The PyTorch process's output, and `{policy: fixed fit}` for the fits that ran."""
    env = {**os.environ, "KERAS_BACKEND": "torch", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-c", TORCH_SCRIPT, *TORCH_SUBSET],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    fits, lines = {}, []
    for line in result.stdout.splitlines():
        if line.startswith("TRAJECTORY "):
            _, policy, value = line.split(" ", 2)
            fits[policy] = json.loads(value)
        else:
            lines.append(line)
    # Without the fits' weights, so that a failure shows pytest's report.
    return "\n".join(lines) + "\n" + result.stderr, fits


def test_unfreeze_mechanics_pass_on_torch(torch_run):
    output, _ = torch_run
    assert "PYTEST_EXIT 0" in output, output[-4000:]
    assert f"{len(TORCH_SUBSET)} passed" in output, output[-4000:]


@pytest.mark.parametrize("policy", sorted(TOLERANCES))
def test_tensorflow_and_torch_train_alike(torch_run, policy):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("compares this process's TensorFlow run with a PyTorch one")
    output, fits = torch_run
    assert policy in fits, output[-4000:]
    torch_fit, tf_run = fits[policy], trajectory(policy)
    assert torch_fit["backend"] == "torch"
    # The head, then conv2 and conv1 train (BatchNorm frozen), as on TensorFlow.
    assert torch_fit["moved"] == tf_run["moved"]
    assert {p.split("/")[0] for p in tf_run["moved"]} == {"head", "conv1", "conv2"}
    assert torch_fit["trainable_params"] == tf_run["trainable_params"]
    rtol, atol = TOLERANCES[policy]
    np.testing.assert_allclose(torch_fit["loss"], tf_run["loss"], rtol=rtol)
    for path, value in tf_run["weights"].items():
        np.testing.assert_allclose(torch_fit["weights"][path], value, atol=atol, err_msg=path)
