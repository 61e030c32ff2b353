"""Bad input: each mistake gets a message that names the problem and the fix.

The tables below are the contract docs/bad-input-and-interruptions.md documents:
one row per mistake a user makes, through the Python API (the exception and
words of its message) or the `keras-transfer` command line (the exit status,
one line on stderr, never a traceback). `stage` says how far the command gets
before it refuses: "arguments" (no data read), "data" (no model built) or
"model" (nothing trained).

Messy images that must just work (grayscale, RGBA, palette PNG, images
smaller than the model input, with undecodable files skipped by name) and a
NaN loss (exit 3, the last good model kept) are tested after the tables.
"""

import dataclasses
import functools
import json
import math
import pathlib
from typing import Callable

import keras
import numpy as np
import pytest
from conftest import write_image_folder
from PIL import Image

import keras_transfer
from keras_transfer import cli
from keras_transfer.cli import training
from keras_transfer import data
from keras_transfer.backbones import weights as weights_lib
from keras_transfer.errors import ConfigurationError
from keras_transfer.errors import DataError
from keras_transfer.errors import WeightsError

SIZE = 32
BACKBONE = "mobilenet_v2_035"
NUM_BLOCKS = len(keras_transfer.get_backbone(BACKBONE).blocks)
WEIGHTS_035 = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"


@dataclasses.dataclass
class Env:
    """What a case may use: a fresh folder, the real weights, an empty cache."""

    tmp: pathlib.Path
    weights_dir: pathlib.Path
    keras_home: pathlib.Path


@pytest.fixture
def env(tmp_path, weights_dir, keras_home, monkeypatch):
    # Offline, deterministically: the download host is never reachable.
    monkeypatch.setattr(weights_lib, "reachable", lambda *args, **kwargs: False)
    return Env(tmp_path, weights_dir, keras_home)


# --- folders ------------------------------------------------------------------


def _images(env, classes=("cats", "dogs"), per_class=3):
    return write_image_folder(env.tmp / "images", classes, per_class, size=(8, 8))


def _flat(env):
    root = env.tmp / "flat"
    root.mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8)).save(root / f"img_{i}.jpg")
    return root


def _single_class(env):
    return _images(env, classes=("cats",))


def _empty_class(env):
    root = _images(env)
    (root / "birds").mkdir()
    return root


def _undecodable_class(env):
    root = _images(env)
    (root / "birds").mkdir()
    (root / "birds" / "a.jpg").write_text("not an image")
    return root


def _one_image_per_class(env):
    return _images(env, per_class=1)


def _file_instead_of_folder(env):
    path = env.tmp / "photo.jpg"
    Image.new("RGB", (8, 8)).save(path)
    return path


# --- models -------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _classifier(num_classes=2):
    model = keras_transfer.build_classifier(
        BACKBONE, num_classes, input_shape=(SIZE, SIZE, 3), weights=None
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def _fit_with_schedule(schedule):
    model = _classifier()
    x = np.zeros((4, SIZE, SIZE, 3), "float32")
    y = np.array([0, 1, 0, 1])
    unfreeze = keras_transfer.ProgressiveUnfreeze(schedule=schedule, verbose=0)
    model.fit(x, y, epochs=2, verbose=0, callbacks=[unfreeze])


def _three_class_dataset(env):
    root = _images(env, classes=("cats", "dogs", "owls"))
    train_ds, _, _ = data.load_image_folder(root, SIZE, verbose=False)
    return train_ds


@dataclasses.dataclass(frozen=True)
class ApiCase:
    id: str
    call: Callable  # call(env) must raise `error`.
    error: type
    fragments: tuple  # Words the message must contain.


API_CASES = [
    ApiCase(
        "missing data folder",
        lambda env: data.load_image_folder(env.tmp / "missing", SIZE),
        DataError,
        ("Image folder not found", "missing", "one subfolder per class"),
    ),
    ApiCase(
        "a file instead of a folder",
        lambda env: data.load_image_folder(_file_instead_of_folder(env), SIZE),
        DataError,
        ("got a file", "photo.jpg"),
    ),
    ApiCase(
        "images but no class subfolders",
        lambda env: data.load_image_folder(_flat(env), SIZE),
        DataError,
        ("No class subfolders", "3 images directly in it", "<class>"),
    ),
    ApiCase(
        "a single class",
        lambda env: data.load_image_folder(_single_class(env), SIZE),
        DataError,
        ("single class", "'cats'", "at least two classes"),
    ),
    ApiCase(
        "an empty class",
        lambda env: data.load_image_folder(_empty_class(env), SIZE),
        DataError,
        ("without images", "'birds'", "Add images"),
    ),
    ApiCase(
        "a class whose files all fail to decode",
        lambda env: data.load_image_folder(_undecodable_class(env), SIZE),
        DataError,
        ("all fail to decode", "'birds'", "Replace them"),
    ),
    ApiCase(
        "validation split leaves no image",
        lambda env: data.load_image_folder(_one_image_per_class(env), SIZE),
        DataError,
        ("leaves no image for validation", "validation_split=0"),
    ),
    ApiCase(
        "image size 0",
        lambda env: data.load_image_folder(_images(env), 0),
        ConfigurationError,
        ("image_size must be a positive integer", "image_size=0"),
    ),
    ApiCase(
        "unknown backbone name",
        lambda env: keras_transfer.build_classifier("mobilenet_v2_05", 2),
        ConfigurationError,
        ("Unknown backbone: 'mobilenet_v2_05'", "Did you mean: mobilenet_v2_050"),
    ),
    ApiCase(
        "input size below the backbone minimum",
        lambda env: keras_transfer.build_classifier(
            BACKBONE, 2, input_shape=(16, 16, 3), weights=None
        ),
        ConfigurationError,
        ("at least 32x32", "(16, 16, 3)"),
    ),
    ApiCase(
        "1 channel",
        lambda env: keras_transfer.build_classifier(
            BACKBONE, 2, input_shape=(SIZE, SIZE, 1), weights=None
        ),
        ConfigurationError,
        ("3 channels", "(32, 32, 1)", "Convert grayscale"),
    ),
    ApiCase(
        "4 channels",
        lambda env: keras_transfer.build_classifier(
            BACKBONE, 2, input_shape=(SIZE, SIZE, 4), weights=None
        ),
        ConfigurationError,
        ("3 channels", "(32, 32, 4)", "RGBA"),
    ),
    ApiCase(
        "schedule with a negative epoch",
        lambda env: keras_transfer.ProgressiveUnfreeze(schedule={-1: 2}),
        ConfigurationError,
        ("epochs must be integers >= 0", "-1"),
    ),
    ApiCase(
        "schedule with a non-integer depth",
        lambda env: keras_transfer.ProgressiveUnfreeze(schedule={2: 1.5}),
        ConfigurationError,
        ("depths must be integers >= 0", "1.5"),
    ),
    ApiCase(
        "schedule depth past the backbone",
        lambda env: _fit_with_schedule({1: 40}),
        ConfigurationError,
        ("depth 40 at epoch 1", f"only {NUM_BLOCKS} blocks", f"at most {NUM_BLOCKS}"),
    ),
    ApiCase(
        "schedule with an unknown unit",
        lambda env: keras_transfer.ProgressiveUnfreeze(schedule={1: 2}, unit="stages"),
        ConfigurationError,
        ("Unknown unit: 'stages'", "'blocks'", "'layers'"),
    ),
    ApiCase(
        "backbone learning-rate ratio <= 0",
        lambda env: keras_transfer.ProgressiveUnfreeze(schedule={1: 2}, lr_ratio=0),
        ConfigurationError,
        ("`lr_ratio` must be a number in (0, 1]", "0"),
    ),
    ApiCase(
        "num_classes not matching the data",
        lambda env: keras_transfer.check_dataset_for_model(
            _three_class_dataset(env), _classifier(2)
        ),
        DataError,
        ("2 outputs (num_classes=2)", "3 classes", "'owls'", "num_classes=3"),
    ),
    ApiCase(
        "labels out of range",
        lambda env: keras_transfer.check_dataset_for_model(
            (np.zeros((3, SIZE, SIZE, 3)), np.array([0, 1, 3])), _classifier(2)
        ),
        DataError,
        ("Label 3 is out of range", "labels must be 0 ... 1", "num_classes=4"),
    ),
    ApiCase(
        "negative labels",
        lambda env: keras_transfer.check_dataset_for_model(
            (np.zeros((2, SIZE, SIZE, 3)), np.array([-1, 1])), _classifier(2)
        ),
        DataError,
        ("Label -1 is negative", "0 ... 1"),
    ),
    ApiCase(
        "labels that are not class indices",
        lambda env: keras_transfer.check_dataset_for_model(
            (np.zeros((2, SIZE, SIZE, 3)), np.array([0.5, 1.0])), _classifier(2)
        ),
        DataError,
        ("integer class indices or one-hot rows", "0.5"),
    ),
    ApiCase(
        "one-hot labels of the wrong width",
        lambda env: keras_transfer.check_dataset_for_model(
            (np.zeros((2, SIZE, SIZE, 3)), np.eye(3)[[0, 2]]), _classifier(2)
        ),
        DataError,
        ("2 outputs", "one-hot labels have 3 columns", "num_classes=3"),
    ),
    ApiCase(
        "weights file that does not exist",
        lambda env: keras_transfer.build_classifier(
            BACKBONE, 2, input_shape=(SIZE, SIZE, 3), weights=env.tmp / "nope.h5"
        ),
        WeightsError,
        ("Weights file not found", "nope.h5", BACKBONE, "None"),
    ),
    ApiCase(
        "weights file of another architecture",
        lambda env: keras_transfer.build_classifier(
            "mobilenet_v2_050",
            2,
            input_shape=(SIZE, SIZE, 3),
            weights=env.weights_dir / WEIGHTS_035,
        ),
        WeightsError,
        (
            WEIGHTS_035,
            "does not fit backbone 'mobilenet_v2_050'",
            "expects shape (1, 1, 48, 16)",
            "saved weight with shape (1, 1, 48, 8)",
        ),
    ),
    ApiCase(
        "offline with no cached weights",
        lambda env: keras_transfer.build_classifier(
            BACKBONE, 2, input_shape=(SIZE, SIZE, 3), weights="imagenet"
        ),
        WeightsError,
        ("not cached", "cannot be reached", WEIGHTS_035, "weights=None", "weights=PATH"),
    ),
    ApiCase(
        "cached weights file is a link to nothing",
        lambda env: (
            _dangling_weights(env)
            and keras_transfer.build_classifier(
                BACKBONE, 2, input_shape=(SIZE, SIZE, 3), weights="imagenet"
            )
        ),
        WeightsError,
        (WEIGHTS_035, "symbolic link", "does not exist", "ln -sf", "weights=PATH"),
    ),
    ApiCase(
        "cached weights file is not HDF5 (a Git LFS pointer)",
        lambda env: (
            _lfs_pointer_weights(env)
            and keras_transfer.build_classifier(
                BACKBONE, 2, input_shape=(SIZE, SIZE, 3), weights="imagenet"
            )
        ),
        WeightsError,
        (WEIGHTS_035, "not a readable HDF5", "bytes", "weights=PATH"),
    ),
]


@pytest.mark.parametrize("case", API_CASES, ids=lambda case: case.id)
def test_python_api_refuses(case, env):
    with pytest.raises(case.error) as raised:
        case.call(env)
    assert isinstance(raised.value, keras_transfer.errors.KerasTransferError)
    for fragment in case.fragments:
        assert fragment in str(raised.value)


def test_check_dataset_for_model_accepts_data_that_fits(env):
    root = _images(env, per_class=4)
    train_ds, val_ds, _ = data.load_image_folder(root, SIZE, verbose=False)
    model = _classifier(2)
    for dataset in (train_ds, val_ds, train_ds.unbatch()):
        keras_transfer.check_dataset_for_model(dataset, model)
    x = np.zeros((4, SIZE, SIZE, 3))
    keras_transfer.check_dataset_for_model((x, np.array([0, 1, 1, 0])), model)
    keras_transfer.check_dataset_for_model((x, np.eye(2)[[0, 1, 1, 0]]), model)


# --- command line -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CliCase:
    id: str
    argv: Callable  # argv(env) -> the arguments after "train".
    stage: str  # "arguments", "data" or "model": what the command got to.
    fragments: tuple  # Words the one-line error must contain.


def _train(data_dir, *options):
    return [data_dir, "--backbone", BACKBONE, "--image-size", SIZE, "--weights", "none",
            "--epochs", 1, "--fine-tune-epochs", 1, "--batch-size", 4, *options]  # fmt: skip


def _good(env, *options):
    return _train(_images(env), *options)


def _folder_with(env, name):
    folder = env.tmp / "folder"
    folder.mkdir()
    (folder / name).write_text("mine")
    return folder


def _a_file(env):
    path = env.tmp / "file.txt"
    path.write_text("x")
    return path


CLI_CASES = [
    CliCase(
        "missing data folder",
        lambda env: _train(env.tmp / "missing"),
        "arguments",
        ("Image folder not found", "missing"),
    ),
    CliCase(
        "images but no class subfolders",
        lambda env: _train(_flat(env)),
        "data",
        ("No class subfolders", "<class>"),
    ),
    CliCase("a single class", lambda env: _train(_single_class(env)), "data", ("single class",)),
    CliCase(
        "an empty class",
        lambda env: _train(_empty_class(env)),
        "data",
        ("without images", "'birds'"),
    ),
    CliCase(
        "unknown backbone name",
        lambda env: _good(env, "--backbone", "mobilenet_v2_05"),
        "arguments",
        ("Unknown backbone: 'mobilenet_v2_05'", "Did you mean: mobilenet_v2_050"),
    ),
    CliCase(
        "image size below any backbone's minimum",
        lambda env: _good(env, "--image-size", 0),
        "arguments",
        ("--image-size", "integer >= 32", "smallest input a backbone accepts", "'0'"),
    ),
    CliCase(
        "image size below the backbone's own minimum",
        lambda env: _good(env, "--backbone", "inception_v3", "--image-size", 64),
        "arguments",
        ("--image-size 64", "75 pixels", "'inception_v3'", "--image-size 75 or more"),
    ),
    CliCase(
        "image size not an integer",
        lambda env: _good(env, "--image-size", "32.5"),
        "arguments",
        ("--image-size", "integer >= 32", "'32.5'"),
    ),
    CliCase(
        "negative fine-tuning epochs",
        lambda env: _good(env, "--fine-tune-epochs=-1"),
        "arguments",
        ("--fine-tune-epochs", "integer >= 0", "'-1'"),
    ),
    CliCase(
        "unfreeze depth past the backbone",
        lambda env: _good(env, "--unfreeze-blocks", 40),
        "arguments",
        ("--unfreeze-blocks 40", f"{NUM_BLOCKS} blocks", f"at most {NUM_BLOCKS}"),
    ),
    CliCase(
        "unfreeze depth 0",
        lambda env: _good(env, "--unfreeze-blocks", 0),
        "arguments",
        ("--unfreeze-blocks", "integer >= 1"),
    ),
    CliCase(
        "learning rate 0",
        lambda env: _good(env, "--learning-rate", 0),
        "arguments",
        ("--learning-rate", "number > 0", "'0'"),
    ),
    CliCase(
        "negative learning rate",
        lambda env: _good(env, "--learning-rate=-1e-3"),
        "arguments",
        ("--learning-rate", "number > 0", "'-1e-3'"),
    ),
    CliCase(
        "backbone learning-rate ratio above 1",
        lambda env: _good(env, "--backbone-lr-ratio", 2),
        "arguments",
        ("--backbone-lr-ratio", "(0, 1]", "'2'"),
    ),
    CliCase(
        "weights file that does not exist",
        lambda env: _good(env, "--weights", env.tmp / "nope.h5"),
        "arguments",
        ("--weights", "nope.h5", "not a file"),
    ),
    CliCase(
        "weights file of another architecture",
        lambda env: _good(
            env, "--backbone", "mobilenet_v2_050", "--weights", env.weights_dir / WEIGHTS_035
        ),
        "model",
        (
            WEIGHTS_035,
            "does not fit backbone 'mobilenet_v2_050'",
            "(1, 1, 48, 16)",
            "(1, 1, 48, 8)",
        ),
    ),
    CliCase(
        "offline with no cached weights",
        lambda env: _good(env, "--weights", "imagenet"),
        "model",
        ("not cached", "cannot be reached", WEIGHTS_035, "--weights PATH", "--weights none"),
    ),
    CliCase(
        "cached weights file is a link to nothing",
        lambda env: _dangling_weights(env) and _good(env, "--weights", "imagenet"),
        "model",
        (WEIGHTS_035, "symbolic link", "does not exist", "ln -sf", "--weights PATH"),
    ),
    CliCase(
        "cached weights file is not HDF5 (a Git LFS pointer)",
        lambda env: _lfs_pointer_weights(env) and _good(env, "--weights", "imagenet"),
        "model",
        (WEIGHTS_035, "not a readable HDF5", "Git LFS pointer", "--weights PATH"),
    ),
    CliCase(
        "output path not writable",
        lambda env: _good(env, "--output", _a_file(env) / "model.keras"),
        "arguments",
        ("Cannot write --output", "file.txt/model.keras", "folder you can write to"),
    ),
    CliCase(
        "output not a .keras file",
        lambda env: _good(env, "--output", env.tmp / "model.h5"),
        "arguments",
        ("--output must be a .keras file", "model.h5"),
    ),
    CliCase(
        "checkpoint without a validation set",
        lambda env: _good(env, "--checkpoint", env.tmp / "best.keras", "--validation-split", 0),
        "arguments",
        ("--checkpoint", "val_accuracy", "--validation-split > 0"),
    ),
    CliCase(
        "log folder that is a file",
        lambda env: _good(env, "--log-dir", _a_file(env)),
        "arguments",
        ("--log-dir must be a folder", "file.txt"),
    ),
    CliCase(
        "backup folder holding other files",
        lambda env: _good(env, "--backup-dir", _folder_with(env, "notes.txt")),
        "arguments",
        ("--backup-dir", "not a keras-transfer backup", "'notes.txt'", "new or empty folder"),
    ),
]


def _cached_weights(env):
    return env.keras_home / "models" / WEIGHTS_035


def _dangling_weights(env):
    # A relative link made from the wrong folder: the classic broken cache.
    _cached_weights(env).symlink_to(pathlib.Path("..", "shared", "weights", WEIGHTS_035))
    return True


def _lfs_pointer_weights(env):
    _cached_weights(env).write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:0123456789abcdef\nsize 1736000\n"
    )
    return True


def _must_not_be_called(*args, **kwargs):
    raise AssertionError("called although the input is invalid")


def _run_cli(capsys, argv):
    status = cli.main(["train", *map(str, argv)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return status, out, err


def _error_line(err):
    """The one error line; warnings before it must be one line each too."""
    lines = err.strip().splitlines()
    assert lines, "nothing on stderr"
    assert all(line.startswith("keras-transfer: warning: ") for line in lines[:-1]), err
    assert lines[-1].startswith("keras-transfer: error: "), err
    return lines[-1]


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda case: case.id)
def test_command_line_refuses(case, env, capsys, monkeypatch):
    monkeypatch.chdir(env.tmp)
    if case.stage == "arguments":
        monkeypatch.setattr(training, "load_image_folder", _must_not_be_called)
    if case.stage == "data":
        monkeypatch.setattr(training, "build_classifier", _must_not_be_called)
    status, _, err = _run_cli(capsys, case.argv(env))
    assert status == 2
    line = _error_line(err)
    for fragment in case.fragments:
        assert fragment in line
    # Nothing trained: no history, no model, no backup.
    assert not (env.tmp / "history.json").exists()
    assert not (env.tmp / "model.keras").exists()
    assert not (env.tmp / "model.backup").exists()


def test_tables_cover_at_least_twenty_two_cases():
    assert len(API_CASES) + len(CLI_CASES) >= 22
    ids = [case.id for case in API_CASES] + [f"cli {case.id}" for case in CLI_CASES]
    assert len(set(ids)) == len(ids)


# --- messy images just work -----------------------------------------------------


def test_messy_images_train_and_undecodable_files_are_skipped_by_name(tmp_path, capsys):
    root = write_image_folder(tmp_path / "messy", per_class=4, size=(8, 8))  # < 32 px
    rng = np.random.default_rng(0)
    for name in ("cats", "dogs"):
        folder = root / name
        gray = rng.integers(0, 255, (20, 30), dtype=np.uint8)
        Image.fromarray(gray).save(folder / "gray.jpg")
        rgba = rng.integers(0, 255, (40, 40, 4), dtype=np.uint8)
        Image.fromarray(rgba).save(folder / "rgba.png")
        Image.fromarray(rgba[..., :3]).convert("P").save(folder / "palette.png")
    (root / "cats" / "notes.jpg").write_text("not an image")
    good = (root / "dogs" / "img_0.jpg").read_bytes()
    (root / "dogs" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    output = tmp_path / "out" / "messy.keras"

    status, _, err = _run_cli(capsys, _train(root, "--unfreeze-blocks", 1, "--output", output))

    assert status == 0, err
    [warning] = [line for line in err.splitlines() if "Skipping" in line]
    assert warning.startswith("keras-transfer: warning: Skipping 2 image files")
    assert "notes.jpg" in warning and "truncated.jpg" in warning
    model = keras.saving.load_model(output)  # safe_mode=True
    assert model.input_shape == (None, SIZE, SIZE, 3)
    history = json.loads((output.parent / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [0, 1]
    assert all(math.isfinite(e["loss"]) for e in history["epochs"])
    # 7 usable images per class: 4 small JPEGs, grayscale, RGBA, palette.
    with pytest.warns(UserWarning, match="Skipping 2 image files"):
        train_ds, val_ds, _ = data.load_image_folder(root, SIZE, verbose=False)
    assert len(train_ds.file_paths) + len(val_ds.file_paths) == 14
    images, _ = next(iter(train_ds))
    assert images.shape[1:] == (SIZE, SIZE, 3)


# --- NaN loss -------------------------------------------------------------------


class _PoisonHead(keras.callbacks.Callback):
    """Turns the head's weights into NaN at a given epoch and batch."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.epoch, self.batch, self._current = epoch, batch, None

    def on_epoch_begin(self, epoch, logs=None):
        self._current = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self._current, batch) == (self.epoch, self.batch):
            for variable in self.model.get_layer("head").trainable_weights:
                variable.assign(np.full(variable.shape, np.nan, "float32"))


class _RecordWeights(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.at_epoch_end = {}

    def on_epoch_end(self, epoch, logs=None):
        self.at_epoch_end[epoch] = self.model.get_weights()


def test_nan_during_fine_tuning_keeps_the_last_good_epoch_and_resumes(
    tmp_path, capsys, monkeypatch
):
    data_dir = write_image_folder(tmp_path / "images", per_class=12, size=(SIZE, SIZE))
    output = tmp_path / "out" / "model.keras"
    backup = tmp_path / "out" / "model.backup"
    argv = _train(data_dir, "--epochs", 1, "--fine-tune-epochs", 2, "--batch-size", 6,
                  "--validation-split", 0.25, "--output", output)  # fmt: skip
    record = _RecordWeights()
    build_callbacks = training.build_callbacks
    # The head is poisoned in the second batch of epoch 2 (the first one of
    # fine-tuning): epoch 1 is the last good one.
    monkeypatch.setattr(
        training,
        "build_callbacks",
        lambda *args: [_PoisonHead(epoch=1, batch=1), record] + build_callbacks(*args),
    )

    status, _, err = _run_cli(capsys, argv)

    assert status == 3
    line = _error_line(err)
    for fragment in (
        "the loss became nan at epoch 2/3, batch 2 (fine-tuning)",
        f"Saved the model of epoch 1, the last finished one, to {output}",
        "history.json keeps the finished epochs",
        "Lower --learning-rate (now 0.001) or --backbone-lr-ratio (now 0.1)",
        "resume at epoch 2",
        str(backup),
    ):
        assert fragment in line
    saved = keras.saving.load_model(output)
    for kept, good in zip(saved.get_weights(), record.at_epoch_end[0]):
        np.testing.assert_array_equal(kept, good)
    history = json.loads((output.parent / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [0]
    assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 1

    monkeypatch.setattr(training, "build_callbacks", build_callbacks)
    # Other options than the learning rates do not fit the backup.
    status, _, err = _run_cli(capsys, [*argv, "--batch-size", 4])
    assert status == 2
    assert "holds the backup of another run (--batch-size 6 there, 4 now)" in (_error_line(err))
    # A lower learning rate resumes after the last good epoch.
    status, out, err = _run_cli(capsys, [*argv, "--learning-rate", 5e-4])
    assert status == 0, err
    assert "1 of 3 epochs are done" in out
    history = json.loads((output.parent / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [0, 1, 2]
    assert history["learning_rate"] == 5e-4
    assert not backup.exists()


def test_nan_before_any_epoch_finished_saves_nothing(tmp_path, capsys):
    data_dir = write_image_folder(tmp_path / "images", per_class=8, size=(SIZE, SIZE))
    output = tmp_path / "out" / "model.keras"
    # Adam's steps are as large as its learning rate: the logits overflow.
    status, _, err = _run_cli(
        capsys,
        _train(
            data_dir, "--fine-tune-epochs", 0, "--learning-rate", 1e38, "--output", output
        ),  # fmt: skip
    )
    assert status == 3
    line = _error_line(err)
    assert "at epoch 1/1" in line
    assert "before any epoch finished; nothing was saved" in line
    assert "Lower --learning-rate (now 1e+38)" in line
    assert not output.exists()
    assert not (output.parent / "history.json").exists()


class _PoisonValidationLoss(keras.callbacks.Callback):
    """Reports a NaN validation loss at the end of one epoch."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            logs["val_loss"] = float("nan")


def test_nan_validation_loss_stops_and_keeps_the_epoch_before(tmp_path, capsys, monkeypatch):
    data_dir = write_image_folder(tmp_path / "images", per_class=12, size=(SIZE, SIZE))
    output = tmp_path / "out" / "model.keras"
    argv = _train(data_dir, "--epochs", 1, "--fine-tune-epochs", 2, "--batch-size", 6,
                  "--validation-split", 0.25, "--output", output)  # fmt: skip
    record = _RecordWeights()
    build_callbacks = training.build_callbacks
    monkeypatch.setattr(
        training,
        "build_callbacks",
        lambda *args: [_PoisonValidationLoss(epoch=1), record] + build_callbacks(*args),
    )

    status, _, err = _run_cli(capsys, argv)

    assert status == 3
    line = _error_line(err)
    assert "the validation loss became nan at the end of epoch 2/3" in line
    assert f"Saved the model of epoch 1, the last finished one, to {output}" in line
    saved = keras.saving.load_model(output)
    for kept, good in zip(saved.get_weights(), record.at_epoch_end[0]):
        np.testing.assert_array_equal(kept, good)
    history = json.loads((output.parent / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [0]
