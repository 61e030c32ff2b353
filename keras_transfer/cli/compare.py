"""`keras-transfer compare [DATA_DIR]`: what a pretrained backbone buys, measured.

For each backbone, trains from scratch, pretrained with the head only, and
pretrained with the head then progressive fine-tuning, on one seeded split
and under the same epoch count or wall-clock budget; writes a report, the
results, a plot and TensorBoard logs. The work is
`keras_transfer.experiment.run_comparison`, which checks what needs the
registry (the backbones' names, the image size against each backbone's
minimum); a DATA_DIR that is not a folder is refused before TensorFlow loads.
The defaults come from `keras_transfer.experiment.options`, which imports
nothing heavy.
"""

import sys

from keras_transfer import defaults
from keras_transfer.cli.arguments import Command
from keras_transfer.cli.arguments import add_batch_size_argument
from keras_transfer.cli.arguments import add_data_dir_argument
from keras_transfer.cli.arguments import check_image_folder
from keras_transfer.cli.arguments import fraction
from keras_transfer.cli.arguments import positive_float
from keras_transfer.cli.arguments import positive_int
from keras_transfer.cli.program import PROG
from keras_transfer.cli.program import import_tensorflow
from keras_transfer.experiment.options import DEFAULT_EPOCHS
from keras_transfer.experiment.options import DEFAULT_LEARNING_RATE
from keras_transfer.experiment.options import DEFAULT_OUTPUT_DIR
from keras_transfer.experiment.options import DEFAULT_TARGET_ACCURACY


SUMMARY = "measure what a pretrained backbone buys over training from scratch"

DESCRIPTION = """\
Train, on one seeded split of DATA_DIR and for each backbone,
(1) from scratch, (2) pretrained with the head only and (3) pretrained
with the head first, then progressive fine-tuning; every run stops at the
same epoch count or wall-clock budget. Before the runs of a backbone,
an unclocked warm-up runs each method on a few images; every run starts
from the same seeds. Writes OUT/report.md, OUT/results.json,
OUT/accuracy_vs_time.png, OUT/compare.log (per-epoch lines) and
TensorBoard logs in OUT/tensorboard/<run>; prints one progress line per
run. Backbones whose ImageNet weights cannot be had (offline, not
cached) are skipped with the reason."""

EXAMPLE = (
    f"{PROG} compare flower_photos --backbones mobilenet_v2_050,resnet50 \\\n"
    "      --budget-minutes 25 --image-size 160 --output-dir compare"
)


def add_arguments(parser):
    """Declares the options of `compare`."""
    add_data_dir_argument(parser)
    parser.add_argument(
        "--backbones",
        default=defaults.BACKBONE,
        metavar="NAMES",
        help="comma-separated registered backbone names (default: %(default)s)",
    )
    _add_limit_arguments(parser)
    parser.add_argument(
        "--output-dir",
        default=DEFAULT_OUTPUT_DIR,
        metavar="OUT",
        help="folder for the report, results, plot and logs (default: %(default)s)",
    )
    _add_training_arguments(parser)


def _add_limit_arguments(parser):
    parser.add_argument(
        "--budget-minutes",
        type=positive_float,
        metavar="M",
        help="wall-clock minutes per run, model building included (default: none)",
    )
    parser.add_argument(
        "--epochs",
        type=positive_int,
        metavar="N",
        help=f"most epochs per run (default: {DEFAULT_EPOCHS} without "
        "--budget-minutes, unlimited with it)",
    )
    parser.add_argument(
        "--image-size",
        type=positive_int,
        metavar="PIXELS",
        help="side of the square inputs, the same for every run "
        "(default: the backbones' input size, 224)",
    )


def _add_training_arguments(parser):
    add_batch_size_argument(parser, help_text="")
    parser.add_argument(
        "--learning-rate",
        type=positive_float,
        default=DEFAULT_LEARNING_RATE,
        metavar="LR",
        help="Adam learning rate of every run; the backbone fine-tunes at a tenth "
        "of it (default: %(default)s)",
    )
    parser.add_argument(
        "--validation-split",
        type=fraction,
        default=defaults.VALIDATION_SPLIT,
        metavar="FRACTION",
        help="fraction of each class held out for validation (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=defaults.SEED,
        metavar="N",
        help="seed of the split, the shuffling and the initial weights (default: %(default)s)",
    )
    parser.add_argument(
        "--target-accuracy",
        type=fraction,
        default=DEFAULT_TARGET_ACCURACY,
        metavar="FRACTION",
        help="validation accuracy whose time-to-reach is reported (default: %(default)s)",
    )


def compare_command(args):
    """Runs `run_comparison` with the parsed arguments.

    Raises:
        KerasTransferError: DATA_DIR is not a folder (before TensorFlow
            loads), or `run_comparison` refuses a value.
    """
    if args.data_dir is not None:
        check_image_folder(args.data_dir, default="flower_photos")
    import_tensorflow(args.verbose)
    from keras_transfer.experiment import run_comparison

    epochs = args.epochs
    # Without either limit a run would never stop.
    if epochs is None and args.budget_minutes is None:
        epochs = DEFAULT_EPOCHS
    run_comparison(
        args.data_dir,
        backbones=args.backbones,
        output_dir=args.output_dir,
        epochs=epochs,
        budget_minutes=args.budget_minutes,
        image_size=args.image_size,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        validation_split=args.validation_split,
        seed=args.seed,
        target_accuracy=args.target_accuracy,
    )
    sys.stdout.flush()


COMMAND = Command("compare", SUMMARY, DESCRIPTION, add_arguments, compare_command, EXAMPLE)
