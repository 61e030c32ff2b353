"""The work of `keras-transfer train`: one `model.fit`, then the model it keeps.

`run_training` takes a `TrainConfig` (`keras_transfer.cli.train`) and
trains: `--epochs` epochs train the head with the backbone frozen, then
`--fine-tune-epochs` epochs also train the last `--unfreeze-blocks` blocks
of the backbone (`ProgressiveUnfreeze`). The callbacks, in the order their
epoch ends run: the unfreezing, `NonFiniteLossGuard` (exit 3 on a NaN loss),
`JsonHistory` (history.json), TensorBoard and `PhaseTimer` (`--log-dir`),
`BestCheckpoint` (the best epoch's model: `--checkpoint`, or a file in the
backup folder for `--keep best`), `WeightAveraging` (`--keep average`: the
running mean of the weights from the last unfreeze on, an epoch the
`UnfreezePlan` gives, in the backup folder), and last `RunBackup`, which a
re-run of the same command resumes from. `--output` gets the best epoch's
model (`--keep best`), the last epoch's (`--keep last`) or the averaged one,
evaluated on the validation set (`--keep average`).

This module imports TensorFlow: `train_command` imports it once the
configuration is resolved.
"""

import collections
import dataclasses
import os
import shutil
import sys
import time
import warnings

import keras
import tensorflow as tf

from keras_transfer import caching
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
from keras_transfer.cli.arguments import AUTO
from keras_transfer.cli.program import EXIT_INTERRUPTED
from keras_transfer.cli.program import EXIT_NON_FINITE_LOSS
from keras_transfer.cli.program import PROG
from keras_transfer.cli.train import KEEP_AVERAGE
from keras_transfer.cli.train import KEEP_BEST
from keras_transfer.data import load_image_folder
from keras_transfer.learning_rate import describe as describe_finding
from keras_transfer.learning_rate import find_learning_rate
from keras_transfer.models import build_classifier
from keras_transfer.models import save_model
from keras_transfer.unfreeze import UnfreezePlan
from keras_transfer.unfreeze import fine_tune_schedule
from keras_transfer.utils.checks import plural
from keras_transfer.utils.files import fsync_file
from keras_transfer.utils.files import json_number
from keras_transfer.utils.files import remove_stale_temporaries

# What `--keep best` and `--checkpoint` maximise.
MONITOR = "val_accuracy"


@dataclasses.dataclass(frozen=True)
class TrainingRun:
    """What one run of `train` keeps beside the model, set up once before `fit`.

    Attributes:
        backup: the `RunBackup` a re-run resumes from.
        resume_epoch: the epochs a resumed run has already done.
        learning_rate: the head's learning rate (that `auto` found, if it did).
        guard: the `NonFiniteLossGuard`, which keeps the last good weights.
        best_model: the file the best epoch's model is kept in during the
            run (`--checkpoint`, or one in the backup folder), or None.
        best_so_far: the best `MONITOR` of the epochs a resumed run has done
            (None: a new run, or no best model kept yet).
        best_since: the first epoch the best model is chosen from (that of a
            resumed run whose backup kept no best model, else 0).
        averaging: the `WeightAveraging` of `--keep average`, or None.
        score: the `ValidationScore` of the averaged model, or None.
    """

    backup: RunBackup
    resume_epoch: int
    learning_rate: float
    guard: NonFiniteLossGuard
    best_model: str
    best_so_far: float
    best_since: int
    averaging: WeightAveraging
    score: "ValidationScore" = None


class ValidationScore(keras.callbacks.Callback):
    """The model's validation results as the fit ends, from the cached features.

    After `WeightAveraging` (which writes the mean in its `on_train_end`):
    the averaged model scored on the features the fit's validation read, the
    number `model.evaluate` on the images gives, without a pass over them.
    `results` stays None when the fit trained uncached or without
    validation data.
    """

    results = None
    seconds = None

    def on_train_end(self, logs=None):
        start = time.perf_counter()
        self.results = caching.evaluate_validation_features(self.model, verbose=0, return_dict=True)
        self.seconds = time.perf_counter() - start


def run_training(config):
    """Trains and saves the classifier `config` describes; returns the exit status.

    Example:

    ```python
    config = TrainConfig.from_arguments(build_parser().parse_args(["train", "photos"]))
    status = run_training(config)  # None: trained and saved
    ```

    Args:
        config: a `TrainConfig`.

    Returns:
        None (exit 0), `EXIT_NON_FINITE_LOSS` or `EXIT_INTERRUPTED`.

    Raises:
        KerasTransferError: a mistake in the data or a backup of another run,
            found before anything trains.
    """
    # When each part of the run ended (history.json's "timeline").
    timeline = {"start": time.time()}
    keras.utils.set_random_seed(config.seed)
    train_ds, val_ds, class_names = load_image_folder(
        config.data_dir,
        config.image_size,
        batch_size=config.batch_size,
        validation_split=config.validation_split,
        seed=config.seed,
        resize=config.resize,
        # The fit reads the images once, into its frozen-feature cache:
        # decoded images kept beside it would only make memory grow with the
        # photos. An uncached fit (a backend without the cache) reads them
        # every epoch, and keeps them.
        cache=keras.backend.backend() not in caching.BACKENDS,
    )
    timeline["data_loaded"] = time.time()
    backup = RunBackup(config.backup_dir, config.backup_identity(class_names), config.learning_rate)
    resume_epoch = backup.resume_epoch()
    if resume_epoch:
        print(
            f"Resuming from the backup in {config.backup_dir}: {resume_epoch} of "
            f"{plural(config.epochs, 'epoch')} are done."
        )
    model = _compiled_model(config, class_names)
    class_weight = _class_weight(config, train_ds, class_names)
    learning_rate = config.learning_rate
    if learning_rate == AUTO:
        learning_rate = _auto_learning_rate(model, train_ds, class_weight)
        backup.learning_rate = model.optimizer.learning_rate = learning_rate
    run = _start_run(config, model, backup, resume_epoch, learning_rate, val_ds is not None)
    metadata = config.history_metadata(class_names, learning_rate)
    timeline["fit_start"] = time.time()
    try:
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=config.epochs,
            callbacks=build_callbacks(config, run, metadata),
            class_weight=class_weight,
            # The dataset reshuffles itself every epoch; Keras warns when asked
            # to shuffle a tf.data.Dataset.
            shuffle=False,
        )
    except NonFiniteLoss as stop:
        return _stop_on_non_finite_loss(stop, model, config, run)
    except KeyboardInterrupt:
        return _stop_on_interrupt(config, run)
    timeline["fit_end"] = time.time()
    # The model and history go to disk before the backup goes away: a kill
    # between the two leaves a run that resumes, never one that is lost.
    which = _save_output(model, config, run, val_ds)
    timeline["saved"] = time.time()
    _record_timeline(config, model, run, timeline)
    backup.delete()
    print(f"Saved the model {which}, to {config.output} and its history to {config.history}.")


def _record_timeline(config, model, run, timeline):
    """Writes the run's timeline to history.json, for benchmarks/flowers.py's breakdown.

    Times are `time.time()` stamps; `cache_pass_seconds` is the part of the
    fit before its first epoch, `score_seconds` the averaged model's scoring
    in the fit's last callbacks.
    """
    info = caching.feature_cache_info(model)
    timeline["cache_pass_seconds"] = info.seconds if info is not None else None
    timeline["score_seconds"] = run.score.seconds if run.score is not None else None
    update_history(config.history, {"timeline": timeline})


def _compiled_model(config, class_names):
    """The classifier, compiled with Adam (its default rate for `auto`, until found)."""
    size = config.image_size
    # The CLI's users pass --weights, not weights=: the messages say so.
    with weights_lib.argument_spelling(weights_lib.CLI_SPELLING):
        model = build_classifier(
            config.backbone.name,
            len(class_names),
            input_shape=(size, size, 3),
            weights=config.weights,
            class_names=class_names,
            resize=config.resize,
            dtype=_dtype(config),
        )
    rate = config.learning_rate
    model.compile(
        optimizer=keras.optimizers.Adam(**({} if rate == AUTO else {"learning_rate": rate})),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def unfreeze_schedule(config):
    """The run's schedule: the head alone, then the top `--unfreeze-blocks` blocks."""
    depth = config.unfreeze_blocks if config.fine_tune_epochs else 0
    return fine_tune_schedule(config.head_epochs, depth, config.fine_tune_epochs, config.gradual)


def _start_run(config, model, backup, resume_epoch, learning_rate, has_validation):
    """The `TrainingRun`: where the best model goes, from when the average counts."""
    best_model = config.checkpoint
    if config.keep == KEEP_BEST and has_validation:
        best_model = config.checkpoint or os.path.join(config.backup_dir, RunBackup.BEST_MODEL)
    best = None
    if best_model:
        best = run_files.best_so_far(config.history, best_model, resume_epoch, MONITOR)
    averaging = None
    if config.keep == KEEP_AVERAGE:
        # From the last unfreeze on: one phase, the same layers train.
        last_unfreeze = UnfreezePlan(model, schedule=unfreeze_schedule(config)).phases[-1][0]
        averaging = WeightAveraging(
            start_epoch=min(last_unfreeze, config.epochs - 1),
            path=os.path.join(config.backup_dir, RunBackup.AVERAGE),
        )
    return TrainingRun(
        backup=backup,
        resume_epoch=resume_epoch,
        learning_rate=learning_rate,
        guard=NonFiniteLossGuard(),
        best_model=best_model,
        best_so_far=best,
        # Without the best model of the epochs already done (a backup made
        # before it was kept), the best is that of this run's epochs.
        best_since=resume_epoch if best is None else 0,
        averaging=averaging,
        score=ValidationScore() if averaging is not None else None,
    )


def build_callbacks(config, run, metadata):
    """The callbacks of `train`, in the order their epoch ends must run.

    Args:
        config: the `TrainConfig`.
        run: the `TrainingRun`.
        metadata: what history.json records beside the epochs.

    Returns:
        A list of callbacks for `model.fit`, the run's `RunBackup` last.
    """
    callbacks = []
    if config.fine_tune_epochs:
        # First: it adds the phase to the logs the others write.
        callbacks.append(
            ProgressiveUnfreeze(
                schedule=unfreeze_schedule(config), lr_ratio=config.backbone_lr_ratio
            )
        )
    callbacks += [run.guard, JsonHistory(config.history, metadata)]
    if config.log_dir:
        tensorboard = FlushingTensorBoard(config.log_dir)
        callbacks += [tensorboard, PhaseTimer(tensorboard)]
    if run.averaging is not None or (run.best_model and run.best_model != config.checkpoint):
        # The best model and the average go to the backup folder, otherwise
        # created at the end of the first epoch, after they write.
        callbacks.append(
            keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: os.makedirs(config.backup_dir, exist_ok=True)
            )
        )
    if run.best_model:
        callbacks.append(BestCheckpoint(run.best_model, monitor=MONITOR, best=run.best_so_far))
    if run.averaging is not None:
        # Before the backup, which it may run one epoch ahead of: its file
        # keeps the epoch before too (see WeightAveraging).
        callbacks += [run.averaging, run.score]
    # Last: an epoch counts as done for a resumed run only once everything
    # above has recorded it, so a kill in between repeats the epoch (and
    # rewrites its records) rather than leaving it out.
    callbacks.append(run.backup)
    return callbacks


def _save_output(model, config, run, val_ds):
    """Saves the model `--keep` asks for to `--output`; says which it is."""
    if run.averaging is not None and run.averaging.count:
        return _save_average(model, config, run, val_ds)
    kept = _save_best_model(config, run)
    if kept is not None:
        epoch, value = kept
        return f"of epoch {epoch + 1}/{config.epochs}, the best {MONITOR} ({value:.4f})"
    save_model(model, config.output)
    update_history(config.history, {"saved_epoch": config.epochs - 1})
    which = f"of the last epoch, {config.epochs}/{config.epochs}"
    if config.keep == KEEP_BEST:
        which += f" (no {MONITOR} to choose the best epoch by)"
    elif config.keep == KEEP_AVERAGE:
        which += " (no epoch was averaged)"
    return which


def _save_best_model(config, run):
    """Copies the best epoch's model to `--output`; its `(epoch, value)`, or None.

    None when there is no best model to keep: `--keep last`, no validation
    set, or no epoch with a finite `val_accuracy`.
    """
    if config.keep != KEEP_BEST or not run.best_model or not os.path.exists(run.best_model):
        return None
    found = run_files.best_epoch(config.history, MONITOR, since=run.best_since)
    if found is None:
        return None
    _copy_atomically(run.best_model, config.output)
    update_history(config.history, {"saved_epoch": found[0]})
    return found


def _save_average(model, config, run, val_ds):
    """Saves the averaged model (`--keep average`) to `--output`; says which it is."""
    averaging = run.averaging
    value = None
    # The logs hold each epoch's val_accuracy, not the mean's.
    results = run.score.results
    if results is None and val_ds is not None:
        results = model.evaluate(val_ds, verbose=0, return_dict=True)
    if results is not None:
        value = json_number(results.get("accuracy"))
    save_model(model, config.output)
    first, last = averaging.first_epoch, averaging.last_epoch
    update_history(
        config.history,
        {"saved": {"kept": KEEP_AVERAGE, "epochs": [first, last], MONITOR: value}},
    )
    span = f"epoch {last + 1}" if first == last else f"epochs {first + 1}-{last + 1}"
    which = f"averaged over {span} of {config.epochs}"
    if value is not None:
        which += f" ({MONITOR} {value:.4f}"
        best = run_files.best_epoch(config.history, MONITOR)
        if best is not None:
            which += f"; the best single epoch, {best[0] + 1}: {best[1]:.4f}"
        which += ")"
    return which


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


def _dtype(config):
    if not config.mixed_precision:
        return None
    if not tf.config.list_physical_devices("GPU"):
        warnings.warn(
            "--mixed-precision on a CPU is slow (float16 is emulated there); it pays off on a GPU.",
            stacklevel=2,
        )
    return "mixed_float16"


def _class_weight(config, train_ds, class_names):
    """`--class-weight balanced`: n / (classes * n_class) over the training images."""
    if not config.class_weight:
        return None
    # The class is the image's folder under DATA_DIR: no image is decoded.
    counts = collections.Counter(
        os.path.relpath(path, config.data_dir).split(os.sep)[0] for path in train_ds.file_paths
    )
    total = sum(counts.values())
    weights = {
        label: total / (len(class_names) * counts[name]) for label, name in enumerate(class_names)
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


def _stop_on_interrupt(config, run):
    message = f"{PROG}: interrupted"
    if run.guard.good_epoch is not None:
        message += (
            f" after epoch {run.guard.good_epoch + 1}/{config.epochs}. Run the "
            f"same command to resume (backup: {config.backup_dir})."
        )
    print(message, file=sys.stderr)
    return EXIT_INTERRUPTED


def _stop_on_non_finite_loss(stop, model, config, run):
    """Saves the last good model, if any, and says what to do; returns 3."""
    if stop.batch is None:
        where = (
            f"the validation loss became {stop.loss} at the end of epoch "
            f"{stop.epoch + 1}/{config.epochs} (the training loss was finite: check "
            "the validation images, or lower the learning rate)"
        )
    else:
        where = (
            f"the loss became {stop.loss} at epoch {stop.epoch + 1}/{config.epochs}, "
            f"batch {stop.batch + 1}"
        )
    fix = f"Lower --learning-rate (now {run.learning_rate:g})"
    if stop.epoch >= config.head_epochs:
        where += " (fine-tuning)"
        fix += f" or --backbone-lr-ratio (now {config.backbone_lr_ratio:g})"
    guard = run.guard
    if guard.good_weights is None:
        message = f"{where}, before any epoch finished; nothing was saved. {fix}."
    else:
        done = guard.good_epoch + 1
        kept = _save_best_model(config, run)
        if kept is None:
            model.set_weights(guard.good_weights)
            save_model(model, config.output)
            update_history(config.history, {"saved_epoch": guard.good_epoch})
        if kept is None or kept[0] == guard.good_epoch:
            which = f"epoch {done}, the last finished one"
        else:
            which = f"epoch {kept[0] + 1}, the best {MONITOR} ({kept[1]:.4f}) of the finished ones"
        message = (
            f"{where}; training stopped. Saved the model of {which}, to {config.output}; "
            f"{config.history} keeps the finished epochs. "
            f"{fix}, then run the command again to resume at epoch {done + 1}, or "
            f"delete {config.backup_dir} to start over."
        )
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return EXIT_NON_FINITE_LOSS
