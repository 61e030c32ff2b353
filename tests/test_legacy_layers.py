"""The layer classes of earlier releases compute what today's layers compute."""

import keras
import numpy as np
import pytest

import keras_transfer
from keras_transfer import layers as layers_lib
from keras_transfer.legacy_layers import BackbonePreprocessing
from keras_transfer.legacy_layers import ClassifierHead
from keras_transfer.legacy_layers import upgrade_legacy_layers


@pytest.fixture
def pixels():
    return np.random.default_rng(0).uniform(0, 255, (2, 5, 4, 3)).astype("float32")


@pytest.mark.parametrize("mode", ["tf", "caffe", "torch", "none"])
def test_old_preprocessing_gives_the_bits_of_the_new(mode, pixels):
    old = keras.ops.convert_to_numpy(BackbonePreprocessing(mode)(pixels))
    new = keras.ops.convert_to_numpy(layers_lib.backbone_preprocessing(mode)(pixels))
    np.testing.assert_array_equal(old, new)


def test_old_head_runs_the_new_layers_and_keeps_its_config():
    head = ClassifierHead(
        3, hidden_units=4, pooling="max", class_names=["a", "b", "c"], name="head"
    )
    maps = np.random.default_rng(1).normal(size=(2, 3, 3, 5)).astype("float32")
    out = keras.ops.convert_to_numpy(head(maps))
    plain = keras.Sequential(head.head_layers)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(plain(maps.max(axis=(1, 2)))), out)
    restored = keras.layers.deserialize(keras.layers.serialize(head))
    assert restored.get_config() == head.get_config()
    assert restored.class_names == ["a", "b", "c"]
    assert keras.layers.serialize(head)["registered_name"] == "keras_transfer>ClassifierHead"


def test_upgrade_shares_the_weights_and_keeps_the_predictions(pixels):
    inputs = keras.Input((5, 4, 3))
    x = BackbonePreprocessing("caffe")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same")(x)
    head = ClassifierHead(2, class_names=["x", "y"], resize="crop", name="head")
    old = keras.Model(inputs, head(x))
    new_inputs, new_outputs, metadata = upgrade_legacy_layers(old)
    new = keras_transfer.TransferClassifier(new_inputs, new_outputs, **metadata)
    np.testing.assert_allclose(
        new.predict(pixels, verbose=0), old.predict(pixels, verbose=0), atol=1e-6
    )
    assert new.get_layer("head").get_layer("predictions") is head.classifier
    assert (new.class_names, new.resize) == (["x", "y"], "crop")
    assert not any(type(layer).__module__.startswith("keras_transfer") for layer in new.layers)


def test_exported_at_top_level():
    assert keras_transfer.BackbonePreprocessing is BackbonePreprocessing
    assert keras_transfer.ClassifierHead is ClassifierHead
