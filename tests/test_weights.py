import dataclasses
import pathlib
import time
import warnings

import keras
import numpy as np
import pytest
from keras.src.backend import config as keras_config
from keras.src.utils import file_utils

import keras_transfer
from keras_transfer.backbones import weights
from keras_transfer.errors import WeightsError

MNV2_050 = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5"
MNV2_035 = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
MNV1_025 = "mobilenet_2_5_224_tf_no_top.h5"
# RFC 5737 TEST-NET address: never routable, so "offline" whatever the machine.
UNREACHABLE = "https://192.0.2.1/keras-applications/"


def reference_weights(weights_dir, input_shape=(224, 224, 3)):
    return keras.applications.MobileNetV2(
        alpha=0.5,
        include_top=False,
        weights=str(weights_dir / MNV2_050),
        input_shape=input_shape,
    ).get_weights()


def assert_same_weights(model, expected):
    actual = model.get_weights()
    assert len(actual) == len(expected)
    for a, b in zip(actual, expected):
        np.testing.assert_array_equal(a, b)


def test_imagenet_loads_offline_from_the_keras_cache(seeded_keras_home, weights_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the exact file is cached: no fallback
        model = keras_transfer.build_classifier(
            "mobilenet_v2_050", 5, input_shape=(224, 224, 3), weights="imagenet"
        )
    backbone, _ = keras_transfer.models.find_backbone(model)
    assert_same_weights(backbone, reference_weights(weights_dir))
    # Keras' own cache location is left as it was.
    assert keras_config.keras_home() != str(seeded_keras_home)


def test_imagenet_at_another_size_falls_back_to_the_cached_default(seeded_keras_home, weights_dir):
    spec = keras_transfer.get_backbone("mobilenet_v2_050")
    offline = dataclasses.replace(spec, weights_source=UNREACHABLE)
    with pytest.warns(UserWarning, match="_0.5_96_no_top.h5"):
        backbone = offline.build(input_shape=(96, 96, 3), weights="imagenet")
    assert_same_weights(backbone, reference_weights(weights_dir, (96, 96, 3)))


def test_imagenet_weights_path_reads_keras_home_at_call_time(keras_home, monkeypatch):
    spec = keras_transfer.get_backbone("mobilenet_v2_050")
    path = weights.imagenet_weights_path(spec, (128, 128, 3))
    assert path == keras_home / "models" / (
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_128_no_top.h5"
    )
    other = keras_home.parent / "elsewhere"
    other.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(other))
    assert weights.imagenet_weights_path(spec).parent == other / "models"


@pytest.mark.filterwarnings("ignore:`input_shape` is undefined or non-square")
@pytest.mark.parametrize(
    "name, input_shape",
    [
        ("mobilenet_v2_050", (96, 96, 3)),
        ("mobilenet_v2_050", (100, 100, 3)),
        ("mobilenet_v2_130", (160, 192, 3)),
        ("mobilenet_v1_025", (128, 128, 3)),
        ("mobilenet_v1_100", (96, 96, 3)),
        ("resnet50", (64, 64, 3)),
        ("efficientnet_b2", (64, 64, 3)),
    ],
)
def test_file_names_match_what_keras_asks_for(name, input_shape, monkeypatch):
    asked = []

    def fake_get_file(fname, origin, **kwargs):
        asked.append((fname, origin))
        raise RuntimeError("stop before loading")

    monkeypatch.setattr(file_utils, "get_file", fake_get_file)
    spec = keras_transfer.get_backbone(name)
    with pytest.raises(RuntimeError, match="stop before loading"):
        spec.resolve_constructor()(
            include_top=False,
            weights="imagenet",
            input_shape=input_shape,
            **spec.constructor_kwargs,
        )
    expected = spec.weights_filename(input_shape)
    assert asked == [(expected, spec.weights_source + expected)]


def test_weights_path(weights_dir):
    spec = keras_transfer.get_backbone("mobilenet_v2_050")
    backbone = spec.build(input_shape=(96, 96, 3), weights=weights_dir / MNV2_050)
    assert_same_weights(backbone, reference_weights(weights_dir, (96, 96, 3)))
    v1 = keras_transfer.get_backbone("mobilenet_v1_025").build(
        input_shape=(128, 128, 3), weights=str(weights_dir / MNV1_025)
    )
    expected = keras.applications.MobileNet(
        alpha=0.25,
        include_top=False,
        weights=str(weights_dir / MNV1_025),
        input_shape=(128, 128, 3),
    ).get_weights()
    assert_same_weights(v1, expected)


def test_weights_file_of_another_width_names_file_and_backbone(weights_dir):
    path = weights_dir / MNV2_035
    with pytest.raises(WeightsError) as info:
        keras_transfer.build_classifier(
            "mobilenet_v2_050", 5, input_shape=(96, 96, 3), weights=str(path)
        )
    message = str(info.value)
    assert str(path) in message and "'mobilenet_v2_050'" in message
    assert "Shape mismatch" in message


def test_weights_file_of_another_architecture(weights_dir):
    with pytest.raises(WeightsError, match="mobilenet_v2_035"):
        keras_transfer.get_backbone("mobilenet_v2_035").build(
            input_shape=(96, 96, 3), weights=weights_dir / MNV1_025
        )


def test_missing_weights_file(tmp_path):
    path = tmp_path / "nowhere.h5"
    with pytest.raises(WeightsError) as info:
        keras_transfer.get_backbone("mobilenet_v2_050").build(weights=str(path))
    assert str(path) in str(info.value)
    assert isinstance(info.value, OSError)


def test_weights_of_the_wrong_type():
    with pytest.raises(ValueError, match="weights=3"):
        keras_transfer.get_backbone("mobilenet_v2_035").build(weights=3)


def test_imagenet_offline_and_uncached_fails_fast(keras_home):
    # The real spec, with its download host swapped for an unroutable one so
    # that the test behaves the same on machines with internet.
    spec = keras_transfer.get_backbone("mobilenet_v2_050")
    offline = dataclasses.replace(spec, weights_source=UNREACHABLE)
    start = time.monotonic()
    with pytest.raises(WeightsError) as info:
        keras_transfer.build_classifier(offline, 5, input_shape=(96, 96, 3))
    elapsed = time.monotonic() - start
    assert elapsed < 10
    message = str(info.value)
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_96_no_top.h5" in message
    assert str(keras_home / "models") in message and "$KERAS_HOME/models" in message
    assert "weights=PATH" in message and "weights=None" in message
    # The default-size file would serve too: the message says so.
    assert MNV2_050 in message


def test_imagenet_offline_with_the_real_host(keras_home):
    # On these offline machines the real host is unreachable too; where it is
    # reachable the weights download instead, which is also a pass.
    spec = keras_transfer.get_backbone("mobilenet_v1_025")
    start = time.monotonic()
    try:
        spec.build(input_shape=(128, 128, 3), weights="imagenet")
    except WeightsError as e:
        assert "mobilenet_2_5_128_tf_no_top.h5" in str(e)
    assert time.monotonic() - start < 10


def test_reachability_check_is_bounded():
    start = time.monotonic()
    assert not weights.reachable(UNREACHABLE + "x.h5", timeout=1.0)
    assert time.monotonic() - start < 2.5
    assert not weights.reachable("not a url")


def test_backbone_without_imagenet_weights(keras_home):
    spec = dataclasses.replace(
        keras_transfer.get_backbone("mobilenet_v2_035"), name="no_weights", weights_file=""
    )
    assert weights.imagenet_weights_path(spec) is None
    with pytest.raises(WeightsError, match="no ImageNet weights"):
        spec.build(weights="imagenet")


def test_offline_message_spells_the_argument_as_the_caller_does(keras_home):
    spec = dataclasses.replace(
        keras_transfer.get_backbone("mobilenet_v2_050"), weights_source=UNREACHABLE
    )
    with weights.argument_spelling(weights.CLI_SPELLING):
        with pytest.raises(WeightsError) as info:
            weights.load_backbone(spec, (96, 96, 3), weights="imagenet")
    message = str(info.value)
    assert "--weights PATH" in message and "--weights none" in message
    assert "weights=PATH" not in message and "weights=None" not in message
    # Outside the block, the Python spelling again.
    with pytest.raises(WeightsError, match="weights=PATH"):
        weights.load_backbone(spec, (96, 96, 3), weights="imagenet")


def test_a_cached_link_to_nothing_is_named_with_the_fix(keras_home, weights_dir):
    link = keras_home / "models" / MNV2_050
    link.symlink_to(pathlib.Path("..", "..", "shared", "assets", "weights", MNV2_050))
    with pytest.raises(WeightsError) as info:
        keras_transfer.get_backbone("mobilenet_v2_050").build(weights="imagenet")
    message = str(info.value)
    assert str(link) in message and "symbolic link" in message and "does not exist" in message
    assert "relative link" in message and "ln -sf" in message
    # The fix the message gives works: an absolute link loads.
    link.unlink()
    link.symlink_to((weights_dir / MNV2_050).resolve())
    keras_transfer.get_backbone("mobilenet_v2_050").build(weights="imagenet")


@pytest.mark.parametrize("content", ["lfs_pointer", "truncated"])
def test_a_cached_file_that_is_not_hdf5_is_named_with_its_size(keras_home, weights_dir, content):
    cached = keras_home / "models" / MNV2_050
    if content == "lfs_pointer":
        cached.write_text("version https://git-lfs.github.com/spec/v1\nsize 5000000\n")
    else:
        good = (weights_dir / MNV2_050).read_bytes()
        cached.write_bytes(good[: len(good) // 3])
    with pytest.raises(WeightsError) as info:
        keras_transfer.get_backbone("mobilenet_v2_050").build(weights="imagenet")
    message = str(info.value)
    assert str(cached) in message and f"({cached.stat().st_size} bytes)" in message
    assert "not a readable HDF5 weights file" in message and "weights=PATH" in message


def test_a_weights_path_that_is_a_link_to_nothing(tmp_path):
    link = tmp_path / "weights.h5"
    link.symlink_to(tmp_path / "gone.h5")
    with pytest.raises(WeightsError, match="symbolic link to .*gone.h5.*does not exist"):
        keras_transfer.get_backbone("mobilenet_v2_050").build(weights=str(link))
