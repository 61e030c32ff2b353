"""The `keras-transfer` command line.

```
keras-transfer backbones [PATTERN]          # the backbone registry, as a table
keras-transfer train DATA_DIR [options]     # train a classifier, save it
```

`train` runs one `model.fit`: `--epochs` epochs train the head with the
backbone frozen, then `--fine-tune-epochs` epochs also train the last
`--unfreeze-blocks` blocks of the backbone at `--backbone-lr-ratio` times the
learning rate (`keras_transfer.ProgressiveUnfreeze`). It writes the model
(`--output`, a `.keras` file that loads with Keras' default `safe_mode=True`)
and, after every epoch, a `history.json` beside it:

```json
{"backbone": "mobilenet_v2_050", "class_names": ["daisy", "roses"],
 "image_size": [160, 160], "weights": "imagenet", ...,
 "epochs": [{"epoch": 0, "loss": 0.61, "accuracy": 0.7, "val_loss": 0.42,
             "val_accuracy": 0.83, "seconds": 12.9, "unfreeze_phase": 0.0,
             "trainable_params": 6405.0, ...}, ...]}
```

`epoch` counts from 0 as in Keras callbacks, head epochs first; `seconds` is
the training time since the run began, added up over resumed runs (the time a
run was not running does not count); values without a validation set, and
values that are not finite, are `null`.

Interruptions: after every epoch, `train` backs up the training state
(weights, optimizer state, epoch) to `--backup-dir`, each file written under a
temporary name and renamed, so a run killed at any moment leaves a usable
backup. Running the same command again continues after the last finished
epoch, in the right phase, with the same trainable layers and optimizer
state; `history.json` keeps the finished epochs and TensorBoard gets new
event files beside the old ones. The backup is deleted once the model and
history are saved. Options must match the interrupted run's, except the
learning rates (`--learning-rate`, `--backbone-lr-ratio`), which may be lowered
to resume a run stopped by a NaN loss.

Exit status:

- 0: trained and saved.
- 2: a mistake in the arguments or the data (an unknown backbone, a folder
  that does not hold one subfolder per class, an output path that cannot be
  written, a backup of another run), reported in one line,
  `keras-transfer: error: ...`, before anything trains.
- 3: the loss became NaN or infinite. Training stops at once; the model of
  the last finished epoch is saved to `--output`, `history.json` keeps the
  finished epochs, the backup stays to resume from. One line says so.
- 130: interrupted (Ctrl-C); the backup stays to resume from.

Warnings (e.g. image files that cannot be decoded and are skipped) are printed
as `keras-transfer: warning: ...`.

Other modules add subcommands through `SUBCOMMAND_MODULES`: each module named
there has a `register(subparsers)` function, like `register` below.
"""

import argparse
import dataclasses
import importlib
import json
import math
import os
import sys
import tempfile
import time
import warnings

import keras

from keras_transfer import __version__
from keras_transfer import backbones
from keras_transfer import caching
from keras_transfer.backbones import weights as weights_lib
from keras_transfer.callbacks.phase_timer import PhaseTimer
from keras_transfer.callbacks.progressive_unfreeze import GradualSchedule
from keras_transfer.callbacks.progressive_unfreeze import ProgressiveUnfreeze
from keras_transfer.data import load_image_folder
from keras_transfer.errors import ConfigurationError
from keras_transfer.errors import KerasTransferError
from keras_transfer.models import build_classifier

PROG = "keras-transfer"

# Modules that add subcommands besides `backbones` and `train`. Each defines
# `register(subparsers)`; see `register` below for the contract.
SUBCOMMAND_MODULES = ("keras_transfer.experiment",)

# Exit status of a run stopped by a NaN or infinite loss.
EXIT_NON_FINITE_LOSS = 3


def main(argv=None):
    """Runs the `keras-transfer` command line; returns the exit status.

    Example:

    ```python
    from keras_transfer import cli
    cli.main(["backbones", "mobilenet*"])  # prints a table, returns 0
    ```

    Args:
        argv: the arguments, without the program name; None reads
            `sys.argv[1:]`.

    Returns:
        0 on success, 2 for a mistake in the arguments or the data (reported
        in one line on stderr), 3 when `train` stopped on a NaN loss, 130
        when interrupted.
    """
    with warnings.catch_warnings():
        # One line per warning, like the errors, instead of Python's
        # "file:line: UserWarning:" and the source line of the caller.
        warnings.showwarning = _show_warning
        try:
            parser = build_parser()
            args = parser.parse_args(argv)
            status = args.handler(args)
        except (_UsageError, KerasTransferError) as e:
            print(f"{PROG}: error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return 130
    return 0 if status is None else status


def build_parser():
    """The argument parser, with every registered subcommand."""
    parser = _Parser(
        prog=PROG,
        description="Transfer learning for image classification with Keras 3.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    subparsers = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", required=True
    )
    register(subparsers)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def register(subparsers):
    """Adds the `backbones` and `train` subcommands.

    A subcommand module does the same: it adds its parsers to `subparsers`
    and gives each a `handler`, a function that takes the parsed arguments
    and returns the exit status (None for 0). Handlers report user mistakes
    by raising a `KerasTransferError`; `main` prints its message.

    Args:
        subparsers: the object `ArgumentParser.add_subparsers()` returns.
    """
    parser = subparsers.add_parser(
        "backbones",
        help="list the registered backbones",
        description="List the registered backbones: input size, number of "
        "blocks (the units ProgressiveUnfreeze unfreezes), parameters, whether "
        "their ImageNet weights are in the Keras cache, and their licence.",
    )
    parser.add_argument(
        "pattern",
        nargs="?",
        metavar="PATTERN",
        help="shell-style filter, e.g. 'mobilenet*'",
    )
    parser.set_defaults(handler=_backbones_command)

    parser = subparsers.add_parser(
        "train",
        help="train a classifier on a folder of images",
        description="Train a classifier on DATA_DIR, a folder with one subfolder of\n"
        "images per class (DATA_DIR/<class>/<image>). The head trains first with\n"
        "the backbone frozen (--epochs), then with the top blocks of the backbone\n"
        "(--fine-tune-epochs), in one fit. Saves the model to --output and the\n"
        "per-epoch history to history.json beside it.\n\n"
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
    parser.set_defaults(handler=_train_command)


def add_train_arguments(parser):
    """Adds the data, model and recipe options of `train` to `parser`.

    For commands that train as `train` does; `add_run_arguments` adds the
    options that manage one run (backup, logs, checkpoint).
    """
    parser.add_argument(
        "data_dir", metavar="DATA_DIR", help="folder with one subfolder per class"
    )
    parser.add_argument(
        "--backbone",
        default="mobilenet_v2_050",
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
        type=positive_int,
        metavar="PIXELS",
        help="side of the square input images are resized to "
        "(default: the backbone's input size)",
    )
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=5,
        metavar="N",
        help="epochs training the head alone, the backbone frozen "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--fine-tune-epochs",
        type=non_negative_int,
        default=5,
        metavar="N",
        help="epochs after those that also train the top --unfreeze-blocks "
        "blocks of the backbone; 0 trains the head only (default: %(default)s)",
    )
    parser.add_argument(
        "--unfreeze-blocks",
        type=positive_int,
        # Measured with benchmarks/flowers.py (MobileNetV2 0.5, 224 px): 5
        # blocks reached 0.916 validation accuracy against 0.900-0.908 for 3,
        # for 1.3x the fine-tuning epoch time; 8 blocks was slower and worse.
        default=5,
        metavar="K",
        help="blocks of the backbone, counted from its top, that fine-tuning "
        f"trains ('{PROG} backbones' lists each backbone's number of blocks; "
        "default: %(default)s)",
    )
    parser.add_argument(
        "--backbone-lr-ratio",
        type=unit_fraction,
        default=0.1,
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
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=32,
        metavar="N",
        help="(default: %(default)s)",
    )
    parser.add_argument(
        "--learning-rate",
        type=positive_float,
        default=1e-3,
        metavar="LR",
        help="Adam learning rate of the head (default: %(default)s)",
    )
    parser.add_argument(
        "--validation-split",
        type=fraction,
        default=0.2,
        metavar="FRACTION",
        help="fraction of each class held out for validation, 0 for none "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=1337,
        metavar="N",
        help="seed of the split, the shuffling and the head's initialisation "
        "(default: %(default)s)",
    )
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


def positive_int(text):
    """argparse type: an integer >= 1."""
    return _int_at_least(text, 1)


def non_negative_int(text):
    """argparse type: an integer >= 0."""
    return _int_at_least(text, 0)


def _int_at_least(text, minimum):
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise argparse.ArgumentTypeError(
            f"expected an integer >= {minimum}, got {text!r}"
        )
    return value


def positive_float(text):
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def fraction(text):
    """argparse type: a number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a number in [0, 1), e.g. 0.2, got {text!r}"
        )
    return value


def unit_fraction(text):
    """argparse type: a number in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(
            f"expected a number in (0, 1], e.g. 0.1, got {text!r}"
        )
    return value


# --- backbones ---------------------------------------------------------------


def _backbones_command(args):
    names = backbones.list_backbones(args.pattern)
    if not names:
        raise ConfigurationError(
            f"No backbone matches {args.pattern!r}. Run '{PROG} backbones' to "
            f"list all {len(backbones.list_backbones())}."
        )
    header = ("NAME", "INPUT", "BLOCKS", "PARAMS", "IMAGENET WEIGHTS", "LICENSE")
    rows = []
    for name in names:
        spec = backbones.get_backbone(name)
        path = weights_lib.imagenet_weights_path(spec)
        if path is None:
            status = "-"
        else:
            status = "cached" if path.exists() else "download"
        rows.append(
            (
                spec.name,
                f"{spec.default_input_size} (min {spec.min_input_size})",
                str(len(spec.blocks)),
                _human_count(spec.params),
                status,
                spec.license or "-",
            )
        )
    right_aligned = {2, 3}
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    for row in [header] + rows:
        cells = [
            cell.rjust(width) if i in right_aligned else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths))
        ]
        print("  ".join(cells).rstrip())
    print(f"\nImageNet weights cache: {weights_lib.cache_dir()}")


def _human_count(count):
    if not count:
        return "?"
    if count >= 1e9:
        return f"{count / 1e9:.2f}G"
    return f"{count / 1e6:.2f}M"


# --- train -------------------------------------------------------------------


@dataclasses.dataclass
class _Run:
    """The checked arguments of one `train` run, and its helpers."""

    spec: object
    weights: object
    image_size: int
    epochs: int
    output: str
    history: str
    backup_dir: str
    log_dir: str = None
    checkpoint: str = None
    backup: object = None
    nan_guard: object = None
    resume_epoch: int = 0


def _train_command(args):
    run = _check_train_arguments(args)

    keras.utils.set_random_seed(args.seed)
    train_ds, val_ds, class_names = load_image_folder(
        args.data_dir,
        run.image_size,
        batch_size=args.batch_size,
        validation_split=args.validation_split,
        seed=args.seed,
    )
    run.backup = _Backup(
        run.backup_dir, _run_identity(args, run, class_names), args.learning_rate
    )
    run.resume_epoch = run.backup.resume_epoch()
    if run.resume_epoch:
        print(
            f"Resuming from the backup in {run.backup_dir}: {run.resume_epoch} of "
            f"{run.epochs} epochs are done."
        )

    size = run.image_size
    model = build_classifier(
        run.spec.name, len(class_names), input_shape=(size, size, 3), weights=run.weights
    )
    model.compile(
        optimizer=_build_optimizer(args),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    metadata = {
        "backbone": run.spec.name,
        "class_names": class_names,
        "image_size": [size, size],
        "weights": args.weights,
        "data_dir": os.path.abspath(args.data_dir),
        "head_epochs": args.epochs,
        "fine_tune_epochs": args.fine_tune_epochs,
        "unfreeze_blocks": args.unfreeze_blocks,
        "gradual": args.gradual,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "backbone_lr_ratio": args.backbone_lr_ratio,
        "validation_split": args.validation_split,
        "seed": args.seed,
    }
    run.nan_guard = _NonFiniteLossGuard()
    try:
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=run.epochs,
            callbacks=_build_callbacks(args, run, metadata),
            # The dataset reshuffles itself every epoch; Keras warns when asked
            # to shuffle a tf.data.Dataset.
            shuffle=False,
        )
    except _NonFiniteLoss as stop:
        return _stop_on_non_finite_loss(stop, model, run, args)
    except KeyboardInterrupt:
        message = f"{PROG}: interrupted"
        if run.nan_guard.good_epoch is not None:
            message += (
                f" after epoch {run.nan_guard.good_epoch + 1}/{run.epochs}. Run the "
                f"same command to resume (backup: {run.backup_dir})."
            )
        print(message, file=sys.stderr)
        return 130
    # The model and history go to disk before the backup goes away: a kill
    # between the two leaves a run that resumes, never one that is lost.
    _save_model(model, run.output)
    run.backup.delete()
    print(f"Saved the model to {run.output} and its history to {run.history}.")


def _check_train_arguments(args):
    """Checks everything that can be checked before reading the data."""
    spec = backbones.get_backbone(args.backbone)
    output = _keras_file_path(args.output, "--output")
    history = _writable_path(
        args.history or os.path.join(os.path.dirname(output), "history.json"),
        "--history",
    )
    weights = _weights_argument(args.weights)
    size = args.image_size or spec.default_input_size
    if size < spec.min_input_size:
        raise ConfigurationError(
            f"--image-size {size} is below the {spec.min_input_size} pixels "
            f"backbone {spec.name!r} accepts. Use --image-size "
            f"{spec.min_input_size} or more (its default is {spec.default_input_size})."
        )
    if args.unfreeze_blocks > len(spec.blocks):
        raise ConfigurationError(
            f"--unfreeze-blocks {args.unfreeze_blocks} is more than the "
            f"{len(spec.blocks)} blocks of backbone {spec.name!r} "
            f"({spec.block_names[0]} ... {spec.block_names[-1]}). Use at most "
            f"{len(spec.blocks)}."
        )
    checkpoint = None
    if args.checkpoint:
        if not args.validation_split:
            raise ConfigurationError(
                "--checkpoint keeps the model with the best val_accuracy, which "
                "needs a validation set: use --validation-split > 0, or drop "
                "--checkpoint."
            )
        checkpoint = _keras_file_path(args.checkpoint, "--checkpoint")
    stem = output[: -len(".keras")]
    backup_dir = _backup_dir(args.backup_dir or f"{stem}.backup")
    log_dir = _writable_dir(args.log_dir, "--log-dir") if args.log_dir else None
    return _Run(
        spec=spec,
        weights=weights,
        image_size=size,
        epochs=args.epochs + args.fine_tune_epochs,
        output=output,
        history=history,
        backup_dir=backup_dir,
        log_dir=log_dir,
        checkpoint=checkpoint,
    )


def _run_identity(args, run, class_names):
    """What a backup must match to be resumed, by option name."""
    return {
        "DATA_DIR": os.path.abspath(args.data_dir),
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


def _build_optimizer(args):
    return keras.optimizers.Adam(learning_rate=args.learning_rate)


def _build_callbacks(args, run, metadata):
    """The callbacks of `train`, in the order their epoch ends must run."""
    callbacks = []
    unfreeze = _unfreeze_callback(args)
    if unfreeze is not None:
        # First: it adds the phase to the logs the others write.
        callbacks.append(unfreeze)
    callbacks += [run.nan_guard, _JsonHistory(run.history, metadata)]
    if run.log_dir:
        tensorboard = _TensorBoard(run.log_dir)
        callbacks += [tensorboard, PhaseTimer(tensorboard)]
    if run.checkpoint:
        callbacks.append(
            _BestCheckpoint(run.checkpoint, best=_best_so_far(run, "val_accuracy"))
        )
    # Last: an epoch counts as done for a resumed run only once everything
    # above has recorded it, so a kill in between repeats the epoch (and
    # rewrites its records) rather than leaving it out.
    callbacks.append(run.backup)
    return callbacks


def _unfreeze_callback(args):
    if not args.fine_tune_epochs:
        return None
    if args.gradual:
        blocks, epochs = args.unfreeze_blocks, args.fine_tune_epochs
        schedule = GradualSchedule(
            start_epoch=args.epochs,
            every=max(1, epochs // blocks),
            max_depth=blocks,
            step=math.ceil(blocks / epochs),
        )
    else:
        schedule = {args.epochs: args.unfreeze_blocks}
    return ProgressiveUnfreeze(schedule=schedule, lr_ratio=args.backbone_lr_ratio)


def _best_so_far(run, monitor):
    """The best `monitor` of the finished epochs a resumed run keeps."""
    if not run.resume_epoch or not os.path.exists(run.checkpoint):
        return None
    values = [
        record.get(monitor)
        for record in _history_records(run.history)
        if record.get("epoch", math.inf) < run.resume_epoch
    ]
    values = [v for v in values if isinstance(v, (int, float))]
    return max(values) if values else None


def _stop_on_non_finite_loss(stop, model, run, args):
    if stop.batch is None:
        where = (
            f"the validation loss became {stop.loss} at the end of epoch "
            f"{stop.epoch + 1}/{run.epochs} (the training loss was finite: check "
            "the validation images, or lower the learning rate)"
        )
    else:
        where = (
            f"the loss became {stop.loss} at epoch {stop.epoch + 1}/{run.epochs}, "
            f"batch {stop.batch + 1}"
        )
    fix = f"Lower --learning-rate (now {args.learning_rate:g})"
    if stop.epoch >= args.epochs:
        where += " (fine-tuning)"
        fix += f" or --backbone-lr-ratio (now {args.backbone_lr_ratio:g})"
    guard = run.nan_guard
    if guard.good_weights is None:
        message = f"{where}, before any epoch finished; nothing was saved. {fix}."
    else:
        model.set_weights(guard.good_weights)
        _save_model(model, run.output)
        done = guard.good_epoch + 1
        message = (
            f"{where}; training stopped. Saved the model of epoch {done}, the last "
            f"finished one, to {run.output}; {run.history} keeps the finished epochs. "
            f"{fix}, then run the command again to resume at epoch {done + 1}, or "
            f"delete {run.backup_dir} to start over."
        )
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return EXIT_NON_FINITE_LOSS


def _weights_argument(text):
    if text.lower() == "none":
        return None
    if text.lower() == "imagenet":
        return "imagenet"
    path = os.path.expanduser(text)
    if not os.path.isfile(path):
        raise ConfigurationError(
            f"--weights must be 'imagenet', 'none' or the path of a weights file. "
            f"Received: {text!r}, which is not a file."
        )
    return path


def _keras_file_path(path, option):
    if not path.endswith(".keras"):
        raise ConfigurationError(
            f"{option} must be a .keras file (the Keras model format). "
            f"Received: {path!r}"
        )
    return _writable_path(path, option)


def _writable_path(path, option):
    """Checks that a file can be created at `path`; returns it absolute.

    Writes a probe file: `os.access` says yes to root everywhere and knows
    nothing of read-only file systems.
    """
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(path):
        raise ConfigurationError(
            f"{option} must be a file path, but {path} is a folder."
        )
    _probe_folder(os.path.dirname(path), option, path)
    return path


def _writable_dir(path, option):
    """Checks that files can be created in folder `path`; returns it absolute."""
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigurationError(
            f"{option} must be a folder, but {path} is a file."
        )
    _probe_folder(path, option, path)
    return path


def _probe_folder(folder, option, path):
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".keras-transfer-"):
            pass
    except OSError as e:
        raise ConfigurationError(
            f"Cannot write {option} {path}: {e.strerror or e}. Choose a path in a "
            "folder you can write to."
        ) from e


def _backup_dir(path):
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(path):
        # Created at the end of the first epoch; a run that fails before
        # leaves no empty folder behind.
        _probe_folder(os.path.dirname(path), "--backup-dir", path)
        return path
    path = _writable_dir(path, "--backup-dir")
    foreign = [name for name in os.listdir(path) if not _Backup.owns(name)]
    if foreign:
        # The folder is deleted after a successful run: never one that holds
        # anything else.
        raise ConfigurationError(
            f"--backup-dir {path} holds files that are not a keras-transfer backup "
            f"(e.g. {sorted(foreign)[0]!r}), and the backup folder is deleted after "
            "training. Pass a new or empty folder."
        )
    return path


def _save_model(model, path):
    """Saves `model` to `path` atomically, loadable without warnings."""
    optimizer = model.optimizer
    head = getattr(optimizer, "head_optimizer", None)
    if head is not None:
        # ProgressiveUnfreeze's per-group optimizer is rebuilt by the callback,
        # never loaded from a file: `load_model` would compile the head's
        # optimizer and warn that the saved variables do not fit it. Save a
        # fresh copy of the head's optimizer, built for the weights that are
        # trainable now, which `load_model` restores as it is.
        fresh = head.__class__.from_config(head.get_config())
        fresh.build(model.trainable_variables)
        model.optimizer = fresh
    # Saved under a temporary name, then renamed: an interrupted save never
    # leaves a truncated model where the previous one was.
    folder, name = os.path.split(path)
    temporary = os.path.join(folder, f".{name}.{os.getpid()}.tmp.keras")
    try:
        model.save(temporary)
        _fsync(temporary)
        os.replace(temporary, path)
    finally:
        model.optimizer = optimizer
        if os.path.exists(temporary):
            os.remove(temporary)


def _fsync(path):
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _atomic_write_json(path, payload):
    folder, name = os.path.split(path)
    temporary = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    # os.open rather than mkstemp: the file gets the permissions of any other
    # file the user creates (0o666 less the umask), not 0o600.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def _history_records(path):
    """The epoch records of a history file; [] if it is missing or unreadable."""
    try:
        with open(path) as f:
            epochs = json.load(f).get("epochs", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [r for r in epochs if isinstance(r, dict)]


class _JsonHistory(keras.callbacks.Callback):
    """Rewrites a JSON history file after every epoch.

    The file is replaced atomically, so a run killed at any moment leaves the
    history of its finished epochs. A run resumed at epoch `n` (e.g. by
    `BackupAndRestore`) keeps the records of epochs before `n` and continues
    their `seconds`.

    Args:
        path: the JSON file to write.
        metadata: dict written beside the `"epochs"` list.
    """

    def __init__(self, path, metadata=None):
        super().__init__()
        self.path = path
        self.metadata = dict(metadata or {})
        self._epochs = None
        self._start = None
        self._offset = 0.0

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()
        # A cached fit computes the frozen layers' features before
        # on_train_begin; that time belongs to the first epoch.
        cache = caching.running_cache_info(self.model)
        if cache is not None:
            self._start -= cache.seconds
        self._epochs = None

    def on_epoch_begin(self, epoch, logs=None):
        if self._epochs is None:
            self._epochs = self._earlier_epochs(epoch)
            self._offset = self._epochs[-1]["seconds"] if self._epochs else 0.0

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        record = {"epoch": epoch}
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            record[key] = _json_number(logs.pop(key, None))
        record["seconds"] = round(self._offset + time.perf_counter() - self._start, 3)
        record.update({key: _json_number(value) for key, value in logs.items()})
        self._epochs = [r for r in self._epochs if r["epoch"] < epoch] + [record]
        _atomic_write_json(self.path, {**self.metadata, "epochs": self._epochs})

    def _earlier_epochs(self, epoch):
        if epoch == 0:
            return []
        return [r for r in _history_records(self.path) if r.get("epoch", epoch) < epoch]


def _json_number(value):
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


class _NonFiniteLoss(Exception):
    """`batch` is None for a validation loss, checked at the end of the epoch."""

    def __init__(self, epoch, batch, loss):
        super().__init__(f"loss {loss} at epoch {epoch}, batch {batch}")
        self.epoch = epoch
        self.batch = batch
        self.loss = loss


class _NonFiniteLossGuard(keras.callbacks.Callback):
    """Stops `fit` at the first NaN or infinite loss, keeping the last good weights.

    Unlike `keras.callbacks.TerminateOnNaN`, which lets the epoch end (so the
    callbacks that run at its end back up and log the broken weights, and
    `BackupAndRestore` deletes its backup), this raises `_NonFiniteLoss` from
    the batch: no epoch-end callback runs, the backup and the history keep
    the last finished epoch, and `good_weights` holds its weights.
    """

    def __init__(self):
        super().__init__()
        self.good_weights = None
        self.good_epoch = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        if self.good_epoch is None and epoch > 0:
            # A resumed run: the weights just restored are those of the
            # last finished epoch.
            self.good_epoch = epoch - 1
            self.good_weights = self.model.get_weights()
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise _NonFiniteLoss(self._epoch, batch, float(loss))

    def on_epoch_end(self, epoch, logs=None):
        # Finite training losses with a non-finite validation loss: broken
        # validation images, or an overflow that the next epoch would train
        # on. The epoch is not kept either way (this runs before the
        # callbacks that save it).
        val_loss = (logs or {}).get("val_loss")
        if val_loss is not None and not math.isfinite(float(val_loss)):
            raise _NonFiniteLoss(epoch, None, float(val_loss))
        self.good_epoch = epoch
        self.good_weights = self.model.get_weights()


class _Backup(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` whose backup survives a kill at any moment.

    Keras' callback overwrites its weights file in place, so a run killed
    while it saves (a sizeable fraction of each epoch for a big model) leaves
    a truncated file that the next run cannot load. Here each epoch's weights
    (model and optimizer) go to a new file, written under a temporary name
    and renamed; then `training_metadata.json` is replaced atomically to name
    it, which is what makes the epoch count; then older files are removed.

    The metadata also records `run`, the options the backup was made with: a
    backup of another run is refused instead of half-loaded. The learning
    rate comes from the command line, not from the backup, so a run stopped
    by a NaN loss can resume with a lower one.

    The backup is not deleted at the end of `fit` (the caller deletes it once
    the model is saved), and only the files it wrote are.
    """

    METADATA = "training_metadata.json"
    _PREFIX = "epoch_"
    _SUFFIX = ".weights.h5"  # Keras requires it of weights files.

    def __init__(self, backup_dir, run, learning_rate):
        super().__init__(backup_dir, save_freq="epoch", delete_checkpoint=False)
        self.run = run
        self.learning_rate = learning_rate

    @classmethod
    def owns(cls, name):
        """Whether the file `name` in a backup folder is one this class writes.

        Temporary files count: a run killed while saving leaves one behind.
        """
        if name.lstrip(".").startswith(cls._PREFIX):
            return name.endswith(cls._SUFFIX)
        return name == cls.METADATA or (
            name.startswith(f".{cls.METADATA}.") and name.endswith(".tmp")
        )

    def resume_epoch(self):
        """The epoch a fit resumes at (0 without a backup); checks the backup."""
        metadata = self._read()
        if metadata is None:
            return 0
        changed = [key for key in self.run if metadata["run"].get(key) != self.run[key]]
        if changed:
            details = "; ".join(
                f"{key} {metadata['run'].get(key)!r} there, {self.run[key]!r} now"
                for key in changed
            )
            raise ConfigurationError(
                f"--backup-dir {self.backup_dir} holds the backup of another run "
                f"({details}). Run that command again to resume it, or delete the "
                "folder (or pass another --backup-dir) to start over."
            )
        return metadata["epoch"]

    def delete(self):
        """Removes the backup's files, and its folder if nothing else is left."""
        if not os.path.isdir(self.backup_dir):
            return
        for name in os.listdir(self.backup_dir):
            if self.owns(name):
                os.remove(os.path.join(self.backup_dir, name))
        try:
            os.rmdir(self.backup_dir)
        except OSError:
            pass

    def _read(self):
        path = os.path.join(self.backup_dir, self.METADATA)
        if not os.path.exists(path):
            return None
        try:
            with open(path) as f:
                metadata = json.load(f)
            ok = (
                isinstance(metadata.get("epoch"), int)
                and isinstance(metadata.get("run"), dict)
                and os.path.isfile(os.path.join(self.backup_dir, metadata["weights"]))
            )
        except (OSError, ValueError, AttributeError, KeyError, TypeError):
            ok = False
        if not ok:
            raise ConfigurationError(
                f"--backup-dir {self.backup_dir} holds a backup that keras-transfer "
                f"cannot resume from ({self.METADATA} is not one it wrote, or its "
                "weights file is missing). Delete the folder to start over."
            )
        return metadata

    def _load_model(self):
        metadata = self._read()
        if metadata is None:
            return
        model = self.model
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        path = os.path.join(self.backup_dir, metadata["weights"])
        try:
            model.load_weights(path)
        except Exception as e:  # h5py's OSError, Keras' ValueError...
            raise ConfigurationError(
                f"Cannot restore the backup {path}: {e}. Delete {self.backup_dir} "
                "to start over."
            ) from e
        model.optimizer.learning_rate = self.learning_rate
        # How BackupAndRestore tells fit where to start.
        model._initial_epoch = metadata["epoch"]

    def _save_model(self):
        folder = self.backup_dir
        os.makedirs(folder, exist_ok=True)
        name = f"{self._PREFIX}{self._current_epoch:04d}{self._SUFFIX}"
        temporary = os.path.join(
            folder, f".{self._PREFIX}{os.getpid()}.tmp{self._SUFFIX}"
        )
        try:
            self.model.save_weights(temporary, overwrite=True)
            _fsync(temporary)
            os.replace(temporary, os.path.join(folder, name))
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
        _atomic_write_json(
            os.path.join(folder, self.METADATA),
            {"epoch": self._current_epoch, "weights": name, "run": self.run},
        )
        for other in os.listdir(folder):
            if other != name and other != self.METADATA and self.owns(other):
                os.remove(os.path.join(folder, other))


class _TensorBoard(keras.callbacks.TensorBoard):
    """Keras' TensorBoard callback, flushed at the end of every epoch.

    Keras flushes its event files when training ends or every two minutes,
    so a killed run would lose the curves of its last minutes.
    """

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        for writer in getattr(self, "_writers", {}).values():
            writer.flush()


class _BestCheckpoint(keras.callbacks.Callback):
    """Saves the model whenever `monitor` reaches a new maximum.

    Like `ModelCheckpoint(save_best_only=True, mode="max")`, but the file is
    replaced atomically, and a resumed run starts from the best value of the
    epochs already done (`best`) instead of overwriting the file with
    whatever its first epoch gives.
    """

    def __init__(self, path, monitor="val_accuracy", best=None):
        super().__init__()
        self.path = path
        self.monitor = monitor
        self.best = best

    def on_epoch_end(self, epoch, logs=None):
        value = _json_number((logs or {}).get(self.monitor))
        if value is not None and (self.best is None or value > self.best):
            self.best = value
            _save_model(self.model, self.path)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"{PROG}: warning: {message}", file=sys.stderr if file is None else file)


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """Reports a usage mistake in one line, like every other error of `main`."""

    def error(self, message):
        raise _UsageError(f"{message} (see '{self.prog} --help')")


if __name__ == "__main__":
    sys.exit(main())
