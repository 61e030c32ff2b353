"""One run of a comparison: build, train under the budget, summarise.

A run's clock starts before its model is built, so building it and loading
the ImageNet weights count, as does everything `fit` does (computing the
cache of frozen features, tracing) and every validation pass. The run stops
after the comparison's epochs or at the first training step past its
budget (`WallClockBudget`), whichever comes first. Every run starts from a
cleared session, the comparison's seeds and new data pipelines, after the
backbone's warm-up (`experiment.warmup`): what differs between two runs is
their recipe, not their place in the queue. After the clock stops,
the final model is scored on the validation set: the recall of each class
and the confusion matrix (`utils.metrics`, as `keras-transfer evaluate`).
"""

import contextlib
import dataclasses
import gc
import logging
import os
import shutil
import time
import warnings

import keras
import numpy as np

from keras_transfer.callbacks.phase_timer import PhaseTimer
from keras_transfer.callbacks.progressive_unfreeze import ProgressiveUnfreeze
from keras_transfer.callbacks.run_recorder import RunRecorder
from keras_transfer.callbacks.wall_clock_budget import WallClockBudget
from keras_transfer.experiment.methods import METHOD_LABELS
from keras_transfer.experiment.progress import RunProgress
from keras_transfer.models import build_classifier
from keras_transfer.models import find_backbone
from keras_transfer.utils.metrics import confusion_matrix
from keras_transfer.utils.metrics import per_class_scores

# `fit` needs an epoch count; with a budget alone the budget stops the run.
_UNLIMITED_EPOCHS = 1_000_000


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """What every run of a comparison shares.

    Example:

    ```python
    data = ComparisonData.from_folder("flower_photos", 160, 32, 0.2, seed=1337)
    settings = RunSettings(data, shape=(160, 160, 3), epochs=10,
                           budget_seconds=None, learning_rate=1e-3,
                           seed=1337, target_accuracy=0.8, output_dir="compare")
    ```

    Args:
        data: the `ComparisonData`; each run gets fresh pipelines from it.
        shape: the `(height, width, 3)` input shape.
        epochs: int, the most epochs per run, or None for the budget alone.
        budget_seconds: float, the most wall-clock seconds per run, or None.
        learning_rate: float, Adam's learning rate (the head's in `fine_tune`).
        seed: int, seed of the shuffling and the initial weights.
        target_accuracy: float, the validation accuracy whose time-to-reach
            the run reports.
        output_dir: the comparison's folder; TensorBoard logs go to
            `tensorboard/<run>` in it.
        log: the `ComparisonLog` for the progress line and the per-epoch
            lines, or None for silence.
    """

    data: object
    shape: tuple
    epochs: object
    budget_seconds: object
    learning_rate: float
    seed: int
    target_accuracy: float
    output_dir: str
    log: object = None

    @property
    def num_classes(self):
        return len(self.data.class_names)


def train_run(spec, method, settings, schedule=None, position=(1, 1)):
    """Trains one run and returns its entry of `results["runs"]`.

    Every run starts from the same state: a cleared Keras session, the
    global seeds set to `settings.seed`, and new data pipelines, so that runs
    whose recipes agree for their first epochs (`head_only` and `fine_tune`
    until the first unfreeze) compute the same numbers for those epochs.

    Example:

    ```python
    run = train_run(get_backbone("mobilenet_v2_050"), "head_only", settings)
    print(run["best_val_accuracy"], run["total_seconds"])
    ```

    Args:
        spec: the backbone's `BackboneSpec`.
        method: one of `METHODS`.
        settings: the comparison's `RunSettings`.
        schedule: the `ProgressiveUnfreeze` schedule of a `fine_tune` run;
            None for the other methods.
        position: `(number, total)` of the run, for the progress line.

    Raises:
        WeightsError: the ImageNet weights of `spec` cannot be loaded.
    """
    name = f"{spec.name}-{method}"
    log_dir = os.path.join(settings.output_dir, "tensorboard", name)
    # Two runs' event files in one folder would show as one run.
    shutil.rmtree(log_dir, ignore_errors=True)
    if settings.log is not None:
        settings.log.say(_header(spec, method, schedule, position))

    keras.backend.clear_session()
    # The earlier runs' models are freed here, not on this run's clock.
    gc.collect()
    keras.utils.set_random_seed(settings.seed)
    train_ds = settings.data.train_dataset()
    val_ds = settings.data.validation_dataset()
    start = time.perf_counter()
    budget_seconds = settings.budget_seconds
    deadline = None if budget_seconds is None else start + budget_seconds
    model = build_run_model(spec, method, settings)
    fitted = fit_run(
        model,
        method,
        settings,
        train_ds,
        val_ds,
        schedule,
        log_dir,
        start=start,
        deadline=deadline,
    )
    total_seconds = time.perf_counter() - start
    scores = validation_scores(model, val_ds, settings.num_classes)
    del model
    keras.backend.clear_session()

    recorder, unfreeze = fitted.recorder, fitted.unfreeze
    run = _summary(spec, method, settings, recorder, start, total_seconds)
    run.update(scores)
    run["stopped_by"] = "budget" if fitted.budget.stopped else "epochs"
    run["phases"] = _phases(
        method,
        unfreeze,
        recorder.history,
        recorder.fit_start - start,
        recorder.trainable_params,
    )
    run["phases_not_reached"] = _phases_not_reached(unfreeze, run["phases"])
    run["history"] = recorder.history
    run["tensorboard"] = os.path.relpath(log_dir, settings.output_dir)
    if unfreeze is not None:
        run["schedule"] = [list(phase) for phase in unfreeze.phases]
        run["unit"] = unfreeze.unit
    return run


@dataclasses.dataclass
class FittedRun:
    """The callbacks of a finished `fit_run`, which hold what it measured."""

    recorder: RunRecorder
    budget: WallClockBudget
    unfreeze: object  # ProgressiveUnfreeze, or None


def fit_run(
    model,
    method,
    settings,
    train_ds,
    val_ds,
    schedule,
    log_dir,
    start=None,
    deadline=None,
    progress=True,
):
    """Fits `model` as a run of `method` does, with the run's callbacks.

    The warm-up (`experiment.warmup`) calls it on a few images, the runs on
    all of them: both trace and run the same functions.

    Example:

    ```python
    fitted = fit_run(model, "head_only", settings, train_ds, val_ds, None,
                     "compare/tensorboard/x", start=time.perf_counter())
    fitted.recorder.history[-1]["val_accuracy"]
    ```

    Args:
        model: the model of `build_run_model`.
        method: one of `METHODS`.
        settings: the comparison's `RunSettings`.
        train_ds, val_ds: the data pipelines.
        schedule: the `fine_tune` run's schedule, None for the others.
        log_dir: the `PhaseTimer` TensorBoard folder.
        start: the `time.perf_counter()` value the run's clock started at.
        deadline: the budget's end as a `time.perf_counter()` value, or None.
        progress: show the run's progress line and log its epochs.

    Returns:
        A `FittedRun`.
    """
    unfreeze = None
    if method == "fine_tune":
        # Phase changes go to the log, not between the progress line's updates.
        unfreeze = ProgressiveUnfreeze(schedule=schedule, verbose=0)
    reporter = None
    if progress and settings.log is not None:
        reporter = RunProgress(
            settings.log,
            settings.epochs,
            start,
            deadline,
            phase_name=lambda index: _phase_description(method, unfreeze, index),
        )
    recorder = RunRecorder(start, on_epoch=reporter.epoch_done if reporter else None)
    budget = WallClockBudget(deadline)
    callbacks = [unfreeze] if unfreeze is not None else []
    callbacks += [PhaseTimer(log_dir), recorder, budget]
    callbacks += [reporter] if reporter is not None else []
    try:
        with _retracing_warnings_silenced():
            model.fit(
                train_ds,
                validation_data=val_ds,
                epochs=settings.epochs or _UNLIMITED_EPOCHS,
                callbacks=callbacks,
                verbose=0,
                shuffle=False,
            )
    finally:
        if reporter is not None:
            reporter.finish()
    return FittedRun(recorder, budget, unfreeze)


def build_run_model(spec, method, settings):
    """The compiled classifier of a run of `method` on `spec`.

    Example:

    ```python
    model = build_run_model(get_backbone("mobilenet_v2_050"), "scratch", settings)
    ```
    """
    with warnings.catch_warnings():
        # Reported once when the weights were checked before the runs.
        warnings.filterwarnings("ignore", message=".*cannot be downloaded; loading")
        warnings.filterwarnings("ignore", message=".*will be loaded as the default")
        model = build_classifier(
            spec,
            settings.num_classes,
            input_shape=settings.shape,
            weights=None if method == "scratch" else "imagenet",
        )
    if method == "scratch":
        backbone, _ = find_backbone(model)
        # Propagates to every layer: BatchNormalization trains too.
        backbone.trainable = True
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=settings.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def validation_scores(model, val_ds, num_classes):
    """The per-class recall and the confusion matrix of `model` on `val_ds`.

    Example:

    ```python
    validation_scores(model, val_ds, 5)
    # {"per_class_recall": [0.9, 0.75, ...], "confusion_matrix": [[18, 1, ...], ...]}
    ```

    Args:
        model: the trained classifier.
        val_ds: batches of `(images, labels)`, labels as class indices; None
            for no validation set.
        num_classes: int, the classifier's outputs.

    Returns:
        `{"per_class_recall": [...], "confusion_matrix": [[...]]}` in class
        order (a recall is None for a class without validation images);
        both None without validation images.
    """
    if val_ds is None:
        return {"per_class_recall": None, "confusion_matrix": None}
    labels, predictions = [], []
    for images, batch_labels in val_ds:
        labels.append(np.asarray(batch_labels).reshape(-1))
        predictions.append(np.asarray(model.predict_on_batch(images)).argmax(axis=-1))
    if not labels:
        return {"per_class_recall": None, "confusion_matrix": None}
    confusion = confusion_matrix(np.concatenate(labels), np.concatenate(predictions), num_classes)
    return {
        "per_class_recall": [s["recall"] for s in per_class_scores(confusion)],
        "confusion_matrix": confusion.tolist(),
    }


def _summary(spec, method, settings, recorder, start, total_seconds):
    """The run's accuracies and times, in the order of `results.json`."""
    history = recorder.history
    trained = [r for r in history if r["accuracy"] is not None]
    validated = [r for r in history if r["val_accuracy"] is not None]
    reached = [r for r in validated if r["val_accuracy"] >= settings.target_accuracy]
    return {
        "name": f"{spec.name}-{method}",
        "backbone": spec.name,
        "method": method,
        "label": f"{spec.name}, {METHOD_LABELS[method]}",
        "weights": None if method == "scratch" else "imagenet",
        "learning_rate": settings.learning_rate,
        "schedule": None,
        "unit": None,
        "best_accuracy": _max(r["accuracy"] for r in trained),
        "final_accuracy": trained[-1]["accuracy"] if trained else None,
        "best_val_accuracy": _max(r["val_accuracy"] for r in validated),
        "final_val_accuracy": validated[-1]["val_accuracy"] if validated else None,
        "seconds_to_target": reached[0]["seconds"] if reached else None,
        "setup_seconds": round(recorder.fit_start - start, 3),
        "total_seconds": round(total_seconds, 3),
    }


def _phases(method, unfreeze, history, setup_seconds, trainable_params):
    """What each phase trained and how long it took (after the setup)."""
    if not history:
        return []
    phases = []
    previous_end = setup_seconds
    for record in history:
        if not phases or phases[-1]["index"] != record["phase"]:
            phases.append(
                {
                    "index": record["phase"],
                    "start_epoch": record["epoch"],
                    "trainable": _phase_description(method, unfreeze, record["phase"]),
                    "trainable_params": trainable_params.get(record["phase"]),
                    "seconds": 0.0,
                }
            )
        phases[-1]["seconds"] = round(phases[-1]["seconds"] + record["seconds"] - previous_end, 3)
        previous_end = record["seconds"]
    return phases


def _phase_description(method, unfreeze, index):
    """What trains in phase `index`: "all layers", "head" or "last 3 blocks"."""
    if unfreeze is None:
        return "all layers" if method == "scratch" else "head"
    phases = unfreeze.phases
    if not 0 <= index < len(phases):
        return "?"
    depth = phases[index][1]
    return "head" if depth == 0 else f"last {depth} {unfreeze.unit}"


def _phases_not_reached(unfreeze, phases):
    """The schedule's phases that the run never trained in (the limit came first)."""
    if unfreeze is None:
        return []
    reached = {phase["index"] for phase in phases}
    return [
        {
            "index": index,
            "start_epoch": start_epoch,
            "trainable": _phase_description("fine_tune", unfreeze, index),
        }
        for index, (start_epoch, _) in enumerate(unfreeze.phases)
        if index not in reached
    ]


def _max(values):
    values = list(values)
    return max(values) if values else None


@contextlib.contextmanager
def _retracing_warnings_silenced():
    # Every run traces the train function of a new model; TensorFlow counts
    # them together and, from the third run on, warns of "excessive
    # retracing", which here is expected and harmless.
    import tensorflow as tf

    logger = tf.get_logger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


# --- progress ----------------------------------------------------------------


def _header(spec, method, schedule, position):
    number, total = position
    what = {
        "scratch": "random weights, every layer trains",
        "head_only": "ImageNet weights, backbone frozen",
        "fine_tune": f"ImageNet weights, unfreeze schedule {_schedule_text(schedule)}",
    }[method]
    return f"\n[{number}/{total}] {spec.name}, {METHOD_LABELS[method]} ({what})"


def _schedule_text(schedule):
    if isinstance(schedule, dict):
        return ", ".join(
            f"last {depth} blocks from epoch {epoch + 1}"
            for epoch, depth in sorted(schedule.items())
            if depth
        )
    return repr(schedule)
