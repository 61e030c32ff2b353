"""The backbone registry: pretrained feature extractors described as data.

A `BackboneSpec` says everything keras-transfer needs to know about a
backbone without building it: which `keras.applications` constructor makes
it, its input size, the preprocessing its weights expect, where its ImageNet
weights come from, and how its layers group into blocks (stem to top), which
is what `ProgressiveUnfreeze` unfreezes one at a time.

```python
keras_transfer.list_backbones("efficientnet*")   # ['efficientnet_b0', ...]
spec = keras_transfer.get_backbone("mobilenet_v2_050")
backbone = spec.build(input_shape=(96, 96, 3), weights="imagenet")
for block_name, layers in spec.block_layers(backbone):
    ...
```

Adding a backbone is one `register_backbone(BackboneSpec(...))` call; callers
(`build_classifier`, the callbacks, the CLI) read the registry and need no
change.
"""

import dataclasses
import difflib
import fnmatch
import importlib
import math
import re

import keras

from keras_transfer.errors import ConfigurationError

PREPROCESSING_MODES = ("tf", "caffe", "torch", "none")


@dataclasses.dataclass(frozen=True)
class Block:
    """A named group of backbone layers, the unit of progressive unfreezing.

    Attributes:
        name: the block's name, e.g. `"block_16"` or `"conv5_block3"`.
        pattern: a regular expression matched with `re.match` (anchored at
            the start of the name) against the backbone's layer names.
    """

    name: str
    pattern: str


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """Describes a backbone as data: how to build it and how it is organised.

    The spec holds no model; `build()` makes one. Register your own with
    `register_backbone()` and every part of keras-transfer can use it by name.

    Example:

    ```python
    spec = keras_transfer.BackboneSpec(
        name="my_mobilenet",
        family="mobilenet_v2",
        constructor="keras.applications.MobileNetV2",
        constructor_kwargs={"alpha": 0.35},
        default_input_size=96,
        preprocessing="tf",
        blocks=(
            ("stem", r"Conv1|bn_Conv1|expanded_conv_"),
            ("body", r"block_"),
            ("top", r"Conv_1|out_relu"),
        ),
    )
    keras_transfer.register_backbone(spec)
    model = keras_transfer.build_classifier("my_mobilenet", 3, weights=None)
    ```

    Args:
        name: registry name, e.g. `"mobilenet_v2_050"`.
        family: architecture family, e.g. `"mobilenet_v2"`.
        constructor: dotted name of the model function, resolved lazily
            (e.g. `"keras.applications.MobileNetV2"`), or the callable itself.
            It is called as `constructor(include_top=False, weights=...,
            input_shape=..., **constructor_kwargs)`.
        constructor_kwargs: extra keyword arguments for the constructor,
            e.g. `{"alpha": 0.5}`.
        default_input_size: the side, in pixels, of the square input the
            weights were trained at. Defaults to 224.
        min_input_size: the smallest side the architecture accepts.
            Defaults to 32.
        preprocessing: the input scaling the weights expect, one of `"tf"`
            (pixels to [-1, 1]), `"caffe"` (RGB to BGR, ImageNet mean
            subtracted), `"torch"` (to [0, 1], ImageNet mean and std) or
            `"none"` (the model rescales raw [0, 255] pixels itself).
            See `keras_transfer.BackbonePreprocessing`.
        blocks: `Block`s or `(name, pattern)` pairs, ordered stem to top.
            Together they must match every layer of the built backbone that
            holds weights.
        params: parameter count of the backbone without its top, 0 if
            unknown. Used to recognise unnamed backbones.
        weights_source: URL of the folder the ImageNet weights download from.
        weights_file: file name Keras caches the ImageNet weights under;
            `{rows}` is replaced by the input size the weights are picked
            for (see `weights_input_sizes`). Empty if there are no ImageNet
            weights.
        license: licence of the pretrained weights.
        model_name_pattern: regular expression (full match) recognising the
            `.name` Keras gives the built model, e.g.
            `r"mobilenetv2_0\\.50_\\d+"`. Empty to recognise by structure only.
        weights_input_sizes: square input sizes that have their own weights
            file; any other input uses the file for `default_input_size`.
            Empty when one file serves every size.
    """

    name: str
    family: str
    constructor: object
    constructor_kwargs: dict = dataclasses.field(default_factory=dict)
    default_input_size: int = 224
    min_input_size: int = 32
    preprocessing: str = "tf"
    blocks: tuple = ()
    params: int = 0
    weights_source: str = ""
    weights_file: str = ""
    license: str = ""
    model_name_pattern: str = ""
    weights_input_sizes: tuple = ()

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ConfigurationError(
                f"BackboneSpec needs a non-empty string `name`. Received: name={self.name!r}"
            )
        if self.preprocessing not in PREPROCESSING_MODES:
            raise ConfigurationError(
                f"Unrecognized value for preprocessing of backbone {self.name!r}: "
                f"{self.preprocessing!r}. Expected one of {PREPROCESSING_MODES}."
            )
        blocks = tuple(
            b if isinstance(b, Block) else Block(*b) for b in (self.blocks or ())
        )
        if not blocks:
            raise ConfigurationError(
                f"BackboneSpec {self.name!r} has no blocks. Give at least one, "
                'e.g. blocks=(("all", r".*"),) to treat the backbone as one block.'
            )
        for block in blocks:
            try:
                re.compile(block.pattern)
            except re.error as e:
                raise ConfigurationError(
                    f"Block {block.name!r} of backbone {self.name!r} has an invalid "
                    f"pattern {block.pattern!r}: {e}"
                ) from e
        names = [b.name for b in blocks]
        if len(set(names)) != len(names):
            raise ConfigurationError(
                f"Block names of backbone {self.name!r} must be unique. Received: {names}"
            )
        if self.min_input_size > self.default_input_size:
            raise ConfigurationError(
                f"Backbone {self.name!r}: min_input_size={self.min_input_size} is "
                f"larger than default_input_size={self.default_input_size}."
            )
        # Frozen dataclass: normalise through object.__setattr__. The kwargs
        # are copied so that mutating the caller's dict cannot change the spec.
        object.__setattr__(self, "blocks", blocks)
        object.__setattr__(self, "constructor_kwargs", dict(self.constructor_kwargs))
        object.__setattr__(self, "weights_input_sizes", tuple(self.weights_input_sizes))

    def __hash__(self):
        return hash((self.name, self.family, str(self.constructor)))

    @property
    def block_names(self):
        """Names of the blocks, stem to top."""
        return tuple(b.name for b in self.blocks)

    @property
    def default_input_shape(self):
        """`(default_input_size, default_input_size, 3)`."""
        return (self.default_input_size, self.default_input_size, 3)

    def resolve_constructor(self):
        """Returns the model function named by `constructor`."""
        if callable(self.constructor):
            return self.constructor
        module_name, _, attr = str(self.constructor).rpartition(".")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError, ValueError) as e:
            raise ConfigurationError(
                f"Backbone {self.name!r}: cannot import constructor "
                f"{self.constructor!r} ({e}). Give a dotted name such as "
                "'keras.applications.MobileNetV2' or a callable."
            ) from e

    def weights_filename(self, input_shape=None):
        """The file name Keras caches the ImageNet weights for this input under.

        Mirrors `keras.applications`: a square input whose side is in
        `weights_input_sizes` gets its own file, any other input the file for
        `default_input_size`.

        Args:
            input_shape: `(height, width, channels)`; None for the default.

        Returns:
            The file name, or None if the backbone has no ImageNet weights.
        """
        if not self.weights_file:
            return None
        rows = self.default_input_size
        if input_shape is not None:
            height, width = input_shape[0], input_shape[1]
            if height == width and height in self.weights_input_sizes:
                rows = height
        return self.weights_file.format(rows=rows)

    def check_input_shape(self, input_shape, require_rgb=True):
        """Validates an input shape for this backbone; returns it as a tuple.

        Args:
            input_shape: `(height, width, channels)`, or None for the default.
                Height and width may be None (any size at run time).
            require_rgb: whether the input must have 3 channels (pretrained
                weights need them). Defaults to True.

        Raises:
            ConfigurationError: the shape is not three numbers, has the wrong
                channel count, or is smaller than `min_input_size`.
        """
        if input_shape is None:
            return self.default_input_shape
        try:
            shape = tuple(None if d is None else int(d) for d in input_shape)
        except (TypeError, ValueError):
            shape = None
        if shape is None or len(shape) != 3:
            raise ConfigurationError(
                f"input_shape must be (height, width, channels), e.g. "
                f"{self.default_input_shape}. Received: input_shape={input_shape!r}"
            )
        height, width, channels = shape
        if channels != 3 and require_rgb:
            raise ConfigurationError(
                f"Backbone {self.name!r} takes RGB images: input_shape must have 3 "
                f"channels. Received: input_shape={shape}. Convert grayscale or "
                "RGBA images to RGB first (keras_transfer.data.load_image_folder "
                "does this when it loads them)."
            )
        small = [d for d in (height, width) if d is not None and d < self.min_input_size]
        if small:
            raise ConfigurationError(
                f"Backbone {self.name!r} needs inputs of at least "
                f"{self.min_input_size}x{self.min_input_size} pixels. Received: "
                f"input_shape={shape}. Use a larger input_shape (its default is "
                f"{self.default_input_shape}) and let the data loader resize images to it."
            )
        return shape

    def build(self, input_shape=None, weights=None):
        """Builds the backbone (without its classification top).

        Args:
            input_shape: `(height, width, 3)`; None for
                `(default_input_size, default_input_size, 3)`.
            weights: None (random initialisation), `"imagenet"` (from the Keras
                cache, downloaded if the host is reachable) or the path to a
                weights file. See `keras_transfer.backbones.weights.load_backbone`.

        Returns:
            The `keras.Model`, with the name Keras gives it.
        """
        from keras_transfer.backbones import weights as weights_lib

        return weights_lib.load_backbone(self, input_shape=input_shape, weights=weights)

    def block_layers(self, model):
        """Groups the layers of a built backbone by block.

        Args:
            model: a model built from this spec (e.g. by `build()`).

        Returns:
            A list of `(block_name, [layers])`, stem to top. Each layer goes to
            the first block whose pattern matches its name; every layer that
            holds weights belongs to a block.

        Raises:
            ConfigurationError: a layer with weights matches no block, or a
                block matches no layer (the model is not this backbone).
        """
        compiled = [re.compile(b.pattern) for b in self.blocks]
        groups = [(b.name, []) for b in self.blocks]
        unmatched = []
        for layer in model.layers:
            for index, regex in enumerate(compiled):
                if regex.match(layer.name):
                    groups[index][1].append(layer)
                    break
            else:
                if layer.weights:
                    unmatched.append(layer.name)
        empty = [name for name, layers in groups if not layers]
        if unmatched or empty:
            problems = []
            if unmatched:
                problems.append(
                    f"layers with weights outside every block: {_shorten(unmatched)}"
                )
            if empty:
                problems.append(f"blocks matching no layer: {_shorten(empty)}")
            raise ConfigurationError(
                f"Model {model.name!r} does not match backbone {self.name!r} "
                f"({'; '.join(problems)}). Build the model with "
                f"get_backbone({self.name!r}).build(), or register a BackboneSpec "
                "whose blocks describe this model."
            )
        return groups

    def matches(self, model):
        """Whether `model`'s layers fit this spec's blocks."""
        try:
            self.block_layers(model)
        except ConfigurationError:
            return False
        return True


def _shorten(names, limit=5):
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


_REGISTRY = {}


def register_backbone(spec, overwrite=False):
    """Adds a backbone to the registry.

    Example:

    ```python
    spec = keras_transfer.get_backbone("mobilenet_v2_035")
    keras_transfer.register_backbone(
        dataclasses.replace(spec, name="mnv2_small", default_input_size=96)
    )
    ```

    Args:
        spec: the `BackboneSpec`.
        overwrite: replace a spec registered under the same name. Defaults to
            False, which raises instead.

    Returns:
        The spec.
    """
    if not isinstance(spec, BackboneSpec):
        raise ConfigurationError(
            f"register_backbone expects a BackboneSpec. Received: {type(spec).__name__}"
        )
    if spec.name in _REGISTRY and not overwrite:
        raise ConfigurationError(
            f"A backbone named {spec.name!r} is already registered. Pass "
            "overwrite=True to replace it, or choose another name."
        )
    _REGISTRY[spec.name] = spec
    return spec


def list_backbones(pattern=None):
    """Names of the registered backbones, sorted.

    Example:

    >>> keras_transfer.list_backbones("resnet*")
    ['resnet50']

    Args:
        pattern: optional shell-style pattern (`fnmatch`), e.g.
            `"efficientnet*"`.
    """
    names = sorted(_REGISTRY)
    return fnmatch.filter(names, pattern) if pattern else names


def get_backbone(name):
    """Returns the `BackboneSpec` registered under `name`.

    Example:

    >>> keras_transfer.get_backbone("mobilenet_v2_050").default_input_size
    224

    Args:
        name: a registry name, or a `BackboneSpec` (returned as is).

    Raises:
        ConfigurationError: no backbone has that name; the message lists the
            closest names.
    """
    if isinstance(name, BackboneSpec):
        return name
    if isinstance(name, str) and name in _REGISTRY:
        return _REGISTRY[name]
    names = sorted(_REGISTRY)
    text = str(name)
    # Names extending what was typed (a family name) first, then look-alikes.
    close = [n for n in names if n.startswith(text)]
    close += [n for n in difflib.get_close_matches(text, names, n=5, cutoff=0.6) if n not in close]
    hint = f" Did you mean: {', '.join(close[:8])}?" if close else ""
    raise ConfigurationError(
        f"Unknown backbone: {name!r}.{hint} See keras_transfer.list_backbones() or "
        f"`keras-transfer backbones` for the {len(names)} registered names."
    )


def find_spec_for_model(model):
    """Recognises a backbone model built from a registered spec.

    The model's `.name` (as Keras names it) picks the candidates, e.g.
    `"mobilenetv2_0.50_96"` is MobileNetV2 with alpha 0.5; the spec's blocks
    must then match the model's layers. A renamed model is recognised by its
    parameter count and blocks instead.

    Example:

    ```python
    backbone = keras.applications.MobileNetV2(
        alpha=0.5, include_top=False, weights=None, input_shape=(96, 96, 3))
    keras_transfer.backbones.find_spec_for_model(backbone).name
    # 'mobilenet_v2_050'
    ```

    Returns:
        The `BackboneSpec`, or None if no registered spec fits.
    """
    specs = [_REGISTRY[n] for n in sorted(_REGISTRY)]
    name = getattr(model, "name", "")
    for spec in specs:
        if spec.model_name_pattern and re.fullmatch(spec.model_name_pattern, name):
            if spec.matches(model):
                return spec
    try:
        count = model.count_params()
    except ValueError:  # an unbuilt model
        return None
    for spec in specs:
        if spec.params and spec.params == count and spec.matches(model):
            return spec
    return None


# ---------------------------------------------------------------------------
# Built-in backbones (keras.applications).
#
# `params` were measured once with `count_params()` on the model built with
# include_top=False, weights=None (the count does not depend on input size);
# tests/test_backbones.py checks them.

def find_backbone(model):
    """Finds the registered backbone nested in a model.

    Example:

    ```python
    model = keras_transfer.build_classifier("mobilenet_v2_050", 5, weights=None)
    backbone, spec = keras_transfer.backbones.find_backbone(model)
    backbone.name, spec.name   # ('mobilenetv2_0.50_224', 'mobilenet_v2_050')
    ```

    Args:
        model: a model made by `build_classifier` (or any model with a
            `keras.applications` backbone of a registered spec among its
            layers), or such a backbone itself.

    Returns:
        `(backbone_model, spec)`.

    Raises:
        ConfigurationError: no layer of `model` is a registered backbone.
    """
    candidates = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    # build_classifier names the model after its spec; that spec wins when
    # several registered specs describe the same architecture.
    hinted = model.name[: -len("_classifier")] if model.name.endswith("_classifier") else None
    if hinted in list_backbones():
        spec = get_backbone(hinted)
        for layer in candidates:
            if spec.matches(layer):
                return layer, spec
    for layer in candidates + [model]:
        spec = find_spec_for_model(layer)
        if spec is not None:
            return layer, spec
    nested = ", ".join(repr(layer.name) for layer in candidates) or "none"
    raise ConfigurationError(
        f"Could not find a registered backbone in model {model.name!r} (nested "
        f"models: {nested}). Build the model with keras_transfer.build_classifier, "
        "register a BackboneSpec that describes your backbone "
        "(keras_transfer.register_backbone), or pass the backbone explicitly, "
        "e.g. backbone=model.get_layer('<name>') together with its spec."
    )


_KERAS_WEIGHTS = "https://storage.googleapis.com/tensorflow/keras-applications/"


def _mobilenet_v2_blocks():
    return (
        (Block("stem", r"Conv1(?:_|$)|bn_Conv1$|expanded_conv_"),)
        + tuple(Block(f"block_{i}", rf"block_{i}_") for i in range(1, 17))
        + (Block("Conv_1", r"Conv_1(?:_|$)|out_relu$"),)
    )


_MOBILENET_V2_PARAMS = {
    0.35: 410208,
    0.5: 706224,
    0.75: 1382064,
    1.0: 2257984,
    1.3: 3766048,
    1.4: 4363712,
}

for _alpha, _params in _MOBILENET_V2_PARAMS.items():
    register_backbone(
        BackboneSpec(
            name="mobilenet_v2" if _alpha == 1.0 else f"mobilenet_v2_{round(_alpha * 100):03d}",
            family="mobilenet_v2",
            constructor="keras.applications.MobileNetV2",
            constructor_kwargs={"alpha": _alpha},
            default_input_size=224,
            min_input_size=32,
            preprocessing="tf",
            blocks=_mobilenet_v2_blocks(),
            params=_params,
            weights_source=_KERAS_WEIGHTS + "mobilenet_v2/",
            weights_file=(
                f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(_alpha)}"
                "_{rows}_no_top.h5"
            ),
            license="Apache-2.0",
            model_name_pattern=rf"mobilenetv2_{_alpha:0.2f}_\d+".replace(".", r"\."),
            weights_input_sizes=(96, 128, 160, 192, 224),
        )
    )


def _mobilenet_v1_blocks():
    return (Block("conv1", r"conv1(?:_|$)"),) + tuple(
        Block(f"block_{i}", rf"conv_(?:pad|dw|pw)_{i}(?:_|$)") for i in range(1, 14)
    )


# Keras spells alpha in MobileNet v1 file names as "2_5", "5_0", "1_0".
_MOBILENET_V1 = {0.25: ("2_5", 218544), 0.5: ("5_0", 829536), 1.0: ("1_0", 3228864)}

for _alpha, (_text, _params) in _MOBILENET_V1.items():
    register_backbone(
        BackboneSpec(
            name=f"mobilenet_v1_{round(_alpha * 100):03d}",
            family="mobilenet_v1",
            constructor="keras.applications.MobileNet",
            constructor_kwargs={"alpha": _alpha},
            default_input_size=224,
            min_input_size=32,
            preprocessing="tf",
            blocks=_mobilenet_v1_blocks(),
            params=_params,
            weights_source=_KERAS_WEIGHTS + "mobilenet/",
            weights_file=f"mobilenet_{_text}" + "_{rows}_tf_no_top.h5",
            license="Apache-2.0",
            model_name_pattern=rf"mobilenet_{_alpha:0.2f}_\d+".replace(".", r"\."),
            weights_input_sizes=(128, 160, 192, 224),
        )
    )

register_backbone(
    BackboneSpec(
        name="resnet50",
        family="resnet",
        constructor="keras.applications.ResNet50",
        default_input_size=224,
        min_input_size=32,
        preprocessing="caffe",
        blocks=(Block("conv1", r"conv1_|pool1_"),)
        + tuple(
            Block(f"conv{stage}_block{i}", rf"conv{stage}_block{i}_")
            for stage, repeats in ((2, 3), (3, 4), (4, 6), (5, 3))
            for i in range(1, repeats + 1)
        ),
        params=23587712,
        weights_source=_KERAS_WEIGHTS + "resnet/",
        weights_file="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        # Kaiming He's original Caffe weights (MIT), converted by Keras.
        license="MIT",
        model_name_pattern=r"resnet50",
    )
)

# keras.applications.efficientnet: repeats of the 7 stages in
# DEFAULT_BLOCKS_ARGS, scaled per variant by ceil(depth_coefficient * repeats)
# exactly as the Keras constructor does. Blocks are named like its layers
# ("block2b"), lettered per repeat.
_EFFICIENTNET_REPEATS = (1, 2, 2, 3, 3, 4, 1)
_EFFICIENTNET = {
    # variant: (depth_coefficient, default_size, params)
    0: (1.0, 224, 4049571),
    1: (1.1, 240, 6575239),
    2: (1.2, 260, 7768569),
    3: (1.4, 300, 10783535),
    4: (1.8, 380, 17673823),
    5: (2.2, 456, 28513527),
    6: (2.6, 528, 40960143),
    7: (3.1, 600, 64097687),
}


def _efficientnet_blocks(depth_coefficient):
    blocks = [Block("stem", r"rescaling|normalization|stem_")]
    for stage, repeats in enumerate(_EFFICIENTNET_REPEATS, start=1):
        for j in range(int(math.ceil(depth_coefficient * repeats))):
            name = f"block{stage}{chr(ord('a') + j)}"
            blocks.append(Block(name, name + "_"))
    blocks.append(Block("top", r"top_"))
    return tuple(blocks)


for _variant, (_depth, _size, _params) in _EFFICIENTNET.items():
    register_backbone(
        BackboneSpec(
            name=f"efficientnet_b{_variant}",
            family="efficientnet",
            constructor=f"keras.applications.EfficientNetB{_variant}",
            default_input_size=_size,
            min_input_size=32,
            # The model rescales and normalises [0, 255] pixels itself.
            preprocessing="none",
            blocks=_efficientnet_blocks(_depth),
            params=_params,
            weights_source="https://storage.googleapis.com/keras-applications/",
            weights_file=f"efficientnetb{_variant}_notop.h5",
            license="Apache-2.0",
            model_name_pattern=f"efficientnetb{_variant}",
        )
    )
