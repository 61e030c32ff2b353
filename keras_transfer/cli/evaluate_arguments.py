"""The options of `keras-transfer evaluate`, checked before TensorFlow loads.

`register` adds the command; `check_evaluate_arguments` refuses an
`--output-dir` that cannot be written, a MODEL that is not a file and a
DATA_DIR that is not a folder. None of it imports TensorFlow: the model is
read, and scored, by `evaluate_command`, imported once the arguments are
checked.
"""

import argparse

from keras_transfer.cli.arguments import add_batch_size_argument
from keras_transfer.cli.arguments import add_resize_argument
from keras_transfer.cli.arguments import check_image_folder
from keras_transfer.cli.arguments import writable_dir
from keras_transfer.cli.program import PROG
from keras_transfer.utils.files import check_model_file

# The files `evaluate` writes to `--output-dir`.
METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion_matrix.png"

# The function that scores, imported once the arguments are checked.
HANDLER = "keras_transfer.cli.evaluate_command:evaluate_command"


def register(subparsers):
    """Adds the `evaluate` subcommand.

    Args:
        subparsers: the object `ArgumentParser.add_subparsers()` returns.
    """
    parser = subparsers.add_parser(
        "evaluate",
        help="score a trained model on a folder of labelled images",
        description="Score MODEL, a .keras file saved by "
        f"'{PROG} train', on DATA_DIR, a\n"
        "folder with one subfolder of images per class (the same classes as the\n"
        "model's, matched by name). Prints the accuracy, per-class precision,\n"
        f"recall, F1 and support and the confusion matrix; writes {METRICS_FILE}\n"
        f"and {CONFUSION_FILE} to --output-dir.\n\n"
        "exit status: 0 done, 2 not a keras-transfer model, a folder whose\n"
        "classes differ from the model's, or a bad option.",
        epilog="example:\n"
        f"  {PROG} evaluate flowers.keras flowers_test --output-dir eval",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL", help="the .keras model file")
    parser.add_argument(
        "data_dir", metavar="DATA_DIR", help="folder with one subfolder of images per class"
    )
    parser.add_argument(
        "--output-dir",
        default=".",
        metavar="DIR",
        help=f"where to write {METRICS_FILE} and {CONFUSION_FILE} "
        "(default: the current folder)",
    )
    add_batch_size_argument(parser)
    add_resize_argument(parser)
    parser.set_defaults(check=check_evaluate_arguments, handler=HANDLER)


def check_evaluate_arguments(args):
    """Checks the paths of `evaluate`; returns `--output-dir`, absolute.

    Creates `--output-dir` if it is missing.

    Raises:
        ConfigurationError: `--output-dir` cannot be written, MODEL is not a
            file, or DATA_DIR is not a folder.
    """
    output_dir = writable_dir(args.output_dir, "--output-dir")
    check_model_file(args.model)
    check_image_folder(args.data_dir)
    return output_dir
