"""The options of `keras-transfer train`, and their checks before anything is read.

`register` adds the command; `add_train_arguments` and `add_run_arguments`
declare its options; `check_train_arguments` turns the parsed values into a
`TrainRun` (absolute paths that are known to be writable, the total epochs)
or raises `ConfigurationError` naming the option; `run_identity` is what a
backup must match to be resumed. None of it imports TensorFlow: a mistake
here is reported before it loads. What needs the backbone registry (the
backbone's name, its minimum input size and depth) is checked by
`train_command`, which does the training.
"""

import argparse
import dataclasses
import os

from keras_transfer import defaults
from keras_transfer.cli.arguments import add_batch_size_argument
from keras_transfer.cli.arguments import add_resize_argument
from keras_transfer.cli.arguments import check_image_folder
from keras_transfer.cli.arguments import fraction
from keras_transfer.cli.arguments import image_size
from keras_transfer.cli.arguments import keras_file_path
from keras_transfer.cli.arguments import non_negative_int
from keras_transfer.cli.arguments import positive_float
from keras_transfer.cli.arguments import positive_int
from keras_transfer.cli.arguments import unit_fraction
from keras_transfer.cli.arguments import weights_argument
from keras_transfer.cli.arguments import writable_dir
from keras_transfer.cli.arguments import writable_path
from keras_transfer.cli.program import PROG
from keras_transfer.errors import ConfigurationError

# `--learning-rate auto`: a learning-rate range test picks the head's rate.
AUTO = "auto"

# `--keep`: the model saved to --output, that of the epoch with the best
# val_accuracy, that of the last epoch, or the mean of the weights of the
# epochs from the last unfreeze on (`WeightAveraging`).
KEEP_BEST = "best"
KEEP_LAST = "last"
KEEP_AVERAGE = "average"
# On the flowers (defaults.py's recipe, 3 seeds) the average scored
# 0.916-0.920 on held-out photos against 0.904-0.912 for the best epoch,
# which partly picks the noise of a small validation set.
KEEP_DEFAULT = KEEP_AVERAGE

# The function that trains, imported once the arguments are checked.
HANDLER = "keras_transfer.cli.train_command:train_command"


def register(subparsers):
    """Adds the `train` subcommand.

    Args:
        subparsers: the object `ArgumentParser.add_subparsers()` returns.
    """
    parser = subparsers.add_parser(
        "train",
        help="train a classifier on a folder of images",
        description="Train a classifier on DATA_DIR, a folder with one subfolder of\n"
        "images per class (DATA_DIR/<class>/<image>; default: TensorFlow's\n"
        "flower_photos from the Keras cache, downloaded if online). The head\n"
        "trains first with the backbone frozen (--epochs), then with the top\n"
        "blocks of the backbone (--fine-tune-epochs), in one fit. Saves the model\n"
        "of the epoch with the best val_accuracy, of the last epoch, or averaged\n"
        "over the fine-tuning epochs (--keep) to --output and the per-epoch\n"
        "history to history.json beside it.\n\n"
        "A run that is interrupted (killed, Ctrl-C, a crash) resumes after its\n"
        "last finished epoch when the same command runs again.\n\n"
        "exit status: 0 done, 2 bad arguments or data, 3 the loss became NaN\n"
        "(the last good model is saved), 130 interrupted.",
        epilog="example:\n"
        f"  {PROG} train flower_photos --backbone mobilenet_v2_050 \\\n"
        "      --image-size 160 --epochs 5 --fine-tune-epochs 5 \\\n"
        "      --output flowers.keras --log-dir logs/flowers",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_train_arguments(parser)
    add_run_arguments(parser)
    parser.set_defaults(check=check_train_arguments, handler=HANDLER)


@dataclasses.dataclass
class TrainRun:
    """The checked arguments of one `train` run, and the objects it shares.

    Attributes:
        weights: "imagenet", None or the path of a weights file.
        image_size: the side of the square inputs, in pixels (None until
            the backbone's default is known).
        epochs: head and fine-tuning epochs together.
        output: the absolute path of the model file.
        history: the absolute path of the history file.
        backup_dir: the absolute path of the backup folder.
        log_dir: the TensorBoard folder, or None.
        checkpoint: the best model's file (`--checkpoint`), or None.
        keep: `KEEP_BEST`, `KEEP_LAST` or `KEEP_AVERAGE`, what `--output`
            gets.
        spec: the backbone's `BackboneSpec`, once the registry is loaded.
        data_dir: the absolute path of the images, once resolved.
        best_model: the file the best epoch's model is kept in during the
            run (`checkpoint`, or one in the backup folder), or None.
        best_since: the first epoch the best model was chosen from (that
            of a resumed run whose backup kept no best model, else 0).
        backup: the run's `RunBackup`, once the data is read.
        averaging: the run's `WeightAveraging` (`--keep average`), or None.
        nan_guard: the run's `NonFiniteLossGuard`.
        resume_epoch: the epochs a resumed run has already done.
    """

    weights: object
    image_size: int
    epochs: int
    output: str
    history: str
    backup_dir: str
    log_dir: str = None
    checkpoint: str = None
    keep: str = KEEP_DEFAULT
    spec: object = None
    data_dir: str = None
    best_model: str = None
    best_since: int = 0
    backup: object = None
    averaging: object = None
    nan_guard: object = None
    resume_epoch: int = 0


def add_train_arguments(parser):
    """Adds the data, model and recipe options of `train` to `parser`.

    For commands that train as `train` does; `add_run_arguments` adds the
    options that manage one run (backup, logs, checkpoint).

    Example:

    ```python
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    parser.parse_args(["flower_photos", "--epochs", "3"]).fine_tune_epochs  # 5
    ```
    """
    parser.add_argument(
        "data_dir",
        nargs="?",
        metavar="DATA_DIR",
        help="folder with one subfolder of images per class (default: "
        "TensorFlow's flower_photos from the Keras cache, downloaded if online)",
    )
    _add_model_arguments(parser)
    _add_recipe_arguments(parser)
    parser.add_argument(
        "--output",
        default="model.keras",
        metavar="PATH",
        help="where to save the trained model, a .keras file (default: %(default)s)",
    )
    parser.add_argument(
        "--history",
        metavar="PATH",
        help="where to write the per-epoch history "
        "(default: history.json beside --output)",
    )


def _add_model_arguments(parser):
    parser.add_argument(
        "--backbone",
        default=defaults.BACKBONE,
        metavar="NAME",
        help=f"registered backbone name (see '{PROG} backbones'; "
        "default: %(default)s)",
    )
    parser.add_argument(
        "--weights",
        default="imagenet",
        metavar="{imagenet,none,PATH}",
        help="'imagenet', 'none' (random initialisation) or the path to a "
        "weights file (default: %(default)s)",
    )
    parser.add_argument(
        "--image-size",
        type=image_size,
        metavar="PIXELS",
        help="side of the square input images are resized to "
        "(default: the backbone's input size)",
    )
    add_resize_argument(parser, default=defaults.RESIZE)


def _add_recipe_arguments(parser):
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=defaults.HEAD_EPOCHS,
        metavar="N",
        help="epochs training the head alone, the backbone frozen "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--fine-tune-epochs",
        type=non_negative_int,
        default=defaults.FINE_TUNE_EPOCHS,
        metavar="N",
        help="epochs after those that also train the top --unfreeze-blocks "
        "blocks of the backbone; 0 trains the head only (default: %(default)s)",
    )
    parser.add_argument(
        "--unfreeze-blocks",
        type=positive_int,
        # None: defaults.UNFREEZE_BLOCKS, or every block of a shallower
        # backbone (train_command resolves it once the registry is loaded).
        default=None,
        metavar="K",
        help="blocks of the backbone, counted from its top, that fine-tuning "
        f"trains ('{PROG} backbones' lists each backbone's number of blocks; "
        f"default: {defaults.UNFREEZE_BLOCKS}, or all of a backbone with fewer)",
    )
    parser.add_argument(
        "--backbone-lr-ratio",
        type=unit_fraction,
        default=defaults.LR_RATIO,
        metavar="RATIO",
        help="learning rate of the backbone's blocks relative to "
        "--learning-rate, in (0, 1] (default: %(default)s)",
    )
    parser.add_argument(
        "--gradual",
        action="store_true",
        help="unfreeze the blocks one at a time, spread over the fine-tuning "
        "epochs, instead of all at once",
    )
    add_batch_size_argument(parser, help_text="")
    parser.add_argument(
        "--learning-rate",
        type=learning_rate_argument,
        default=1e-3,
        metavar="{LR,auto}",
        help="Adam learning rate of the head, or 'auto': a learning-rate range "
        "test on the head (keras_transfer.find_learning_rate) picks it "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--class-weight",
        choices=("balanced",),
        help="'balanced': weight each class's loss by the inverse of its share "
        "of the training images, for imbalanced data (default: none)",
    )
    parser.add_argument(
        "--mixed-precision",
        action="store_true",
        help="compute in float16 (build_classifier's dtype='mixed_float16'): "
        "faster on a GPU, slow on a CPU",
    )
    parser.add_argument(
        "--validation-split",
        type=fraction,
        default=defaults.VALIDATION_SPLIT,
        metavar="FRACTION",
        help="fraction of each class held out for validation, 0 for none "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=defaults.SEED,
        metavar="N",
        help="seed of the split, the shuffling and the head's initialisation "
        "(default: %(default)s)",
    )


def learning_rate_argument(text):
    """argparse type: a learning rate > 0, or `"auto"` (`AUTO`).

    Example:

    ```python
    parser.add_argument("--learning-rate", type=learning_rate_argument)
    ```
    """
    if text == AUTO:
        return AUTO
    try:
        return positive_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a number > 0 or 'auto', got {text!r}"
        ) from None


def add_run_arguments(parser):
    """Adds the options of `train` that manage a run: backup, logs, checkpoint."""
    parser.add_argument(
        "--backup-dir",
        metavar="DIR",
        help="folder for the training state saved after every epoch, which a "
        "re-run of the same command resumes from; deleted after a successful "
        "run (default: <output without .keras>.backup beside --output)",
    )
    parser.add_argument(
        "--log-dir",
        metavar="DIR",
        help="write TensorBoard logs here: Keras' curves, and the time, "
        "throughput and learning rates of each phase (default: none)",
    )
    parser.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="also keep the model of the epoch with the best val_accuracy in "
        "this .keras file (default: none)",
    )
    parser.add_argument(
        "--keep",
        choices=(KEEP_BEST, KEEP_LAST, KEEP_AVERAGE),
        default=KEEP_DEFAULT,
        help="the model --output gets: 'best', that of the epoch with the best "
        "val_accuracy (without a validation set, the last); 'last', that of "
        "the last epoch; 'average', the mean of the weights at the end of each "
        "epoch from the last unfreeze on, all epochs with --fine-tune-epochs 0 "
        "(stochastic weight averaging; default: %(default)s)",
    )


def check_train_arguments(args):
    """Checks everything that can be checked without TensorFlow or the data.

    `train_command` checks the rest once the backbone registry is loaded
    (the backbone's name, its minimum input size and depth, the backup).

    Args:
        args: the parsed arguments of `train`.

    Returns:
        A `TrainRun`, without its `spec`.

    Raises:
        ConfigurationError: a value is wrong or a path cannot be written; the
            message names the option.
    """
    if args.data_dir is not None:
        check_image_folder(args.data_dir, default="flower_photos")
    output = keras_file_path(args.output, "--output")
    history = writable_path(
        args.history or os.path.join(os.path.dirname(output), "history.json"),
        "--history",
    )
    weights = weights_argument(args.weights)
    checkpoint = None
    if args.checkpoint:
        if not args.validation_split:
            raise ConfigurationError(
                "--checkpoint keeps the model with the best val_accuracy, which "
                "needs a validation set: use --validation-split > 0, or drop "
                "--checkpoint."
            )
        checkpoint = keras_file_path(args.checkpoint, "--checkpoint")
    stem = output[: -len(".keras")]
    backup_dir = os.path.abspath(os.path.expanduser(args.backup_dir or f"{stem}.backup"))
    log_dir = writable_dir(args.log_dir, "--log-dir") if args.log_dir else None
    return TrainRun(
        weights=weights,
        image_size=args.image_size,
        epochs=args.epochs + args.fine_tune_epochs,
        output=output,
        history=history,
        backup_dir=backup_dir,
        log_dir=log_dir,
        checkpoint=checkpoint,
        keep=args.keep,
    )


def run_identity(args, run, class_names):
    """What a backup must match to be resumed, by option name.

    The learning rates are left out: a run stopped by a NaN loss resumes
    with lower ones.
    """
    identity = {
        "DATA_DIR": run.data_dir,
        "classes": list(class_names),
        "--backbone": run.spec.name,
        "--weights": args.weights,
        "--image-size": run.image_size,
        "--epochs": args.epochs,
        "--fine-tune-epochs": args.fine_tune_epochs,
        "--unfreeze-blocks": args.unfreeze_blocks,
        "--gradual": args.gradual,
        "--batch-size": args.batch_size,
        "--validation-split": args.validation_split,
        "--seed": args.seed,
    }
    # Only when set, so that backups made before these options existed resume.
    if args.class_weight:
        identity["--class-weight"] = args.class_weight
    if args.mixed_precision:
        identity["--mixed-precision"] = True
    if run.keep != KEEP_BEST:
        identity["--keep"] = run.keep
    if args.resize != defaults.LEGACY_RESIZE:  # Backups before --resize stretched.
        identity["--resize"] = args.resize
    return identity
