"""`keras-transfer train [DATA_DIR]`: train a classifier on a folder of images, save it.

One `model.fit`: `--epochs` epochs train the head with the backbone frozen,
then `--fine-tune-epochs` epochs also train the last `--unfreeze-blocks`
blocks of the backbone (`ProgressiveUnfreeze`). The callbacks, in the order
their epoch ends run: the unfreezing, `NonFiniteLossGuard` (exit 3 on a NaN
loss), `JsonHistory` (history.json), TensorBoard and `PhaseTimer`
(`--log-dir`), `BestCheckpoint` (the best epoch's model: `--checkpoint`, or
a file in the backup folder for `--keep best`), `WeightAveraging` (`--keep
average`: the running mean of the weights from the last unfreeze on, in the
backup folder), and last `RunBackup`, which a re-run of the same command
resumes from. `--output` gets the best epoch's model (`--keep best`), the
last epoch's (`--keep last`) or the averaged one, evaluated on the
validation set (`--keep average`).

The options and the checks that need no TensorFlow are in `train_arguments`,
which the command line imports first; this module checks what needs the
backbone registry, then trains.
"""

import collections
import os
import shutil
import sys
import warnings

import keras
import tensorflow as tf

from keras_transfer import backbones
from keras_transfer import defaults
from keras_transfer.backbones import weights as weights_lib
from keras_transfer.callbacks.best_checkpoint import BestCheckpoint
from keras_transfer.callbacks.flushing_tensorboard import FlushingTensorBoard
from keras_transfer.callbacks.json_history import JsonHistory
from keras_transfer.callbacks.json_history import update_history
from keras_transfer.callbacks.non_finite_loss_guard import NonFiniteLoss
from keras_transfer.callbacks.non_finite_loss_guard import NonFiniteLossGuard
from keras_transfer.callbacks.phase_timer import PhaseTimer
from keras_transfer.callbacks.progressive_unfreeze import ProgressiveUnfreeze
from keras_transfer.callbacks.run_backup import RunBackup
from keras_transfer.callbacks.weight_averaging import WeightAveraging
from keras_transfer.cli import run_files
from keras_transfer.cli.program import EXIT_INTERRUPTED
from keras_transfer.cli.program import EXIT_NON_FINITE_LOSS
from keras_transfer.cli.program import PROG
from keras_transfer.cli.train_arguments import AUTO
from keras_transfer.cli.train_arguments import KEEP_AVERAGE
from keras_transfer.cli.train_arguments import KEEP_BEST
from keras_transfer.cli.train_arguments import check_train_arguments
from keras_transfer.cli.train_arguments import run_identity
from keras_transfer.data import load_image_folder
from keras_transfer.errors import ConfigurationError
from keras_transfer.experiment import default_data_dir
from keras_transfer.learning_rate import describe as describe_finding
from keras_transfer.learning_rate import find_learning_rate
from keras_transfer.models import build_classifier
from keras_transfer.models import save_model
from keras_transfer.unfreeze import GradualSchedule
from keras_transfer.unfreeze import fine_tune_schedule
from keras_transfer.utils.checks import plural
from keras_transfer.utils.files import fsync_file
from keras_transfer.utils.files import json_number
from keras_transfer.utils.files import remove_stale_temporaries

# What `--keep best` and `--checkpoint` maximise.
MONITOR = "val_accuracy"


def train_command(args):
    """Trains and saves a classifier; returns the exit status (None for 0).

    Raises:
        KerasTransferError: a mistake in the arguments or the data, found
            before anything trains.
    """
    run = check_train_arguments(args)
    _check_backbone(args, run)
    run.backup_dir = run_files.check_backup_dir(run.backup_dir)
    run.data_dir = _data_dir(args)

    keras.utils.set_random_seed(args.seed)
    train_ds, val_ds, class_names = load_image_folder(
        run.data_dir,
        run.image_size,
        batch_size=args.batch_size,
        validation_split=args.validation_split,
        seed=args.seed,
        resize=args.resize,
    )
    run.backup = RunBackup(
        run.backup_dir, run_identity(args, run, class_names), args.learning_rate
    )
    run.resume_epoch = run.backup.resume_epoch()
    if run.resume_epoch:
        print(
            f"Resuming from the backup in {run.backup_dir}: {run.resume_epoch} of "
            f"{plural(run.epochs, 'epoch')} are done."
        )
    if run.keep == KEEP_BEST and val_ds is not None:
        run.best_model = run.checkpoint or os.path.join(
            run.backup_dir, RunBackup.BEST_MODEL
        )
    else:
        run.best_model = run.checkpoint

    size = run.image_size
    # The CLI's users pass --weights, not weights=: the messages say so.
    with weights_lib.argument_spelling(weights_lib.CLI_SPELLING):
        model = build_classifier(
            run.spec.name,
            len(class_names),
            input_shape=(size, size, 3),
            weights=run.weights,
            class_names=class_names,
            resize=args.resize,
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
    class_weight = _class_weight(args, run, train_ds, class_names)
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
    which = _save_output(model, run, val_ds)
    run.backup.delete()
    print(f"Saved the model {which}, to {run.output} and its history to {run.history}.")


def _check_backbone(args, run):
    """The checks that need the registry: the name, the input size, the depth."""
    spec = backbones.get_backbone(args.backbone)
    size = run.image_size or spec.default_input_size
    if size < spec.min_input_size:
        raise ConfigurationError(
            f"--image-size {size} is below the {spec.min_input_size} pixels "
            f"backbone {spec.name!r} accepts. Use --image-size "
            f"{spec.min_input_size} or more (its default is {spec.default_input_size})."
        )
    if args.unfreeze_blocks is None:
        args.unfreeze_blocks = min(defaults.UNFREEZE_BLOCKS, len(spec.blocks))
    spec.check_depth(args.unfreeze_blocks, name="--unfreeze-blocks")
    run.spec, run.image_size = spec, size


def _data_dir(args):
    """DATA_DIR, absolute; without one, flower_photos from the Keras cache."""
    if args.data_dir is not None:
        return os.path.abspath(args.data_dir)
    path = default_data_dir()
    print(f"No DATA_DIR given: training on TensorFlow's flower_photos from {path}.")
    return path


def _save_output(model, run, val_ds):
    """Saves the model `--keep` asks for to `--output`; says which it is."""
    if run.keep == KEEP_AVERAGE and run.averaging.count:
        return _save_average(model, run, val_ds)
    kept = _save_best_model(run)
    if kept is not None:
        epoch, value = kept
        return f"of epoch {epoch + 1}/{run.epochs}, the best {MONITOR} ({value:.4f})"
    save_model(model, run.output)
    update_history(run.history, {"saved_epoch": run.epochs - 1})
    which = f"of the last epoch, {run.epochs}/{run.epochs}"
    if run.keep == KEEP_BEST:
        which += f" (no {MONITOR} to choose the best epoch by)"
    elif run.keep == KEEP_AVERAGE:
        which += " (no epoch was averaged)"
    return which


def _save_best_model(run):
    """Copies the best epoch's model to `--output`; its `(epoch, value)`, or None.

    None when there is no best model to keep: `--keep last`, no validation
    set, or no epoch with a finite `val_accuracy`.
    """
    if run.keep != KEEP_BEST or not run.best_model or not os.path.exists(run.best_model):
        return None
    found = run_files.best_epoch(run.history, MONITOR, since=run.best_since)
    if found is None:
        return None
    _copy_atomically(run.best_model, run.output)
    update_history(run.history, {"saved_epoch": found[0]})
    return found


def _save_average(model, run, val_ds):
    """Saves the averaged model (`--keep average`) to `--output`; says which it is."""
    averaging = run.averaging
    value = None
    if val_ds is not None:
        # The logs hold each epoch's val_accuracy, not the mean's.
        results = model.evaluate(val_ds, verbose=0, return_dict=True)
        value = json_number(results.get("accuracy"))
    save_model(model, run.output)
    first, last = averaging.first_epoch, averaging.last_epoch
    update_history(
        run.history,
        {"saved": {"kept": KEEP_AVERAGE, "epochs": [first, last], MONITOR: value}},
    )
    span = f"epoch {last + 1}" if first == last else f"epochs {first + 1}-{last + 1}"
    which = f"averaged over {span} of {run.epochs}"
    if value is not None:
        which += f" ({MONITOR} {value:.4f}"
        best = run_files.best_epoch(run.history, MONITOR)
        if best is not None:
            which += f"; the best single epoch, {best[0] + 1}: {best[1]:.4f}"
        which += ")"
    return which


def _average_start_epoch(args):
    """`--keep average` averages from the last unfreeze on: one phase, the same layers."""
    if not args.fine_tune_epochs:
        return 0  # All epochs are one phase.
    schedule = _schedule(args)
    if isinstance(schedule, GradualSchedule):
        schedule = schedule.resolve(args.unfreeze_blocks)
    return min(max(schedule), args.epochs + args.fine_tune_epochs - 1)


def _schedule(args):
    return fine_tune_schedule(
        args.epochs, args.unfreeze_blocks, args.fine_tune_epochs, args.gradual
    )


def _copy_atomically(source, path):
    """Copies `source` to `path` under a temporary name, then renames it.

    Like `save_model`: an interrupted copy never leaves a truncated model
    where the previous one was.
    """
    folder, name = os.path.split(path)
    remove_stale_temporaries(folder, name, ".tmp.keras")
    temporary = os.path.join(folder, f".{name}.{os.getpid()}.tmp.keras")
    try:
        shutil.copyfile(source, temporary)
        fsync_file(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


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


def _class_weight(args, run, train_ds, class_names):
    """`--class-weight balanced`: n / (classes * n_class) over the training images."""
    if not args.class_weight:
        return None
    # The class is the image's folder under DATA_DIR: no image is decoded.
    counts = collections.Counter(
        os.path.relpath(path, run.data_dir).split(os.sep)[0]
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
        "resize": args.resize,
        "weights": args.weights,
        "data_dir": run.data_dir,
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
        "keep": run.keep,
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
        callbacks.append(
            ProgressiveUnfreeze(schedule=_schedule(args), lr_ratio=args.backbone_lr_ratio)
        )
    callbacks += [run.nan_guard, JsonHistory(run.history, metadata)]
    if run.log_dir:
        tensorboard = FlushingTensorBoard(run.log_dir)
        callbacks += [tensorboard, PhaseTimer(tensorboard)]
    if run.keep == KEEP_AVERAGE or (run.best_model and run.best_model != run.checkpoint):
        # The best model and the average go to the backup folder, otherwise
        # created at the end of the first epoch, after they write.
        callbacks.append(
            keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: os.makedirs(run.backup_dir, exist_ok=True)
            )
        )
    if run.best_model:
        best = run_files.best_so_far(run, MONITOR)
        # Without the best model of the epochs already done (a backup made
        # before it was kept), the best is that of this run's epochs.
        run.best_since = run.resume_epoch if best is None else 0
        callbacks.append(BestCheckpoint(run.best_model, monitor=MONITOR, best=best))
    if run.keep == KEEP_AVERAGE:
        # Before the backup, which it may run one epoch ahead of: its file
        # keeps the epoch before too (see WeightAveraging).
        run.averaging = WeightAveraging(
            start_epoch=_average_start_epoch(args),
            path=os.path.join(run.backup_dir, RunBackup.AVERAGE),
        )
        callbacks.append(run.averaging)
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
        done = guard.good_epoch + 1
        kept = _save_best_model(run)
        if kept is None:
            model.set_weights(guard.good_weights)
            save_model(model, run.output)
            update_history(run.history, {"saved_epoch": guard.good_epoch})
        if kept is None or kept[0] == guard.good_epoch:
            which = f"epoch {done}, the last finished one"
        else:
            which = (
                f"epoch {kept[0] + 1}, the best {MONITOR} ({kept[1]:.4f}) of the "
                "finished ones"
            )
        message = (
            f"{where}; training stopped. Saved the model of {which}, to {run.output}; "
            f"{run.history} keeps the finished epochs. "
            f"{fix}, then run the command again to resume at epoch {done + 1}, or "
            f"delete {run.backup_dir} to start over."
        )
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return EXIT_NON_FINITE_LOSS
