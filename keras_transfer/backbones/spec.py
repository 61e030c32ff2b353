"""`BackboneSpec`: a pretrained backbone described as data.

A spec says everything keras-transfer needs to know about a backbone without
building it: which `keras.applications` constructor makes it, its input
size, the preprocessing its weights expect, where its ImageNet weights come
from, and how its layers group into blocks (stem to top), the units that
`ProgressiveUnfreeze` unfreezes one at a time. `BackboneSpec.build()` makes
the model (through `backbones.weights`); the registry (`registry.py`) names
the specs.
"""

import dataclasses
import importlib
import re

from keras_transfer.backbones import weights as weights_lib
from keras_transfer.backbones.blocks import UNMATCHED
from keras_transfer.backbones.blocks import Block
from keras_transfer.backbones.blocks import group_layers
from keras_transfer.errors import ConfigurationError

# The input scalings a spec may ask for; `layers.BackbonePreprocessing`
# implements each.
PREPROCESSING_MODES = ("tf", "caffe", "torch", "none")


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
        weights_download_file: the file's name on the download host when it
            differs from the name Keras caches it under (NASNet downloads
            `NASNet-mobile-no-top.h5` as `nasnet_mobile_no_top.h5`). Empty
            when they are the same.
        unmatched: where layers that match no block go: `"error"` (default;
            a layer with weights outside every block makes the model not
            match), `"previous"` or `"next"`: the block of the nearest
            matched layer before or after it in the model's layer order,
            for constructors that leave layers auto-named (`conv2d_7`), whose
            names depend on how many models the process has built. See
            `keras_transfer.backbones.blocks`.
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
    weights_download_file: str = ""
    unmatched: str = "error"

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
        blocks = tuple(b if isinstance(b, Block) else Block(*b) for b in (self.blocks or ()))
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
        if self.unmatched not in UNMATCHED:
            raise ConfigurationError(
                f"Unrecognized value for unmatched of backbone {self.name!r}: "
                f"{self.unmatched!r}. Expected one of {UNMATCHED}."
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

    def weights_url(self, input_shape=None):
        """Where the ImageNet weights for this input download from, or None.

        Examples:
            >>> keras_transfer.get_backbone("nasnet_mobile").weights_url().rsplit("/", 2)[1:]
            ['nasnet', 'NASNet-mobile-no-top.h5']
        """
        filename = self.weights_filename(input_shape)
        if filename is None:
            return None
        return self.weights_source + (self.weights_download_file or filename)

    def check_depth(self, depth, name="unfreeze_blocks"):
        """Raises `ConfigurationError` unless `depth` blocks fit in this backbone.

        Args:
            depth: how many blocks, counted from the top, would train.
            name: how the user gave it (`"--unfreeze-blocks"`, `"unfreeze_blocks"`).
        """
        if depth > len(self.blocks):
            raise ConfigurationError(
                f"{name} {depth} is more than the {len(self.blocks)} blocks of "
                f"backbone {self.name!r} ({self.block_names[0]} ... "
                f"{self.block_names[-1]}). Use at most {len(self.blocks)}."
            )

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
        return weights_lib.load_backbone(self, input_shape=input_shape, weights=weights)

    def block_layers(self, model):
        """Groups the layers of a built backbone by block.

        Args:
            model: a model built from this spec (e.g. by `build()`).

        Returns:
            A list of `(block_name, [layers])`, stem to top. Each layer goes to
            the first block whose pattern matches its name (or its path, for
            a layer nested in a container no block matches), together with
            the layers nested in it; every layer that holds weights belongs
            to exactly one block. See `keras_transfer.backbones.blocks`.

        Raises:
            ConfigurationError: a layer with weights matches no block, or a
                block matches no layer (the model is not this backbone).
        """
        groups, unmatched, empty = group_layers(model, self.blocks, self.unmatched)
        if unmatched or empty:
            problems = []
            if unmatched:
                problems.append(f"layers with weights outside every block: {_shorten(unmatched)}")
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
