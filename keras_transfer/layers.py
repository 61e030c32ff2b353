"""The layers around a pretrained backbone, made of Keras' own layers.

`build_classifier` makes a model

    image -> backbone_preprocessing -> backbone -> global_pooling -> classifier_head

where the preprocessing and the head are `keras.Sequential` models of Keras
built-in layers and the pooling is one: a saved model is plain Keras, and
`keras.models.load_model` loads it without this package, with
`safe_mode=True`. The pooling sits between the backbone and the head, not
inside the head, so that the frozen-feature cache stores pooled features in
the head-only phase by its general rule (a frozen layer without weights is
cached through).

What the layers do not hold, the model does: the class names and how the
training images met the input size (`TransferClassifier.class_names`,
`.resize`; `class_names_of(model)` and `resize_of(model)` read them), saved
in the file's `keras_transfer.json` entry (`keras_transfer.portable`).

`BackbonePreprocessing` and `ClassifierHead`, the layer classes of earlier
releases, live in `keras_transfer.legacy_layers`, for the files that hold
them; they run the layers built here.
"""

import keras
import numpy as np

from keras_transfer import defaults
from keras_transfer.backbones import PREPROCESSING_MODES
from keras_transfer.errors import ConfigurationError
from keras_transfer.utils.checks import check_int
from keras_transfer.utils.checks import is_int


# ImageNet channel statistics used by keras.applications.imagenet_utils.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)

# Each mode as `x * scale + offset` per RGB channel, in float32, the
# arithmetic of `keras.layers.Rescaling`. "caffe" then reverses the channels.
RESCALING = {
    "tf": (1 / 127.5, -1.0),
    "caffe": (1.0, [-m for m in reversed(_CAFFE_MEAN_BGR)]),
    "torch": (
        [1 / (255 * s) for s in _TORCH_STD],
        [-m / s for m, s in zip(_TORCH_MEAN, _TORCH_STD)],
    ),
    "none": (1.0, 0.0),
}

POOLINGS = ("avg", "max")


def backbone_preprocessing(mode, input_shape=(None, None, 3), name="preprocessing"):
    """Scales raw RGB pixels in [0, 255] the way a backbone's weights expect.

    The arithmetic of `keras.applications.<model>.preprocess_input`, as a
    `keras.Sequential` of built-in layers: a float32 `Rescaling` (scale and
    offset per channel), then for `"caffe"` a frozen `Dense(3)` whose kernel
    reverses the channels (each output is one input times 1.0: exact), and,
    under a mixed-precision global dtype policy, an `Identity` layer of that
    policy that casts the result to its compute dtype. The scaling runs in
    float32 whatever the input dtype (`uint8` images are fine; float32 ones
    are not rounded to float16 first).

    Modes:
    - `"tf"`: `x / 127.5 - 1`, to [-1, 1] (MobileNet v1/v2).
    - `"caffe"`: RGB to BGR, then the ImageNet BGR mean is subtracted
      (ResNet50).
    - `"torch"`: `x / 255`, then normalised by the ImageNet mean and standard
      deviation per channel.
    - `"none"`: no change (EfficientNet rescales inside).

    Example:

    >>> layer = keras_transfer.layers.backbone_preprocessing("tf")
    >>> layer(np.array([[[[0.0, 127.5, 255.0]]]])).numpy()
    array([[[[-1.,  0.,  1.]]]], dtype=float32)

    Args:
        mode: one of `"tf"`, `"caffe"`, `"torch"`, `"none"`; usually a
            backbone's `BackboneSpec.preprocessing`.
        input_shape: `(height, width, 3)`; None for sizes left open.
        name: the model's name.

    Returns:
        A `keras.Sequential` taking float32 (or integer) images.
    """
    scale, offset = rescaling_of(mode)
    layers = [
        keras.Input(shape=input_shape, dtype="float32", name="pixels"),
        keras.layers.Rescaling(scale, offset, dtype="float32", name="rescaling"),
    ]
    if mode == "caffe":
        reverse = keras.layers.Dense(
            3, use_bias=False, trainable=False, dtype="float32", name="rgb_to_bgr"
        )
        reverse.build((None, 3))
        reverse.set_weights([np.eye(3, dtype="float32")[::-1]])
        layers.append(reverse)
    policy = keras.config.dtype_policy()
    if policy.compute_dtype != "float32":
        # A backbone fed float32 computes otherwise than on its own dtype
        # (measured: 3e-5 on DenseNet121's outputs under mixed_float16).
        layers.append(keras.layers.Identity(dtype=policy.name, name="cast"))
    return keras.Sequential(layers, name=name)


def global_pooling(pooling="avg", name="pool"):
    """The global pooling between a backbone's feature maps and the head.

    Example:

    >>> keras_transfer.layers.global_pooling("max").__class__.__name__
    'GlobalMaxPooling2D'

    Args:
        pooling: `"avg"` (default) or `"max"`.
        name: the layer's name.
    """
    if pooling not in POOLINGS:
        raise ConfigurationError(
            f"Unrecognized value for pooling: {pooling!r}. Expected 'avg' or 'max'."
        )
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name=name)
    return keras.layers.GlobalMaxPooling2D(name=name)


def classifier_head(num_classes, dropout=defaults.HEAD_DROPOUT, hidden_units=0, name="head"):
    """A classification head for pooled backbone features.

    Dropout, an optional hidden ReLU layer (with its own dropout), then a
    softmax `Dense` layer that always runs in float32, so a model trained
    with `"mixed_float16"` still outputs float32 probabilities (what the
    losses need for numerical stability).

    Examples:
        >>> head = keras_transfer.layers.classifier_head(2, hidden_units=8)
        >>> head(np.zeros((4, 1280))).shape
        TensorShape([4, 2])
        >>> [layer.name for layer in head.layers]
        ['dropout', 'hidden', 'hidden_dropout', 'predictions']

    Args:
        num_classes: number of classes, at least 2.
        dropout: dropout rate before each Dense layer, in [0, 1). 0 disables
            it. Defaults to 0.2.
        hidden_units: width of an optional hidden ReLU layer; 0 (default) for
            none.
        name: the model's name.

    Returns:
        A `keras.Sequential` from `(batch, features)` to `(batch, num_classes)`.
    """
    return keras.Sequential(head_layers(num_classes, dropout, hidden_units), name=name)


def head_layers(num_classes, dropout=defaults.HEAD_DROPOUT, hidden_units=0):
    """The new layers of `classifier_head`, in order; checks the arguments."""
    num_classes = check_int(
        num_classes,
        "num_classes",
        minimum=2,
        hint="A classifier needs at least two classes (two folders of images).",
    )
    if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ConfigurationError(f"dropout must be in [0, 1). Received: dropout={dropout!r}")
    if not is_int(hidden_units) or hidden_units < 0:
        raise ConfigurationError(
            f"hidden_units must be an integer >= 0 (0 for no hidden layer). "
            f"Received: hidden_units={hidden_units!r}"
        )
    layers = [keras.layers.Dropout(float(dropout), name="dropout")] if dropout else []
    if hidden_units:
        layers.append(keras.layers.Dense(int(hidden_units), activation="relu", name="hidden"))
        if dropout:
            layers.append(keras.layers.Dropout(float(dropout), name="hidden_dropout"))
    layers.append(
        keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")
    )
    return layers


def check_class_names(class_names, num_classes):
    """`class_names` as a tuple of strings, or None; raises naming what is wrong.

    Example:

    >>> check_class_names(["cats", "dogs"], 2)
    ('cats', 'dogs')

    Args:
        class_names: None, or a list of `num_classes` distinct strings.
        num_classes: the number of outputs they name.
    """
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


def class_names_of(model):
    """The class names `model` stores, or None.

    Read from the model (`TransferClassifier.class_names`), or from the
    `ClassifierHead` of a model of an earlier release. None for a model
    built without class names, and for any other model.

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
    names = stored_metadata(model, "class_names")
    return None if names is None else list(names)


def resize_of(model):
    """How `model`'s training images were fitted to its input: `"stretch"`, `"crop"` or `"pad"`.

    Read from the model (`TransferClassifier.resize`), or from the
    `ClassifierHead` of a model of an earlier release; `"stretch"` for a
    model that stores no choice (saved before the choice existed, when
    images were always stretched, or built without `resize`).

    Example:

    ```python
    model = keras_transfer.build_classifier(
        "mobilenet_v2_035", 2, weights=None, resize="crop")
    resize_of(model)  # 'crop'
    ```

    Args:
        model: a Keras model.
    """
    resize = stored_metadata(model, "resize")
    return defaults.LEGACY_RESIZE if resize is None else resize


def stored_metadata(model, attribute):
    """The metadata `attribute` (`"class_names"`, `"resize"`) of `model`, or of a model or old head inside it."""
    if getattr(model, "stores_metadata", False):
        value = getattr(model, attribute, None)
        if value is not None:
            return value
    for layer in getattr(model, "layers", ()):
        if getattr(layer, "stores_metadata", False) or isinstance(layer, keras.Model):
            value = stored_metadata(layer, attribute)
            if value is not None:
                return value
    return None


def rescaling_of(mode):
    if mode not in PREPROCESSING_MODES:
        raise ConfigurationError(
            f"Unrecognized value for mode: {mode!r}. Expected one of {PREPROCESSING_MODES}."
        )
    return RESCALING[mode]
