import dataclasses
import re
from collections import Counter

import keras
import pytest

import keras_transfer
from keras_transfer import backbones
from keras_transfer.backbones import BackboneSpec
from keras_transfer.backbones import Block
from keras_transfer.backbones.blocks import own_weights
from keras_transfer.errors import ConfigurationError
from keras_transfer.unfreeze import UnfreezePlan

# The first catalogue (catalogue.py and resnet50); tests/test_registry_catalogue.py
# covers the families added since.
BUILT_INS = [
    "efficientnet_b0",
    "efficientnet_b1",
    "efficientnet_b2",
    "efficientnet_b3",
    "efficientnet_b4",
    "efficientnet_b5",
    "efficientnet_b6",
    "efficientnet_b7",
    "mobilenet_v1_025",
    "mobilenet_v1_050",
    "mobilenet_v1_100",
    "mobilenet_v2",
    "mobilenet_v2_035",
    "mobilenet_v2_050",
    "mobilenet_v2_075",
    "mobilenet_v2_130",
    "mobilenet_v2_140",
    "resnet50",
]


def tiny_backbone(include_top=False, weights=None, input_shape=None, width=4):
    """A two-stage conv net with Keras-application-like names."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(width, 3, strides=2, name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.Conv2D(2 * width, 3, name="stage1_conv")(x)
    x = keras.layers.ReLU(name="stage1_relu")(x)
    model = keras.Model(inputs, x, name=f"tinynet_{width}")
    if weights is not None:
        model.load_weights(weights)
    return model


def tiny_spec(name="tinynet_test", **overrides):
    fields = dict(
        name=name,
        family="tinynet",
        constructor=tiny_backbone,
        constructor_kwargs={"width": 4},
        default_input_size=32,
        min_input_size=8,
        preprocessing="tf",
        blocks=(("stem", r"stem_"), ("stage1", r"stage1_")),
        params=4 * 27 + 4 + 4 * 4 + 8 * 4 * 9 + 8,
        model_name_pattern=r"tinynet_\d+",
    )
    fields.update(overrides)
    return BackboneSpec(**fields)


@pytest.fixture
def registered_tiny():
    spec = backbones.register_backbone(tiny_spec())
    yield spec
    backbones.unregister_backbone(spec.name)


def test_registry_lists_the_built_ins():
    assert set(BUILT_INS) <= set(keras_transfer.list_backbones())
    assert keras_transfer.list_backbones("efficientnet_b*") == BUILT_INS[:8]
    assert keras_transfer.list_backbones("mobilenet_v2*") == BUILT_INS[11:17]
    assert keras_transfer.list_backbones("vgg*") == []


@pytest.mark.parametrize("name", BUILT_INS)
def test_built_in_builds_and_its_blocks_cover_its_weighted_layers(name):
    spec = keras_transfer.get_backbone(name)
    model = spec.build(input_shape=(32, 32, 3), weights=None)
    try:
        assert model.count_params() == spec.params
        assert re.fullmatch(spec.model_name_pattern, model.name)

        groups = spec.block_layers(model)
        assert [block for block, _ in groups] == list(spec.block_names)
        assert all(layers for _, layers in groups)
        weighted = [layer for layer in model.layers if layer.weights]
        in_blocks = [layer for _, layers in groups for layer in layers if layer.weights]
        # Every weighted layer exactly once, and blocks in model order.
        assert in_blocks == weighted

        assert backbones.find_spec_for_model(model) is spec
    finally:
        keras.backend.clear_session()


def test_block_names_follow_keras_applications():
    mnv2 = keras_transfer.get_backbone("mobilenet_v2_050").block_names
    assert mnv2 == ("stem",) + tuple(f"block_{i}" for i in range(1, 17)) + ("Conv_1",)
    resnet = keras_transfer.get_backbone("resnet50").block_names
    assert resnet[0] == "conv1" and resnet[-1] == "conv5_block3" and len(resnet) == 17
    b0 = keras_transfer.get_backbone("efficientnet_b0").block_names
    assert len(b0) == 2 + 16 and b0[1] == "block1a" and b0[-2] == "block7a"
    b7 = keras_transfer.get_backbone("efficientnet_b7").block_names
    assert len(b7) == 2 + 55 and "block6i" in b7
    v1 = keras_transfer.get_backbone("mobilenet_v1_025").block_names
    assert v1 == ("conv1",) + tuple(f"block_{i}" for i in range(1, 14))


def test_specs_describe_preprocessing_and_weights():
    assert keras_transfer.get_backbone("mobilenet_v2_035").preprocessing == "tf"
    assert keras_transfer.get_backbone("mobilenet_v1_025").preprocessing == "tf"
    assert keras_transfer.get_backbone("resnet50").preprocessing == "caffe"
    assert keras_transfer.get_backbone("efficientnet_b3").preprocessing == "none"
    spec = keras_transfer.get_backbone("efficientnet_b3")
    assert spec.default_input_size == 300
    assert spec.weights_filename() == "efficientnetb3_notop.h5"
    for name in BUILT_INS:
        spec = keras_transfer.get_backbone(name)
        assert spec.license and spec.weights_source.startswith("https://")
        assert spec.min_input_size == 32


def test_weights_filename_follows_keras_size_rules():
    mnv2 = keras_transfer.get_backbone("mobilenet_v2_050")
    prefix = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_"
    assert mnv2.weights_filename() == prefix + "224_no_top.h5"
    assert mnv2.weights_filename((96, 96, 3)) == prefix + "96_no_top.h5"
    assert mnv2.weights_filename((160, 160, 3)) == prefix + "160_no_top.h5"
    assert mnv2.weights_filename((100, 100, 3)) == prefix + "224_no_top.h5"
    assert mnv2.weights_filename((96, 128, 3)) == prefix + "224_no_top.h5"
    assert keras_transfer.get_backbone("mobilenet_v2").weights_filename((128, 128, 3)) == (
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_128_no_top.h5"
    )
    v1 = keras_transfer.get_backbone("mobilenet_v1_025")
    assert v1.weights_filename((96, 96, 3)) == "mobilenet_2_5_224_tf_no_top.h5"
    assert v1.weights_filename((128, 128, 3)) == "mobilenet_2_5_128_tf_no_top.h5"
    resnet = keras_transfer.get_backbone("resnet50")
    assert resnet.weights_filename((64, 64, 3)) == (
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    )


def test_unknown_name_suggests_close_matches():
    with pytest.raises(ConfigurationError) as info:
        keras_transfer.get_backbone("mobilenetv2_050")
    message = str(info.value)
    assert "'mobilenetv2_050'" in message
    assert "mobilenet_v2_050" in message
    assert "list_backbones()" in message and "keras-transfer backbones" in message
    # A family name lists its members.
    with pytest.raises(ValueError, match="efficientnet_b0"):
        keras_transfer.get_backbone("efficientnet")


def test_get_backbone_passes_a_spec_through(registered_tiny):
    assert keras_transfer.get_backbone(registered_tiny) is registered_tiny
    assert keras_transfer.get_backbone("tinynet_test") is registered_tiny


def test_user_registration(registered_tiny):
    assert "tinynet_test" in keras_transfer.list_backbones("tiny*")
    with pytest.raises(ConfigurationError, match="already registered"):
        keras_transfer.register_backbone(tiny_spec())
    wider = tiny_spec(constructor_kwargs={"width": 8}, params=0)
    assert keras_transfer.register_backbone(wider, overwrite=True) is wider
    assert keras_transfer.get_backbone("tinynet_test") is wider

    model = keras_transfer.build_classifier(
        "tinynet_test", 3, input_shape=(24, 24, 3), weights=None
    )
    backbone, spec = keras_transfer.models.find_backbone(model)
    assert spec is wider and backbone.name == "tinynet_8"
    assert model.predict(keras.ops.zeros((2, 24, 24, 3)), verbose=0).shape == (2, 3)


def test_unregister_backbone():
    spec = backbones.register_backbone(tiny_spec(name="tinynet_gone"))
    assert backbones.unregister_backbone("tinynet_gone") is spec
    assert "tinynet_gone" not in keras_transfer.list_backbones()
    with pytest.raises(ConfigurationError, match="Unknown backbone: 'tinynet_gone'"):
        backbones.unregister_backbone("tinynet_gone")
    backbones.register_backbone(spec)
    assert backbones.unregister_backbone(spec) is spec


def test_register_rejects_non_specs():
    with pytest.raises(ConfigurationError, match="BackboneSpec"):
        keras_transfer.register_backbone({"name": "x"})


def test_spec_validation():
    with pytest.raises(ConfigurationError, match="preprocessing"):
        tiny_spec(preprocessing="imagenet")
    with pytest.raises(ConfigurationError, match="no blocks"):
        tiny_spec(blocks=())
    with pytest.raises(ConfigurationError, match="invalid pattern"):
        tiny_spec(blocks=(("stem", "stem_("),))
    with pytest.raises(ConfigurationError, match="unique"):
        tiny_spec(blocks=(("a", "stem_"), ("a", "stage1_")))
    spec = tiny_spec(blocks=[("stem", "stem_"), Block("stage1", "stage1_")])
    assert spec.blocks == (Block("stem", "stem_"), Block("stage1", "stage1_"))


def test_spec_is_immutable_data():
    kwargs = {"width": 4}
    spec = tiny_spec(constructor_kwargs=kwargs)
    kwargs["width"] = 16
    assert spec.constructor_kwargs == {"width": 4}
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.default_input_size = 64
    assert hash(spec) == hash(tiny_spec())


def test_block_layers_rejects_a_model_of_another_architecture():
    spec = tiny_spec()
    other = tiny_spec(blocks=(("stem", "stem_"),)).build(weights=None)
    with pytest.raises(ConfigurationError, match="stage1_conv"):
        tiny_spec(blocks=(("stem", "stem_"), ("head", "head_"))).block_layers(other)
    assert spec.matches(other)
    resnet_spec = keras_transfer.get_backbone("resnet50")
    with pytest.raises(ConfigurationError) as info:
        resnet_spec.block_layers(other)
    assert "'resnet50'" in str(info.value) and "stem_conv" in str(info.value)


def test_find_spec_for_model_tells_widths_apart():
    for name, alpha in (("mobilenet_v2_035", 0.35), ("mobilenet_v2_075", 0.75)):
        model = keras.applications.MobileNetV2(
            alpha=alpha, include_top=False, weights=None, input_shape=(32, 32, 3)
        )
        assert backbones.find_spec_for_model(model).name == name
    renamed = keras.applications.MobileNetV2(
        alpha=0.5, include_top=False, weights=None, input_shape=(32, 32, 3), name="custom"
    )
    assert backbones.find_spec_for_model(renamed).name == "mobilenet_v2_050"
    unrelated = tiny_backbone(input_shape=(16, 16, 3))
    assert backbones.find_spec_for_model(unrelated) is None


def test_check_input_shape():
    spec = keras_transfer.get_backbone("mobilenet_v2_050")
    assert spec.check_input_shape(None) == (224, 224, 3)
    assert spec.check_input_shape([64, 96, 3]) == (64, 96, 3)
    assert spec.check_input_shape((None, None, 3)) == (None, None, 3)
    with pytest.raises(ConfigurationError, match="at least 32x32"):
        spec.check_input_shape((31, 64, 3))
    with pytest.raises(ConfigurationError, match="3 channels"):
        spec.check_input_shape((64, 64, 1))
    assert spec.check_input_shape((64, 64, 1), require_rgb=False) == (64, 64, 1)
    with pytest.raises(ConfigurationError, match="height, width, channels"):
        spec.check_input_shape((64, 64))


def test_constructor_is_resolved_lazily():
    spec = tiny_spec(constructor="keras.applications.NoSuchNet")
    with pytest.raises(ConfigurationError, match="NoSuchNet"):
        spec.build(weights=None)
    assert (
        keras_transfer.get_backbone("resnet50").resolve_constructor() is keras.applications.ResNet50
    )


class Encoder(keras.layers.Layer):
    """A layer holding numbered sublayers, like a KerasHub transformer encoder."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.layer_1 = keras.layers.Dense(4, name="layer_1")
        self.layer_2 = keras.layers.Dense(4, name="layer_2")

    def call(self, x):
        return self.layer_2(self.layer_1(x))


def nested_backbone(include_top=False, weights=None, input_shape=None):
    """`stem_conv`, a nested `Sequential` stage, an auto-named conv, an encoder."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(4, 3, name="stem_conv")(inputs)
    x = keras.Sequential(
        [
            keras.layers.Conv2D(4, 3, name="stage1_conv"),
            keras.layers.BatchNormalization(name="stage1_bn"),
        ],
        name="stage1_seq",
    )(x)
    x = keras.layers.Conv2D(4, 1)(x)  # auto-named: conv2d, conv2d_7, ...
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    return keras.Model(inputs, Encoder(name="encoder")(x), name="nestednet")


def nested_spec(**overrides):
    fields = dict(
        name="nestednet_test",
        family="nestednet",
        constructor=nested_backbone,
        default_input_size=16,
        min_input_size=8,
        blocks=(
            ("stem", r"stem_"),
            ("stage1", r"stage1_"),
            ("layer_1", r"encoder/layer_1$"),
            ("layer_2", r"encoder/layer_2$"),
        ),
        model_name_pattern="nestednet",
        unmatched="previous",
    )
    fields.update(overrides)
    return BackboneSpec(**fields)


@pytest.fixture
def registered_nested():
    spec = backbones.register_backbone(nested_spec())
    yield spec
    backbones.unregister_backbone(spec.name)
    keras.backend.clear_session()


def test_blocks_hold_nested_layers_and_match_inside_containers(registered_nested):
    model = registered_nested.build(weights=None)
    groups = dict(registered_nested.block_layers(model))
    auto = next(l.name for l in model.layers if l.name.startswith("conv2d"))
    names = {block: [l.name for l in layers if own_weights(l)] for block, layers in groups.items()}
    # A matched container brings its layers; an unmatched one is opened; the
    # auto-named conv joins the block before it (unmatched="previous").
    assert names["stage1"] == ["stage1_conv", "stage1_bn", auto]
    assert names["layer_1"] == ["layer_1"] and names["layer_2"] == ["layer_2"]
    held = Counter(id(w) for layers in groups.values() for l in layers for w in own_weights(l))
    assert held == Counter(id(w) for w in model.weights)
    # The plan trains the nested convolution, and not the nested BatchNorm.
    plan = UnfreezePlan(model, schedule={0: 3})
    trained = [l.name for l in plan.trainable_layers(3)]
    assert trained == ["stage1_conv", auto, "layer_1", "layer_2"]
    plan.apply_depth(3)
    trainable = {v.path.split("/")[-2] for v in model.trainable_variables}
    assert "stage1_conv" in trainable and "stage1_bn" not in trainable
    plan.apply_depth(1)
    assert {v.path for v in model.trainable_variables} == {
        v.path for v in model.get_layer("encoder").layer_2.weights
    }


def test_unmatched_layers_join_the_previous_or_next_block():
    model = nested_backbone(input_shape=(16, 16, 3))
    auto = next(l.name for l in model.layers if l.name.startswith("conv2d"))
    previous = dict(nested_spec().block_layers(model))
    assert auto in [l.name for l in previous["stage1"]]
    following = dict(nested_spec(unmatched="next").block_layers(model))
    assert auto in [l.name for l in following["layer_1"]]
    with pytest.raises(ConfigurationError, match=auto):
        nested_spec(unmatched="error").block_layers(model)
    with pytest.raises(ConfigurationError, match="unmatched"):
        nested_spec(unmatched="nearest")
    keras.backend.clear_session()
