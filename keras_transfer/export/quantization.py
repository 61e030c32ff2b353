"""Quantized LiteRT exports: the converter options, and the images they are calibrated and scored on.

The conversion is Keras' own (`Model.export(format="litert", **options)`,
which passes the options to TensorFlow's `TFLiteConverter`):

| `quantize` | converter options | weights | computation |
|---|---|---|---|
| `"float16"` | `optimizations=[DEFAULT]`, `supported_types=[float16]` | float16 | float32 (float16 on GPU delegates) |
| `"dynamic"` | `optimizations=[DEFAULT]` | int8 | int8 where a kernel has it, activations quantized on the fly |
| `"int8"` | `optimizations=[DEFAULT]`, `representative_dataset`, `supported_ops=[TFLITE_BUILTINS_INT8]` | int8 | int8 throughout |

Whatever the quantization, the file's input is raw RGB pixels in [0, 255]
as `float32` and its output `float32` probabilities: for int8, the
converter puts a quantize op after the input and a dequantize op before
the output (the contract of the float32 file is kept; the model's
`Rescaling` stays inside).

The images come from a folder of one subfolder per class, the model's
classes: the training folder (split as `train` split it: calibration on
the training part, scores on the validation part) or any folder passed
with `validation_split=0` (calibration on a sample of it, scores on all of
it). Each is decoded as in training: `keras_transfer.data.decode_image_file`
at the model's input size with its resize mode (`resize_of(model)`).
"""

import concurrent.futures
import dataclasses
import os

import numpy as np
import tensorflow as tf

from keras_transfer import defaults
from keras_transfer.data.folder import list_image_folder
from keras_transfer.data.folder import warn_left_out
from keras_transfer.data.images import decode_image_file
from keras_transfer.data.split import stratified_split
from keras_transfer.errors import ConfigurationError
from keras_transfer.errors import DataError
from keras_transfer.layers import class_names_of
from keras_transfer.layers import resize_of

QUANTIZATIONS = defaults.EXPORT_QUANTIZATIONS


@dataclasses.dataclass(frozen=True)
class QuantizationImages:
    """The images a quantized export is calibrated and scored on.

    Attributes:
        calibration: `(n, height, width, 3)` `float32` raw pixels, spread
            over the classes (the int8 converter's representative data).
        images: the held-out images the accuracy is measured on.
        labels: their class indices.
        source: where they come from, in words, for the report.
    """

    calibration: np.ndarray
    images: np.ndarray
    labels: np.ndarray
    source: str


def check_quantize(quantize, format):
    """Checks `quantize` (None or one of `QUANTIZATIONS`) against the export `format`.

    Example:

    ```python
    check_quantize("int8", "litert")  # 'int8'
    ```

    Raises:
        ConfigurationError: an unknown value, or a format other than litert.
    """
    if quantize is None:
        return None
    if quantize not in QUANTIZATIONS:
        raise ConfigurationError(
            f"Unrecognized quantize value: {quantize!r}. Expected one of "
            f"{', '.join(map(repr, QUANTIZATIONS))}, or None for float32."
        )
    if format != "litert":
        raise ConfigurationError(
            f"Quantization (--quantize {quantize}) is for the litert format; got "
            f"format {format!r}. Export with --format litert, or drop --quantize."
        )
    return quantize


def quantization_images(
    model, folder, validation_split=0.0, seed=defaults.SEED, limit=defaults.CALIBRATION_IMAGES
):
    """Loads the calibration and held-out images of a quantized export from `folder`.

    Example:

    ```python
    images = quantization_images(model, "flower_photos", validation_split=0.2, seed=1337)
    images.images.shape, images.source
    # ((500, 224, 224, 3), '500 validation images of flower_photos (split 0.2, seed 1337)')
    ```

    Args:
        model: the classifier; its input size, resize mode and class names.
        folder: a folder of one subfolder per class, the model's classes.
        validation_split: 0 scores on every image of `folder`; above 0,
            the folder is split as `load_image_folder` splits it (with
            `seed`), calibration on the training part, scores on the rest.
        seed: the seed of the split.
        limit: the most calibration images, taken evenly across the list.

    Raises:
        ConfigurationError: no folder given (the message names
            `--calibration-data`), or classes that differ from the model's.
        DataError: the folder cannot be used (see `scan_image_folder`).
    """
    if folder is None:
        raise ConfigurationError(
            "A quantized export needs images to calibrate and score it on, and "
            "none were found: pass a folder of one subfolder per class "
            "(--calibration-data DIR, or calibration_data= in Python), e.g. the "
            "training folder."
        )
    info = list_image_folder(folder)
    warn_left_out(info, stacklevel=3)
    _check_classes(model, info)
    calibration, held_out = stratified_split(info, validation_split, seed)
    if not held_out:
        held_out = calibration
        source = f"all {len(held_out)} images of {info.directory}"
    else:
        source = (
            f"{len(held_out)} validation images of {info.directory} "
            f"(split {validation_split:g}, seed {seed})"
        )
    spread = np.linspace(0, len(calibration) - 1, min(limit, len(calibration))).round()
    calibration = [calibration[int(i)][0] for i in np.unique(spread)]
    paths, labels = zip(*held_out)
    return QuantizationImages(
        calibration=_decode(model, calibration),
        images=_decode(model, paths),
        labels=np.asarray(labels, dtype="int64"),
        source=source,
    )


def _check_classes(model, info):
    expected = class_names_of(model)
    found = list(info.class_names)
    if expected is None:
        if len(found) != int(model.outputs[0].shape[-1]):
            raise DataError(
                f"{info.directory} has {len(found)} classes, the model "
                f"{model.outputs[0].shape[-1]}. Pass a folder of the model's classes."
            )
    elif list(expected) != found:
        raise DataError(
            f"The classes of {info.directory} are not the model's: the folder has "
            f"{found}, the model {list(expected)}. Pass a folder of the model's "
            "classes (the training folder, or one like it)."
        )


def _decode(model, paths):
    size = tuple(int(side) for side in model.inputs[0].shape[1:3])
    resize = resize_of(model)
    # Pillow releases the GIL while it decodes: threads keep the cores busy.
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        pixels = list(pool.map(lambda p: decode_image_file(p, size, resize), paths))
    return np.stack(pixels).astype("float32")


def converter_options(quantize, calibration=None):
    """The `Model.export(format="litert", ...)` options of a quantization.

    Example:

    ```python
    model.export("flowers.tflite", format="litert", **converter_options("float16"))
    ```

    Args:
        quantize: None (float32), or one of `QUANTIZATIONS`.
        calibration: for `"int8"`, the representative images, raw pixels.
    """
    if quantize is None:
        return {}
    options = {"optimizations": [tf.lite.Optimize.DEFAULT]}
    if quantize == "float16":
        options["target_spec"] = {"supported_types": [tf.float16]}
    elif quantize == "int8":

        def representative_dataset():
            for image in calibration:
                yield [image[np.newaxis]]

        options["representative_dataset"] = representative_dataset
        # Every op in int8, or the conversion fails: no silent float fallback.
        options["target_spec"] = {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]}
    return options
