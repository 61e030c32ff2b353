"""The options of `keras-transfer predict`, checked before TensorFlow loads.

`register` adds the command; `check_predict_arguments` refuses an
`--output` that is not a writable `.csv` or `.jsonl` file and a MODEL that
is not a file. None of it imports TensorFlow: the model is read, and the
images predicted, by `predict_command`, imported once the arguments are
checked.
"""

import argparse

from keras_transfer import defaults
from keras_transfer.cli.arguments import add_batch_size_argument
from keras_transfer.cli.arguments import add_resize_argument
from keras_transfer.cli.arguments import positive_int
from keras_transfer.cli.arguments import writable_path
from keras_transfer.cli.program import PROG
from keras_transfer.errors import ConfigurationError
from keras_transfer.utils.files import check_model_file

# The suffixes `--output` may end in; the suffix picks the file's format.
OUTPUT_FORMATS = (".csv", ".jsonl")

# The function that predicts, imported once the arguments are checked.
HANDLER = "keras_transfer.cli.predict_command:predict_command"


def register(subparsers):
    """Adds the `predict` subcommand.

    Args:
        subparsers: the object `ArgumentParser.add_subparsers()` returns.
    """
    parser = subparsers.add_parser(
        "predict",
        help="predict the classes of images with a trained model",
        description="Predict the top classes of images with MODEL, a .keras file\n"
        f"saved by '{PROG} train'. PATH: image files or folders (searched\n"
        "recursively). Images are resized to the model's input size as in\n"
        "training. Unreadable files are listed and skipped.\n\n"
        "exit status: 0 done, 2 not a keras-transfer model, no readable image,\n"
        "or a bad option.",
        epilog="example:\n"
        f"  {PROG} predict flowers.keras new_photos/ --top-k 2 --output predictions.csv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL", help="the .keras model file")
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="image files or folders of images"
    )
    parser.add_argument(
        "--top-k",
        type=positive_int,
        default=defaults.TOP_K,
        metavar="K",
        help="classes to report per image (default: %(default)s)",
    )
    parser.add_argument(
        "--output",
        metavar="FILE",
        help="also write the predictions to FILE.csv or FILE.jsonl",
    )
    add_batch_size_argument(parser)
    add_resize_argument(parser)
    parser.set_defaults(check=check_predict_arguments, handler=HANDLER)


def check_predict_arguments(args):
    """Checks `--output` and MODEL's file; returns `--output` absolute, or None.

    Raises:
        ConfigurationError: `--output` does not end in .csv or .jsonl or
            cannot be written, or MODEL is not a file.
    """
    output = None
    if args.output is not None:
        if not args.output.lower().endswith(OUTPUT_FORMATS):
            raise ConfigurationError(
                f"--output must end in .csv or .jsonl. Received: {args.output!r}"
            )
        output = writable_path(args.output, "--output")
    check_model_file(args.model)
    return output
