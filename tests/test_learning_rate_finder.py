"""`find_learning_rate` and the `train` flags around it (`--learning-rate auto`, `--class-weight`, `--mixed-precision`)."""

import functools
import json
import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import write_image_folder

import keras_transfer
from keras_transfer import cli
from keras_transfer.cli import training
from keras_transfer.errors import ConfigurationError
from keras_transfer.learning_rate import RULES
from keras_transfer.learning_rate import suggest
from keras_transfer.models import TransferClassifier

SIZE = 8


def tiny_classifier(dropout=0.5, optimizer="adam"):
    """Frozen conv -> pooling -> dropout -> dense: a TransferClassifier in miniature."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((SIZE, SIZE, 3))
    conv = keras.layers.Conv2D(6, 3, name="frozen_conv")
    conv.trainable = False
    x = keras.layers.GlobalAveragePooling2D(name="pool")(conv(inputs))
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="dense")(x)
    model = TransferClassifier(inputs, outputs, name="tiny")
    model.compile(optimizer, "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    # Pixels in [0, 1] keep the tiny model's softmax away from saturation.
    x = rng.uniform(0, 1, (48, SIZE, SIZE, 3)).astype("float32")
    y = (np.arange(48) % 2).astype("int32")
    x[y == 1] += 0.3  # Learnable: class 1 is brighter.
    return x, y


def _state(model):
    optimizer = model.optimizer
    return (
        [v.numpy().copy() for v in model.variables],
        [v.numpy().copy() for v in optimizer.variables],
        optimizer,
    )


def test_the_finder_leaves_model_and_optimizer_as_they_were(images):
    x, y = images
    model = tiny_classifier()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # Optimizer state to keep.
    twin = tiny_classifier()
    twin.fit(x, y, batch_size=8, epochs=1, verbose=0)
    variables, slots, optimizer = _state(model)

    with warnings.catch_warnings():
        # Its suggestion may be unreliable (dropout 0.5): only the state counts.
        warnings.simplefilter("ignore")
        finding = keras_transfer.find_learning_rate(model, x, y, batch_size=8, steps=40, verbose=0)

    after_variables, after_slots, after_optimizer = _state(model)
    assert after_optimizer is optimizer
    for before, after in zip(variables + slots, after_variables + after_slots):
        np.testing.assert_array_equal(before, after)
    # Training goes on exactly as for a twin that never ran the test (the
    # dropout's seed state is among the restored variables).
    for trained in (model, twin):
        keras.utils.set_random_seed(7)
        trained.fit(x, y, batch_size=8, epochs=2, verbose=0)
    for a, b in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert len(finding.learning_rates) >= 30


def test_recorded_losses_are_each_batchs_own_loss(images):
    x, y = images
    model = tiny_classifier(dropout=0.0)
    # 18 images in batches of 4: the last batch of each epoch has 2 and is
    # not recorded; at a negligible rate the weights stay put.
    dataset = tf.data.Dataset.from_tensor_slices((x[:18], y[:18])).batch(4)
    finding = keras_transfer.find_learning_rate(
        model, dataset, min_lr=1e-12, max_lr=1e-11, steps=10, verbose=0
    )
    probabilities = model.predict(x[:16], verbose=0)
    losses = keras.losses.sparse_categorical_crossentropy(y[:16], probabilities)
    per_batch = np.asarray(losses).reshape(4, 4).mean(axis=1)
    np.testing.assert_allclose(finding.losses, np.tile(per_batch, 2), rtol=1e-4)
    np.testing.assert_allclose(
        finding.learning_rates, np.geomspace(1e-12, 1e-11, 10)[[0, 1, 2, 3, 5, 6, 7, 8]]
    )


def test_the_finding_suggests_a_rate_and_plots_it(images, tmp_path):
    x, y = images
    model = tiny_classifier(dropout=0.0)
    finding = keras_transfer.find_learning_rate(
        model,
        x,
        y,
        batch_size=4,
        max_lr=10.0,
        rule="steepest",
        plot=tmp_path / "lr.png",
        verbose=0,
    )
    rates = finding.learning_rates
    assert rates[0] == pytest.approx(1e-6) and np.all(np.diff(rates) > 0)
    assert set(finding.suggestions) == set(RULES)
    assert finding.suggestion == finding.suggestions["steepest"]
    lowest = rates[int(np.argmin(finding.smoothed_losses))]
    assert finding.suggestions["min_loss"] == pytest.approx(lowest / 10)
    # On a falling curve, the steepest descent and the valley come before
    # the lowest loss.
    assert min(finding.smoothed_losses) < finding.smoothed_losses[0]
    for rule in ("steepest", "valley"):
        assert rates[0] < finding.suggestions[rule] <= lowest
    assert (tmp_path / "lr.png").read_bytes().startswith(b"\x89PNG")


def test_the_rules_read_the_curve():
    rates = np.geomspace(1e-6, 1.0, 61)
    # Flat, then falling faster and faster down to index 40, then diverging.
    losses = np.concatenate(
        [np.full(20, 2.0), 2.0 - 1.5 * (np.arange(1, 21) / 20) ** 2, np.geomspace(0.6, 6, 21)]
    )
    suggestions = suggest(rates, losses)
    # The longest descent runs from index 19 to 39: its middle is 29.
    assert suggestions["valley"] == pytest.approx(rates[29])
    assert suggestions["min_loss"] == pytest.approx(rates[39] / 10)
    # Central differences: at 39 the slope already sees the rise after it.
    assert suggestions["steepest"] == pytest.approx(rates[38])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"min_lr": 0.1, "max_lr": 0.01}, "min_lr must be below max_lr"),
        ({"min_lr": -1.0}, "min_lr must be a number > 0"),
        ({"rule": "lowest"}, "Unrecognized value for rule"),
        ({"steps": 3}, "steps"),
    ],
)
def test_arguments_are_checked(images, kwargs, message):
    x, y = images
    with pytest.raises(ConfigurationError, match=message):
        keras_transfer.find_learning_rate(tiny_classifier(), x, y, **kwargs)


def test_an_uncompiled_model_is_refused(images):
    x, y = images
    model = tiny_classifier()
    uncompiled = TransferClassifier(model.inputs, model.outputs)
    with pytest.raises(ConfigurationError, match="needs a compiled model"):
        keras_transfer.find_learning_rate(uncompiled, x, y)


def test_the_finder_works_under_mixed_precision(images):
    x, y = images
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = tiny_classifier(dropout=0.0)
    finally:
        keras.config.set_dtype_policy("float32")
    optimizer = model.optimizer  # A LossScaleOptimizer, after compile.
    finding = keras_transfer.find_learning_rate(model, x, y, batch_size=8, verbose=0)
    assert model.optimizer is optimizer
    assert np.all(np.isfinite(finding.losses)) and finding.suggestion > 0


def _data_12_cats_6_dogs(tmp_path):
    data_dir = write_image_folder(tmp_path / "images", per_class=12, size=(32, 32))
    for image in sorted((data_dir / "dogs").iterdir())[:6]:
        image.unlink()
    return data_dir


def test_train_learning_rate_auto_and_balanced_class_weight(tmp_path, capsys, monkeypatch):
    data_dir = _data_12_cats_6_dogs(tmp_path)
    calls = []
    fit = TransferClassifier.fit

    def spy(self, *args, **kwargs):
        calls.append((kwargs.get("class_weight"), float(self.optimizer.learning_rate)))
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(TransferClassifier, "fit", spy)
    # A shorter test than the default hundred steps: the wiring is under test.
    monkeypatch.setattr(
        training,
        "find_learning_rate",
        functools.partial(keras_transfer.find_learning_rate, steps=30),
    )
    status = cli.main(
        [
            "train",
            str(data_dir),
            "--backbone",
            "mobilenet_v2_035",
            "--weights",
            "none",
            "--image-size",
            "32",
            "--epochs",
            "1",
            "--fine-tune-epochs",
            "0",
            "--batch-size",
            "4",
            "--learning-rate",
            "auto",
            "--class-weight",
            "balanced",
            "--output",
            str(tmp_path / "m.keras"),
        ]
    )
    out, err = capsys.readouterr()
    assert status == 0, err
    # 10 cats and 5 dogs train: 15 / (2 * 10) and 15 / (2 * 5).
    assert "Class weights (balanced): cats 0.75, dogs 1.50." in out
    (finder_weights, _), (train_weights, train_rate) = calls  # Finder, training.
    assert finder_weights == train_weights == {0: 0.75, 1: 1.5}
    line = next(l for l in out.splitlines() if l.startswith("Learning-rate range test"))
    rate = float(line.rsplit("--learning-rate ", 1)[1].rstrip("."))
    assert train_rate == pytest.approx(rate, rel=1e-6)
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["learning_rate"] == rate and history["class_weight"] == "balanced"


def test_train_mixed_precision_builds_float16_and_says_cpu_is_slow(tmp_path, capsys, monkeypatch):
    built = {}

    def build_classifier(*args, **kwargs):
        built.update(kwargs)
        raise KeyboardInterrupt  # Stops the run once the model is asked for.

    monkeypatch.setattr(training, "build_classifier", build_classifier)
    status = cli.main(
        [
            "train",
            str(_data_12_cats_6_dogs(tmp_path)),
            "--weights",
            "none",
            "--mixed-precision",
            "--output",
            str(tmp_path / "m.keras"),
        ]
    )
    err = capsys.readouterr().err
    assert status == 130 and built["dtype"] == "mixed_float16"
    assert err.splitlines()[0] == (
        "keras-transfer: warning: --mixed-precision on a CPU is slow (float16 is "
        "emulated there); it pays off on a GPU."
    )


def test_learning_rate_must_be_a_number_or_auto(tmp_path, capsys):
    status = cli.main(["train", str(tmp_path), "--learning-rate", "fast"])
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert err == (
        "keras-transfer: error: argument --learning-rate: expected a number > 0 "
        "or 'auto', got 'fast' (see 'keras-transfer train --help')"
    )
    assert not os.path.exists(tmp_path / "history.json")
