import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import PROJECT_ROOT
from conftest import write_image_folder

import keras_transfer
from keras_transfer import cli
from keras_transfer.callbacks.json_history import JsonHistory
from keras_transfer.backbones import weights as weights_lib
from keras_transfer.cli import training
from keras_transfer.cli.arguments import Command
from keras_transfer.utils.checks import plural

HISTORY_FIELDS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"]


def _run(capsys, *argv):
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def _assert_one_line_error(status, err, *fragments):
    assert status == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("keras-transfer: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def test_error_from_a_real_process_exits_2_without_traceback(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-m", "keras_transfer", "train", str(tmp_path / "missing")],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"keras-transfer: error: Image folder not found: {tmp_path / 'missing'}" in (
        result.stderr
    )


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "backbones" in out and "train" in out


def test_backbones_table(capsys, keras_home):
    status, out, _ = _run(capsys, "backbones")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["NAME", "INPUT", "BLOCKS", "PARAMS"]
    rows = {line.split()[0]: line for line in lines[1:] if line.strip()}
    for name in ("mobilenet_v2_050", "mobilenet_v1_025", "resnet50", "efficientnet_b0"):
        assert name in rows
    assert "2.26M" in rows["mobilenet_v2"]
    assert "download" in rows["mobilenet_v2_050"]  # empty cache
    assert str(keras_home / "models") in out


def test_backbones_pattern_and_cached_weights(capsys, seeded_keras_home):
    status, out, _ = _run(capsys, "backbones", "mobilenet_v2_0*")
    assert status == 0
    rows = {line.split()[0]: line for line in out.splitlines()[1:] if line.strip()}
    assert "resnet50" not in rows and "mobilenet_v2_035" in rows
    assert "cached" in rows["mobilenet_v2_035"]
    assert "cached" in rows["mobilenet_v2_050"]
    assert "download" in rows["mobilenet_v2_075"]


def test_backbones_pattern_without_match(capsys):
    status, _, err = _run(capsys, "backbones", "vgg*")
    _assert_one_line_error(status, err, "No backbone matches 'vgg*'")


def test_train_saves_a_loadable_model_and_its_history(tmp_path, capsys):
    data_dir = write_image_folder(tmp_path / "images", per_class=4, size=(36, 36))
    output = tmp_path / "out" / "cats_dogs.keras"
    status, out, err = _run(
        capsys,
        "train", data_dir,
        "--backbone", "mobilenet_v2_035",
        "--weights", "none",
        "--image-size", 32,
        "--epochs", 1,
        "--fine-tune-epochs", 0,
        "--batch-size", 4,
        "--validation-split", 0.25,
        "--output", output,
    )  # fmt: skip
    assert status == 0, err
    assert "val_accuracy" in out  # Keras progress bar
    assert "Traceback" not in err

    model = keras.saving.load_model(output)
    probabilities = model.predict(np.zeros((2, 32, 32, 3), "float32"), verbose=0)
    assert probabilities.shape == (2, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)

    history = json.loads((output.parent / "history.json").read_text())
    assert history["backbone"] == "mobilenet_v2_035"
    assert history["class_names"] == ["cats", "dogs"]
    assert history["image_size"] == [32, 32]
    [epoch] = history["epochs"]
    assert list(epoch)[: len(HISTORY_FIELDS)] == HISTORY_FIELDS
    assert epoch["epoch"] == 0 and epoch["seconds"] > 0
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert math.isfinite(epoch[key])
    # Nothing half-written is left behind.
    assert sorted(os.listdir(output.parent)) == ["cats_dogs.keras", "history.json"]


# 96 px has no weights file of its own; the 224 px one loads, with a warning.
@pytest.mark.filterwarnings("ignore:.*is not cached and cannot be downloaded")
def test_train_with_cached_imagenet_weights_learns(
    flower_subset, seeded_keras_home, tmp_path, capsys
):
    data_dir = flower_subset(per_class=6, classes=("daisy", "roses", "sunflowers"))
    output = tmp_path / "flowers.keras"
    status, _, err = _run(
        capsys,
        "train", data_dir,
        "--backbone", "mobilenet_v2_035",
        "--image-size", 96,
        "--epochs", 4,
        "--fine-tune-epochs", 0,
        "--learning-rate", 3e-3,
        "--validation-split", 0,
        "--output", output,
    )  # fmt: skip
    assert status == 0, err
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["weights"] == "imagenet"
    losses = [e["loss"] for e in history["epochs"]]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert all(e["val_loss"] is None for e in history["epochs"])


@pytest.mark.parametrize(
    "options, fragments",
    [
        (["--epochs", "0"], ["--epochs", "integer >= 1", "'0'"]),
        (["--epochs", "two"], ["--epochs", "'two'"]),
        (["--learning-rate", "0"], ["--learning-rate", "> 0"]),
        (["--learning-rate=-1e-3"], ["--learning-rate", "> 0", "-1e-3"]),
        (["--batch-size", "0"], ["--batch-size"]),
        (["--validation-split", "1"], ["--validation-split", "[0, 1)"]),
        (["--backbone", "mobilenet_v3"], ["Unknown backbone", "mobilenet_v3"]),
        (["--output", "model.h5"], ["--output", ".keras", "model.h5"]),
        (["--image-size", "8"], ["--image-size", "integer >= 32", "'8'"]),
        (["--image-size", "0"], ["--image-size", "integer >= 32", "'0'"]),
        (["--keep", "first"], ["--keep", "invalid choice: 'first'"]),
        (["--weights", "missing.h5"], ["--weights", "missing.h5"]),
        (["--frobnicate", "3"], ["unrecognized arguments: --frobnicate 3"]),
    ],
)
def test_train_argument_errors(tmp_path, capsys, monkeypatch, options, fragments):
    data_dir = write_image_folder(tmp_path / "images", per_class=2, size=(8, 8))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(training, "load_image_folder", _must_not_be_called)
    status, _, err = _run(capsys, "train", data_dir, "--weights", "none", *options)
    _assert_one_line_error(status, err, *fragments)


def test_unwritable_output_is_reported_before_training(tmp_path, capsys, monkeypatch):
    data_dir = write_image_folder(tmp_path / "images", per_class=2, size=(8, 8))
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("x")
    monkeypatch.setattr(training, "load_image_folder", _must_not_be_called)
    output = not_a_folder / "model.keras"
    status, _, err = _run(capsys, "train", data_dir, "--output", output)
    _assert_one_line_error(status, err, "Cannot write --output", str(output))


@pytest.mark.parametrize("layout", ["missing", "flat", "one_class"])
def test_train_data_errors(tmp_path, capsys, layout):
    data_dir = tmp_path / "images"
    if layout == "flat":
        data_dir.mkdir()
        (data_dir / "a.jpg").write_bytes(b"x")
    elif layout == "one_class":
        write_image_folder(data_dir, classes=("cats",), per_class=2, size=(8, 8))
    output = tmp_path / "m.keras"
    status, _, err = _run(capsys, "train", data_dir, "--weights", "none", "--output", output)
    _assert_one_line_error(status, err, str(data_dir))
    assert not output.exists()


def test_keyboard_interrupt_exits_130(tmp_path, capsys, monkeypatch):
    data_dir = write_image_folder(tmp_path / "images", per_class=2, size=(8, 8))

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "load_image_folder", interrupt)
    status, _, err = _run(capsys, "train", data_dir, "--output", tmp_path / "m.keras")
    assert status == 130
    assert err.strip() == "keras-transfer: interrupted"


def test_usage_errors_are_one_line(capsys):
    status, _, err = _run(capsys)
    _assert_one_line_error(status, err, "COMMAND")
    status, _, err = _run(capsys, "fly")
    _assert_one_line_error(status, err, "invalid choice: 'fly'")


def test_a_command_plugs_in_with_its_options_and_handler(capsys, monkeypatch):
    def add_arguments(parser):
        parser.add_argument("--times", type=cli.positive_int, default=1)

    def hello(args):
        print("hi " * args.times)
        return 3

    command = Command("hello", "say hi", "Say hi.", add_arguments, hello)
    monkeypatch.setitem(cli.COMMANDS, "hello", command)
    status, out, _ = _run(capsys, "hello", "--times", 2)
    assert status == 3 and out.strip() == "hi hi"
    status, _, err = _run(capsys, "hello", "--times", 0)
    _assert_one_line_error(status, err, "--times")


def test_a_closed_pipe_ends_the_command_quietly(capsys, monkeypatch):
    # `keras-transfer predict ... | head`: the reader stopped reading.
    def flood(args):
        raise BrokenPipeError(32, "Broken pipe")

    command = Command("flood", "flood", "Flood.", lambda parser: None, flood)
    monkeypatch.setitem(cli.COMMANDS, "flood", command)
    status, _, err = _run(capsys, "flood")
    assert status == 0 and err == ""


def test_history_is_rewritten_each_epoch_and_continues_on_resume(tmp_path):
    path = tmp_path / "history.json"
    history = JsonHistory(str(path), {"backbone": "b"})
    history.on_train_begin()
    for epoch in range(2):
        history.on_epoch_begin(epoch)
        history.on_epoch_end(epoch, {"loss": 1.0 / (epoch + 1), "accuracy": 0.5})
        written = json.loads(path.read_text())
        assert [e["epoch"] for e in written["epochs"]] == list(range(epoch + 1))
    assert written["backbone"] == "b"
    assert written["epochs"][0]["val_loss"] is None  # no validation set
    assert os.listdir(tmp_path) == ["history.json"]

    # A run resumed at epoch 1 (e.g. by BackupAndRestore) replaces epoch 1
    # and keeps counting seconds from epoch 0's.
    resumed = JsonHistory(str(path), {"backbone": "b"})
    resumed.on_train_begin()
    resumed.on_epoch_begin(1)
    logs = {"loss": float("nan"), "accuracy": 0.75, "learning_rate": 1e-4}
    resumed.on_epoch_end(1, logs)
    epochs = json.loads(path.read_text())["epochs"]
    assert [e["epoch"] for e in epochs] == [0, 1]
    assert epochs[1]["loss"] is None  # not finite: null keeps the file valid JSON
    assert epochs[1]["accuracy"] == 0.75 and epochs[1]["learning_rate"] == 1e-4
    assert epochs[1]["seconds"] >= epochs[0]["seconds"]

    fresh = JsonHistory(str(path))
    fresh.on_train_begin()
    fresh.on_epoch_begin(0)
    fresh.on_epoch_end(0, {"loss": 0.1})
    assert len(json.loads(path.read_text())["epochs"]) == 1


def _must_not_be_called(*args, **kwargs):
    raise AssertionError("data was loaded although the arguments are invalid")


# --- start-up: arguments checked before TensorFlow, and quietly ---------------

STARTUP_PROBE = """
import sys
import keras_transfer
from keras_transfer import cli
try:
    status = cli.main(sys.argv[1:])
except SystemExit as e:  # --help
    status = e.code
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
print("HEAVY", heavy)
sys.exit(status)
"""


def _startup_probe(tmp_path, argv):
    """Runs `keras-transfer argv` in a fresh Python, in `tmp_path`, with the probe above.

    `tmp_path` holds `model.keras` (an empty file: only its existence is
    checked before TensorFlow loads) and `photos/` (a folder per class);
    MISSING in `argv` names a path that does not exist.
    """
    (tmp_path / "model.keras").write_bytes(b"")
    write_image_folder(tmp_path / "photos", per_class=1)
    argv = [str(tmp_path / "missing") if a == "MISSING" else a for a in argv]
    return subprocess.run(
        [sys.executable, "-c", STARTUP_PROBE, *argv],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["train", "--epochs", "-1"], "--epochs"),
        (["train", "--image-size", "0"], "integer >= 32"),
        (["train", "MISSING", "--weights", "none"], "Image folder not found"),
        (["train", "--output", "model.h5"], "--output must be a .keras file"),
        (["backbones", "--min-params", "lots"], "argument --min-params"),
        (["backbones", "--min-params", "5M", "--max-params", "1M"], "no backbone can have both"),
        (["predict", "MISSING", "photos"], "Model file not found"),
        (["predict", "model.keras", "photos", "--top-k", "0"], "argument --top-k"),
        (["predict", "model.keras", "photos", "--output", "p.txt"], "must end in .csv or .jsonl"),
        (["evaluate", "MISSING", "photos"], "Model file not found"),
        (["evaluate", "model.keras", "MISSING"], "Image folder not found"),
        (["evaluate", "model.keras", "photos", "--batch-size", "0"], "argument --batch-size"),
        (["export", "model.keras", "--format", "zip"], "invalid choice: 'zip'"),
        (["compare", "--epochs", "-1"], "argument --epochs"),
        (["compare", "MISSING"], "Image folder not found"),
        (["fly"], "invalid choice: 'fly'"),
    ],
)
def test_a_bad_argument_is_refused_before_tensorflow_is_imported(tmp_path, argv, fragment):
    result = _startup_probe(tmp_path, argv)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("keras-transfer: error: ") and fragment in line
    assert "HEAVY []" in result.stdout


@pytest.mark.parametrize("command", [None, *cli.COMMANDS])
def test_help_does_not_import_tensorflow(tmp_path, command):
    result = _startup_probe(tmp_path, [command, "--help"] if command else ["--help"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: keras-transfer" + (f" {command}" if command else ""))
    assert "HEAVY []" in result.stdout


def _command_stderr(tmp_path, *argv, env=None):
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "keras_home"), **(env or {})}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # conftest's; a user's shell has none
    result = subprocess.run(
        [sys.executable, *argv],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return result


def test_tensorflow_start_up_logs_are_hidden_unless_verbose(tmp_path):
    # What importing TensorFlow prints here; nothing to hide if it is quiet.
    baseline = _command_stderr(tmp_path, "-c", "import tensorflow")
    quiet = _command_stderr(tmp_path, "-m", "keras_transfer", "backbones", "mobilenet_v2_035")
    assert quiet.returncode == 0, quiet.stderr
    assert "mobilenet_v2_035" in quiet.stdout
    assert quiet.stderr == ""
    if baseline.stderr.strip():
        verbose = _command_stderr(
            tmp_path, "-m", "keras_transfer", "backbones", "mobilenet_v2_035", "--verbose"
        )
        assert verbose.returncode == 0, verbose.stderr
        assert verbose.stderr.strip()


def test_a_command_that_loads_tensorflow_prints_only_its_own_error(tmp_path):
    # compare's handler imports TensorFlow once the arguments are checked:
    # quietly, like every command's.
    photos = write_image_folder(tmp_path / "photos", per_class=1)
    result = _command_stderr(
        tmp_path, "-m", "keras_transfer", "compare", str(photos), "--backbones", "nope",
        "--output-dir", str(tmp_path / "out"),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("keras-transfer: error: Unknown backbone: 'nope'")


def test_import_keras_transfer_imports_nothing_heavy_until_used():
    probe = (
        "import sys, keras_transfer\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
        "assert 'TransferClassifier' in dir(keras_transfer)\n"
        "assert not [f for f in sys.meta_path if 'keras_transfer' in type(f).__module__]\n"
        "from keras_transfer import build_classifier, weights\n"
        "assert keras_transfer.data.load_image_folder\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_plural():
    assert [plural(n, "epoch") for n in (0, 1, 2)] == ["0 epochs", "1 epoch", "2 epochs"]


# --- train without DATA_DIR: flower_photos from the Keras cache --------------


def test_train_without_data_dir_uses_flower_photos_from_the_keras_cache(
    keras_home, tmp_path, capsys
):
    # The layout keras.utils.get_file("flower_photos", extract=True) leaves.
    cached = keras_home / "datasets" / "flower_photos" / "flower_photos"
    write_image_folder(cached, classes=("daisy", "roses"), per_class=4, size=(36, 36))
    status, out, err = _run(
        capsys, "train", "--backbone", "mobilenet_v2_035", "--weights", "none",
        "--image-size", 32, "--epochs", 1, "--fine-tune-epochs", 0, "--batch-size", 4,
        "--output", tmp_path / "flowers.keras",
    )  # fmt: skip
    assert status == 0, err
    assert f"No DATA_DIR given: training on TensorFlow's flower_photos from {cached}" in out
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["data_dir"] == str(cached)
    assert history["class_names"] == ["daisy", "roses"]


def test_train_without_data_dir_offline_says_how_to_seed_the_cache(
    keras_home, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(weights_lib, "reachable", lambda *args, **kwargs: False)
    monkeypatch.setattr(training, "build_classifier", _must_not_be_called)
    status, _, err = _run(capsys, "train", "--output", tmp_path / "m.keras")
    _assert_one_line_error(
        status, err, "No DATA_DIR given", "flower_photos", "cannot be downloaded",
        str(keras_home / "datasets"),
    )  # fmt: skip


# --- --keep best: the model of the best validation epoch ---------------------


class _ScriptedValidation(keras.callbacks.Callback):
    """Sets each epoch's val_accuracy, as the first callback; snapshots the weights."""

    def __init__(self, accuracies):
        super().__init__()
        self.accuracies = accuracies
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        logs["val_accuracy"] = self.accuracies[epoch]
        self.weights.append([np.array(w) for w in self.model.get_weights()])


def _train_with_scripted_validation(tmp_path, capsys, monkeypatch, accuracies, *options):
    data_dir = write_image_folder(tmp_path / "images", per_class=6, size=(36, 36))
    scripted = _ScriptedValidation(accuracies)
    build_callbacks = training.build_callbacks
    monkeypatch.setattr(
        training, "build_callbacks", lambda *args: [scripted, *build_callbacks(*args)]
    )
    output = tmp_path / "out" / "model.keras"
    status, out, err = _run(
        capsys, "train", data_dir, "--backbone", "mobilenet_v2_035", "--weights", "none",
        "--image-size", 32, "--epochs", len(accuracies), "--fine-tune-epochs", 0,
        "--batch-size", 4, "--validation-split", 0.25, "--learning-rate", 0.05,
        "--output", output, *options,
    )  # fmt: skip
    assert status == 0, err
    saved = keras.saving.load_model(output).get_weights()
    history = json.loads((output.parent / "history.json").read_text())
    return scripted.weights, saved, history, out


def _same_weights(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_train_saves_the_model_of_the_best_validation_epoch(tmp_path, capsys, monkeypatch):
    per_epoch, saved, history, out = _train_with_scripted_validation(
        tmp_path, capsys, monkeypatch, [0.5, 0.9, 0.6], "--keep", "best"
    )
    assert not _same_weights(per_epoch[1], per_epoch[2])  # the epochs differ
    assert _same_weights(saved, per_epoch[1])
    assert history["keep"] == "best" and history["saved_epoch"] == 1
    assert [e["val_accuracy"] for e in history["epochs"]] == [0.5, 0.9, 0.6]
    assert "Saved the model of epoch 2/3, the best val_accuracy (0.9000)," in out
    # The best model lived in the backup folder, which is gone.
    assert sorted(os.listdir(tmp_path / "out")) == ["history.json", "model.keras"]


def test_keep_last_saves_the_last_epoch(tmp_path, capsys, monkeypatch):
    per_epoch, saved, history, out = _train_with_scripted_validation(
        tmp_path, capsys, monkeypatch, [0.5, 0.9, 0.6], "--keep", "last"
    )
    assert _same_weights(saved, per_epoch[2])
    assert history["keep"] == "last" and history["saved_epoch"] == 2
    assert "Saved the model of the last epoch, 3/3," in out


# --- --keep average: the mean of the fine-tuning epochs' weights ------------


class _KillBeforeBackup(keras.callbacks.Callback):
    """Ctrl-C after epoch `epoch`, between the average's write and the backup's."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_keep_average_resumes_a_killed_run_and_saves_the_mean(tmp_path, capsys, monkeypatch):
    data_dir = write_image_folder(tmp_path / "images", per_class=6, size=(36, 36))
    output, checkpoint = tmp_path / "out" / "model.keras", tmp_path / "out" / "best.keras"
    build_callbacks = training.build_callbacks

    def train(scripted, *extra):
        def callbacks(*args):
            *others, backup = build_callbacks(*args)
            return [scripted, *others, *extra, backup]

        monkeypatch.setattr(training, "build_callbacks", callbacks)
        return _run(
            capsys, "train", data_dir, "--backbone", "mobilenet_v2_035", "--weights", "none",
            "--image-size", 32, "--epochs", 1, "--fine-tune-epochs", 3, "--unfreeze-blocks", 1,
            "--batch-size", 4, "--validation-split", 0.25, "--learning-rate", 0.05,
            "--output", output, "--checkpoint", checkpoint, "--keep", "average",
        )  # fmt: skip

    accuracies = [0.5, 0.9, 0.6, 0.7]
    # Epochs 1-3 are averaged (from the unfreeze at epoch 1); the kill comes
    # after epoch 2 is averaged but before it is backed up.
    killed = _ScriptedValidation(accuracies)
    status, _, err = train(killed, _KillBeforeBackup(2))
    assert status == 130, err
    assert {"average.npz", "training_metadata.json"} <= set(
        os.listdir(output.parent / "model.backup")
    )

    resumed = _ScriptedValidation(accuracies)
    status, out, err = train(resumed)
    assert status == 0, err
    assert "Resuming from the backup" in out and "2 of 4 epochs are done" in out
    # Epoch 2 counts once, from the resumed run.
    expected = [
        np.mean(epochs, axis=0)
        for epochs in zip(killed.weights[1], resumed.weights[0], resumed.weights[1])
    ]
    saved = keras.saving.load_model(output).get_weights()
    assert len(saved) == len(expected)
    for a, b in zip(saved, expected):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not _same_weights(saved, resumed.weights[-1])

    history = json.loads((output.parent / "history.json").read_text())
    assert history["keep"] == "average" and "saved_epoch" not in history
    saved_record = history["saved"]
    assert saved_record["kept"] == "average" and saved_record["epochs"] == [1, 3]
    assert 0 <= saved_record["val_accuracy"] <= 1
    assert (
        f"Saved the model averaged over epochs 2-4 of 4 (val_accuracy "
        f"{saved_record['val_accuracy']:.4f}; the best single epoch, 2: 0.9000), to {output}"
    ) in out
    # --checkpoint still keeps the best epoch; the backup and its average are gone.
    keras.saving.load_model(checkpoint)
    assert sorted(os.listdir(output.parent)) == ["best.keras", "history.json", "model.keras"]


def test_default_unfreeze_blocks_is_every_block_of_a_shallower_backbone(tmp_path, capsys):
    # The default (8) would be past the depth of a two-block backbone: it
    # trains both instead of refusing the run.
    from test_backbones import tiny_spec

    spec = keras_transfer.register_backbone(tiny_spec("tinynet_cli_depth"))
    try:
        data_dir = write_image_folder(tmp_path / "images", per_class=4, size=(32, 32))
        output = tmp_path / "out" / "model.keras"
        status, out, err = _run(
            capsys, "train", data_dir, "--backbone", spec.name, "--weights", "none",
            "--epochs", 1, "--fine-tune-epochs", 1, "--batch-size", 4, "--output", output,
        )  # fmt: skip
    finally:
        keras_transfer.unregister_backbone(spec.name)
    assert status == 0, err
    history = json.loads((output.parent / "history.json").read_text())
    assert history["unfreeze_blocks"] == len(spec.blocks) == 2
    assert [e["unfreeze_phase"] for e in history["epochs"]] == [0.0, 1.0]
