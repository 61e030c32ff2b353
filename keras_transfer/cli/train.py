"""`keras-transfer train [DATA_DIR]`: its options, and their resolution into a `TrainConfig`.

`COMMAND` is the command; `add_train_arguments` and `add_run_arguments`
declare its options; `TrainConfig.from_arguments` checks them, once, and
resolves them into the frozen settings of the run (absolute paths known to
be writable, the backbone's `BackboneSpec`, the image size and the depth to
unfreeze). What needs no TensorFlow is checked first, so that such a mistake
is reported before it loads. The training itself is
`keras_transfer.cli.training.run_training`, which `train_command` imports
once the configuration is resolved.

Adding an option: declare it here, give `TrainConfig` its field (and, if a
resumed run must match it, a line in `backup_identity`), read it in
`training`.
"""

import dataclasses
import os

from keras_transfer import defaults
from keras_transfer.cli.arguments import Command
from keras_transfer.cli.arguments import add_batch_size_argument
from keras_transfer.cli.arguments import add_data_dir_argument
from keras_transfer.cli.arguments import add_resize_argument
from keras_transfer.cli.arguments import check_image_folder
from keras_transfer.cli.arguments import fraction
from keras_transfer.cli.arguments import image_size
from keras_transfer.cli.arguments import keras_file_path
from keras_transfer.cli.arguments import learning_rate_argument
from keras_transfer.cli.arguments import non_negative_int
from keras_transfer.cli.arguments import positive_int
from keras_transfer.cli.arguments import unit_fraction
from keras_transfer.cli.arguments import weights_argument
from keras_transfer.cli.arguments import writable_dir
from keras_transfer.cli.arguments import writable_path
from keras_transfer.cli.program import PROG
from keras_transfer.cli.program import import_tensorflow
from keras_transfer.utils.imports import heavy_imports
from keras_transfer.errors import ConfigurationError

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


SUMMARY = "train a classifier on a folder of images"

DESCRIPTION = """\
Train a classifier on DATA_DIR, a folder with one subfolder of
images per class (DATA_DIR/<class>/<image>; default: TensorFlow's
flower_photos from the Keras cache, downloaded if online). The head
trains first with the backbone frozen (--epochs), then with the top
blocks of the backbone (--fine-tune-epochs), in one fit. Saves the model
of the epoch with the best val_accuracy, of the last epoch, or averaged
over the fine-tuning epochs (--keep) to --output and the per-epoch
history to history.json beside it.

A run that is interrupted (killed, Ctrl-C, a crash) resumes after its
last finished epoch when the same command runs again.

exit status: 0 done, 2 bad arguments or data, 3 the loss became NaN
(the last good model is saved), 130 interrupted."""

EXAMPLE = (
    f"{PROG} train flower_photos --backbone mobilenet_v2_050 \\\n"
    "      --image-size 160 --epochs 5 --fine-tune-epochs 5 \\\n"
    "      --output flowers.keras --log-dir logs/flowers"
)


def add_arguments(parser):
    """Declares the options of `train`."""
    add_train_arguments(parser)
    add_run_arguments(parser)


def train_command(args):
    """Trains and saves a classifier; returns the exit status (None for 0).

    Raises:
        KerasTransferError: a mistake in the arguments or the data, found
            before anything trains.
    """
    with heavy_imports():
        config = TrainConfig.from_arguments(args)
        from keras_transfer.cli.training import run_training  # Loads TensorFlow.

    return run_training(config)


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
    add_data_dir_argument(parser)
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
        help="where to write the per-epoch history (default: history.json beside --output)",
    )


def _add_model_arguments(parser):
    parser.add_argument(
        "--backbone",
        default=defaults.BACKBONE,
        metavar="NAME",
        help=f"registered backbone name (see '{PROG} backbones'; default: %(default)s)",
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
        help="side of the square input images are resized to (default: the backbone's input size)",
    )
    add_resize_argument(parser, default=defaults.RESIZE)


def _add_recipe_arguments(parser):
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=defaults.HEAD_EPOCHS,
        metavar="N",
        help="epochs training the head alone, the backbone frozen (default: %(default)s)",
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
        # backbone (TrainConfig resolves it once the registry is loaded).
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
        help="fraction of each class held out for validation, 0 for none (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=defaults.SEED,
        metavar="N",
        help="seed of the split, the shuffling and the head's initialisation "
        "(default: %(default)s)",
    )


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


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The settings of one `train` run: its options, checked and resolved once.

    Built by `from_arguments`; nothing changes it afterwards. What a run
    learns as it goes (the classes, a resumed epoch, the rate `auto` finds)
    is not configuration and lives with the run (`keras_transfer.cli.training`).

    Example:

    ```python
    args = build_parser().parse_args(["train", "photos", "--weights", "none"])
    config = TrainConfig.from_arguments(args)
    config.epochs  # --epochs + --fine-tune-epochs
    ```

    Attributes:
        data_dir: the absolute path of the images (flower_photos from the
            Keras cache without DATA_DIR).
        backbone: the backbone's `BackboneSpec`.
        weights: "imagenet", None or the path of a weights file.
        weights_option: `--weights` as given, for the history and the backup.
        image_size: the side of the square inputs, in pixels.
        resize: how images meet the square input (`--resize`), saved in the model.
        head_epochs, fine_tune_epochs: `--epochs`, `--fine-tune-epochs`.
        unfreeze_blocks: the blocks fine-tuning trains (the default resolved
            against the backbone's depth).
        backbone_lr_ratio, gradual, batch_size, class_weight,
            mixed_precision, validation_split, seed: as given.
        learning_rate: the head's learning rate, or "auto" (`arguments.AUTO`).
        output, history: the absolute paths of the model and history files.
        backup_dir: the absolute path of the backup folder.
        log_dir: the TensorBoard folder, or None.
        checkpoint: the best model's file (`--checkpoint`), or None.
        keep: `KEEP_BEST`, `KEEP_LAST` or `KEEP_AVERAGE`, what `--output` gets.
    """

    data_dir: str
    backbone: object
    weights: object
    weights_option: str
    image_size: int
    resize: str
    head_epochs: int
    fine_tune_epochs: int
    unfreeze_blocks: int
    backbone_lr_ratio: float
    gradual: bool
    batch_size: int
    learning_rate: object
    class_weight: str
    mixed_precision: bool
    validation_split: float
    seed: int
    output: str
    history: str
    backup_dir: str
    log_dir: str
    checkpoint: str
    keep: str

    @property
    def epochs(self):
        """Head and fine-tuning epochs together: the `epochs` of `fit`."""
        return self.head_epochs + self.fine_tune_epochs

    @classmethod
    def from_arguments(cls, args):
        """Checks the parsed arguments of `train`; returns the `TrainConfig`.

        The paths and values first, without TensorFlow; then what needs the
        backbone registry (the name, the minimum input size, the depth), the
        backup folder and, without DATA_DIR, flower_photos (downloaded if it
        is not in the Keras cache).

        Raises:
            ConfigurationError: a value is wrong or a path cannot be written;
                the message names the option.
        """
        if args.data_dir is not None:
            check_image_folder(args.data_dir, default="flower_photos")
        output = keras_file_path(args.output, "--output")
        history = writable_path(
            args.history or os.path.join(os.path.dirname(output), "history.json"),
            "--history",
        )
        weights = weights_argument(args.weights)
        checkpoint = _checkpoint_path(args)
        stem = output[: -len(".keras")]
        backup_dir = os.path.abspath(os.path.expanduser(args.backup_dir or f"{stem}.backup"))
        log_dir = writable_dir(args.log_dir, "--log-dir") if args.log_dir else None
        # The registry and the backup's callback load TensorFlow: only now.
        import_tensorflow(args.verbose)
        from keras_transfer.cli.run_files import check_backup_dir

        spec, size, depth = _backbone_choices(args)
        backup_dir = check_backup_dir(backup_dir)
        return cls(
            data_dir=_data_dir(args.data_dir),
            backbone=spec,
            weights=weights,
            weights_option=args.weights,
            image_size=size,
            resize=args.resize,
            head_epochs=args.epochs,
            fine_tune_epochs=args.fine_tune_epochs,
            unfreeze_blocks=depth,
            backbone_lr_ratio=args.backbone_lr_ratio,
            gradual=args.gradual,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            class_weight=args.class_weight,
            mixed_precision=args.mixed_precision,
            validation_split=args.validation_split,
            seed=args.seed,
            output=output,
            history=history,
            backup_dir=backup_dir,
            log_dir=log_dir,
            checkpoint=checkpoint,
            keep=args.keep,
        )

    def backup_identity(self, class_names):
        """What a backup must match to be resumed, by option name.

        The learning rates are left out: a run stopped by a NaN loss resumes
        with lower ones.
        """
        identity = {
            "DATA_DIR": self.data_dir,
            "classes": list(class_names),
            "--backbone": self.backbone.name,
            "--weights": self.weights_option,
            "--image-size": self.image_size,
            "--epochs": self.head_epochs,
            "--fine-tune-epochs": self.fine_tune_epochs,
            "--unfreeze-blocks": self.unfreeze_blocks,
            "--gradual": self.gradual,
            "--batch-size": self.batch_size,
            "--validation-split": self.validation_split,
            "--seed": self.seed,
        }
        # Only when set, so that backups made before these options existed resume.
        if self.class_weight:
            identity["--class-weight"] = self.class_weight
        if self.mixed_precision:
            identity["--mixed-precision"] = True
        if self.keep != KEEP_BEST:
            identity["--keep"] = self.keep
        if self.resize != defaults.LEGACY_RESIZE:  # Backups before --resize stretched.
            identity["--resize"] = self.resize
        return identity

    def history_metadata(self, class_names, learning_rate):
        """What history.json records beside the epochs.

        Args:
            class_names: the classes, in the order of the model's outputs.
            learning_rate: the head's rate (that `auto` found, if it did).
        """
        size = self.image_size
        return {
            "backbone": self.backbone.name,
            "class_names": class_names,
            "image_size": [size, size],
            "resize": self.resize,
            "weights": self.weights_option,
            "data_dir": self.data_dir,
            "head_epochs": self.head_epochs,
            "fine_tune_epochs": self.fine_tune_epochs,
            "unfreeze_blocks": self.unfreeze_blocks,
            "gradual": self.gradual,
            "batch_size": self.batch_size,
            "learning_rate": learning_rate,
            "class_weight": self.class_weight,
            "mixed_precision": self.mixed_precision,
            "backbone_lr_ratio": self.backbone_lr_ratio,
            "validation_split": self.validation_split,
            "seed": self.seed,
            "keep": self.keep,
        }


def _checkpoint_path(args):
    """`--checkpoint`, absolute and writable, or None."""
    if not args.checkpoint:
        return None
    if not args.validation_split:
        raise ConfigurationError(
            "--checkpoint keeps the model with the best val_accuracy, which "
            "needs a validation set: use --validation-split > 0, or drop "
            "--checkpoint."
        )
    return keras_file_path(args.checkpoint, "--checkpoint")


def _backbone_choices(args):
    """The backbone's `BackboneSpec`, the image size and the depth to unfreeze.

    Raises:
        ConfigurationError: an unknown backbone, an image size below its
            minimum, or more blocks than it has.
    """
    from keras_transfer import backbones

    spec = backbones.get_backbone(args.backbone)
    size = spec.default_input_size if args.image_size is None else args.image_size
    if size < spec.min_input_size:
        raise ConfigurationError(
            f"--image-size {size} is below the {spec.min_input_size} pixels "
            f"backbone {spec.name!r} accepts. Use --image-size "
            f"{spec.min_input_size} or more (its default is {spec.default_input_size})."
        )
    depth = args.unfreeze_blocks
    if depth is None:
        depth = min(defaults.UNFREEZE_BLOCKS, len(spec.blocks))
    spec.check_depth(depth, name="--unfreeze-blocks")
    return spec, size, depth


def _data_dir(data_dir):
    """DATA_DIR, absolute; without one, flower_photos from the Keras cache."""
    if data_dir is not None:
        return os.path.abspath(data_dir)
    from keras_transfer.experiment import default_data_dir

    path = default_data_dir()
    print(f"No DATA_DIR given: training on TensorFlow's flower_photos from {path}.")
    return path


COMMAND = Command("train", SUMMARY, DESCRIPTION, add_arguments, train_command, EXAMPLE)
