"""`keras-transfer export MODEL`: a trained classifier as a SavedModel, LiteRT or ONNX artifact.

The artifact takes raw RGB pixels in [0, 255] at the model's input size (the
preprocessing is a layer of the model, so it is exported too) and returns
the class probabilities. Before it is kept it is run by its own runtime and
compared with the Keras model (`keras_transfer.export.export_model`). The
formats are read from `keras_transfer.defaults.EXPORT_FORMATS`, so that an
unknown `--format` is refused before TensorFlow loads; the output's suffix
and the format's converter and runtime are checked
(`keras_transfer.export.check_format`, which needs TensorFlow) before the
model is read.
"""

import json
import os
import sys

from keras_transfer import defaults
from keras_transfer.cli.arguments import Command
from keras_transfer.cli.program import PROG
from keras_transfer.cli.program import import_tensorflow
from keras_transfer.errors import ConfigurationError


SUMMARY = "export a trained model as a SavedModel, LiteRT or ONNX file"

DESCRIPTION = """\
Export MODEL, a .keras file saved by 'keras-transfer train', for
inference without Keras. The export takes raw RGB pixels in [0, 255]
(the preprocessing is inside) and returns the class probabilities.
It is checked before it is kept: its runtime runs it on a few images
and its outputs must match the Keras model's within 1e-4.

formats: saved_model (a folder, TensorFlow Serving: its serving_default
signature returns the probabilities and the top class names), litert (a
.tflite file, mobile and embedded; pip install keras-transfer[litert] for
the standalone runtime), onnx (an .onnx file, ONNX Runtime, any batch
size; needs pip install keras-transfer[onnx]). The class names go with
every export: NAME.labels.txt beside a file (labels.txt inside the
SavedModel folder), and in the ONNX file's metadata.

--quantize (litert only) shrinks the file: float16 weights, dynamic
(int8 weights) or int8 (everything in int8, calibrated on images). The
input stays raw float32 pixels. A quantized file is scored on held-out
images instead of the 1e-4 check: its accuracy and the Keras model's are
printed and written to NAME.accuracy.json; a drop beyond
--max-accuracy-drop keeps the file but exits with status 4. The images
come from --calibration-data DIR (scored on all of it), else from the
training folder that history.json beside MODEL records (its validation
split, as train made it).

Exit status: 0 exported (and within the tolerance); 2 a mistake in the
arguments, the model or the images, in one line; 4 a quantized file
that lost more accuracy than --max-accuracy-drop (the file is written)."""

EXAMPLE = f"{PROG} export flowers.keras --format litert --quantize int8"

# The exit status of a quantized export that lost more than the tolerance.
EXIT_ACCURACY_DROP = 4


def add_arguments(parser):
    """Declares the options of `export`."""
    parser.add_argument("model", metavar="MODEL", help="the .keras model file")
    parser.add_argument(
        "--format",
        choices=tuple(defaults.EXPORT_FORMATS),
        default=defaults.EXPORT_FORMAT,
        help="(default: %(default)s)",
    )
    parser.add_argument(
        "--output",
        metavar="PATH",
        help="where to write: a folder for saved_model, a .tflite or .onnx file "
        "(default: beside MODEL, MODEL without .keras plus _saved_model, "
        ".tflite or .onnx; with --quantize, _<quantization> before the suffix)",
    )
    parser.add_argument(
        "--quantize",
        choices=defaults.EXPORT_QUANTIZATIONS,
        help="litert only: quantize the weights to float16, to int8 (dynamic), or "
        "everything to int8 (int8, calibrated on --calibration-data) (default: float32)",
    )
    parser.add_argument(
        "--calibration-data",
        metavar="DIR",
        help="with --quantize: a folder of one subfolder per class, the model's "
        "classes, to calibrate int8 on and to score the file on (default: the "
        "training folder recorded in history.json beside MODEL, its validation split)",
    )
    parser.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=defaults.MAX_ACCURACY_DROP,
        metavar="POINTS",
        help="with --quantize: the accuracy points the file may lose against the "
        "Keras model before export exits with status 4 (default: %(default)s)",
    )


def export_command(args):
    """Exports and checks the model; returns None (exit 0), or 4 for a quantized file that lost accuracy.

    Raises:
        KerasTransferError: the model is not a keras-transfer classifier, the
            output cannot be written, the format's converter or runtime is not
            installed, the options do not fit (a quantized non-litert export,
            no images for a quantized one, images of other classes), or the
            export disagrees with the model.
    """
    if args.quantize and args.format != "litert":
        raise ConfigurationError(
            f"--quantize is for --format litert; got --format {args.format}. "
            "Add --format litert, or drop --quantize."
        )
    if args.calibration_data and not args.quantize:
        raise ConfigurationError(
            "--calibration-data is for a quantized export: add --format litert "
            "--quantize int8 (or float16, dynamic), or drop --calibration-data."
        )
    if not args.max_accuracy_drop >= 0:
        raise ConfigurationError(
            f"--max-accuracy-drop must be at least 0 (accuracy points); got {args.max_accuracy_drop}."
        )
    import_tensorflow(args.verbose)
    from keras_transfer.evaluation import load_classifier
    from keras_transfer.export import check_format
    from keras_transfer.export import export_model

    output = args.output or default_output(args.model, args.format, args.quantize)
    # Before loading the model: a missing converter should not cost a load.
    check_format(args.format, output)
    model, info = load_classifier(args.model)
    images = {}
    if args.quantize:
        images = calibration_source(args.model, args.calibration_data, info.class_names)
    result = export_model(
        model,
        output,
        format=args.format,
        quantize=args.quantize,
        max_accuracy_drop=args.max_accuracy_drop,
        **images,
    )
    return _report(args, result)


def _report(args, result):
    """Prints what was written; the exit status."""
    if result.score is None:
        print(
            f"Exported {args.model} to {result.path} ({result.format}); its outputs "
            f"differ from the Keras model's by at most {result.max_difference:.1g} "
            f"on {result.checked_images} test images. Class names: {result.labels}."
        )
        return None
    print(
        f"Exported {args.model} to {result.path} ({result.format}, {result.quantize}, "
        f"{os.path.getsize(result.path):,} bytes): {result.score.summary()}. Scores: "
        f"{result.score_file}; class names: {result.labels}."
    )
    if result.score.within_tolerance:
        return None
    print(
        f"{PROG}: warning: the {result.quantize} file loses "
        f"{result.score.accuracy_drop:.2f} accuracy points, more than "
        f"--max-accuracy-drop {args.max_accuracy_drop:g}; it was written, but check it "
        "(or try --quantize float16 or dynamic).",
        file=sys.stderr,
    )
    return EXIT_ACCURACY_DROP


def calibration_source(model_path, folder, class_names):
    """The `export_model` arguments of the images a quantized export uses.

    `folder` when given (scored on all of it); else the training folder and
    split that `history.json` beside the model records, when it still exists
    and the history is of this model's classes; else none (`export_model`
    then asks for `--calibration-data`).

    Example:

    ```python
    calibration_source("runs/flowers.keras", None, class_names)
    # {'calibration_data': '/data/flower_photos', 'validation_split': 0.2, 'seed': 1337}
    ```
    """
    if folder is not None:
        return {"calibration_data": folder, "validation_split": 0.0}
    history = os.path.join(os.path.dirname(os.path.abspath(model_path)), "history.json")
    try:
        with open(history, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return {}
    data_dir = record.get("data_dir") if isinstance(record, dict) else None
    if not isinstance(data_dir, str) or not os.path.isdir(data_dir):
        return {}
    if class_names is not None and record.get("class_names") != list(class_names):
        return {}  # The history of another model in the same folder.
    print(f"Calibration and scoring images: {data_dir}, as recorded in {history}.")
    return {
        "calibration_data": data_dir,
        "validation_split": record.get("validation_split", defaults.VALIDATION_SPLIT),
        "seed": record.get("seed", defaults.SEED),
    }


def default_output(model_path, format, quantize=None):
    """Where `export` writes when `--output` is not given.

    Example:

    ```python
    default_output("runs/flowers.keras", "litert")  # 'runs/flowers.tflite'
    default_output("runs/flowers.keras", "litert", "int8")  # 'runs/flowers_int8.tflite'
    ```
    """
    stem = os.fspath(model_path)
    if stem.endswith(".keras"):
        stem = stem[: -len(".keras")]
    if quantize:
        stem += f"_{quantize}"
    return stem + (defaults.EXPORT_FORMATS[format][1] or "_saved_model")


COMMAND = Command("export", SUMMARY, DESCRIPTION, add_arguments, export_command, EXAMPLE)
