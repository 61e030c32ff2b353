"""`build_classifier`: a pretrained backbone with a new head, as one Keras model.

The model is a plain functional `keras.Model`:

    image -> BackbonePreprocessing -> backbone (frozen, inference mode) -> ClassifierHead

The backbone is the `keras.applications` model itself, nested under the name
Keras gives it, so `find_backbone` (and the callbacks that use it) can find it
and the registry can tell which backbone it is.

BatchNormalization: the backbone is called with `training=False`, as the Keras
transfer-learning guide does, but Keras 3 replaces that flag with the outer
one when the whole model runs with `training=True` (as `fit` does; see
keras-team/keras#20285). What keeps a BatchNormalization layer on its ImageNet
statistics during `fit` is `trainable=False` on that layer: a frozen backbone
is safe, and fine-tuning should unfreeze the other layers of a block and leave
its BatchNormalization layers frozen.
"""

import keras

from keras_transfer import backbones as backbones_lib
from keras_transfer.errors import ConfigurationError
from keras_transfer.layers import BackbonePreprocessing
from keras_transfer.layers import ClassifierHead

_HEAD_ARGS = ("hidden_units", "pooling", "dropout")


def build_classifier(
    backbone,
    num_classes,
    input_shape=None,
    weights="imagenet",
    dropout=0.2,
    head=None,
    name=None,
):
    """Builds an image classifier from a registered backbone.

    The backbone starts frozen (`trainable=False`); compile and fit to train
    the head, then unfreeze blocks (e.g. with `ProgressiveUnfreeze`) to
    fine-tune. The model takes raw RGB pixels in [0, 255] and outputs float32
    class probabilities, and it saves to and loads from a `.keras` file with
    the default `safe_mode=True` once `keras_transfer` is imported.

    Example:

    ```python
    model = keras_transfer.build_classifier(
        "mobilenet_v2_050", num_classes=5, input_shape=(128, 128, 3))
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(train_ds, validation_data=val_ds, epochs=5)
    ```

    Args:
        backbone: a registered backbone name (see `list_backbones()`) or a
            `BackboneSpec`.
        num_classes: number of classes, at least 2.
        input_shape: `(height, width, 3)`; None for the backbone's default
            (e.g. `(224, 224, 3)`). Height and width must be at least the
            backbone's `min_input_size` and may differ.
        weights: `"imagenet"` (default; from the Keras cache, downloaded if
            possible), None for random initialisation, or the path to a
            weights file for this backbone.
        dropout: dropout rate of the head. Defaults to 0.2.
        head: None, or a dict of further `ClassifierHead` arguments, e.g.
            `{"hidden_units": 256, "pooling": "max"}`.
        name: the model's name; defaults to `"<backbone>_classifier"`.

    Returns:
        A functional `keras.Model` with input `"image"`, layers
        `"preprocessing"`, the backbone, and `"head"`.

    Raises:
        ConfigurationError: unknown backbone, bad input shape, fewer than two
            classes, or unknown head arguments.
        WeightsError: the weights cannot be found or do not fit.
    """
    spec = backbones_lib.get_backbone(backbone)
    # Pretrained or not, the model always takes RGB: the data loader converts
    # grayscale and RGBA images, so a mismatch here is a configuration slip.
    shape = spec.check_input_shape(input_shape)
    head_kwargs = _head_kwargs(head, dropout)
    # Validate the head before the (possibly slow) backbone build.
    classifier_head = ClassifierHead(num_classes, name="head", **head_kwargs)

    features = spec.build(input_shape=shape, weights=weights)
    features.trainable = False

    inputs = keras.Input(shape=shape, name="image")
    x = BackbonePreprocessing(spec.preprocessing, name="preprocessing")(inputs)
    x = features(x, training=False)
    outputs = classifier_head(x)
    return keras.Model(inputs, outputs, name=name or f"{spec.name}_classifier")


def _head_kwargs(head, dropout):
    if head is None:
        head = {}
    if not isinstance(head, dict):
        raise ConfigurationError(
            f"head must be None or a dict of ClassifierHead arguments, e.g. "
            f"{{'hidden_units': 256}}. Received: head={head!r}"
        )
    unknown = sorted(set(head) - set(_HEAD_ARGS))
    if unknown:
        raise ConfigurationError(
            f"Unknown head argument(s) {unknown}. Expected any of {list(_HEAD_ARGS)}."
        )
    return {"dropout": dropout, **head}


def find_backbone(model):
    """Finds the registered backbone nested in a model.

    Example:

    ```python
    model = keras_transfer.build_classifier("mobilenet_v2_050", 5, weights=None)
    backbone, spec = keras_transfer.models.find_backbone(model)
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
    if hinted in backbones_lib.list_backbones():
        spec = backbones_lib.get_backbone(hinted)
        for layer in candidates:
            if spec.matches(layer):
                return layer, spec
    for layer in candidates + [model]:
        spec = backbones_lib.find_spec_for_model(layer)
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
