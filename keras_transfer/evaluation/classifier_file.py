"""Loading a saved classifier and checking it is one `predict`/`evaluate` can use.

A keras-transfer classifier takes `(batch, height, width, 3)` raw RGB pixels
and ends in a layer named `"head"` whose softmax gives one probability per
class; the model may carry the class names (`class_names_of`). Any other model (a
plain Keras model, one with a single output unit, a file that does not load)
is refused here with one line that says what the file is and what to pass.

Files are loaded with `keras_transfer.models.load_model`: a file written by
`keras-transfer train` holds Keras' own layers (plain Keras loads it) and the
class names beside them, and comes back as the keras-transfer model it was.
"""

import dataclasses
import os
import zipfile

import keras

from keras_transfer import defaults
from keras_transfer.errors import ConfigurationError
from keras_transfer.layers import class_names_of
from keras_transfer.layers import resize_of
from keras_transfer.models import load_model
from keras_transfer.utils.files import check_model_file


@dataclasses.dataclass(frozen=True)
class ClassifierInfo:
    """What `predict_images` and `evaluate` need to know about a classifier.

    Example:

    ```python
    info = check_classifier(model)
    info.image_size, info.num_classes, info.class_names
    # ((160, 160), 5, ['daisy', 'dandelion', 'roses', 'sunflowers', 'tulips'])
    ```

    Attributes:
        image_size: `(height, width)` of the model's input; images are
            resized to it as `load_image_folder` resizes training images.
        num_classes: the number of outputs.
        class_names: the name of each output, or None for a model saved
            without them.
        resize: how the training images met the input size, `"stretch"`,
            `"crop"` or `"pad"` (`"stretch"` for a model that does not say).
    """

    image_size: tuple
    num_classes: int
    class_names: object
    resize: str = defaults.LEGACY_RESIZE

    def label(self, index):
        """The name of class `index`, or the index as text without names."""
        return str(index) if self.class_names is None else self.class_names[index]


def check_classifier(model, source="the model"):
    """Checks that `model` is a keras-transfer classifier; returns its `ClassifierInfo`.

    Example:

    ```python
    model = keras_transfer.build_classifier(
        "mobilenet_v2_035", 2, input_shape=(64, 64, 3), weights=None)
    check_classifier(model).image_size  # (64, 64)
    ```

    Args:
        model: a Keras model.
        source: how to name the model in an error, e.g. its file.

    Raises:
        ConfigurationError: the model does not end in a `"head"` layer,
            or its input is not a fixed-size RGB image.
    """
    fix = (
        "Pass a model saved by 'keras-transfer train' or built with "
        "keras_transfer.build_classifier."
    )
    if not isinstance(model, keras.Model):
        raise ConfigurationError(f"{source} is not a Keras model. {fix}")
    inputs, outputs = list(model.inputs or ()), list(model.outputs or ())
    layers = getattr(model, "layers", None) or [None]
    num_classes = outputs[0].shape[-1] if len(outputs) == 1 else None
    if getattr(layers[-1], "name", None) != "head" or not num_classes or num_classes < 2:
        shapes = ", ".join(str(tuple(o.shape)) for o in outputs) or "none"
        raise ConfigurationError(
            f"{source} is not a keras-transfer classifier: it does not end in a "
            f"classification head (output shape {shapes}). {fix}"
        )
    shape = tuple(inputs[0].shape) if len(inputs) == 1 else ()
    if len(shape) != 4 or shape[3] != 3 or not all(shape[1:3]):
        raise ConfigurationError(
            f"{source} does not take fixed-size RGB images: its input shape is "
            f"{shape or 'not a single input'}, expected (None, height, width, 3). {fix}"
        )
    return ClassifierInfo(
        image_size=(int(shape[1]), int(shape[2])),
        num_classes=int(num_classes),
        class_names=class_names_of(model),
        resize=resize_of(model),
    )


def load_classifier(path):
    """Loads a `.keras` classifier file for inference; returns `(model, info)`.

    The model is loaded uncompiled (inference needs no optimizer) with
    Keras' default `safe_mode=True` by `keras_transfer.models.load_model`
    (its preprocessing, head and class names as they were saved), then
    checked with `check_classifier`.

    Example:

    ```python
    model, info = load_classifier("flowers.keras")
    info.class_names  # ['daisy', 'dandelion', 'roses', 'sunflowers', 'tulips']
    ```

    Args:
        path: the model file.

    Returns:
        `(model, ClassifierInfo)`.

    Raises:
        ConfigurationError: the file is missing, does not load, or is not a
            keras-transfer classifier.
    """
    path = os.fspath(path)
    check_model_file(path)
    if path.endswith(".keras") and not zipfile.is_zipfile(path):
        # Keras would say "File not found" of a file that is there.
        raise ConfigurationError(
            f"Cannot load {path} as a Keras model: it is not a .keras archive (a "
            "zip file). Pass a .keras file saved by 'keras-transfer train'."
        )
    try:
        model = load_model(path, compile=False)
    except ConfigurationError:
        raise  # Already one line about this file.
    except Exception as e:  # noqa: BLE001 - any failure means "not loadable".
        # Keras raises ValueError, TypeError, OSError or zipfile errors,
        # depending on what is wrong with the file.
        reason = " ".join(str(e).split())[:300] or type(e).__name__
        raise ConfigurationError(
            f"Cannot load {path} as a Keras model ({reason}). Pass a .keras file "
            "saved by 'keras-transfer train'."
        ) from None
    return model, check_classifier(model, source=path)
