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

import os

from keras_transfer import defaults
from keras_transfer.cli.arguments import Command
from keras_transfer.cli.program import PROG
from keras_transfer.cli.program import import_tensorflow


SUMMARY = "export a trained model as a SavedModel, LiteRT or ONNX file"

DESCRIPTION = """\
Export MODEL, a .keras file saved by 'keras-transfer train', for
inference without Keras. The export takes raw RGB pixels in [0, 255]
(the preprocessing is inside) and returns the class probabilities.
It is checked before it is kept: its runtime runs it on a few images
and its outputs must match the Keras model's within 1e-4.

formats: saved_model (a folder, TensorFlow Serving), litert (a .tflite
file, mobile and embedded; pip install keras-transfer[litert] for the
standalone runtime), onnx (an .onnx file, ONNX Runtime; needs
pip install keras-transfer[onnx])."""

EXAMPLE = f"{PROG} export flowers.keras --format litert --output flowers.tflite"


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
        ".tflite or .onnx)",
    )


def export_command(args):
    """Exports and checks the model; returns None (exit 0).

    Raises:
        KerasTransferError: the model is not a keras-transfer classifier, the
            output cannot be written, the format's converter or runtime is not
            installed, or the export disagrees with the model.
    """
    import_tensorflow(args.verbose)
    from keras_transfer.evaluation import load_classifier
    from keras_transfer.export import check_format
    from keras_transfer.export import export_model

    output = args.output or default_output(args.model, args.format)
    # Before loading the model: a missing converter should not cost a load.
    check_format(args.format, output)
    model, _ = load_classifier(args.model)
    result = export_model(model, output, format=args.format)
    print(
        f"Exported {args.model} to {result.path} ({result.format}); its outputs "
        f"differ from the Keras model's by at most {result.max_difference:.1g} "
        f"on {result.checked_images} test images."
    )


def default_output(model_path, format):
    """Where `export` writes when `--output` is not given.

    Example:

    ```python
    default_output("runs/flowers.keras", "litert")  # 'runs/flowers.tflite'
    ```
    """
    stem = os.fspath(model_path)
    if stem.endswith(".keras"):
        stem = stem[: -len(".keras")]
    return stem + (defaults.EXPORT_FORMATS[format][1] or "_saved_model")


COMMAND = Command("export", SUMMARY, DESCRIPTION, add_arguments, export_command, EXAMPLE)
