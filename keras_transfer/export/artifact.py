"""`export_model`: a classifier as a SavedModel, a LiteRT file or an ONNX file, checked against Keras.

The export is Keras' own (`Model.export`, and for SavedModel its
`ExportArchive` with a class-naming `serving_default` signature, see
`serving`), and the model's preprocessing goes with it (a layer of the
model): the exported artifact takes raw RGB pixels in [0, 255], as the
Keras model does, whatever the quantization. The class names go with every
export (`labels`).

Every export is checked before it is kept: it is loaded with the runtime it
is meant for (TensorFlow's SavedModel loader, the LiteRT interpreter, ONNX
Runtime) and run. A float32 export runs on a few images and its outputs are
compared with `model.predict`: one that disagrees is deleted and the export
fails with one line, so a wrong model never reaches a device silently. A
quantized LiteRT file (`quantization`) is scored instead, on held-out
images: its accuracy and Keras' are written beside it (`scoring`), and a
drop beyond the tolerance is reported.

| format | file | converter | runtime that checks it | extra |
|---|---|---|---|---|
| `saved_model` | a folder | TensorFlow | `tf.saved_model.load` | none |
| `litert` | `.tflite` | TensorFlow's `TFLiteConverter` | `ai_edge_litert` (else `tf.lite`) | `litert` |
| `onnx` | `.onnx` (dynamic batch size) | `tf2onnx` | `onnxruntime` | `onnx` |
"""

import dataclasses
import importlib.util
import os
import shutil
import warnings

import numpy as np
import tensorflow as tf

from keras_transfer import defaults
from keras_transfer.errors import ConfigurationError
from keras_transfer.errors import KerasTransferError
from keras_transfer.export.labels import add_onnx_class_names
from keras_transfer.export.labels import export_class_names
from keras_transfer.export.labels import labels_path
from keras_transfer.export.labels import write_labels
from keras_transfer.export.quantization import check_quantize
from keras_transfer.export.quantization import converter_options
from keras_transfer.export.quantization import quantization_images
from keras_transfer.export.runtimes import RUNTIMES
from keras_transfer.export.scoring import ExportScore
from keras_transfer.export.scoring import score_export
from keras_transfer.export.scoring import write_score
from keras_transfer.export.serving import write_saved_model
from keras_transfer.export.tensor_names import drop_tensor_names

# Format name -> (Keras' name for it, suffix the path must have).
FORMATS = defaults.EXPORT_FORMATS

# Format -> (modules the export and its check import, the pip extra with them).
REQUIREMENTS = {
    "saved_model": ((), None),
    # Keras converts with TensorFlow's own TFLiteConverter; the check runs
    # the standalone LiteRT interpreter, or TensorFlow's when it is absent.
    "litert": ((), "litert"),
    "onnx": (("tf2onnx", "onnxruntime"), "onnx"),
}

# Largest difference allowed between an export's probabilities and Keras'.
FLOAT32_TOLERANCE = 1e-4
# float16 and bfloat16 keep about 3 significant digits; converters may
# compute some layers in float32 where Keras used 16 bits.
MIXED_PRECISION_TOLERANCE = 1e-2


class ExportCheckError(KerasTransferError, RuntimeError):
    """An exported model does not run in its runtime, or its outputs differ from Keras'."""


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What `export_model` wrote and how closely it matches the Keras model.

    Attributes:
        path: the absolute path of the artifact (a folder for `saved_model`).
        format: `"saved_model"`, `"litert"` or `"onnx"`.
        max_difference: the largest absolute difference between the
            artifact's outputs and `model.predict` on the check images
            (for a quantized export, on the held-out images).
        checked_images: how many images the check ran.
        labels: the labels file written with the export (one class name a line).
        quantize: None (float32), or the quantization of a LiteRT file.
        score: for a quantized export, its `ExportScore` (both accuracies on
            held-out images); None otherwise.
        score_file: the JSON file the score was written to, or None.
    """

    path: str
    format: str
    max_difference: float
    checked_images: int
    labels: str = None
    quantize: str = None
    score: ExportScore = None
    score_file: str = None


def export_model(
    model,
    path,
    format=defaults.EXPORT_FORMAT,
    images=None,
    tolerance=None,
    quantize=None,
    calibration_data=None,
    validation_split=0.0,
    seed=defaults.SEED,
    max_accuracy_drop=defaults.MAX_ACCURACY_DROP,
):
    """Exports `model` for inference without Keras, and checks the result.

    Example:

    ```python
    model = keras.saving.load_model("flowers.keras")
    result = keras_transfer.export_model(model, "flowers.tflite", format="litert")
    result.max_difference  # e.g. 3e-07: the .tflite file agrees with Keras
    result = keras_transfer.export_model(
        model, "flowers_int8.tflite", format="litert", quantize="int8",
        calibration_data="flower_photos", validation_split=0.2)
    result.score.summary()  # accuracy 90.40% against the Keras model's 90.80% ...
    ```

    Args:
        model: a Keras model with one image input of fixed height and width,
            e.g. one `build_classifier` made or `keras-transfer train` saved.
        path: where to write: a folder for `"saved_model"`, a `.tflite` file
            for `"litert"`, an `.onnx` file for `"onnx"`. An existing
            artifact there is replaced once the new one has passed its check.
            The class names go with it (see `keras_transfer.export.labels`).
        format: `"saved_model"` (default), `"litert"` or `"onnx"`.
        images: the images of the float32 check, a `(n, height, width, 3)`
            array of pixels in [0, 255]; None (default) checks 4 images of
            seeded random pixels. A quantized export is checked on its
            held-out images instead.
        tolerance: the largest absolute difference of outputs accepted; None
            (default) for 1e-4, or 1e-2 for a mixed-precision model.
        quantize: None (default: float32), or for `"litert"` one of
            `"float16"`, `"dynamic"`, `"int8"` (see
            `keras_transfer.export.quantization`).
        calibration_data: for a quantized export, a folder of one subfolder
            per class (the model's classes): int8 is calibrated on its
            images, and every quantization is scored on them.
        validation_split: above 0, `calibration_data` is split as
            `load_image_folder` splits it: calibration on the training part,
            scores on the validation part. 0 (default): scores on all of it.
        seed: the seed of that split (`defaults.SEED`, as `train`'s).
        max_accuracy_drop: the accuracy points a quantized export may lose
            against Keras; more is reported in `result.score` (the file is
            kept). Defaults to 1.5.

    Returns:
        An `ExportResult`.

    Raises:
        ConfigurationError: an unknown format or quantization, a
            quantization of a format other than litert, no
            `calibration_data` for a quantized export, a path of the wrong
            kind, or a converter or runtime that is not installed (the
            message names the pip extra that installs it).
        DataError: `calibration_data` cannot be used, or its classes are
            not the model's.
        ExportCheckError: the artifact does not run in its runtime (e.g. a
            mixed-precision model's LiteRT file needs TensorFlow's Flex ops),
            or a float32 export's outputs differ from the model's by more
            than `tolerance`; nothing is written.
    """
    check_format(format, path)
    quantize = check_quantize(quantize, format)
    if quantize and not max_accuracy_drop >= 0:
        raise ConfigurationError(
            f"max_accuracy_drop must be at least 0 (accuracy points); got {max_accuracy_drop!r}."
        )
    path = os.path.abspath(os.fspath(path))
    _check_target(path, format)
    images = _check_images(model, images)
    if quantize:
        held_out = quantization_images(model, calibration_data, validation_split, seed)
        images = held_out.images
    if tolerance is None:
        tolerance = FLOAT32_TOLERANCE
        if any(layer.compute_dtype != "float32" for layer in [model, *model.layers]):
            tolerance = MIXED_PRECISION_TOLERANCE

    folder, name = os.path.split(path)
    temporary = os.path.join(folder, f".{name}.{os.getpid()}.tmp{FORMATS[format][1]}")
    # Before the export too: Keras' ONNX exporter refuses a model that was
    # never called, as one fresh from `load_model` is.
    expected = model.predict(images, verbose=0)
    class_names = export_class_names(model)
    try:
        _write(model, temporary, format, class_names, quantize, held_out if quantize else None)
        actual = _run(model, temporary, format, images)
        difference = float(np.max(np.abs(np.asarray(actual, "float64") - expected)))
        score = None
        if quantize:
            score = score_export(
                expected, actual, held_out.labels, held_out.source, max_accuracy_drop
            )
        elif not difference <= tolerance:
            raise ExportCheckError(
                f"The {format} export of {model.name!r} disagrees with the Keras "
                f"model: outputs differ by up to {difference:.3g} (tolerance "
                f"{tolerance:g}) on {len(images)} images, so it was not saved. "
                "Export a float32 model, or try another format."
            )
        _replace(temporary, path)
    finally:
        _remove(temporary)
    labels = write_labels(labels_path(path, format), class_names)
    score_file = write_score(path, score, quantize) if score else None
    return ExportResult(path, format, difference, len(images), labels, quantize, score, score_file)


def _write(model, temporary, format, class_names, quantize, held_out):
    """Writes the artifact of `model` at `temporary`."""
    if format == "saved_model":
        write_saved_model(model, temporary, class_names)
        return
    options = converter_options(quantize, held_out.calibration if held_out else None)
    with warnings.catch_warnings():
        # Keras' tf2onnx patch for NumPy 2 touches np.object, which warns.
        warnings.filterwarnings("ignore", category=FutureWarning)
        model.export(temporary, format=FORMATS[format][0], verbose=False, **options)
    if format == "onnx":
        add_onnx_class_names(temporary, class_names)
    if format == "litert":
        # Before the check below: what is checked is the file that is kept.
        drop_tensor_names(temporary)


def _run(model, temporary, format, images):
    """The artifact's outputs on `images`; a one-line `ExportCheckError` if it does not run."""
    try:
        return RUNTIMES[format](temporary, images)
    except Exception as e:  # noqa: BLE001 - any failure: the export is unusable.
        # The first sentence: runtimes append paragraphs of advice.
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        reason = reason.split(". ")[0].rstrip(".")[:200]
        raise ExportCheckError(
            f"The {format} export of {model.name!r} does not run in its "
            f"runtime ({reason}), so it was not saved. Export a float32 "
            "model, or try another format."
        ) from None


def check_format(format, path=None):
    """Checks that `format` is known and can be exported here; returns Keras' name and suffix.

    Cheap: run it before anything slow (loading a model) to fail early.

    Example:

    ```python
    check_format("onnx", "flowers.onnx")  # ('onnx', '.onnx'), or raises
    ```

    Raises:
        ConfigurationError: unknown format, a `path` without the format's
            suffix, or a converter or runtime that is not installed; the
            message names the pip extra to install.
    """
    if format not in FORMATS:
        raise ConfigurationError(
            f"Unrecognized export format: {format!r}. Expected one of {tuple(FORMATS)}."
        )
    keras_format, suffix = FORMATS[format]
    if path is not None and suffix and not os.fspath(path).endswith(suffix):
        raise ConfigurationError(
            f"The {format} format writes a {suffix} file; got {os.fspath(path)!r}. "
            f"Name the output <name>{suffix}."
        )
    modules, extra = REQUIREMENTS[format]
    if format == "litert" and not hasattr(tf, "lite"):
        modules = ("ai_edge_litert",)
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigurationError(
            f"Exporting to {format} needs {' and '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed: "
            f"pip install keras-transfer[{extra}]"
        )
    return keras_format, suffix


def _check_target(path, format):
    if not os.path.isdir(os.path.dirname(path)):
        raise ConfigurationError(
            f"Cannot export to {path}: the folder {os.path.dirname(path)} does not exist."
        )
    if format == "saved_model":
        # Replacing a folder deletes it: only ever one that holds a SavedModel.
        if os.path.isfile(path) or (
            os.path.isdir(path)
            and os.listdir(path)
            and not os.path.exists(os.path.join(path, "saved_model.pb"))
        ):
            raise ConfigurationError(
                f"Cannot export a SavedModel to {path}: it exists and is not a "
                "SavedModel folder. Choose a new folder name."
            )
    elif os.path.isdir(path):
        raise ConfigurationError(f"Cannot export to {path}: it is a folder.")


def _check_images(model, images):
    shape = tuple(model.inputs[0].shape) if len(model.inputs or ()) == 1 else ()
    if len(shape) != 4 or not all(shape[1:]):
        raise ConfigurationError(
            f"export_model exports models with one image input of fixed size "
            f"(None, height, width, channels); {model.name!r} takes "
            f"{shape or 'several inputs'}."
        )
    if images is None:
        rng = np.random.default_rng(0)
        return rng.uniform(0, 255, (4,) + shape[1:]).astype("float32")
    images = np.asarray(images, dtype="float32")
    if images.ndim != 4 or images.shape[1:] != shape[1:] or not len(images):
        raise ConfigurationError(
            f"images must be an array of shape (n, {', '.join(map(str, shape[1:]))}), "
            f"the model's input. Received shape {images.shape}."
        )
    return images


def _replace(temporary, path):
    if os.path.isdir(temporary) and os.path.isdir(path):
        shutil.rmtree(path)  # _check_target made sure it is a SavedModel.
    os.replace(temporary, path)


def _remove(path):
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.remove(path)
