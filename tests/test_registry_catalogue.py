"""The keras.applications catalogue: every backbone builds, its blocks hold each
of its weights once, its preprocessing is Keras', and unfreezing trains its blocks.

Two tiers, because building all 30 new backbones takes minutes on two cores
(EfficientNetV2-L alone has 1,028 layers):

- always: one small member of most families (`BUILT`: MobileNetV3,
  EfficientNetV2, ConvNeXt, ResNetV2, Xception, InceptionV3) is built for
  real, at its minimum input size with `weights=None`, and checked:
  parameter count, model name, blocks holding every weight exactly once,
  what `UnfreezePlan.trainable_layers(d)` (the oracle of what trains) and
  `apply_depth(d)` train at several depths, and, for backbones whose
  auto-named layers join a block by position, that each block is exactly
  the slice of the graph between its anchors. `ProgressiveUnfreeze` runs
  inside `fit` for two of them: only weights of the blocks it names move,
  and exactly theirs train. Every spec's metadata and preprocessing
  (against `keras.applications.<module>.preprocess_input`) is checked
  without building, and the block lists of the larger members against
  Keras' own tables where Keras has them (EfficientNetV2's
  `DEFAULT_BLOCKS_ARGS`, ConvNeXt's `MODEL_CONFIGS`). DenseNet,
  InceptionResNetV2 and NASNetMobile (5-20 s to build each) and the larger
  members are built only in the slow tier.
- `KERAS_TRANSFER_SLOW_TESTS=1`: every backbone of the new catalogue is
  built and checked the same way (`test_every_backbone_builds`), about
  three minutes on two cores (183 s measured); run for this change, all 30
  passed.

`keras-transfer backbones --min-params/--max-params` is tested here too.
"""

import importlib
import math
import os
from collections import Counter

import keras
import numpy as np
import pytest

import keras_transfer
from keras_transfer import backbones
from keras_transfer import cli
from keras_transfer.backbones.blocks import own_weights
from keras_transfer.layers import backbone_preprocessing
from keras_transfer.unfreeze import UnfreezePlan
from keras_transfer.utils.internals import created_trainable_variables

SLOW = os.environ.get("KERAS_TRANSFER_SLOW_TESTS") == "1"

NEW = sorted(
    [f"mobilenet_v3_{s}{v}" for s in ("small", "large") for v in ("", "_075", "_minimalistic")]
    + [f"efficientnet_v2_{v}" for v in ("b0", "b1", "b2", "b3", "s", "m", "l")]
    + [f"convnext_{v}" for v in ("tiny", "small", "base", "large", "xlarge")]
    + ["resnet101", "resnet152", "resnet50_v2", "resnet101_v2", "resnet152_v2"]
    + ["densenet121", "densenet169", "densenet201"]
    + ["xception", "inception_v3", "inception_resnet_v2", "nasnet_mobile"]
)
# Built in every run: the smallest of each family (a few seconds each).
BUILT = [
    "mobilenet_v3_small",
    "efficientnet_v2_b0",
    "convnext_tiny",
    "resnet50_v2",
    "xception",
    "inception_v3",
]
LICENSES = {"Apache-2.0", "MIT", "BSD-3-Clause"}


def _is_bn(layer):
    return isinstance(layer, keras.layers.BatchNormalization)


def _check_built(spec, model):
    assert model.count_params() == spec.params
    assert backbones.find_spec_for_model(model) is spec
    groups = spec.block_layers(model)
    assert [name for name, _ in groups] == list(spec.block_names)
    # Every block holds weights, and every weight is in exactly one block.
    held = Counter(id(w) for _, layers in groups for layer in layers for w in own_weights(layer))
    assert all(any(own_weights(layer) for layer in layers) for _, layers in groups)
    assert held == Counter(id(w) for w in model.weights)
    for depth in sorted({1, 2, len(groups) // 2, len(groups)}):
        expected = [
            layer
            for _, layers in groups[len(groups) - depth :]
            for layer in layers
            if created_trainable_variables(layer) and not _is_bn(layer)
        ]
        plan = UnfreezePlan(model, schedule={0: depth})
        assert {id(l) for l in plan.trainable_layers(depth)} == {id(l) for l in expected}
        plan.apply_depth(depth)
        trained = {id(v) for l in expected for v in created_trainable_variables(l)}
        assert {id(v) for v in model.trainable_variables} == trained
    if spec.name in SEGMENTS:
        _check_segments(model, groups, SEGMENTS[spec.name](groups))


# For backbones whose auto-named layers join a block by their place in the
# layer order: the layer that closes each block, and whether it belongs to it.
SEGMENTS = {
    # A block ends where the next one's first layer starts.
    "xception": lambda groups: (
        [("block2_sepconv1", False)]
        + [(f"block{i}_sepconv1_act", False) for i in range(3, 14)]
        + [("block14_sepconv1", False), (None, True)]
    ),
    "inception_v3": lambda groups: [(name, True) for name, _ in groups],
    "inception_resnet_v2": lambda groups: [_closing_of_irv2_block(name) for name, _ in groups],
}


def _closing_of_irv2_block(name):
    if name == "conv_7b":
        return None, True
    if name.startswith("mixed"):
        return name, True
    # The last residual block has no activation.
    return (f"{name}_conv" if name == "block8_10" else f"{name}_ac"), True


def _ancestors(model, name, include_self):
    """Ids of the weighted layers that compute `name`'s output (None: the model's)."""
    if name is None:
        layers = model.layers
    else:
        target = model.get_layer(name)
        layers = keras.Model(model.inputs, target.output).layers
        if not include_self:
            layers = [l for l in layers if l is not target]
    return {id(l) for l in layers if l.weights}


def _check_segments(model, groups, closings):
    previous = set()
    for (name, layers), (closing, include_self) in zip(groups, closings):
        upto = _ancestors(model, closing, include_self)
        assert {id(l) for l in layers if l.weights} == upto - previous, name
        previous = upto


def _build_at_minimum_size_and_check(name):
    spec = keras_transfer.get_backbone(name)
    shape = (spec.min_input_size, spec.min_input_size, 3)
    try:
        _check_built(spec, spec.build(input_shape=shape, weights=None))
    finally:
        keras.backend.clear_session()


@pytest.mark.parametrize("name", BUILT)
def test_smallest_of_each_family_builds_and_its_blocks_hold_its_weights_once(name):
    _build_at_minimum_size_and_check(name)


@pytest.mark.skipif(not SLOW, reason="set KERAS_TRANSFER_SLOW_TESTS=1 (minutes)")
@pytest.mark.parametrize("name", NEW)
def test_every_backbone_builds(name):
    _build_at_minimum_size_and_check(name)


def test_the_catalogue_is_registered():
    assert set(NEW) <= set(keras_transfer.list_backbones())
    assert keras_transfer.list_backbones("convnext*") == [
        f"convnext_{v}" for v in ("base", "large", "small", "tiny", "xlarge")
    ]


@pytest.mark.parametrize("name", NEW)
def test_metadata_and_preprocessing_follow_keras(name):
    spec = keras_transfer.get_backbone(name)
    assert spec.license in LICENSES and spec.params > 0
    assert spec.weights_file.endswith(".h5") and spec.weights_url().startswith(
        "https://storage.googleapis.com/"
    )
    assert 32 <= spec.min_input_size <= spec.default_input_size
    module = importlib.import_module(spec.resolve_constructor().__module__)
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 5, 5, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(module.preprocess_input(pixels.copy()))
    got = keras.ops.convert_to_numpy(backbone_preprocessing(spec.preprocessing)(pixels))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_weights_files_are_named_as_keras_caches_them():
    names = {
        "efficientnet_v2_s": "efficientnetv2-s_notop.h5",
        "convnext_xlarge": "convnext_xlarge_notop.h5",
        "mobilenet_v3_large_minimalistic": "weights_mobilenet_v3_large_minimalistic_224_1.0_float_no_top_v2.h5",
        "mobilenet_v3_small_075": "weights_mobilenet_v3_small_224_0.75_float_no_top_v2.h5",
        "resnet152_v2": "resnet152v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "densenet201": "densenet201_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "inception_resnet_v2": "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "nasnet_mobile": "nasnet_mobile_no_top.h5",
    }
    for name, filename in names.items():
        assert keras_transfer.get_backbone(name).weights_filename((96, 96, 3)) == filename
    nasnet = keras_transfer.get_backbone("nasnet_mobile")
    # Keras downloads NASNet under another name than it caches it.
    assert nasnet.weights_url().endswith("/nasnet/NASNet-mobile-no-top.h5")


def test_block_lists_follow_keras_tables():
    efficientnet_v2 = importlib.import_module("keras.src.applications.efficientnet_v2")
    depth = {"b0": 1.0, "b1": 1.1, "b2": 1.2, "b3": 1.4, "s": 1.0, "m": 1.0, "l": 1.0}
    for variant, coefficient in depth.items():
        stages = efficientnet_v2.DEFAULT_BLOCKS_ARGS[f"efficientnetv2-{variant}"]
        repeats = [math.ceil(coefficient * s["num_repeat"]) for s in stages]
        expected = (
            ["stem"]
            + [f"block{i}{chr(97 + j)}" for i, r in enumerate(repeats, 1) for j in range(r)]
            + ["top"]
        )
        assert list(keras_transfer.get_backbone(f"efficientnet_v2_{variant}").block_names) == (
            expected
        )
    convnext = importlib.import_module("keras.src.applications.convnext")
    for variant, config in convnext.MODEL_CONFIGS.items():
        names = keras_transfer.get_backbone(f"convnext_{variant}").block_names
        assert len(names) == 1 + sum(config["depths"])
        assert names[-1] == f"stage_3_block_{config['depths'][-1] - 1}"
    assert len(keras_transfer.get_backbone("resnet152_v2").blocks) == 1 + 3 + 8 + 36 + 3
    assert len(keras_transfer.get_backbone("densenet201").blocks) == 1 + 6 + 12 + 48 + 32 + 3


def test_widths_keras_names_alike_are_told_apart_by_size():
    model = keras.applications.MobileNetV3Small(
        alpha=0.75, include_top=False, weights=None, input_shape=(32, 32, 3)
    )
    try:
        assert model.name == "MobileNetV3Small"
        assert backbones.find_spec_for_model(model).name == "mobilenet_v3_small_075"
    finally:
        keras.backend.clear_session()


@pytest.mark.parametrize("name, size", [("mobilenet_v3_small", 32), ("convnext_tiny", 32)])
def test_progressive_unfreeze_trains_exactly_the_named_blocks(name, size):
    model = keras_transfer.build_classifier(
        name, num_classes=2, input_shape=(size, size, 3), weights=None, dropout=0.0
    )
    backbone, spec = backbones.find_backbone(model)
    groups = spec.block_layers(backbone)
    before = {id(v): keras.ops.convert_to_numpy(v).copy() for v in backbone.weights}
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    x = np.random.default_rng(1).uniform(0, 255, (4, size, size, 3)).astype("float32")
    y = np.array([0, 1] * 2)
    unfreeze = keras_transfer.ProgressiveUnfreeze(schedule={1: 2}, lr_ratio=1.0, verbose=0)
    model.fit(x, y, batch_size=4, epochs=2, callbacks=[unfreeze], verbose=0)
    expected = {
        id(v)
        for _, layers in groups[-2:]
        for layer in layers
        if not _is_bn(layer)
        for v in created_trainable_variables(layer)
    }
    moved = {
        id(v)
        for v in backbone.weights
        if not np.array_equal(keras.ops.convert_to_numpy(v), before[id(v)])
    }
    # Nothing outside the two top blocks moved; both moved (a weight with an
    # exactly zero gradient, e.g. behind a dead ReLU of random weights, may
    # not), and at the end exactly their weights (BatchNorm aside) train.
    assert moved <= expected
    for _, layers in groups[-2:]:
        assert any(id(v) in moved for l in layers for v in created_trainable_variables(l))
    assert {id(v) for v in backbone.trainable_variables} == expected
    keras.backend.clear_session()


def _table(capsys, *argv):
    status = cli.main(["backbones", *argv])
    out, err = capsys.readouterr()
    rows = {line.split()[0]: line for line in out.splitlines()[1:] if line.strip()}
    rows.pop("ImageNet", None)  # the footer line
    return status, rows, err


def test_backbones_command_filters_by_size(capsys):
    status, rows, _ = _table(capsys, "--max-params", "5M")
    assert status == 0
    assert {"mobilenet_v3_small", "nasnet_mobile", "efficientnet_b0"} <= set(rows)
    assert all(keras_transfer.get_backbone(n).params <= 5_000_000 for n in rows)
    assert "resnet50" not in rows
    _, rows, _ = _table(capsys, "--min-params", "100M")
    assert set(rows) == {"convnext_large", "convnext_xlarge", "efficientnet_v2_l"}
    _, rows, _ = _table(capsys, "resnet*", "--min-params", "40m", "--max-params", "0.05G")
    assert set(rows) == {"resnet101", "resnet101_v2"}
    assert "in the model" in _table(capsys, "convnext_tiny")[1]["convnext_tiny"]


def test_backbones_command_rejects_bad_sizes_in_one_line(capsys):
    for argv, fragment in (
        (("--max-params", "5Q"), "expected a parameter count such as 5M"),
        (("--min-params", "25M", "--max-params", "5M"), "more than --max-params"),
        (("vgg*", "--max-params", "5M"), "No backbone matches 'vgg*' with at most 5.00M"),
    ):
        status, _, err = _table(capsys, *argv)
        assert status == 2 and len(err.strip().splitlines()) == 1 and fragment in err
