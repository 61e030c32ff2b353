"""Layers that sit around a pretrained backbone: input scaling and the head.

`BackbonePreprocessing` turns raw [0, 255] RGB pixels into what a backbone's
weights were trained on, inside the model, so that a saved model takes raw
images. `ClassifierHead` is the new, trainable classifier on top of the
backbone's feature maps. Both are registered for serialization and contain no
`Lambda` layer, so a saved model loads with `safe_mode=True`. Each also says
which Keras built-in layers compute exactly what it computes
(`builtin_layers`): `keras_transfer.portable` saves models with those, so
that plain Keras loads them without this package.

The head also carries the class names (`class_names_of(model)` reads them),
so that a saved model says what its outputs mean, and how its training
images met its input size (`resize_of(model)`: stretched, cropped or
padded), so that prediction resizes as training did.
"""

import keras
import numpy as np
from keras import ops

from keras_transfer import defaults
from keras_transfer.backbones import PREPROCESSING_MODES
from keras_transfer.data.images import check_resize
from keras_transfer.errors import ConfigurationError
from keras_transfer.utils.checks import check_int
from keras_transfer.utils.checks import is_int


# ImageNet channel statistics used by keras.applications.imagenet_utils.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)

# Each mode as `x * scale + offset` per RGB channel, in float32, the
# arithmetic of `keras.layers.Rescaling`: the layer and its built-in
# equivalent give the same bits. "caffe" then reverses the channels.
_RESCALING = {
    "tf": (1 / 127.5, -1.0),
    "caffe": (1.0, [-m for m in reversed(_CAFFE_MEAN_BGR)]),
    "torch": (
        [1 / (255 * s) for s in _TORCH_STD],
        [-m / s for m, s in zip(_TORCH_MEAN, _TORCH_STD)],
    ),
    "none": (1.0, 0.0),
}


@keras.saving.register_keras_serializable(package="keras_transfer")
class BackbonePreprocessing(keras.layers.Layer):
    """Scales raw RGB pixels in [0, 255] the way a backbone's weights expect.

    The same arithmetic as `keras.applications.<model>.preprocess_input`, as a
    layer of the model. The computation runs in float32 whatever the input
    dtype (`uint8` images are fine; float32 ones are not rounded to a
    mixed-precision dtype first); the result is cast to the layer's compute
    dtype, so under a `"mixed_float16"` policy the backbone receives float16.

    Modes:
    - `"tf"`: `x / 127.5 - 1`, to [-1, 1] (MobileNet v1/v2).
    - `"caffe"`: RGB to BGR, then the ImageNet BGR mean is subtracted
      (ResNet50).
    - `"torch"`: `x / 255`, then normalised by the ImageNet mean and standard
      deviation per channel.
    - `"none"`: no change besides the cast (EfficientNet rescales inside).

    Each mode is computed as `x * scale + offset` per channel (then, for
    `"caffe"`, the channels reversed), exactly as `builtin_layers()` computes
    it with `keras.layers.Rescaling` (and a constant `Dense` permutation).

    Example:

    >>> layer = keras_transfer.BackbonePreprocessing("tf")
    >>> layer(np.array([[[[0.0, 127.5, 255.0]]]])).numpy()
    array([[[[-1.,  0.,  1.]]]], dtype=float32)

    Args:
        mode: one of `"tf"`, `"caffe"`, `"torch"`, `"none"`; usually a
            backbone's `BackboneSpec.preprocessing`.
        **kwargs: base layer keyword arguments, e.g. `name`, `dtype`.
    """

    def __init__(self, mode, **kwargs):
        # Keras would cast float32 pixels to a mixed-precision compute dtype
        # before `call`: resized images are not integers, and float16 rounds
        # them before the scaling that `call` does in float32.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if mode not in PREPROCESSING_MODES:
            raise ConfigurationError(
                f"Unrecognized value for mode: {mode!r}. Expected one of {PREPROCESSING_MODES}."
            )
        self.mode = mode
        self.supports_masking = True

    def call(self, inputs):
        scale, offset = _RESCALING[self.mode]
        x = ops.cast(inputs, "float32") * ops.cast(scale, "float32")
        x = x + ops.cast(offset, "float32")
        if self.mode == "caffe":
            x = ops.flip(x, axis=-1)
        return ops.cast(x, self.compute_dtype)

    def builtin_layers(self):
        """New Keras built-in layers that compute what this layer computes.

        A float32 `Rescaling` (scale and offset per channel), followed for
        `"caffe"` by a frozen `Dense(3)` whose kernel reverses the channels
        (each output is one input times 1.0 plus zeros: exact), and, when
        this layer's compute dtype is not float32 (mixed precision), an
        `Identity` layer of this layer's dtype policy that casts the result
        to it, as `call` does.

        Examples:
            >>> [type(layer).__name__ for layer in BackbonePreprocessing("caffe").builtin_layers()]
            ['Rescaling', 'Dense']

        Returns:
            A list of new layers, to run in order.
        """
        scale, offset = _RESCALING[self.mode]
        layers = [keras.layers.Rescaling(scale, offset, dtype="float32", name="rescaling")]
        if self.mode == "caffe":
            reverse = keras.layers.Dense(
                3, use_bias=False, trainable=False, dtype="float32", name="rgb_to_bgr"
            )
            reverse.build((None, 3))
            reverse.set_weights([np.eye(3, dtype="float32")[::-1]])
            layers.append(reverse)
        if self.compute_dtype != "float32":
            # A backbone fed float32 computes otherwise than on the float16
            # this layer hands it (measured: 3e-5 on DenseNet121's outputs).
            layers.append(keras.layers.Identity(dtype=self.dtype_policy.name, name="cast"))
        return layers

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode})
        return config


@keras.saving.register_keras_serializable(package="keras_transfer")
class ClassifierHead(keras.layers.Layer):
    """A classification head for backbone feature maps.

    Global pooling, dropout, an optional hidden ReLU layer (with its own
    dropout), then a softmax `Dense` layer. The softmax layer always runs in
    float32, so a model trained with `"mixed_float16"` still outputs float32
    probabilities (what the losses need for numerical stability).

    The head keeps the names of the classes its outputs stand for, if given:
    they are saved with the model, so `keras-transfer predict` and
    `evaluate` can name the classes of a model file.

    Example:

    >>> head = keras_transfer.ClassifierHead(2, class_names=["cats", "dogs"])
    >>> head(np.zeros((2, 7, 7, 1280))).shape
    (2, 2)
    >>> head.class_names
    ['cats', 'dogs']

    Args:
        num_classes: number of classes, at least 2.
        dropout: dropout rate before each Dense layer, in [0, 1). 0 disables
            it. Defaults to 0.2.
        hidden_units: width of an optional hidden ReLU layer; 0 (default) for
            none.
        pooling: `"avg"` (default) or `"max"` global pooling of the
            `(batch, height, width, channels)` input. Inputs that are
            already `(batch, features)` are used as they are.
        class_names: None (default), or a list of `num_classes` distinct
            strings: the name of each output, in output order (for an image
            folder, its sorted class subfolder names).
        resize: None (default), or how the training images were fitted to
            the input size: `"stretch"`, `"crop"` or `"pad"` (see
            `keras_transfer.data.decode_image_file`). Saved with the model,
            so that `predict` and `evaluate` resize the same way.
        **kwargs: base layer keyword arguments, e.g. `name`.
    """

    def __init__(
        self,
        num_classes,
        dropout=defaults.HEAD_DROPOUT,
        hidden_units=0,
        pooling="avg",
        class_names=None,
        resize=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.resize = None if resize is None else check_resize(resize)
        num_classes = check_int(
            num_classes,
            "num_classes",
            minimum=2,
            hint="A classifier needs at least two classes (two folders of images).",
        )
        if not 0 <= dropout < 1:
            raise ConfigurationError(f"dropout must be in [0, 1). Received: dropout={dropout!r}")
        if not is_int(hidden_units) or hidden_units < 0:
            raise ConfigurationError(
                f"hidden_units must be an integer >= 0 (0 for no hidden layer). "
                f"Received: hidden_units={hidden_units!r}"
            )
        if pooling not in ("avg", "max"):
            raise ConfigurationError(
                f"Unrecognized value for pooling: {pooling!r}. Expected 'avg' or 'max'."
            )
        hidden_units = int(hidden_units)
        dropout = float(dropout)
        # A tuple: Keras would wrap a list attribute in a tracking list.
        self._class_names = _check_class_names(class_names, num_classes)
        self.num_classes = num_classes
        self.dropout = dropout
        self.hidden_units = hidden_units
        self.pooling = pooling

        if pooling == "avg":
            self.pool = keras.layers.GlobalAveragePooling2D(name="pool")
        else:
            self.pool = keras.layers.GlobalMaxPooling2D(name="pool")
        self.dropout_layer = keras.layers.Dropout(dropout, name="dropout") if dropout else None
        self.hidden = None
        self.hidden_dropout = None
        if hidden_units:
            self.hidden = keras.layers.Dense(hidden_units, activation="relu", name="hidden")
            if dropout:
                self.hidden_dropout = keras.layers.Dropout(dropout, name="hidden_dropout")
        self.classifier = keras.layers.Dense(
            num_classes, activation="softmax", dtype="float32", name="predictions"
        )

    def build(self, input_shape):
        # Sublayers are built here so that a saved model's weights can be
        # restored before the first call.
        shape = tuple(input_shape)
        features = (shape[0], shape[-1])
        if self.hidden is not None:
            self.hidden.build(features)
            features = (shape[0], self.hidden_units)
        self.classifier.build(features)

    def call(self, inputs, training=None):
        x = self.pool(inputs) if len(inputs.shape) == 4 else inputs
        if self.dropout_layer is not None:
            x = self.dropout_layer(x, training=training)
        if self.hidden is not None:
            x = self.hidden(x)
            if self.hidden_dropout is not None:
                x = self.hidden_dropout(x, training=training)
        return self.classifier(x)

    def builtin_layers(self, input_rank=4):
        """This head's Keras layers, in the order `call` runs them.

        The pooling, dropout, hidden and softmax layers themselves (not
        copies: they hold the head's weights). Chained in a
        `keras.Sequential`, they compute what the head computes.

        Examples:
            >>> [layer.name for layer in ClassifierHead(2, hidden_units=8).builtin_layers()]
            ['pool', 'dropout', 'hidden', 'hidden_dropout', 'predictions']

        Args:
            input_rank: 4 for `(batch, height, width, channels)` inputs
                (pooled first), 2 for `(batch, features)` (not pooled).
        """
        layers = [self.pool] if input_rank == 4 else []
        layers += [self.dropout_layer, self.hidden, self.hidden_dropout, self.classifier]
        return [layer for layer in layers if layer is not None]

    @property
    def class_names(self):
        """The name of each output as a list, or None when not given."""
        return None if self._class_names is None else list(self._class_names)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def compute_output_spec(self, inputs, training=None):
        return keras.KerasTensor((inputs.shape[0], self.num_classes), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "dropout": self.dropout,
                "hidden_units": self.hidden_units,
                "pooling": self.pooling,
                "class_names": self.class_names,
                "resize": self.resize,
            }
        )
        return config


def _check_class_names(class_names, num_classes):
    """`class_names` as a tuple of strings, or None; raises naming what is wrong."""
    if class_names is None:
        return None
    if isinstance(class_names, str) or not isinstance(class_names, (list, tuple)):
        raise ConfigurationError(
            "class_names must be None or a list of strings, one per class. "
            f"Received: class_names={class_names!r}"
        )
    names = list(class_names)
    bad = [name for name in names if not isinstance(name, str) or not name]
    if bad:
        raise ConfigurationError(
            f"class_names must be non-empty strings. Received: {bad[0]!r} in class_names={names!r}"
        )
    if len(names) != num_classes:
        raise ConfigurationError(
            f"class_names has {len(names)} names but num_classes={num_classes}: "
            f"give one name per class. Received: class_names={names!r}"
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigurationError(
            f"class_names must be distinct; repeated: {', '.join(map(repr, repeated))}."
        )
    return tuple(names)


def find_classifier_head(model):
    """The `ClassifierHead` of `model`, or None if it has none.

    Looks through the model's layers and those of nested models.

    Example:

    ```python
    model = keras_transfer.build_classifier("mobilenet_v2_035", 2, weights=None)
    find_classifier_head(model).num_classes  # 2
    ```

    Args:
        model: a Keras model.
    """
    for layer in getattr(model, "layers", ()):
        if isinstance(layer, ClassifierHead):
            return layer
        if isinstance(layer, keras.Model):
            head = find_classifier_head(layer)
            if head is not None:
                return head
    return None


def class_names_of(model):
    """The class names stored in `model`'s `ClassifierHead`, or None.

    None for a model without a head, and for one built without class names
    (as models saved before heads carried them were).

    Example:

    ```python
    model = keras_transfer.build_classifier(
        "mobilenet_v2_035", 2, weights=None, class_names=["cats", "dogs"])
    class_names_of(model)  # ['cats', 'dogs']
    ```

    Args:
        model: a Keras model.

    Returns:
        A list of strings, one per output, or None.
    """
    head = find_classifier_head(model)
    return None if head is None else head.class_names


def resize_of(model):
    """How `model`'s training images were fitted to its input: `"stretch"`, `"crop"` or `"pad"`.

    Read from its `ClassifierHead`; `"stretch"` for a model that stores no
    choice (saved before the choice existed, when images were always
    stretched, or built without `resize`).

    Example:

    ```python
    model = keras_transfer.build_classifier(
        "mobilenet_v2_035", 2, weights=None, resize="crop")
    resize_of(model)  # 'crop'
    ```

    Args:
        model: a Keras model.
    """
    head = find_classifier_head(model)
    resize = None if head is None else head.resize
    return defaults.LEGACY_RESIZE if resize is None else resize
