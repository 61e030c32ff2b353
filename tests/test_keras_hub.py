"""KerasHub backbones in the registry (keras_transfer.backbones.hub).

Presets cannot download here: the backbones are tiny ones built from their
config (random weights), registered as objects or saved to a local preset
directory, which is the same `from_preset` path a downloaded preset takes.
"""

import warnings
from collections import Counter

import keras
import numpy as np
import pytest

import keras_transfer
from keras_transfer import backbones
from keras_transfer.backbones import weights as weights_lib
from keras_transfer.backbones.blocks import own_weights
from keras_transfer.caching import feature_cache_info
from keras_transfer.errors import ConfigurationError
from keras_transfer.errors import WeightsError
from keras_transfer.unfreeze import UnfreezePlan
from keras_transfer.unfreeze.groups import plan_groups
from keras_transfer.utils.internals import created_trainable_variables

keras_hub = pytest.importorskip("keras_hub")
hub = pytest.importorskip("keras_transfer.backbones.hub")


def tiny_vit(num_layers=3):
    return keras_hub.models.ViTBackbone(
        image_shape=(32, 32, 3),
        patch_size=8,
        num_layers=num_layers,
        num_heads=2,
        hidden_dim=16,
        mlp_dim=32,
    )


def converter():
    return keras_hub.layers.ImageConverter(scale=1 / 127.5, offset=-1)


@pytest.fixture
def registered():
    names = []

    def register(backbone, name, **kwargs):
        spec = hub.register_keras_hub_backbone(backbone, name=name, **kwargs)
        names.append(spec.name)
        return spec

    yield register
    for name in names:
        backbones.unregister_backbone(name)
    keras.backend.clear_session()


def _variables(layers):
    return {
        id(v)
        for l in layers
        if not isinstance(l, keras.layers.BatchNormalization)
        for v in created_trainable_variables(l)
    }


def test_vit_trains_its_last_transformer_layers_in_one_cached_fit(registered):
    vit = tiny_vit()
    spec = registered(vit, "test_tiny_vit", image_converter=converter())
    assert spec.block_names == (
        "embedding",
        "transformer_block_1",
        "transformer_block_2",
        "transformer_block_3",
    )
    assert (spec.default_input_size, spec.min_input_size) == (32, 32)
    assert spec.preprocessing == "none"
    model = keras_transfer.build_classifier("test_tiny_vit", 2, input_shape=(32, 32, 3))
    backbone, found = backbones.find_backbone(model)
    assert found is spec
    # weights="imagenet" (the default) is the registered object's weights.
    hub_layer = backbone.get_layer(vit.name)
    for mine, theirs in zip(hub_layer.get_weights(), vit.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    groups = spec.block_layers(backbone)
    before = {id(v): keras.ops.convert_to_numpy(v).copy() for v in backbone.weights}

    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    y = np.array([0, 1] * 4)
    unfreeze = keras_transfer.ProgressiveUnfreeze(
        schedule={1: 2}, lr_ratio=0.5, lr_decay=2.0, verbose=0
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(x, y, batch_size=4, epochs=3, callbacks=[unfreeze], verbose=0)
    assert not [w for w in caught if "cach" in str(w.message).lower()], [
        str(w.message) for w in caught
    ]
    info = feature_cache_info(model)
    assert info is not None and info.samples == 8
    assert unfreeze.phases == [(0, 0), (1, 2)]
    assert history.history["backbone_lr"][0] == 0

    top_two = _variables(layer for _, layers in groups[-2:] for layer in layers)
    assert {id(v) for v in backbone.trainable_variables} == top_two
    moved = {
        id(v)
        for v in backbone.weights
        if not np.array_equal(keras.ops.convert_to_numpy(v), before[id(v)])
    }
    assert moved == top_two
    # Layer-wise decay: the layer below the top learns lr_decay times slower.
    groups_by_unit = {
        tuple(g["units"]): g["multiplier"]
        for g in plan_groups(UnfreezePlan(model, schedule={1: 2}), 0.5, 2.0)
    }
    assert groups_by_unit == {("transformer_block_3",): 0.5, ("transformer_block_2",): 0.25}


def test_the_image_converter_is_the_preprocessing(registered):
    image_converter = keras_hub.layers.ImageConverter(
        scale=[1 / 58.4, 1 / 57.1, 1 / 57.4], offset=[-2.1, -2.0, -1.8]
    )
    spec = registered(tiny_vit(1), "test_vit_torch", image_converter=image_converter)
    built = spec.build(input_shape=(32, 32, 3), weights=None)
    pixels = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    scaled = keras.Model(built.input, built.get_layer("image_converter").output)(pixels)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(scaled),
        keras.ops.convert_to_numpy(image_converter(pixels)),
        rtol=1e-5,
    )
    assert built.output.shape == (None, 16)  # the class token


def test_resnet_stages_are_the_units(registered):
    resnet = keras_hub.models.ResNetBackbone(
        input_conv_filters=[8],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 8],
        stackwise_num_blocks=[2, 2],
        stackwise_num_strides=[1, 2],
        block_type="bottleneck_block",
        use_pre_activation=True,
        image_shape=(None, None, 3),
    )
    spec = registered(resnet, "test_tiny_resnet", image_converter=converter())
    assert spec.block_names == (
        "stem",
        "stack0_block0",
        "stack0_block1",
        "stack1_block0",
        "stack1_block1",
    )
    built = spec.build(input_shape=(48, 40, 3), weights=None)
    assert built.output.shape == (None, 6, 5, 32)
    held = Counter(
        id(w) for _, layers in spec.block_layers(built) for l in layers for w in own_weights(l)
    )
    assert held == Counter(id(w) for w in built.weights)


def test_local_preset_directory_loads_its_weights(registered, tmp_path):
    vit = tiny_vit(2)
    vit.save_to_preset(str(tmp_path / "tiny_vit"))
    converter().save_to_preset(str(tmp_path / "tiny_vit"))
    spec = registered(tmp_path / "tiny_vit", None)
    assert spec.name == "tiny_vit" and spec.preset == str(tmp_path / "tiny_vit")
    for weights in ("imagenet", tmp_path / "tiny_vit" / "model.weights.h5"):
        built = spec.build(input_shape=(32, 32, 3), weights=weights)
        for mine, theirs in zip(built.get_layer(vit.name).get_weights(), vit.get_weights()):
            np.testing.assert_array_equal(mine, theirs)
    with pytest.raises(ConfigurationError, match="takes 32x32 images"):
        spec.build(input_shape=(64, 64, 3), weights="imagenet")
    # Random weights at another size (a multiple of the patch size) are fine.
    assert spec.build(input_shape=(64, 64, 3), weights=None).output.shape == (None, 16)


def test_offline_preset_fails_at_once_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    monkeypatch.setattr(weights_lib, "reachable", lambda url, timeout=None: False)
    with pytest.raises(WeightsError) as info:
        hub.register_keras_hub_backbone("vit_base_patch16_224_imagenet")
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "kagglehub" / "models" / "keras" / "vit") in message
    assert "api.kaggle.com" in message and "local preset directory" in message
    assert "vit_base_patch16_224_imagenet" not in keras_transfer.list_backbones()


def test_an_object_needs_its_image_converter():
    with pytest.raises(ConfigurationError, match="image_converter="):
        hub.keras_hub_backbone_spec(tiny_vit(1))
    with pytest.raises(ConfigurationError, match="preset"):
        hub.keras_hub_backbone_spec(42)


def test_saved_classifier_loads_back(registered, tmp_path):
    registered(tiny_vit(1), "test_vit_saved", image_converter=converter())
    model = keras_transfer.build_classifier("test_vit_saved", 2, input_shape=(32, 32, 3))
    x = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    model.save(tmp_path / "vit.keras")
    loaded = keras.models.load_model(tmp_path / "vit.keras")
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )


def test_the_tuners_backbone_pool_reuses_it(registered):
    pool_module = pytest.importorskip("keras_transfer.tuner.backbone_pool")
    spec = registered(tiny_vit(1), "test_vit_pooled", image_converter=converter())
    pool = pool_module.BackbonePool()
    first = pool.build(spec, 2, (32, 32, 3), None, 0.0, {"hidden_units": 0})
    backbone = backbones.find_backbone(first)[0]
    del first
    # The pool hands the same backbone to the next trial, through the
    # spec's constructor.
    second = pool.build(spec, 2, (32, 32, 3), None, 0.0, {"hidden_units": 0})
    assert backbones.find_backbone(second)[0] is backbone


def tiny_efficientnet(**kwargs):
    return keras_hub.models.EfficientNetBackbone(
        stackwise_width_coefficients=[0.25] * 2,
        stackwise_depth_coefficients=[1.0] * 2,
        stackwise_kernel_sizes=[3, 3],
        stackwise_num_repeats=[1, 2],
        stackwise_input_filters=[32, 16],
        stackwise_output_filters=[16, 24],
        stackwise_expansion_ratios=[1, 6],
        stackwise_squeeze_and_excite_ratios=[0.25, 0.25],
        stackwise_strides=[1, 2],
        stackwise_block_types=["v1", "v1"],
        stackwise_force_input_filters=[0, 0],
        stackwise_nores_option=[False, False],
        input_shape=(None, None, 3),
        **kwargs,
    )


def test_efficientnet_blocks_and_a_config_that_does_not_rebuild(registered):
    spec = registered(tiny_efficientnet(), "test_tiny_efficientnet", image_converter=converter())
    assert spec.block_names == ("stem", "block1a", "block2a", "block2b", "top")
    assert spec.build(input_shape=(32, 32, 3), weights="imagenet").output.shape[1:3] == (8, 8)
    # KerasHub's get_config() leaves num_features out: rebuilding from it
    # would be another network, so registration refuses.
    with pytest.raises(ConfigurationError, match="does not rebuild from its get_config"):
        hub.keras_hub_backbone_spec(tiny_efficientnet(num_features=64), image_converter=converter())
