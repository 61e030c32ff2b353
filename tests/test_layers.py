"""The layers around a backbone: Keras' own layers, checked against keras.applications."""

import keras
import numpy as np
import pytest
from keras.applications import imagenet_utils

import keras_transfer
from keras_transfer import layers as layers_lib
from keras_transfer.errors import ConfigurationError


@pytest.fixture
def pixels():
    return np.random.default_rng(0).uniform(0, 255, (2, 5, 4, 3)).astype("float32")


@pytest.fixture
def mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("mode", ["tf", "caffe", "torch"])
def test_preprocessing_matches_keras_preprocess_input(mode, pixels):
    expected = imagenet_utils.preprocess_input(pixels.copy(), mode=mode)
    actual = _numpy(layers_lib.backbone_preprocessing(mode)(pixels))
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-4)


def test_preprocessing_values():
    rgb = np.array([[[[0.0, 127.5, 255.0]]]], dtype="float32")
    np.testing.assert_allclose(
        _numpy(layers_lib.backbone_preprocessing("tf")(rgb)), [[[[-1.0, 0.0, 1.0]]]]
    )
    caffe = _numpy(layers_lib.backbone_preprocessing("caffe")(rgb))
    # BGR order, ImageNet BGR mean subtracted.
    np.testing.assert_allclose(caffe, [[[[255 - 103.939, 127.5 - 116.779, 0 - 123.68]]]], rtol=1e-6)
    np.testing.assert_array_equal(_numpy(layers_lib.backbone_preprocessing("none")(rgb)), rgb)


def test_preprocessing_is_made_of_keras_layers_and_casts_integer_images(pixels):
    layer = layers_lib.backbone_preprocessing("caffe")
    assert isinstance(layer, keras.Sequential)
    assert all(type(inner).__module__.startswith("keras.") for inner in layer.layers)
    as_uint8 = pixels.astype("uint8")
    out = layers_lib.backbone_preprocessing("tf")(as_uint8)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    np.testing.assert_allclose(_numpy(out), as_uint8.astype("float32") / 127.5 - 1, atol=1e-6)


def test_preprocessing_under_mixed_precision_scales_the_float32_pixels(mixed_precision):
    # Resized images are not integers: rounded to float16 before the
    # scaling, 100.1 would give -0.2147 instead of -0.2148.
    pixels = np.full((1, 1, 1, 3), 100.1, dtype="float32")
    expected = (np.float32(100.1) * np.float32(1 / 127.5) - 1).astype("float16")
    assert expected != (np.float16(100.1).astype("float32") / 127.5 - 1).astype("float16")
    out = layers_lib.backbone_preprocessing("tf")(pixels)
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    np.testing.assert_array_equal(_numpy(out)[0, 0, 0], [expected] * 3)


def test_preprocessing_rejects_unknown_mode():
    with pytest.raises(ConfigurationError, match="'imagenet'"):
        layers_lib.backbone_preprocessing("imagenet")


def test_head_outputs_probabilities_and_trains_only_its_dense_layers():
    head = layers_lib.classifier_head(4, dropout=0.0)
    probs = _numpy(head(np.random.default_rng(0).normal(size=(3, 8))))
    assert probs.shape == (3, 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    assert len(head.trainable_weights) == 2  # kernel and bias of the softmax layer


def test_head_hidden_layer():
    features = np.random.default_rng(0).normal(size=(2, 8)).astype("float32")
    head = layers_lib.classifier_head(3, dropout=0.0, hidden_units=16)
    head(features)
    assert head.count_params() == (8 * 16 + 16) + (16 * 3 + 3)
    expected = head.get_layer("predictions")(head.get_layer("hidden")(features))
    np.testing.assert_allclose(_numpy(head(features)), _numpy(expected), rtol=1e-6)


@pytest.mark.parametrize("pooling, reduce", [("avg", np.mean), ("max", np.max)])
def test_global_pooling(pooling, reduce):
    maps = np.random.default_rng(0).normal(size=(2, 3, 3, 8)).astype("float32")
    pooled = _numpy(layers_lib.global_pooling(pooling)(maps))
    np.testing.assert_allclose(pooled, reduce(maps, axis=(1, 2)), rtol=1e-5)


def test_head_dropout_only_in_training():
    head = layers_lib.classifier_head(2, dropout=0.5)
    features = np.ones((64, 32), dtype="float32")
    inference = _numpy(head(features, training=False))
    training = _numpy(head(features, training=True))
    np.testing.assert_allclose(inference, np.repeat(inference[:1], 64, axis=0), rtol=1e-6)
    assert not np.allclose(training, inference)


def test_head_outputs_float32_under_mixed_precision(mixed_precision):
    head = layers_lib.classifier_head(3, hidden_units=4)
    out = head(np.ones((2, 8), dtype="float16"))
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert head.get_layer("hidden").compute_dtype == "float16"


@pytest.mark.parametrize("num_classes", [1, 0, 2.5, True, "3"])
def test_head_rejects_bad_num_classes(num_classes):
    with pytest.raises(ConfigurationError, match="num_classes"):
        layers_lib.classifier_head(num_classes)


def test_head_accepts_numpy_integers():
    assert layers_lib.classifier_head(np.int64(3)).get_layer("predictions").units == 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"hidden_units": -1}, "hidden_units"),
    ],
)
def test_head_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        layers_lib.classifier_head(3, **kwargs)


def test_pooling_rejects_unknown_kind():
    with pytest.raises(ConfigurationError, match="pooling: 'sum'"):
        layers_lib.global_pooling("sum")


def test_layers_save_and_load_in_safe_mode_without_custom_objects(tmp_path):
    inputs = keras.Input((8, 8, 3))
    x = layers_lib.backbone_preprocessing("caffe", (8, 8, 3))(inputs)
    x = layers_lib.global_pooling()(keras.layers.Conv2D(4, 3)(x))
    model = keras.Model(inputs, layers_lib.classifier_head(3, hidden_units=8)(x))
    images = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    expected = model.predict(images, verbose=0)
    model.save(tmp_path / "m.keras")
    assert b"keras_transfer" not in (tmp_path / "m.keras").read_bytes()
    restored = keras.models.load_model(tmp_path / "m.keras")  # safe_mode=True
    np.testing.assert_array_equal(restored.predict(images, verbose=0), expected)


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
def test_bad_class_names_are_refused(class_names, fragment):
    with pytest.raises(ConfigurationError, match="class_names") as e:
        keras_transfer.build_classifier(
            "mobilenet_v2_035", 3, input_shape=(32, 32, 3), weights=None, class_names=class_names
        )
    assert fragment in str(e.value)


def test_build_classifier_keeps_class_names_and_resize_on_the_model():
    model = keras_transfer.build_classifier(
        "mobilenet_v2_035",
        2,
        input_shape=(32, 32, 3),
        weights=None,
        class_names=["cats", "dogs"],
        resize="pad",
    )
    assert model.class_names == ["cats", "dogs"]
    assert layers_lib.class_names_of(model) == ["cats", "dogs"]
    assert layers_lib.resize_of(model) == "pad"
    # A model of the user's around it still answers.
    outer = keras.Sequential([model])
    assert layers_lib.class_names_of(outer) == ["cats", "dogs"]


def test_a_model_without_metadata_has_no_class_names_and_stretches():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    assert layers_lib.class_names_of(model) is None
    assert layers_lib.resize_of(model) == "stretch"
