"""KerasHub image backbones in the registry, by preset name or backbone object.

```python
from keras_transfer.backbones import hub
spec = hub.register_keras_hub_backbone("vit_base_patch16_224_imagenet")
model = keras_transfer.build_classifier(spec.name, num_classes=5)
unfreeze = keras_transfer.ProgressiveUnfreeze(schedule={2: 4}, lr_decay=1.5)
```

A KerasHub backbone becomes a `KerasHubBackboneSpec`, usable everywhere a
registered name is (`build_classifier`, `ProgressiveUnfreeze`, the tuner,
`compare`). What `build()` returns is a small functional model named after
the spec:

    images -> image_converter (Rescaling) -> the KerasHub backbone -> token_pooling

- the preset's image converter (its `scale` and `offset`) is the
  `Rescaling` layer inside it, so the spec's `preprocessing` is `"none"`
  and the model takes raw [0, 255] pixels like every other backbone;
- a transformer's token sequence is reduced to its class token (or the
  mean token, without one) by `TokenPooling`, for the classifier head;
- the units `ProgressiveUnfreeze` counts are the backbone's stages or
  transformer layers: ViT's `embedding`, `transformer_block_1` ...
  `transformer_block_<n>` (with the final norm), ResNet's
  `stack<s>_block<b>`, EfficientNet's `block<s><letter>`; other families
  take `blocks=` (patterns on paths like `"<backbone name>/<layer>"`).
  With `ProgressiveUnfreeze(lr_decay=...)`, each transformer layer below
  the top learns `lr_decay` times slower than the one above it
  (layer-wise learning-rate decay).

`weights="imagenet"` (the `build_classifier` default) means the preset's
pretrained weights (or, for a registered object, the object's weights);
`None` random ones; a path, a `.weights.h5` file of this backbone (a
preset's `model.weights.h5`). A preset that is neither cached nor
downloadable fails at once with one `WeightsError` naming KerasHub's cache
folder and how to pass a local preset directory instead.

The spec rebuilds the KerasHub backbone from its `get_config()` for every
model; a registered object whose config does not rebuild it (KerasHub's
`EfficientNetBackbone` leaves `num_features` out) is refused.
`hub_presets` loads presets (and fails fast offline), `hub_units` finds the
units.

Needs the `[hub]` extra (`pip install keras-transfer[hub]`); import this
module (or `keras_hub`) before loading a saved model built from it.
"""

import dataclasses
import os
import re
import types

import keras
from keras import ops

from keras_transfer.backbones.blocks import group_layers
from keras_transfer.backbones.hub_presets import keras_hub
from keras_transfer.backbones.hub_presets import load_preset
from keras_transfer.backbones.hub_presets import preset_converter
from keras_transfer.backbones.hub_presets import require_keras_hub
from keras_transfer.backbones.hub_units import hub_blocks
from keras_transfer.backbones.registry import register_backbone
from keras_transfer.backbones.spec import BackboneSpec
from keras_transfer.errors import ConfigurationError
from keras_transfer.errors import WeightsError


@keras.saving.register_keras_serializable(package="keras_transfer")
class TokenPooling(keras.layers.Layer):
    """Reduces a transformer's `(batch, tokens, features)` output to `(batch, features)`.

    Example:

    >>> TokenPooling("class_token")(np.zeros((2, 5, 8))).shape
    (2, 8)

    Args:
        mode: `"class_token"` (the first token, ViT's `[CLS]`) or `"mean"`.
        **kwargs: base layer keyword arguments, e.g. `name`.
    """

    def __init__(self, mode="class_token", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("class_token", "mean"):
            raise ConfigurationError(
                f"Unrecognized value for mode: {mode!r}. Expected 'class_token' or 'mean'."
            )
        self.mode = mode

    def call(self, inputs):
        return inputs[:, 0] if self.mode == "class_token" else ops.mean(inputs, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@dataclasses.dataclass(frozen=True)
class KerasHubBackboneSpec(BackboneSpec):
    """A `BackboneSpec` for a KerasHub backbone; see `register_keras_hub_backbone`.

    Its `constructor` is a `KerasHubBuilder`, called like a
    `keras.applications` function, which resolves `weights` itself: so the
    tuner's backbone pool, which swaps the constructor for one handing out
    a built backbone, works unchanged.

    Example:

    ```python
    spec = hub.keras_hub_backbone_spec(vit, image_converter=converter)
    backbone = spec.build(input_shape=(32, 32, 3), weights=None)
    ```

    Args (besides `BackboneSpec`'s):
        preset: the preset it came from (a name, handle or local folder);
            empty for a registered object.
    """

    preset: str = ""

    __hash__ = BackboneSpec.__hash__

    def build(self, input_shape=None, weights=None):
        """Builds the backbone model: converter, KerasHub backbone, token pooling.

        Args:
            input_shape: `(height, width, 3)`; None for the default. A ViT
                with pretrained weights takes only its preset's size.
            weights: `"imagenet"` (the preset's or the registered object's
                weights), None (random) or the path to a `.weights.h5` file
                of this KerasHub backbone.
        """
        shape = self.check_input_shape(input_shape, require_rgb=weights is not None)
        if weights is not None and not isinstance(weights, (str, os.PathLike)):
            raise ConfigurationError(
                "weights must be None, 'imagenet' (the preset's weights) or the path "
                f"to a .weights.h5 file. Received: weights={weights!r}"
            )
        return self.resolve_constructor()(include_top=False, weights=weights, input_shape=shape)


class KerasHubBuilder:
    """Builds a registered KerasHub backbone as the registry's wrapper model.

    Called as `builder(include_top=False, weights=..., input_shape=...)`,
    like a `keras.applications` function.

    Example: `KerasHubBuilder("tiny_vit", ViTBackbone, vit.get_config(), source=vit)`.

    Args:
        name: the spec's name, which the wrapper model takes.
        hub_class: the KerasHub backbone class.
        config: the backbone's `get_config()`.
        preset: the preset whose weights `"imagenet"` loads, or "".
        scale, offset: the image converter's (a number, one per channel, or None).
        token_pooling: `"class_token"`, `"mean"`, or `""` for feature maps.
        source: the registered object, whose weights `"imagenet"` copies
            when there is no preset.
    """

    def __init__(
        self,
        name,
        hub_class,
        config,
        preset="",
        scale=None,
        offset=None,
        token_pooling="",
        source=None,
    ):
        self.name = name
        self.hub_class = hub_class
        self.config = dict(config)
        self.preset = preset
        self.scale = scale
        self.offset = offset
        self.token_pooling = token_pooling
        self.source = source

    def __repr__(self):
        return f"<KerasHub {self.hub_class.__name__} {self.preset or self.name}>"

    def __call__(self, include_top=False, weights=None, input_shape=None):
        if weights is None:
            backbone = self._from_config(input_shape)
        elif weights == "imagenet":
            backbone = self._pretrained(input_shape)
        else:
            backbone = self._from_file(input_shape, weights)
        return wrap_backbone(
            backbone, input_shape, self.name, self.scale, self.offset, self.token_pooling
        )

    def _shape_key(self):
        return next((k for k in ("image_shape", "input_shape") if k in self.config), None)

    def _from_config(self, shape):
        config = {**self.config, "dtype": keras.config.dtype_policy().name}
        if _fixed_size(self.config) is not None:
            config[self._shape_key()] = tuple(shape)
        try:
            return self.hub_class.from_config(config)
        except ValueError as e:
            raise ConfigurationError(
                f"KerasHub backbone {self.name!r} cannot be built for input_shape="
                f"{tuple(shape)}: {e}"
            ) from e

    def _pretrained(self, shape):
        fixed = _fixed_size(self.config)
        if fixed is not None and tuple(shape) != fixed:
            raise ConfigurationError(
                f"KerasHub backbone {self.name!r} takes {fixed[0]}x{fixed[1]} images with "
                "its pretrained weights (its position embeddings are sized for them). "
                f"Received: input_shape={tuple(shape)}. Use input_shape={fixed}, or "
                "weights=None to train from scratch at another size."
            )
        if self.preset:
            return load_preset(self.preset, dtype=keras.config.dtype_policy().name)
        backbone = self._from_config(shape)
        backbone.set_weights(self.source.get_weights())
        return backbone

    def _from_file(self, shape, path):
        backbone = self._from_config(shape)
        try:
            backbone.load_weights(os.fspath(path))
        except Exception as e:  # Keras raises ValueError, KeyError, OSError...
            raise WeightsError(
                f"Weights file {os.fspath(path)!r} does not fit KerasHub backbone "
                f"{self.name!r}: {str(e).rstrip('.')}. Pass a .weights.h5 file saved "
                "from this backbone (a preset's model.weights.h5), 'imagenet', or None."
            ) from e
        return backbone


def register_keras_hub_backbone(
    backbone, name=None, image_converter=None, blocks=None, license="", overwrite=False
):
    """Registers a KerasHub image backbone, from a preset or an object.

    Example:

    ```python
    # A preset (downloaded once into KerasHub's cache, or a local folder):
    spec = hub.register_keras_hub_backbone("vit_base_patch16_224_imagenet")
    # An object, e.g. built from its config:
    vit = keras_hub.models.ViTBackbone(
        image_shape=(32, 32, 3), patch_size=8, num_layers=2, num_heads=2,
        hidden_dim=16, mlp_dim=32)
    spec = hub.register_keras_hub_backbone(
        vit, name="tiny_vit",
        image_converter=keras_hub.layers.ImageConverter(scale=1 / 127.5, offset=-1))
    model = keras_transfer.build_classifier("tiny_vit", 3, input_shape=(32, 32, 3))
    ```

    Args:
        backbone: a preset (a built-in name like `"resnet_50_imagenet"`, a
            `kaggle://` or `hf://` handle, or a local preset directory), or a
            `keras_hub.models.Backbone`.
        name: registry name; defaults to the preset's last path component,
            or the object's name.
        image_converter: a `keras_hub.layers.ImageConverter`; defaults to the
            preset's. Required for an object (its preset's converter,
            `keras_hub.layers.ImageConverter.from_preset(preset)`).
        blocks: None to find the units (ViT, ResNet, EfficientNet), or
            `(name, pattern)` pairs on paths like `"<backbone name>/<layer>"`.
        license: the licence of the weights, shown by `keras-transfer backbones`.
        overwrite: replace a backbone registered under the same name.

    Returns:
        The registered `KerasHubBackboneSpec`.

    Raises:
        ConfigurationError: keras-hub is not installed, the units cannot be
            found, or an object comes without an image converter.
        WeightsError: a preset that is neither cached nor downloadable.
    """
    spec = keras_hub_backbone_spec(backbone, name, image_converter, blocks, license)
    return register_backbone(spec, overwrite=overwrite)


def keras_hub_backbone_spec(backbone, name=None, image_converter=None, blocks=None, license=""):
    """The `KerasHubBackboneSpec` of `register_keras_hub_backbone`, unregistered.

    Example: `spec = hub.keras_hub_backbone_spec(vit, image_converter=converter)`.
    """
    require_keras_hub()
    preset = ""
    if isinstance(backbone, (str, os.PathLike)):
        preset = os.fspath(backbone)
        template = load_preset(preset, load_weights=False)
        image_converter = image_converter or preset_converter(preset)
    elif isinstance(backbone, keras_hub.models.Backbone):
        template = backbone
        if image_converter is None:
            raise ConfigurationError(
                f"KerasHub backbone {backbone.name!r} comes without its image converter: "
                "pass image_converter=, e.g. keras_hub.layers.ImageConverter.from_preset"
                "(<its preset>) or keras_hub.layers.ImageConverter(scale=1 / 127.5, "
                "offset=-1) for inputs scaled to [-1, 1]."
            )
    else:
        raise ConfigurationError(
            "backbone must be a KerasHub preset (name, handle or local directory) or a "
            f"keras_hub.models.Backbone. Received: {type(backbone).__name__}"
        )
    config = template.get_config()
    if not preset:
        _check_config_rebuilds(template, config)
    fixed = _fixed_size(config)
    size = _converter_size(image_converter) or (fixed[0] if fixed else 224)
    name = name or (os.path.basename(preset.rstrip("/")) if preset else template.name)
    builder = KerasHubBuilder(
        name,
        type(template),
        config,
        preset,
        image_converter.scale,
        image_converter.offset,
        _token_pooling(template, config),
        None if preset else template,
    )
    spec = KerasHubBackboneSpec(
        name=name,
        family=type(template).__name__,
        constructor=builder,
        default_input_size=size,
        min_input_size=size if fixed else 32,
        preprocessing="none",
        blocks=tuple(blocks) if blocks else hub_blocks(template),
        params=template.count_params(),
        license=license,
        model_name_pattern=re.escape(name),
        preset=preset,
    )
    # The wrapper nests the backbone under its own name: check the blocks
    # against that view before anyone builds it.
    _, outside, empty = group_layers(
        types.SimpleNamespace(layers=[template]), spec.blocks, spec.unmatched
    )
    if outside or empty:
        raise ConfigurationError(
            f"The blocks of KerasHub backbone {name!r} do not fit it (layers with weights "
            f"outside every block: {outside[:5]}; blocks matching no layer: {empty[:5]}). "
            f"Patterns match paths like '{template.name}/<layer>/<sublayer>'."
        )
    return spec


def wrap_backbone(backbone, shape, name, scale=None, offset=None, token_pooling=""):
    """The registry's view of a KerasHub backbone: raw pixels in, features out.

    Example: `wrap_backbone(vit, (32, 32, 3), "tiny_vit", 1 / 127.5, -1, "class_token")`.
    """
    inputs = keras.Input(shape=shape, name="images")
    x = inputs
    if scale is not None or offset is not None:
        x = keras.layers.Rescaling(
            1.0 if scale is None else scale,
            0.0 if offset is None else offset,
            name="image_converter",
        )(x)
    x = backbone(x)
    if token_pooling:
        x = TokenPooling(token_pooling, name="token_pooling")(x)
    return keras.Model(inputs, x, name=name)


def _check_config_rebuilds(template, config):
    # The spec rebuilds the backbone from its config for every model; a
    # KerasHub class whose get_config() leaves an argument out would give
    # another architecture (EfficientNetBackbone drops num_features).
    rebuilt = type(template).from_config(config)
    shapes = [tuple(w.shape) for w in rebuilt.weights]
    if shapes != [tuple(w.shape) for w in template.weights]:
        raise ConfigurationError(
            f"KerasHub backbone {template.name!r} ({type(template).__name__}) does not "
            f"rebuild from its get_config() ({rebuilt.count_params()} parameters instead "
            f"of {template.count_params()}): some constructor argument is not in its "
            "config. Build it with that argument at its default, or register a preset."
        )


def _fixed_size(config):
    shape = config.get("image_shape") or config.get("input_shape")
    return tuple(shape) if shape and None not in tuple(shape) else None


def _converter_size(converter):
    size = getattr(converter, "image_size", None)
    return int(size[0]) if size and size[0] == size[1] else None


def _token_pooling(template, config):
    if len(template.output.shape) != 3:
        return ""
    return "class_token" if config.get("use_class_token", True) else "mean"
