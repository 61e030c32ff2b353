"""Saved models load with plain Keras in a Python that never imports keras_transfer.

`save_model`, `TransferClassifier.save` and so `ModelCheckpoint` write the
model's layers, all Keras' own, in a plain functional model
(`keras_transfer.portable`); `portable.load_model` and `load_classifier`
give back the keras_transfer model with its class names. Files of earlier
releases load too.
"""

import json
import os
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

import keras_transfer
from keras_transfer import cli
from keras_transfer import portable
from keras_transfer.errors import ConfigurationError
from keras_transfer.evaluation import load_classifier
from keras_transfer import layers as layers_lib
from keras_transfer.layers import class_names_of
from keras_transfer.legacy_layers import BackbonePreprocessing
from keras_transfer.legacy_layers import ClassifierHead

SIZE = 32
NAMES = ["cats", "dogs", "owls"]

# Loads each file with plain Keras, writes the predictions, and reports what
# was imported and which classes the models are made of.
FRESH_LOAD = """
import json, sys, warnings
import numpy as np
import keras

warnings.simplefilter("always")
images = np.load(sys.argv[1])

def classes(layer):
    found = {type(layer).__module__.split(".")[0]}
    for inner in getattr(layer, "layers", ()):
        found |= classes(inner)
    return found

report = {"packages": set(), "types": []}
predictions = {}
for index, path in enumerate(sys.argv[3:]):
    with warnings.catch_warnings(record=True) as caught:
        model = keras.models.load_model(path)
    report["packages"] |= classes(model)
    report["types"].append(type(model).__name__)
    report.setdefault("warnings", []).extend(
        str(w.message) for w in caught if issubclass(w.category, UserWarning))
    predictions[str(index)] = model.predict(images, verbose=0)
np.savez(sys.argv[2], **predictions)
report["packages"] = sorted(report["packages"])
report["keras_transfer_imported"] = any(n.startswith("keras_transfer") for n in sys.modules)
print(json.dumps(report))
"""


def load_without_keras_transfer(tmp_path, paths, images):
    """Predictions of each file, loaded by `keras.models.load_model` in a fresh Python."""
    np.save(tmp_path / "images.npy", images)
    out = tmp_path / "fresh_predictions.npz"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-c", FRESH_LOAD, str(tmp_path / "images.npy"), str(out)]
        + [str(p) for p in paths],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert not report["keras_transfer_imported"]
    assert report["packages"] == ["keras"], report
    with np.load(out) as saved:
        return report, [saved[str(i)] for i in range(len(paths))]


def tiny_backbone(pooled_backbone=False):
    layers = [
        keras.Input((SIZE, SIZE, 3)),
        keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
        keras.layers.BatchNormalization(),
    ]
    if pooled_backbone:
        layers.append(keras.layers.GlobalAveragePooling2D())
    backbone = keras.Sequential(layers, name="tiny_backbone")
    backbone.trainable = False
    return backbone


def tiny_classifier(mode="tf", head=None, pooled_backbone=False, class_names=NAMES):
    """A TransferClassifier shaped as build_classifier makes them, small and fast."""
    keras.utils.set_random_seed(1)
    head = dict(head or {})
    pooling = head.pop("pooling", "avg")
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = layers_lib.backbone_preprocessing(mode, (SIZE, SIZE, 3))(inputs)
    x = tiny_backbone(pooled_backbone)(x, training=False)
    if not pooled_backbone:
        x = layers_lib.global_pooling(pooling)(x)
    outputs = layers_lib.classifier_head(3, **head)(x)
    return keras_transfer.TransferClassifier(
        inputs, outputs, name=f"tiny_{mode}", class_names=class_names
    )


def legacy_classifier(mode="caffe", class_names=NAMES):
    """A model as earlier releases built them: keras_transfer layer classes."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = BackbonePreprocessing(mode, name="preprocessing")(inputs)
    x = tiny_backbone()(x, training=False)
    head = ClassifierHead(3, name="head", class_names=class_names, hidden_units=6, resize="pad")
    return keras_transfer.TransferClassifier(inputs, head(x), name=f"legacy_{mode}")


@pytest.fixture
def images():
    # Not integers, as resized images are not: float16 would round them.
    return np.random.default_rng(0).uniform(0, 255, (5, SIZE, SIZE, 3)).astype("float32")


@pytest.fixture
def mixed_precision():
    keras.config.set_dtype_policy("mixed_float16")
    yield
    keras.config.set_dtype_policy("float32")


VARIANTS = {
    "tf": dict(mode="tf"),
    "caffe": dict(mode="caffe", head={"hidden_units": 6, "dropout": 0.3}),
    "torch": dict(mode="torch", head={"pooling": "max", "dropout": 0.0}),
    "none": dict(mode="none", pooled_backbone=True),
}


def test_every_preprocessing_and_head_loads_without_keras_transfer(tmp_path, images):
    models = [tiny_classifier(**kwargs) for kwargs in VARIANTS.values()]
    models.append(
        keras_transfer.build_classifier(
            "mobilenet_v2_035", 3, input_shape=(SIZE, SIZE, 3), weights=None, class_names=NAMES
        )
    )
    paths, expected = [], []
    for model in models:
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        paths.append(tmp_path / f"{model.name}.keras")
        model.save(paths[-1])
        expected.append(model.predict(images, verbose=0))

    report, actual = load_without_keras_transfer(tmp_path, paths, images)
    assert report["types"] == ["Functional"] * len(models)
    # Compiled, never trained: the file's optimizer is built as Keras builds it.
    assert not [w for w in report["warnings"] if "Skipping variable loading" in w]
    for model, want, got in zip(models, expected, actual):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6, err_msg=model.name)
    for path, want in zip(paths, expected):
        restored = portable.load_model(path)
        assert class_names_of(restored) == NAMES
        np.testing.assert_array_equal(restored.predict(images, verbose=0), want)


def test_a_mixed_precision_model_loads_without_keras_transfer(tmp_path, images, mixed_precision):
    model = tiny_classifier("caffe", head={"hidden_units": 6})
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(images, np.arange(5) % 3, epochs=1, verbose=0)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    expected = model.predict(images, verbose=0)
    model.save(tmp_path / "mixed.keras")
    keras.config.set_dtype_policy("float32")  # As a fresh Python starts.

    report, [actual] = load_without_keras_transfer(tmp_path, [tmp_path / "mixed.keras"], images)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-6)
    # The optimizer in the file is the one plain Keras builds for it.
    assert not [w for w in report["warnings"] if "Skipping variable loading" in w]
    restored = portable.load_model(tmp_path / "mixed.keras")
    np.testing.assert_array_equal(restored.predict(images, verbose=0), expected)
    assert restored.get_layer("head").get_layer("hidden").compute_dtype == "float16"


def test_a_cli_trained_model_loads_without_keras_transfer(
    image_folder, seeded_keras_home, tmp_path, capsys
):
    output = tmp_path / "run" / "model.keras"
    status = cli.main([str(a) for a in (
        "train", image_folder, "--backbone", "mobilenet_v2_035", "--image-size", 32,
        "--epochs", 1, "--fine-tune-epochs", 1, "--unfreeze-blocks", 1,
        "--batch-size", 4, "--validation-split", 0.25, "--output", output,
    )])  # fmt: skip
    _, err = capsys.readouterr()
    assert status == 0, err
    images = np.random.default_rng(2).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    model, info = load_classifier(output)
    assert info.class_names == ["cats", "dogs"]
    assert isinstance(model, keras_transfer.TransferClassifier)

    report, [actual] = load_without_keras_transfer(tmp_path, [output], images)
    np.testing.assert_allclose(actual, model.predict(images, verbose=0), rtol=0, atol=1e-6)
    # Fine-tuning ran under UnfreezeOptimizer: the file keeps its head optimizer.
    config = json.loads(zipfile.ZipFile(output).read("config.json"))
    assert config["compile_config"]["optimizer"]["class_name"] == "Adam"
    assert not [w for w in report["warnings"] if "optimizer" in w], report["warnings"]


def test_load_model_gives_back_the_keras_transfer_model(tmp_path, images):
    model = tiny_classifier("caffe", head={"hidden_units": 6, "dropout": 0.3})
    model.cache_memory_limit = 2**20
    model.augmented_views = 2
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(images, np.arange(5) % 3, epochs=2, verbose=0)
    keras_transfer.models.save_model(model, tmp_path / "m.keras")

    plain = keras.models.load_model(tmp_path / "m.keras")
    assert type(plain) is keras.Model or type(plain).__name__ == "Functional"
    assert [type(layer).__name__ for layer in plain.layers] == [
        "InputLayer", "Sequential", "Sequential", "GlobalAveragePooling2D", "Sequential",
    ]  # fmt: skip
    assert class_names_of(plain) is None  # The names are in the file's metadata.

    restored = portable.load_model(tmp_path / "m.keras")
    assert isinstance(restored, keras_transfer.TransferClassifier)
    head = restored.get_layer("head")
    assert [layer.name for layer in head.layers] == [
        "dropout", "hidden", "hidden_dropout", "predictions",
    ]  # fmt: skip
    assert class_names_of(restored) == NAMES
    assert (restored.cache_memory_limit, restored.augmented_views) == (2**20, 2)
    np.testing.assert_array_equal(
        restored.predict(images, verbose=0), model.predict(images, verbose=0)
    )
    # Compiled as it was, with the optimizer's state.
    assert int(restored.optimizer.iterations) == int(model.optimizer.iterations) == 2
    for kept, trained in zip(restored.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(kept, trained)
    # And it trains on: fit (cached) moves the head's weights.
    before = head.get_weights()
    restored.fit(images, np.arange(5) % 3, epochs=1, verbose=0)
    assert not np.array_equal(before[0], head.get_weights()[0])
    # On pooled features in the head-only phase, as before saving.
    assert keras_transfer.caching.feature_cache_info(restored).boundaries == (("pool",),)


def test_model_checkpoint_writes_portable_files_with_class_names(tmp_path, images):
    model = tiny_classifier("torch")
    model.compile("adam", "sparse_categorical_crossentropy")
    checkpoint = keras.callbacks.ModelCheckpoint(tmp_path / "best.keras", monitor="loss")
    model.fit(images, np.arange(5) % 3, epochs=1, verbose=0, callbacks=[checkpoint])
    with zipfile.ZipFile(tmp_path / "best.keras") as archive:
        config = archive.read("config.json").decode()
        metadata = json.loads(archive.read(portable.METADATA_NAME))
    assert "keras_transfer" not in config
    assert metadata["class_names"] == NAMES
    assert portable.read_metadata(tmp_path / "best.keras")["class_names"] == NAMES
    _, info = load_classifier(tmp_path / "best.keras")
    assert info.class_names == NAMES and info.image_size == (SIZE, SIZE)

    unnamed = tiny_classifier("tf", class_names=None)
    unnamed.save(tmp_path / "unnamed.keras")
    assert portable.read_metadata(tmp_path / "unnamed.keras")["class_names"] is None
    assert load_classifier(tmp_path / "unnamed.keras")[1].class_names is None


def test_files_with_keras_transfer_layers_still_load(tmp_path, images):
    model = legacy_classifier("caffe")
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(images, np.arange(5) % 3, epochs=1, verbose=0)
    # keras.saving.save_model bypasses TransferClassifier.save: the old format.
    keras.saving.save_model(model, tmp_path / "old.keras")
    config = zipfile.ZipFile(tmp_path / "old.keras").read("config.json").decode()
    assert "TransferClassifier" in config and "ClassifierHead" in config
    assert portable.read_metadata(tmp_path / "old.keras") is None
    expected = model.predict(images, verbose=0)

    for loaded in (
        portable.load_model(tmp_path / "old.keras"),
        load_classifier(tmp_path / "old.keras")[0],
    ):
        # Today's layers, the old weights, the head's metadata on the model.
        assert isinstance(loaded, keras_transfer.TransferClassifier)
        assert [type(layer).__name__ for layer in loaded.layers] == [
            "InputLayer", "Sequential", "Sequential", "GlobalAveragePooling2D", "Sequential",
        ]  # fmt: skip
        assert (loaded.class_names, loaded.resize) == (NAMES, "pad")
        np.testing.assert_allclose(loaded.predict(images, verbose=0), expected, atol=1e-6)
    # Saved again, it is plain Keras.
    loaded.save(tmp_path / "again.keras")
    assert b"keras_transfer>" not in zipfile.ZipFile(tmp_path / "again.keras").read("config.json")


def test_files_whose_head_held_the_pooling_still_load(tmp_path, images):
    """Format 1: the head was a Sequential of the pooling and the Dense layers."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = layers_lib.backbone_preprocessing("tf", (SIZE, SIZE, 3))(inputs)
    x = tiny_backbone()(x, training=False)
    head = keras.Sequential(
        [keras.Input(x.shape[1:]), layers_lib.global_pooling(), *layers_lib.head_layers(3)],
        name="head",
    )
    model = keras.Model(inputs, head(x), name="format_1")
    keras.saving.save_model(model, tmp_path / "v1.keras")
    metadata = {
        "format": portable.FORMAT, "version": 1, "class_names": NAMES, "resize": "crop",
        "model": {
            "registered_name": "keras_transfer>TransferClassifier",
            "config": {"cache_frozen_features": True}, "dtype_policy": "float32",
        },
        "layers": {"head": {"class_name": "ClassifierHead"}},
    }  # fmt: skip
    with zipfile.ZipFile(tmp_path / "v1.keras", "a") as archive:
        archive.writestr(portable.METADATA_NAME, json.dumps(metadata))

    restored = portable.load_model(tmp_path / "v1.keras")
    assert isinstance(restored, keras_transfer.TransferClassifier)
    assert [layer.name for layer in restored.layers][-2:] == ["pool", "head"]
    assert (restored.class_names, restored.resize) == (NAMES, "crop")
    np.testing.assert_array_equal(
        restored.predict(images, verbose=0), model.predict(images, verbose=0)
    )


def test_a_file_that_still_needs_keras_transfer_says_so(tmp_path):
    # A head inside a nested model is out of reach of the top-level swap.
    inner = keras.Sequential(
        [keras.Input((4, 4, 2)), ClassifierHead(2, name="nested_head")], name="block"
    )
    inputs = keras.Input((4, 4, 2))
    model = keras_transfer.TransferClassifier(inputs, inner(inputs), name="nested")
    with pytest.warns(UserWarning) as caught:
        model.save(tmp_path / "nested.keras")
    [message] = [str(w.message) for w in caught if "needs keras_transfer" in str(w.message)]
    assert "ClassifierHead" in message and "keras_transfer.load_model" in message
    assert "\n" not in message


def test_unreadable_metadata_is_one_line(tmp_path):
    model = tiny_classifier("tf")
    model.save(tmp_path / "m.keras")
    newer = {"format": portable.FORMAT, "version": portable.FORMAT_VERSION + 1}
    with zipfile.ZipFile(tmp_path / "m.keras", "a") as archive:
        with pytest.warns(UserWarning, match="Duplicate name"):
            archive.writestr("keras_transfer.json", json.dumps(newer))  # read last
    with pytest.raises(ConfigurationError, match="Upgrade keras_transfer") as error:
        load_classifier(tmp_path / "m.keras")
    assert "\n" not in str(error.value)


def test_keras_transfer_load_model_in_a_fresh_process_gives_the_transfer_classifier(tmp_path):
    # A fresh Python whose first keras_transfer name is `load_model`.
    model = keras_transfer.build_classifier(
        "mobilenet_v2_035",
        2,
        input_shape=(SIZE, SIZE, 3),
        weights=None,
        class_names=["a", "b"],
    )
    model.save(tmp_path / "m.keras")
    script = (
        "import sys, keras_transfer\n"
        "m = keras_transfer.load_model(sys.argv[1])\n"
        "print(type(m).__name__, keras_transfer.layers.class_names_of(m))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "m.keras")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[-2] == "TransferClassifier ['a', 'b']"
