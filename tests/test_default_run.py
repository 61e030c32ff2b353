"""The default `train` run without waste (#31): images read once, none kept, the mean scored on features."""

import collections
import gc
import json
import subprocess
import sys
import threading

import keras
import numpy as np
import tensorflow as tf
from conftest import write_image_folder

import keras_transfer
from keras_transfer import caching
from keras_transfer import cli
from keras_transfer.cli import training
from keras_transfer.data import loading
from keras_transfer.utils.imports import heavy_imports


class _Score(keras.callbacks.Callback):
    """What `evaluate_validation_features` gives as the fit ends."""

    results = None

    def on_train_end(self, logs=None):
        self.results = caching.evaluate_validation_features(self.model, verbose=0, return_dict=True)


def _images(count, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (count, 32, 32, 3)).astype("float32")
    return x, rng.integers(0, 3, count).astype("int32")


def test_average_scored_on_cached_features_equals_the_image_pass():
    keras.utils.set_random_seed(5)
    model = keras_transfer.build_classifier(
        "mobilenet_v2_035", 3, input_shape=(32, 32, 3), weights=None
    )
    model.compile(
        keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    x, y = _images(48, 0)
    val_x, val_y = _images(40, 1)
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    val = tf.data.Dataset.from_tensor_slices((val_x, val_y)).batch(8)
    score = _Score()
    history = model.fit(
        train,
        validation_data=val,
        epochs=4,
        verbose=0,
        callbacks=[
            keras_transfer.ProgressiveUnfreeze(schedule={1: 2}, verbose=0),
            keras_transfer.WeightAveraging(start_epoch=1),
            score,  # after the averaging: it scores the mean
        ],
    )
    assert caching.feature_cache_info(model).boundaries[-1] != (), "the fit was not cached"
    assert score.results is not None
    images = model.evaluate(val, verbose=0, return_dict=True)
    assert score.results["accuracy"] == images["accuracy"]
    np.testing.assert_allclose(score.results["loss"], images["loss"], rtol=1e-5)
    # The mean, not the last epoch's weights, was scored.
    assert abs(score.results["loss"] - history.history["val_loss"][-1]) > 1e-4


def test_evaluate_validation_features_is_none_outside_a_cached_fit():
    model = keras_transfer.build_classifier(
        "mobilenet_v2_035", 3, input_shape=(32, 32, 3), weights=None
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    assert caching.evaluate_validation_features(model) is None
    x, y = _images(16, 2)
    score = _Score()
    model.fit(x, y, epochs=1, verbose=0, callbacks=[score])  # no validation data
    assert score.results is None


def test_train_reads_each_image_once_and_keeps_no_decoded_image(tmp_path, capsys, monkeypatch):
    data_dir = write_image_folder(tmp_path / "images", per_class=8, size=(36, 36))
    decoded = collections.Counter()
    lock = threading.Lock()
    decode = loading.decode_image_file

    def counting_decode(path, *args, **kwargs):
        with lock:
            decoded[bytes(path)] += 1
        return decode(path, *args, **kwargs)

    datasets = []
    load = training.load_image_folder

    def recording_load(*args, **kwargs):
        result = load(*args, **kwargs)
        datasets.append(result)
        return result

    monkeypatch.setattr(loading, "decode_image_file", counting_decode)
    monkeypatch.setattr(training, "load_image_folder", recording_load)
    output = tmp_path / "out" / "model.keras"
    status = cli.main(
        [
            "train", str(data_dir), "--backbone", "mobilenet_v2_035", "--weights", "none",
            "--image-size", "32", "--epochs", "1", "--fine-tune-epochs", "2",
            "--unfreeze-blocks", "1", "--batch-size", "4", "--validation-split", "0.25",
            "--learning-rate", "0.05", "--output", str(output), "--keep", "average",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0, out
    ((train_ds, val_ds, _),) = datasets
    paths = train_ds.file_paths + val_ds.file_paths
    assert len(paths) == 16
    # The cache pass read every image once; the mean was scored without
    # another pass over the validation images.
    assert sorted(decoded.values()) == [1] * len(paths)

    # The datasets keep no decoded image: reading them again decodes again.
    for dataset in (train_ds, val_ds):
        for _ in dataset:
            pass
    assert sorted(decoded.values()) == [2] * len(paths)

    # The score saved is the saved model's on the validation images.
    history = json.loads((output.parent / "history.json").read_text())
    saved = keras.saving.load_model(output)
    saved.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    accuracy = saved.evaluate(val_ds, verbose=0, return_dict=True)["accuracy"]
    assert history["saved"]["val_accuracy"] == accuracy


def test_heavy_imports_freeze_what_a_fresh_process_imports():
    # In a fresh process: no collection during the imports, their objects
    # frozen after; in this one (TensorFlow imported): nothing changes.
    code = (
        "import gc\n"
        "from keras_transfer.utils.imports import heavy_imports\n"
        "before = gc.get_stats()[2]['collections']\n"
        "with heavy_imports():\n"
        "    assert not gc.isenabled()\n"
        "    import tensorflow\n"
        "print(gc.isenabled(), gc.get_freeze_count() > 100_000,\n"
        "      gc.get_stats()[2]['collections'] - before)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["True", "True", "0"]
    frozen = gc.get_freeze_count()
    with heavy_imports():
        assert gc.isenabled()
    assert gc.get_freeze_count() == frozen
