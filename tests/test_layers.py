import json
import zipfile

import keras
import numpy as np
import pytest
from keras.applications import imagenet_utils

import keras_transfer
from keras_transfer import layers as layers_lib
from keras_transfer import BackbonePreprocessing
from keras_transfer import ClassifierHead
from keras_transfer.errors import ConfigurationError


@pytest.fixture
def pixels():
    return np.random.default_rng(0).uniform(0, 255, (2, 5, 4, 3)).astype("float32")


@pytest.fixture
def mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("mode", ["tf", "caffe", "torch"])
def test_preprocessing_matches_keras_preprocess_input(mode, pixels):
    expected = imagenet_utils.preprocess_input(pixels.copy(), mode=mode)
    actual = keras.ops.convert_to_numpy(BackbonePreprocessing(mode)(pixels))
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-4)


def test_preprocessing_values():
    rgb = np.array([[[[0.0, 127.5, 255.0]]]], dtype="float32")
    tf_mode = keras.ops.convert_to_numpy(BackbonePreprocessing("tf")(rgb))
    np.testing.assert_allclose(tf_mode, [[[[-1.0, 0.0, 1.0]]]])
    caffe = keras.ops.convert_to_numpy(BackbonePreprocessing("caffe")(rgb))
    # BGR order, ImageNet BGR mean subtracted.
    np.testing.assert_allclose(caffe, [[[[255 - 103.939, 127.5 - 116.779, 0 - 123.68]]]], rtol=1e-6)
    none = keras.ops.convert_to_numpy(BackbonePreprocessing("none")(rgb))
    np.testing.assert_array_equal(none, rgb)


def test_preprocessing_casts_integer_images(pixels):
    as_uint8 = pixels.astype("uint8")
    out = BackbonePreprocessing("tf")(as_uint8)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(out), as_uint8.astype("float32") / 127.5 - 1, atol=1e-6
    )


def test_preprocessing_under_mixed_precision(mixed_precision, pixels):
    out = BackbonePreprocessing("caffe")(pixels)
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    expected = imagenet_utils.preprocess_input(pixels.copy(), mode="caffe")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), expected, rtol=1e-3, atol=0.1)


@pytest.mark.parametrize("mode", ["tf", "caffe", "torch", "none"])
def test_preprocessing_builtin_layers_give_the_same_bits(mode, pixels):
    layer = BackbonePreprocessing(mode)
    builtin = keras.Sequential([keras.Input(pixels.shape[1:]), *layer.builtin_layers()])
    assert all(type(b).__module__.startswith("keras.") for b in builtin.layers)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(builtin(pixels)), keras.ops.convert_to_numpy(layer(pixels))
    )


def test_preprocessing_under_mixed_precision_scales_the_float32_pixels(mixed_precision):
    # Resized images are not integers: rounded to float16 before the
    # scaling, 100.1 would give -0.2147 instead of -0.2148.
    pixels = np.full((1, 1, 1, 3), 100.1, dtype="float32")
    layer = BackbonePreprocessing("tf")
    expected = (np.float32(100.1) * np.float32(1 / 127.5) - 1).astype("float16")
    assert expected != (np.float16(100.1).astype("float32") / 127.5 - 1).astype("float16")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(layer(pixels))[0, 0, 0], [expected] * 3
    )
    builtin = keras.Sequential([keras.Input((1, 1, 3)), *layer.builtin_layers()])
    assert builtin(pixels).dtype == layer(pixels).dtype
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(builtin(pixels)), keras.ops.convert_to_numpy(layer(pixels))
    )


def test_head_builtin_layers_are_its_own(pixels):
    head = ClassifierHead(2, hidden_units=4, pooling="max")
    features = np.random.default_rng(1).normal(size=(3, 2, 2, 5)).astype("float32")
    expected = keras.ops.convert_to_numpy(head(features))
    builtin = keras.Sequential([keras.Input((2, 2, 5)), *head.builtin_layers()])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(builtin(features)), expected)
    assert builtin.trainable_weights == head.trainable_weights  # shared, not copied
    assert [layer.name for layer in head.builtin_layers(input_rank=2)] == [
        "dropout", "hidden", "hidden_dropout", "predictions",
    ]  # fmt: skip


def test_preprocessing_rejects_unknown_mode():
    with pytest.raises(ConfigurationError, match="'imagenet'"):
        BackbonePreprocessing("imagenet")


def test_preprocessing_serialization_round_trip():
    layer = BackbonePreprocessing("torch", name="prep")
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(restored, BackbonePreprocessing)
    assert restored.mode == "torch" and restored.name == "prep"
    assert keras.layers.serialize(layer)["registered_name"] == (
        "keras_transfer>BackbonePreprocessing"
    )


def test_head_outputs_probabilities():
    head = ClassifierHead(4, dropout=0.0)
    probs = keras.ops.convert_to_numpy(head(np.random.default_rng(0).normal(size=(3, 5, 5, 8))))
    assert probs.shape == (3, 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    assert len(head.trainable_weights) == 2  # kernel and bias of the softmax layer


def test_head_hidden_layer_and_pooling():
    features = np.random.default_rng(0).normal(size=(2, 3, 3, 8)).astype("float32")
    head = ClassifierHead(3, dropout=0.0, hidden_units=16, pooling="max")
    head(features)
    assert head.count_params() == (8 * 16 + 16) + (16 * 3 + 3)
    # Max pooling: the head equals its dense layers applied to the spatial max.
    pooled = features.max(axis=(1, 2))
    expected = head.classifier(head.hidden(pooled))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(head(features)), keras.ops.convert_to_numpy(expected), rtol=1e-5
    )
    # Already pooled features are used as they are.
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(head(pooled)), keras.ops.convert_to_numpy(expected), rtol=1e-5
    )


def test_head_dropout_only_in_training():
    head = ClassifierHead(2, dropout=0.5)
    features = np.ones((64, 2, 2, 32), dtype="float32")
    inference = keras.ops.convert_to_numpy(head(features, training=False))
    training = keras.ops.convert_to_numpy(head(features, training=True))
    np.testing.assert_allclose(inference, np.repeat(inference[:1], 64, axis=0), rtol=1e-6)
    assert not np.allclose(training, inference)


def test_head_outputs_float32_under_mixed_precision(mixed_precision):
    head = ClassifierHead(3)
    out = head(np.ones((2, 4, 4, 8), dtype="float16"))
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert head.compute_dtype == "float16"


@pytest.mark.parametrize("num_classes", [1, 0, 2.5, True, "3"])
def test_head_rejects_bad_num_classes(num_classes):
    with pytest.raises(ConfigurationError, match="num_classes"):
        ClassifierHead(num_classes)


def test_head_accepts_numpy_integers():
    assert ClassifierHead(np.int64(3)).get_config()["num_classes"] == 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"pooling": "sum"}, "pooling"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"hidden_units": -1}, "hidden_units"),
    ],
)
def test_head_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        ClassifierHead(3, **kwargs)


def test_head_serialization_round_trip():
    head = ClassifierHead(5, dropout=0.3, hidden_units=32, pooling="max", name="head")
    config = keras.layers.serialize(head)
    restored = keras.layers.deserialize(config)
    assert isinstance(restored, ClassifierHead)
    assert restored.get_config() == head.get_config()
    keys = ("num_classes", "dropout", "hidden_units", "pooling")
    assert {k: restored.get_config()[k] for k in keys} == {
        "num_classes": 5,
        "dropout": 0.3,
        "hidden_units": 32,
        "pooling": "max",
    }


def test_layers_save_and_load_in_safe_mode(tmp_path):
    inputs = keras.Input((8, 8, 3))
    x = BackbonePreprocessing("tf")(inputs)
    x = keras.layers.Conv2D(4, 3)(x)
    outputs = ClassifierHead(3, hidden_units=8)(x)
    model = keras.Model(inputs, outputs)
    images = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    expected = model.predict(images, verbose=0)
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras")  # safe_mode=True
    np.testing.assert_array_equal(restored.predict(images, verbose=0), expected)


def test_exported_at_top_level():
    assert keras_transfer.BackbonePreprocessing is BackbonePreprocessing
    assert keras_transfer.ClassifierHead is ClassifierHead


def test_head_keeps_its_class_names_through_serialization():
    head = ClassifierHead(3, class_names=("daisy", "roses", "tulips"), name="head")
    assert head.class_names == ["daisy", "roses", "tulips"]
    config = keras.layers.serialize(head)
    assert config["config"]["class_names"] == ["daisy", "roses", "tulips"]
    restored = keras.layers.deserialize(config)
    assert restored.class_names == ["daisy", "roses", "tulips"]
    assert restored.get_config() == head.get_config()
    assert ClassifierHead(3).get_config()["class_names"] is None


@pytest.mark.parametrize(
    "class_names, fragment",
    [
        (["a", "b"], "2 names but num_classes=3"),
        (["a", "b", "a"], "repeated: 'a'"),
        (["a", "b", 3], "non-empty strings"),
        (["a", "", "c"], "non-empty strings"),
        ("abc", "list of strings"),
    ],
)
def test_head_rejects_bad_class_names(class_names, fragment):
    with pytest.raises(ConfigurationError, match="class_names") as e:
        ClassifierHead(3, class_names=class_names)
    assert fragment in str(e.value)


def test_head_config_from_before_class_names_still_loads():
    config = ClassifierHead(2, name="head").get_config()
    del config["class_names"]  # as models saved before heads carried names
    assert ClassifierHead.from_config(config).class_names is None


def _small_model(**head_kwargs):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3)(BackbonePreprocessing("tf")(inputs))
    return keras.Model(inputs, ClassifierHead(2, name="head", **head_kwargs)(x))


def test_class_names_travel_inside_a_saved_model(tmp_path):
    model = _small_model(class_names=["cats", "dogs"])
    assert layers_lib.class_names_of(model) == ["cats", "dogs"]
    assert layers_lib.find_classifier_head(model) is model.get_layer("head")
    model.save(tmp_path / "m.keras")
    restored = keras.saving.load_model(tmp_path / "m.keras")
    assert layers_lib.class_names_of(restored) == ["cats", "dogs"]


def test_a_model_saved_without_class_names_loads_without_them(tmp_path):
    """A `.keras` file written before heads had `class_names` (the key absent)."""
    path = tmp_path / "old.keras"
    _small_model().save(path)
    _drop_head_class_names(path)
    restored = keras.saving.load_model(path)
    assert layers_lib.class_names_of(restored) is None
    assert restored.get_layer("head").num_classes == 2


def test_build_classifier_stores_class_names_in_its_head():
    model = keras_transfer.build_classifier(
        "mobilenet_v2_035",
        2,
        input_shape=(32, 32, 3),
        weights=None,
        class_names=["cats", "dogs"],
    )
    assert model.get_layer("head").class_names == ["cats", "dogs"]
    assert layers_lib.class_names_of(model) == ["cats", "dogs"]


def test_class_names_of_a_model_without_a_head_is_none():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    assert layers_lib.class_names_of(model) is None
    assert layers_lib.find_classifier_head(model) is None


def test_build_classifier_checks_its_class_names():
    with pytest.raises(ConfigurationError, match="class_names has 1 names"):
        keras_transfer.build_classifier(
            "mobilenet_v2_035",
            2,
            input_shape=(32, 32, 3),
            weights=None,
            class_names=["cats"],
        )


def _drop_head_class_names(path):
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    for layer in config["config"]["layers"]:
        if layer["class_name"] == "ClassifierHead":
            assert layer["config"].pop("class_names") is None
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
