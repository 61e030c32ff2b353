"""TransferHyperModel on JAX: a two-trial RandomSearch in a fresh KERAS_BACKEND=jax process.

Keras picks its backend once per process, so the search runs in a child
interpreter (as in tests/test_backends.py) and reports what it saw as one
JSON line: every epoch of every trial (which weights moved, how many blocks
were trainable, its val_accuracy), the trials KerasTuner recorded, and the
same trials read back from the search directory by a new tuner.

The backbone loads the real MobileNet (alpha 0.25) weights from the assets:
with `weights=None` its features at 32 px are ~1e-17, so no backbone weight
moves measurably after the unfreeze, on TensorFlow as on JAX, and the test
could not tell an unfreeze that trains from one that does not.
"""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
WEIGHTS_FILE = "mobilenet_2_5_224_tf_no_top.h5"  # mobilenet_v1_025's ImageNet weights.
DEPTHS = (1, 2)

# argv: weights file, search directory, TensorBoard directory.
SEARCH_SCRIPT = """
import hashlib, json, sys
import keras, keras_tuner as kt, numpy as np
import keras_transfer
from keras_transfer.models import find_backbone

weights, directory, logs = sys.argv[1:4]
SHAPE = (32, 32, 3)
rng = np.random.default_rng(0)
y = np.arange(24) % 2
x = np.clip(rng.normal(80 + 100 * y[:, None, None, None], 30, (24, *SHAPE)), 0, 255)
x = x.astype("float32")
EPOCHS = []  # One list per trial (the tuner deep-copies the callback).

def values(model):
    return {v.path: keras.ops.convert_to_numpy(v).copy() for v in model.weights}

class Record(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        backbone, spec = find_backbone(self.model)
        self.backbone = {v.path for v in backbone.weights}
        # Non-BatchNorm weights of each block, from the top (the ones an
        # unfreeze of that many blocks may train).
        self.blocks = [
            sorted(w.path for layer in layers
                   if not isinstance(layer, keras.layers.BatchNormalization)
                   for w in layer.weights)
            for _, layers in reversed(spec.block_layers(backbone))
        ]
        self.previous = values(self.model)
        self.epochs = []
        # The top block's weights as the trial starts: the first trial trains them.
        top = hashlib.sha256(b"".join(self.previous[p].tobytes() for p in self.blocks[0]))
        EPOCHS.append({"top_block_start": top.hexdigest(), "epochs": self.epochs})

    def on_epoch_end(self, epoch, logs=None):
        now = values(self.model)
        moved = {p for p in now if not np.array_equal(now[p], self.previous[p])}
        depth = int(logs["unfrozen_blocks"])
        self.epochs.append({
            "unfrozen_blocks": depth,
            "val_accuracy": float(logs["val_accuracy"]),
            "moved_backbone": sorted(moved & self.backbone),
            "moved_head": sorted(moved - self.backbone),
            "unfrozen_weights": sorted(p for block in self.blocks[:depth] for p in block),
        })
        self.previous = now

def tuner(overwrite):
    hypermodel = keras_transfer.TransferHyperModel(
        num_classes=2, backbones=("mobilenet_v1_025",), input_shape=SHAPE,
        weights=weights, unfreeze_blocks=(1, 2), unfreeze_epoch=1, head_units=0,
        head_dropout=0.0, head_learning_rate=1e-2, backbone_lr_ratio=0.1)
    return kt.RandomSearch(hypermodel, objective="val_accuracy", max_trials=2, seed=0,
                           directory=directory, project_name="jax", overwrite=overwrite)

search = tuner(overwrite=True)
search.search(x[:16], y[:16], validation_data=(x[16:], y[16:]), epochs=2, batch_size=8,
              verbose=0, callbacks=[Record(), keras.callbacks.TensorBoard(logs)])

def trials(oracle):
    return [{"id": t.trial_id, "status": t.status, "score": t.score,
             "values": t.hyperparameters.values,
             "unfrozen_blocks": t.metrics.get_last_value("unfrozen_blocks")}
            for t in oracle.get_best_trials(10)]

reloaded = tuner(overwrite=False)  # Reads the search back from its directory.
print("REPORT " + json.dumps({
    "backend": keras.backend.backend(),
    "trials": trials(search.oracle),
    "best_values": search.get_best_hyperparameters(1)[0].values,
    "reloaded": trials(reloaded.oracle),
    "epochs": EPOCHS,
    "table": keras_transfer.tuner.results_table(search),
}))
"""


def test_random_search_on_jax_trains_each_trial_as_its_schedule_says(tmp_path, weights_dir):
    if importlib.util.find_spec("jax") is None:
        pytest.fail("JAX is not installed: `pip install -e .[dev,jax]` (as .ci/run does).")
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    logs = tmp_path / "logs"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            SEARCH_SCRIPT,
            str(weights_dir / WEIGHTS_FILE),
            str(tmp_path / "search"),
            str(logs),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [l for l in result.stdout.splitlines() if l.startswith("REPORT ")]
    assert result.returncode == 0 and lines, result.stderr[-4000:]
    report = json.loads(lines[-1][len("REPORT ") :])
    assert report["backend"] == "jax"

    # Both trials completed, one per freeze depth, ranked by their score.
    trials = report["trials"]
    assert [t["status"] for t in trials] == ["COMPLETED", "COMPLETED"]
    assert sorted(t["values"]["unfreeze_blocks"] for t in trials) == list(DEPTHS)
    assert trials[0]["score"] >= trials[1]["score"]
    assert report["best_values"] == trials[0]["values"]
    # What KerasTuner wrote to disk is what a new tuner reads back.
    assert report["reloaded"] == trials

    by_depth = {t["values"]["unfreeze_blocks"]: t for t in trials}
    assert len(report["epochs"]) == 2
    for record in report["epochs"]:
        head_phase, fine_tuning = record["epochs"]
        depth = fine_tuning["unfrozen_blocks"]
        assert depth in DEPTHS and head_phase["unfrozen_blocks"] == 0
        # Epoch 0: the head trains, every backbone weight stays as it was.
        assert head_phase["moved_head"] and head_phase["moved_backbone"] == []
        # Epoch 1: the last `depth` blocks train too (BatchNorm stays frozen), nothing below.
        assert fine_tuning["moved_head"]
        assert fine_tuning["moved_backbone"] == fine_tuning["unfrozen_weights"] != []
        # The trial's score is its best epoch's val_accuracy.
        scores = [e["val_accuracy"] for e in record["epochs"]]
        assert by_depth[depth]["score"] == pytest.approx(max(scores))
    # The second trial's pooled backbone was reset to the weights the first started from.
    assert report["epochs"][0]["top_block_start"] == report["epochs"][1]["top_block_start"]
    assert report["table"].splitlines()[0].split()[:3] == ["rank", "trial", "val_accuracy"]

    # KerasTuner moves TensorBoard per trial on TensorFlow only; fit does it on JAX.
    for trial in trials:
        run = logs / trial["id"] / "execution0"
        assert any(n.startswith("events") for n in os.listdir(run / "train")), trial
        assert any(n.startswith("events") for n in os.listdir(run / "phases")), trial
