"""`keras-transfer train DATA_DIR`: train a classifier on a folder of images, save it.

One `model.fit`: `--epochs` epochs train the head with the backbone frozen,
then `--fine-tune-epochs` epochs also train the last `--unfreeze-blocks`
blocks of the backbone (`ProgressiveUnfreeze`). The callbacks, in the order
their epoch ends run: the unfreezing, `NonFiniteLossGuard` (exit 3 on a NaN
loss), `JsonHistory` (history.json), TensorBoard and `PhaseTimer`
(`--log-dir`), `BestCheckpoint` (`--checkpoint`), and last `RunBackup`, which
a re-run of the same command resumes from. The options and their checks are
in `train_arguments`.
"""

import argparse
import collections
import os
import sys
import warnings

import keras
import tensorflow as tf

from keras_transfer.callbacks.best_checkpoint import BestCheckpoint
from keras_transfer.callbacks.flushing_tensorboard import FlushingTensorBoard
from keras_transfer.callbacks.json_history import JsonHistory
from keras_transfer.callbacks.non_finite_loss_guard import NonFiniteLoss
from keras_transfer.callbacks.non_finite_loss_guard import NonFiniteLossGuard
from keras_transfer.callbacks.phase_timer import PhaseTimer
from keras_transfer.callbacks.progressive_unfreeze import ProgressiveUnfreeze
from keras_transfer.callbacks.run_backup import RunBackup
from keras_transfer.cli.program import EXIT_INTERRUPTED
from keras_transfer.cli.program import EXIT_NON_FINITE_LOSS
from keras_transfer.cli.program import PROG
from keras_transfer.cli.run_files import best_so_far
from keras_transfer.cli.train_arguments import AUTO
from keras_transfer.cli.train_arguments import add_run_arguments
from keras_transfer.cli.train_arguments import add_train_arguments
from keras_transfer.cli.train_arguments import check_train_arguments
from keras_transfer.cli.train_arguments import run_identity
from keras_transfer.data import load_image_folder
from keras_transfer.learning_rate import describe as describe_finding
from keras_transfer.learning_rate import find_learning_rate
from keras_transfer.models import build_classifier
from keras_transfer.models import save_model
from keras_transfer.unfreeze import fine_tune_schedule


def register(subparsers):
    """Adds the `train` subcommand.

    Args:
        subparsers: the object `ArgumentParser.add_subparsers()` returns.
    """
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
    parser.set_defaults(handler=train_command)


def train_command(args):
    """Trains and saves a classifier; returns the exit status (None for 0).

    Raises:
        KerasTransferError: a mistake in the arguments or the data, found
            before anything trains.
    """
    run = check_train_arguments(args)

    keras.utils.set_random_seed(args.seed)
    train_ds, val_ds, class_names = load_image_folder(
        args.data_dir,
        run.image_size,
        batch_size=args.batch_size,
        validation_split=args.validation_split,
        seed=args.seed,
    )
    run.backup = RunBackup(
        run.backup_dir, run_identity(args, run, class_names), args.learning_rate
    )
    run.resume_epoch = run.backup.resume_epoch()
    if run.resume_epoch:
        print(
            f"Resuming from the backup in {run.backup_dir}: {run.resume_epoch} of "
            f"{run.epochs} epochs are done."
        )

    size = run.image_size
    model = build_classifier(
        run.spec.name,
        len(class_names),
        input_shape=(size, size, 3),
        weights=run.weights,
        class_names=class_names,
        dtype=_dtype(args),
    )
    auto_rate = args.learning_rate == AUTO
    model.compile(
        # `auto`: Adam's default until the range test has found the rate.
        optimizer=keras.optimizers.Adam(
            **({} if auto_rate else {"learning_rate": args.learning_rate})
        ),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    class_weight = _class_weight(args, train_ds, class_names)
    if auto_rate:
        args.learning_rate = _auto_learning_rate(model, train_ds, class_weight)
        run.backup.learning_rate = model.optimizer.learning_rate = args.learning_rate
    run.nan_guard = NonFiniteLossGuard()
    try:
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=run.epochs,
            callbacks=build_callbacks(args, run, _metadata(args, run, class_names)),
            class_weight=class_weight,
            # The dataset reshuffles itself every epoch; Keras warns when asked
            # to shuffle a tf.data.Dataset.
            shuffle=False,
        )
    except NonFiniteLoss as stop:
        return _stop_on_non_finite_loss(stop, model, run, args)
    except KeyboardInterrupt:
        return _stop_on_interrupt(run)
    # The model and history go to disk before the backup goes away: a kill
    # between the two leaves a run that resumes, never one that is lost.
    save_model(model, run.output)
    run.backup.delete()
    print(f"Saved the model to {run.output} and its history to {run.history}.")


def _dtype(args):
    if not args.mixed_precision:
        return None
    if not tf.config.list_physical_devices("GPU"):
        warnings.warn(
            "--mixed-precision on a CPU is slow (float16 is emulated there); "
            "it pays off on a GPU.",
            stacklevel=2,
        )
    return "mixed_float16"


def _class_weight(args, train_ds, class_names):
    """`--class-weight balanced`: n / (classes * n_class) over the training images."""
    if not args.class_weight:
        return None
    # The class is the image's folder under DATA_DIR: no image is decoded.
    counts = collections.Counter(
        os.path.relpath(path, args.data_dir).split(os.sep)[0]
        for path in train_ds.file_paths
    )
    total = sum(counts.values())
    weights = {
        label: total / (len(class_names) * counts[name])
        for label, name in enumerate(class_names)
    }
    print(
        "Class weights (balanced): "
        + ", ".join(f"{name} {weights[i]:.2f}" for i, name in enumerate(class_names))
        + "."
    )
    return weights


def _auto_learning_rate(model, train_ds, class_weight):
    """`--learning-rate auto`: the range test's rate for the head, printed."""
    # The test's own pass over the images can take a while: say what it is.
    print("Finding the head's learning rate: a range test of about 100 steps.")
    finding = find_learning_rate(model, train_ds, class_weight=class_weight, verbose=0)
    rate = float(f"{finding.suggestion:.2g}")
    print(f"{describe_finding(finding)} Training with --learning-rate {rate:g}.")
    return rate


def _metadata(args, run, class_names):
    """What history.json records beside the epochs."""
    size = run.image_size
    return {
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
        "class_weight": args.class_weight,
        "mixed_precision": args.mixed_precision,
        "backbone_lr_ratio": args.backbone_lr_ratio,
        "validation_split": args.validation_split,
        "seed": args.seed,
    }


def build_callbacks(args, run, metadata):
    """The callbacks of `train`, in the order their epoch ends must run.

    Args:
        args: the parsed arguments.
        run: the `TrainRun`, with its `backup` and `nan_guard` set.
        metadata: what history.json records beside the epochs.

    Returns:
        A list of callbacks for `model.fit`.
    """
    callbacks = []
    if args.fine_tune_epochs:
        # First: it adds the phase to the logs the others write.
        schedule = fine_tune_schedule(
            args.epochs, args.unfreeze_blocks, args.fine_tune_epochs, args.gradual
        )
        callbacks.append(
            ProgressiveUnfreeze(schedule=schedule, lr_ratio=args.backbone_lr_ratio)
        )
    callbacks += [run.nan_guard, JsonHistory(run.history, metadata)]
    if run.log_dir:
        tensorboard = FlushingTensorBoard(run.log_dir)
        callbacks += [tensorboard, PhaseTimer(tensorboard)]
    if run.checkpoint:
        callbacks.append(
            BestCheckpoint(run.checkpoint, best=best_so_far(run, "val_accuracy"))
        )
    # Last: an epoch counts as done for a resumed run only once everything
    # above has recorded it, so a kill in between repeats the epoch (and
    # rewrites its records) rather than leaving it out.
    callbacks.append(run.backup)
    return callbacks


def _stop_on_interrupt(run):
    message = f"{PROG}: interrupted"
    if run.nan_guard.good_epoch is not None:
        message += (
            f" after epoch {run.nan_guard.good_epoch + 1}/{run.epochs}. Run the "
            f"same command to resume (backup: {run.backup_dir})."
        )
    print(message, file=sys.stderr)
    return EXIT_INTERRUPTED


def _stop_on_non_finite_loss(stop, model, run, args):
    """Saves the last good model, if any, and says what to do; returns 3."""
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
        save_model(model, run.output)
        done = guard.good_epoch + 1
        message = (
            f"{where}; training stopped. Saved the model of epoch {done}, the last "
            f"finished one, to {run.output}; {run.history} keeps the finished epochs. "
            f"{fix}, then run the command again to resume at epoch {done + 1}, or "
            f"delete {run.backup_dir} to start over."
        )
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return EXIT_NON_FINITE_LOSS
