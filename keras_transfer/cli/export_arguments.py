"""The options of `keras-transfer export`, parsed before TensorFlow loads.

`register` adds the command, its formats read from
`keras_transfer.defaults.EXPORT_FORMATS`, so that an unknown `--format` is
refused at once. The rest is checked by `export_command`, imported once the
arguments are parsed: the output's suffix and the format's converter and
runtime (`keras_transfer.export.check_format`, which needs TensorFlow),
before the model is read.
"""

import argparse

from keras_transfer import defaults
from keras_transfer.cli.program import PROG

# The function that exports, imported once the arguments are parsed.
HANDLER = "keras_transfer.cli.export_command:export_command"


def register(subparsers):
    """Adds the `export` subcommand.

    Args:
        subparsers: the object `ArgumentParser.add_subparsers()` returns.
    """
    parser = subparsers.add_parser(
        "export",
        help="export a trained model as a SavedModel, LiteRT or ONNX file",
        description="Export MODEL, a .keras file saved by 'keras-transfer train', for\n"
        "inference without Keras. The export takes raw RGB pixels in [0, 255]\n"
        "(the preprocessing is inside) and returns the class probabilities.\n"
        "It is checked before it is kept: its runtime runs it on a few images\n"
        "and its outputs must match the Keras model's within 1e-4.\n\n"
        "formats: saved_model (a folder, TensorFlow Serving), litert (a .tflite\n"
        "file, mobile and embedded; pip install keras-transfer[litert] for the\n"
        "standalone runtime), onnx (an .onnx file, ONNX Runtime; needs\n"
        "pip install keras-transfer[onnx]).",
        epilog="example:\n"
        f"  {PROG} export flowers.keras --format litert --output flowers.tflite",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    parser.set_defaults(handler=HANDLER)
