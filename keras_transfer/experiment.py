"""The experiment: what does a pretrained backbone buy on your own images?

`run_comparison` (and `keras-transfer compare`) trains, on one seeded split of
a folder of images and for each backbone listed, three runs of the same
architecture:

1. `scratch`: random weights, every layer trainable (BatchNormalization
   included);
2. `head_only`: ImageNet weights, backbone frozen, only the head trains;
3. `fine_tune`: ImageNet weights, the head first, then the top blocks of the
   backbone, unfrozen by `ProgressiveUnfreeze` inside the same `fit`.

Every run stops after the same number of epochs or the same wall-clock
budget, whichever comes first, and writes `PhaseTimer` logs to
`OUT/tensorboard/<run>`. The answer is three files in `OUT`:

- `report.md`: one table row per run (best and final train and validation
  accuracy, time to reach the target validation accuracy, 80 % by default,
  total time, time per phase), then a conclusion in plain words computed
  from those numbers, and the plot.
- `results.json`: the same numbers, plus the setup, the machine and the
  per-epoch history of every run with wall-clock times.
- `accuracy_vs_time.png`: validation accuracy against wall-clock seconds, one
  line per run, a mark where a fine-tuning run changed phase.

The files are rewritten after every run, so an interrupted comparison keeps
the runs it finished.

What the times count: a run's clock starts before its model is built, so
building it and loading the ImageNet weights count, as do everything `fit`
does (computing the cache of frozen features that `build_classifier` models
keep, tracing) and every validation pass. `setup_seconds` is the time before
Keras' training loop begins: building, loading weights, caching features.
The images are decoded, resized and cached in memory once, before the first
run, so that no run pays for it (`data_seconds` in `results.json`); the
ImageNet weights of every backbone are loaded (downloaded, if the machine is
online) once before the runs too. The budget is checked after every training
step: the run stops at the first step that ends past the budget, then
validates once, so a run overshoots by at most one step and one validation
pass, and its last epoch may be partial (`"partial": true`).

`results.json`:

```
{"data_dir": ..., "class_names": [...], "num_train_images": 2000,
 "num_validation_images": 500, "image_size": [224, 224], "batch_size": 32,
 "validation_split": 0.2, "seed": 1337, "epochs": 10, "budget_minutes": 25,
 "target_accuracy": 0.8, "data_seconds": 41.2, "machine": {...},
 "started_at": "2026-...", "skipped": [{"backbone": "resnet50", "reason": ...}],
 "runs": [{"name": "mobilenet_v2_050-fine_tune", "backbone": ...,
           "method": "fine_tune", "label": "mobilenet_v2_050, head then fine-tune",
           "weights": "imagenet", "learning_rate": 0.001,
           "schedule": [[0, 0], [4, 3], [7, 6]], "unit": "blocks",
           "best_accuracy": ..., "final_accuracy": ...,
           "best_val_accuracy": ..., "final_val_accuracy": ...,
           "seconds_to_target": 95.2,  # null: not reached
           "setup_seconds": 2.1, "total_seconds": 600.4,
           "stopped_by": "epochs",      # or "budget"
           "phases": [{"index": 0, "start_epoch": 0, "trainable": "head",
                       "trainable_params": 6405, "seconds": 180.2}, ...],
           "history": [{"epoch": 0, "loss": ..., "accuracy": ...,
                        "val_loss": ..., "val_accuracy": ...,
                        "seconds": 48.3, "phase": 0, "partial": false}, ...],
           "tensorboard": "tensorboard/mobilenet_v2_050-fine_tune"}, ...],
 "conclusion": ["...", ...]}
```

Accuracies are fractions in [0, 1]; `seconds` count from the start of the
run; `epoch` counts from 0 as in Keras callbacks. `schedule` (null except in
`fine_tune` runs) lists the `[start_epoch, depth]` of each phase, the depth in
`unit`s counted from the top of the backbone; `phases` lists the phases the
run reached, their `seconds` after `setup_seconds`, so that setup and phases
add up to the run's time.
"""

import contextlib
import datetime
import json
import logging
import math
import numbers
import os
import platform
import shutil
import sys
import time
import warnings

import keras

from keras_transfer import backbones as backbones_lib
from keras_transfer.backbones import weights as weights_lib
from keras_transfer.unfreeze import phase as unfreeze_phase
from keras_transfer.callbacks.phase_timer import PhaseTimer
from keras_transfer.callbacks.progressive_unfreeze import GradualSchedule
from keras_transfer.callbacks.progressive_unfreeze import ProgressiveUnfreeze
from keras_transfer.data import load_image_folder
from keras_transfer.errors import ConfigurationError
from keras_transfer.errors import DataError
from keras_transfer.errors import WeightsError
from keras_transfer.models import build_classifier
from keras_transfer.models import find_backbone

METHODS = ("scratch", "head_only", "fine_tune")

_METHOD_LABELS = {
    "scratch": "from scratch",
    "head_only": "pretrained, head only",
    "fine_tune": "pretrained, head then fine-tune",
}
_PRETRAINED = {
    "head_only": "pretrained with the head only",
    "fine_tune": "pretrained with the head, then fine-tuned",
}

REPORT_FILE = "report.md"
RESULTS_FILE = "results.json"
PLOT_FILE = "accuracy_vs_time.png"

FLOWER_PHOTOS_URL = (
    "https://storage.googleapis.com/download.tensorflow.org/example_images/"
    "flower_photos.tgz"
)

# The default fine-tuning schedule: after the head alone, the last 3 blocks,
# then the last 6. Deeper unfreezing of a backbone trained on ImageNet rarely
# pays on a few thousand images and costs a backward pass through more of it.
_FINE_TUNE_DEPTHS = (3, 6)

# `fit` needs an epoch count; with a budget alone the budget stops the run.
_UNLIMITED_EPOCHS = 1_000_000


def run_comparison(
    data_dir=None,
    backbones=("mobilenet_v2_050",),
    output_dir="compare",
    epochs=10,
    budget_minutes=None,
    image_size=None,
    batch_size=32,
    learning_rate=1e-3,
    validation_split=0.2,
    seed=1337,
    target_accuracy=0.8,
    schedule=None,
    verbose=1,
):
    """Trains from scratch and from ImageNet weights, and reports the difference.

    For each backbone, three runs on the same split of `data_dir` (see the
    module docstring): `scratch` (random weights, everything trainable),
    `head_only` (frozen ImageNet backbone) and `fine_tune` (the head, then
    the top of the backbone with `ProgressiveUnfreeze`). Each run stops after
    `epochs` epochs or `budget_minutes` of wall-clock time, whichever comes
    first. Writes `report.md`, `results.json`, `accuracy_vs_time.png` and the
    TensorBoard logs of each run (`tensorboard/<run>`) to `output_dir`.

    A backbone whose ImageNet weights are neither cached nor downloadable
    (e.g. offline) is skipped, with the reason, and the others run.

    The default fine-tuning schedule trains the head alone for the first
    third of the run, the last 3 blocks for the second third and the last 6
    for the rest: with `epochs=10`, `{4: 3, 7: 6}`. With a budget, the run's
    length in epochs is taken from the `head_only` run of the same backbone,
    which has the same cost per epoch until the first unfreeze: the head
    then trains alone for about a third of the budget. Fine-tuning epochs are
    slower, so a budget may end the run before its last phase.

    Example:

    ```python
    results = keras_transfer.run_comparison(
        "flower_photos", backbones=["mobilenet_v2_035", "mobilenet_v2_050"],
        budget_minutes=5, image_size=128, output_dir="compare")
    for run in results["runs"]:
        print(run["label"], run["best_val_accuracy"], run["seconds_to_target"])
    ```

    Args:
        data_dir: folder with one subfolder of images per class, or None for
            TensorFlow's flower_photos from the Keras cache
            (`$KERAS_HOME/datasets`), downloaded if it is missing and the
            machine is online.
        backbones: registered backbone names (see `list_backbones()`).
            Defaults to `("mobilenet_v2_050",)`.
        output_dir: folder for the report, the results, the plot and the
            logs; created if needed. Logs of an earlier comparison under the
            same run names are replaced. Defaults to `"compare"`.
        epochs: int, the most epochs per run, or None to let the budget alone
            stop the runs. Defaults to 10.
        budget_minutes: float, the most wall-clock minutes per run, or None
            (default) for no time limit.
        image_size: int, the side of the square inputs, the same for every
            run. None (default) for the largest default input size of the
            backbones (224 for the built-in ones).
        batch_size: int. Defaults to 32.
        learning_rate: float, Adam's learning rate for every run (the head's
            in `fine_tune`; the backbone gets a tenth of it there). Defaults
            to 1e-3.
        validation_split: fraction of each class held out for validation,
            in (0, 1). Defaults to 0.2.
        seed: int, seed of the split, the shuffling and the initial weights.
            Defaults to 1337.
        target_accuracy: float in (0, 1], the validation accuracy whose
            time-to-reach the report gives. Defaults to 0.8.
        schedule: None (default) for the schedule above, or the
            `ProgressiveUnfreeze` schedule of every `fine_tune` run: a dict
            `{epoch: depth}` in blocks, or a `GradualSchedule`.
        verbose: 0 for silence, 1 (default) to print which run and epoch is
            training and the time left in the budget.

    Returns:
        The dict written to `results.json`.

    Raises:
        ConfigurationError: an argument is invalid.
        DataError: the images cannot be used, or `data_dir` is None and
            flower_photos is neither cached nor downloadable.
        WeightsError: no backbone has ImageNet weights available.
    """
    specs = _check_backbones(backbones)
    epochs = _check_optional_positive_int(epochs, "epochs")
    budget_seconds = _check_budget(budget_minutes)
    if epochs is None and budget_seconds is None:
        raise ConfigurationError(
            "Give the runs an end: epochs, budget_minutes or both. "
            "Received: epochs=None, budget_minutes=None."
        )
    size = _check_image_size(image_size, specs)
    if not _is_number(validation_split) or not 0 < validation_split < 1:
        raise ConfigurationError(
            "validation_split must be a number in (0, 1): the comparison is "
            f"made on validation accuracy. Received: validation_split={validation_split!r}"
        )
    if not _is_number(target_accuracy) or not 0 < target_accuracy <= 1:
        raise ConfigurationError(
            "target_accuracy must be a fraction in (0, 1], e.g. 0.8 for 80 %. "
            f"Received: target_accuracy={target_accuracy!r}"
        )
    if not _is_number(learning_rate) or learning_rate <= 0:
        raise ConfigurationError(
            f"learning_rate must be a number > 0. Received: learning_rate={learning_rate!r}"
        )
    if schedule is not None and not isinstance(schedule, (dict, GradualSchedule)):
        raise ConfigurationError(
            "schedule must be None (the default schedule), a dict {epoch: depth} "
            f"or a GradualSchedule. Received: schedule={schedule!r}"
        )
    output_dir = _prepare_output_dir(output_dir)
    say = print if verbose else _silent

    if data_dir is None:
        data_dir = _default_data_dir()
        say(f"No DATA_DIR given: using TensorFlow's flower_photos from {data_dir}.")
    shape = (size, size, 3)
    data_start = time.perf_counter()
    train_ds, val_ds, class_names = load_image_folder(
        data_dir,
        size,
        batch_size=batch_size,
        validation_split=validation_split,
        seed=seed,
        verbose=bool(verbose),
    )
    _fill_caches(train_ds, val_ds)
    data_seconds = time.perf_counter() - data_start
    say(f"Read and cached the images in {_duration(data_seconds)} (not counted in any run).")

    results = {
        "data_dir": os.path.abspath(os.fspath(data_dir)),
        "class_names": list(class_names),
        "num_train_images": len(train_ds.file_paths),
        "num_validation_images": len(val_ds.file_paths),
        "image_size": [size, size],
        "batch_size": batch_size,
        "validation_split": float(validation_split),
        "seed": seed,
        "epochs": epochs,
        "budget_minutes": None if budget_minutes is None else float(budget_minutes),
        "target_accuracy": float(target_accuracy),
        "data_seconds": round(data_seconds, 3),
        "machine": _machine(),
        "started_at": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "skipped": [],
        "runs": [],
        "conclusion": [],
    }

    available = []
    for spec in specs:
        reason = _imagenet_unavailable(spec, shape)
        if reason is None:
            available.append(spec)
        else:
            results["skipped"].append({"backbone": spec.name, "reason": reason})
            say(f"Skipping backbone {spec.name}: {reason}")
    if not available:
        _write_outputs(output_dir, results)
        raise WeightsError(
            "No backbone can run, none has its ImageNet weights at hand. "
            + " ".join(f"{s['backbone']}: {s['reason']}" for s in results["skipped"])
        )

    total = len(available) * len(METHODS)
    number = 0
    for spec in available:
        head_only = None
        for method in METHODS:
            number += 1
            run_schedule = None
            if method == "fine_tune":
                run_schedule = schedule
                if run_schedule is None:
                    run_schedule = _default_schedule(
                        _planned_epochs(epochs, head_only), len(spec.blocks)
                    )
            try:
                run = _train_run(
                    spec,
                    method,
                    train_ds=train_ds,
                    val_ds=val_ds,
                    num_classes=len(class_names),
                    shape=shape,
                    epochs=epochs,
                    budget_seconds=budget_seconds,
                    learning_rate=float(learning_rate),
                    seed=seed,
                    target_accuracy=float(target_accuracy),
                    schedule=run_schedule,
                    output_dir=output_dir,
                    position=(number, total),
                    verbose=verbose,
                )
            except WeightsError as e:
                # Available a moment ago (e.g. the file was removed): report
                # it like a backbone skipped up front.
                results["skipped"].append({"backbone": spec.name, "reason": str(e)})
                say(f"Skipping the rest of backbone {spec.name}: {e}")
                break
            if method == "head_only":
                head_only = run
            results["runs"].append(run)
            results["conclusion"] = _conclusion(results)
            _write_outputs(output_dir, results)
    results["conclusion"] = _conclusion(results)
    _write_outputs(output_dir, results)
    say(
        f"Wrote {os.path.join(output_dir, REPORT_FILE)}, {RESULTS_FILE} and "
        f"{PLOT_FILE} (TensorBoard: tensorboard --logdir "
        f"{os.path.join(output_dir, 'tensorboard')})."
    )
    return results


# --- checks ------------------------------------------------------------------


def _check_backbones(names):
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = list(names or ())
    if not names:
        raise ConfigurationError(
            "backbones is empty. Name at least one registered backbone, e.g. "
            "['mobilenet_v2_050'] (see keras_transfer.list_backbones())."
        )
    specs = [backbones_lib.get_backbone(name) for name in names]
    seen = set()
    for spec in specs:
        if spec.name in seen:
            raise ConfigurationError(
                f"Backbone {spec.name!r} is listed twice in backbones={names!r}."
            )
        seen.add(spec.name)
    return specs


def _check_optional_positive_int(value, name):
    if value is None:
        return None
    if not _is_int(value) or value < 1:
        raise ConfigurationError(
            f"{name} must be an integer >= 1 or None. Received: {name}={value!r}"
        )
    return int(value)


def _check_budget(budget_minutes):
    if budget_minutes is None:
        return None
    if not _is_number(budget_minutes) or budget_minutes <= 0:
        raise ConfigurationError(
            "budget_minutes must be a number of minutes > 0, or None for no "
            f"time limit. Received: budget_minutes={budget_minutes!r}"
        )
    return float(budget_minutes) * 60.0


def _check_image_size(image_size, specs):
    if image_size is None:
        return max(spec.default_input_size for spec in specs)
    if not _is_int(image_size) or image_size < 1:
        raise ConfigurationError(
            "image_size must be an integer number of pixels (the side of the "
            f"square inputs), e.g. 160. Received: image_size={image_size!r}"
        )
    for spec in specs:
        spec.check_input_shape((image_size, image_size, 3))
    return int(image_size)


def _prepare_output_dir(path):
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".keras-transfer-probe-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise ConfigurationError(
            f"Cannot write to the output folder {path}: {e.strerror or e}. "
            "Choose a folder you can write to."
        ) from e
    return path


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value):
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _silent(*args, **kwargs):
    pass


# --- data and weights --------------------------------------------------------


def _default_data_dir():
    """flower_photos from the Keras cache; downloaded only when reachable."""
    datasets = os.path.join(_writable_keras_home(), "datasets")
    extracted = os.path.join(datasets, "flower_photos")
    # keras.utils.get_file("flower_photos", extract=True) extracts the
    # archive's top folder into `flower_photos/`; Keras 2 (untar=True) put
    # the class folders there directly.
    for candidate in (os.path.join(extracted, "flower_photos"), extracted):
        if _has_class_folders(candidate):
            return candidate
    archive = os.path.join(datasets, "flower_photos_archive")
    if not os.path.exists(archive) and not weights_lib._reachable(FLOWER_PHOTOS_URL):
        raise DataError(
            "No DATA_DIR given, and TensorFlow's flower_photos is not in the "
            f"Keras cache ({datasets}) and cannot be downloaded (offline?). "
            "Either pass a folder with one subfolder of images per class "
            "(keras-transfer compare DATA_DIR, or data_dir=...), or seed the "
            f"cache: download {FLOWER_PHOTOS_URL} on a machine with internet "
            f"and save it as {archive}, or extract it so that "
            f"{os.path.join(extracted, 'flower_photos', 'daisy')} exists."
        )
    path = keras.utils.get_file(
        "flower_photos",
        origin=FLOWER_PHOTOS_URL,
        extract=True,
        cache_dir=_writable_keras_home(),
    )
    nested = os.path.join(path, "flower_photos")
    return nested if os.path.isdir(nested) else path


def _writable_keras_home():
    # The folder keras.utils.get_file caches in, read at call time.
    return str(weights_lib.cache_dir().parent)


def _has_class_folders(path):
    try:
        return any(
            entry.is_dir() and not entry.name.startswith(".")
            for entry in os.scandir(path)
        )
    except OSError:
        return False


def _fill_caches(train_ds, val_ds):
    # The datasets cache decoded images in memory after one full pass; doing
    # that pass here keeps JPEG decoding out of the first run's clock.
    for dataset in (train_ds, val_ds):
        for _ in dataset:
            pass


def _imagenet_unavailable(spec, shape):
    """None if `spec`'s ImageNet weights load at `shape`, else why not."""
    try:
        with warnings.catch_warnings():
            # A fallback to the weights of another input size is fine here.
            warnings.simplefilter("ignore")
            spec.build(input_shape=shape, weights="imagenet")
    except WeightsError as e:
        return str(e)
    finally:
        keras.backend.clear_session()
    return None


# --- one run -----------------------------------------------------------------


def _planned_epochs(epochs, head_only):
    """How many epochs a run gets: from the head-only run when a budget cut it."""
    if head_only is None or head_only["stopped_by"] != "budget":
        return epochs or 1
    return max(1, len(head_only["history"]))


def _default_schedule(planned_epochs, num_units):
    first = max(1, math.ceil(planned_epochs / 3))
    second = max(first + 1, math.ceil(2 * planned_epochs / 3))
    shallow, deep = (min(d, num_units) for d in _FINE_TUNE_DEPTHS)
    schedule = {first: shallow}
    if second < planned_epochs and deep > shallow:
        schedule[second] = deep
    return schedule


def _train_run(
    spec,
    method,
    train_ds,
    val_ds,
    num_classes,
    shape,
    epochs,
    budget_seconds,
    learning_rate,
    seed,
    target_accuracy,
    schedule,
    output_dir,
    position,
    verbose,
):
    name = f"{spec.name}-{method}"
    label = f"{spec.name}, {_METHOD_LABELS[method]}"
    log_dir = os.path.join(output_dir, "tensorboard", name)
    # Two runs' event files in one folder would show as one run.
    shutil.rmtree(log_dir, ignore_errors=True)
    if verbose:
        number, total = position
        what = {
            "scratch": "random weights, every layer trains",
            "head_only": "ImageNet weights, backbone frozen",
            "fine_tune": f"ImageNet weights, unfreeze schedule {_schedule_text(schedule)}",
        }[method]
        print(f"\n[{number}/{total}] {label} ({what})")

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    deadline = None if budget_seconds is None else start + budget_seconds
    with warnings.catch_warnings():
        # Reported once when the weights were checked before the runs.
        warnings.filterwarnings("ignore", message=".*cannot be downloaded; loading")
        warnings.filterwarnings("ignore", message=".*will be loaded as the default")
        model = build_classifier(
            spec,
            num_classes,
            input_shape=shape,
            weights=None if method == "scratch" else "imagenet",
        )
    if method == "scratch":
        backbone, _ = find_backbone(model)
        # Propagates to every layer: BatchNormalization trains too.
        backbone.trainable = True
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )

    callbacks = []
    unfreeze = None
    if method == "fine_tune":
        unfreeze = ProgressiveUnfreeze(schedule=schedule, verbose=verbose)
        callbacks.append(unfreeze)
    recorder = _RunRecorder(start, deadline, epochs, verbose)
    budget = _WallClockBudget(deadline)
    callbacks += [PhaseTimer(log_dir), recorder, budget]
    with _retracing_warnings_silenced():
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=epochs or _UNLIMITED_EPOCHS,
            callbacks=callbacks,
            verbose=0,
            shuffle=False,
        )
    total_seconds = time.perf_counter() - start

    history = recorder.history
    trained = [r for r in history if r["accuracy"] is not None]
    validated = [r for r in history if r["val_accuracy"] is not None]
    reached = [r for r in validated if r["val_accuracy"] >= target_accuracy]
    run = {
        "name": name,
        "backbone": spec.name,
        "method": method,
        "label": label,
        "weights": None if method == "scratch" else "imagenet",
        "learning_rate": learning_rate,
        "schedule": None,
        "unit": None,
        "best_accuracy": _max(r["accuracy"] for r in trained),
        "final_accuracy": trained[-1]["accuracy"] if trained else None,
        "best_val_accuracy": _max(r["val_accuracy"] for r in validated),
        "final_val_accuracy": validated[-1]["val_accuracy"] if validated else None,
        "seconds_to_target": reached[0]["seconds"] if reached else None,
        "setup_seconds": round(recorder.fit_start - start, 3),
        "total_seconds": round(total_seconds, 3),
        "stopped_by": "budget" if budget.stopped else "epochs",
        "phases": _phases(
            method, unfreeze, history, recorder.fit_start - start, recorder.trainable_params
        ),
        "history": history,
        "tensorboard": os.path.relpath(log_dir, output_dir),
    }
    if unfreeze is not None:
        run["schedule"] = [list(phase) for phase in unfreeze.phases]
        run["unit"] = unfreeze.unit
    del model
    keras.backend.clear_session()
    return run


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


def _schedule_text(schedule):
    if isinstance(schedule, dict):
        return ", ".join(
            f"last {depth} blocks from epoch {epoch + 1}"
            for epoch, depth in sorted(schedule.items())
            if depth
        )
    return repr(schedule)


def _phases(method, unfreeze, history, setup_seconds, trainable_params):
    """What each phase trained and how long it took (after the setup)."""
    if not history:
        return []
    descriptions = {0: "all layers" if method == "scratch" else "head"}
    if unfreeze is not None:
        for index, (_, depth) in enumerate(unfreeze.phases):
            descriptions[index] = (
                "head" if depth == 0 else f"last {depth} {unfreeze.unit}"
            )
    phases = []
    previous_end = setup_seconds
    for record in history:
        if not phases or phases[-1]["index"] != record["phase"]:
            phases.append(
                {
                    "index": record["phase"],
                    "start_epoch": record["epoch"],
                    "trainable": descriptions.get(record["phase"], "?"),
                    "trainable_params": trainable_params.get(record["phase"]),
                    "seconds": 0.0,
                }
            )
        phases[-1]["seconds"] = round(
            phases[-1]["seconds"] + record["seconds"] - previous_end, 3
        )
        previous_end = record["seconds"]
    return phases


def _max(values):
    values = list(values)
    return max(values) if values else None


class _WallClockBudget(keras.callbacks.Callback):
    """Stops `fit` at the first training step that ends past `deadline`.

    `deadline` is a `time.perf_counter()` value, so that the clock can start
    before `fit` (e.g. before the model is built), or None for no limit.
    Keras still validates the interrupted epoch and calls `on_epoch_end` for
    it.
    """

    def __init__(self, deadline):
        super().__init__()
        self.deadline = deadline
        self.stopped = False

    def on_train_batch_end(self, batch, logs=None):
        if self.deadline is not None and time.perf_counter() >= self.deadline:
            self.model.stop_training = True
            self.stopped = True


class _RunRecorder(keras.callbacks.Callback):
    """Records each epoch with its wall-clock time; prints progress."""

    def __init__(self, start, deadline, epochs, verbose):
        super().__init__()
        self.start = start
        self.deadline = deadline
        self.epochs = epochs
        self.verbose = verbose
        self.history = []
        self.fit_start = start
        # {phase index: trainable parameters}, kept out of `history`.
        self.trainable_params = {}

    def on_train_begin(self, logs=None):
        self.fit_start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        now = time.perf_counter()
        phase = unfreeze_phase.current_phase(self.model)
        steps = (self.params or {}).get("steps")
        record = {
            "epoch": epoch,
            "loss": _number(logs.get("loss")),
            "accuracy": _number(logs.get("accuracy")),
            "val_loss": _number(logs.get("val_loss")),
            "val_accuracy": _number(logs.get("val_accuracy")),
            "seconds": round(now - self.start, 3),
            "phase": 0 if phase is None else int(phase.index),
            "partial": bool(steps) and self._steps < steps,
        }
        self.trainable_params[record["phase"]] = _count_params(
            self.model.trainable_weights
        )
        self.history.append(record)
        if self.verbose:
            self._print(record, now)

    def _print(self, record, now):
        of = f"/{self.epochs}" if self.epochs else ""
        parts = [f"  epoch {record['epoch'] + 1}{of}"]
        if record["partial"]:
            parts[0] += " (partial)"
        for key in ("accuracy", "val_accuracy"):
            if record[key] is not None:
                parts.append(f"{key} {_percent(record[key])}")
        parts.append(f"{_duration(record['seconds'])} elapsed")
        if self.deadline is not None:
            left = max(0.0, self.deadline - now)
            parts.append(f"{_duration(left)} left in the budget")
        print(", ".join(parts), flush=True)


def _count_params(variables):
    return int(sum(math.prod(v.shape) for v in variables))


def _number(value):
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return round(value, 6) if math.isfinite(value) else None


# --- machine -----------------------------------------------------------------


def _machine():
    """Where the comparison ran, for the report."""
    import tensorflow as tf

    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count()
    try:
        load = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        load = None
    gpus = []
    for device in tf.config.list_physical_devices("GPU"):
        try:
            details = tf.config.experimental.get_device_details(device)
            gpus.append(details.get("device_name") or device.name)
        except (ValueError, RuntimeError):
            gpus.append(device.name)
    return {
        "system": f"{platform.system()} {platform.machine()}",
        "processor": _cpu_model() or platform.processor() or "unknown CPU",
        "cpus": cpus,
        "load_average": load,
        "gpus": gpus,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _machine_text(machine):
    accelerators = ", ".join(machine["gpus"]) if machine["gpus"] else "no GPU"
    load = machine.get("load_average")
    load_text = "" if load is None else f", load average {load:g} at the start"
    return (
        f"{machine['system']}, {machine['processor']}, {machine['cpus']} CPU cores"
        f"{load_text}, {accelerators}; Python {machine['python']}, TensorFlow "
        f"{machine['tensorflow']}, Keras {machine['keras']}."
    )


# --- outputs -----------------------------------------------------------------


def _write_outputs(output_dir, results):
    _atomic_write(
        os.path.join(output_dir, RESULTS_FILE),
        json.dumps(results, indent=2, allow_nan=False) + "\n",
    )
    _write_plot(os.path.join(output_dir, PLOT_FILE), results)
    _atomic_write(os.path.join(output_dir, REPORT_FILE), _report(results, output_dir))


def _atomic_write(path, text):
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temporary, "w") as f:
            f.write(text)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _target_text(results):
    return f"{100 * results['target_accuracy']:g} %"


def _percent(fraction):
    return "-" if fraction is None else f"{100 * fraction:.1f} %"


def _duration(seconds):
    """`42.3 s`, `12 min 05 s` or `2 h 03 min`."""
    if seconds is None:
        return "-"
    if seconds < 59.95:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    minutes = int(round(seconds / 60))
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _limit_text(results, short=False):
    """`10 epochs or 3 min 00 s of wall-clock time, whichever came first`."""
    parts = []
    if results["epochs"]:
        parts.append(f"{results['epochs']} epochs")
    if results["budget_minutes"]:
        parts.append(f"{_duration(results['budget_minutes'] * 60)} of wall-clock time")
    if short or len(parts) < 2:
        return " or ".join(parts)
    return " or ".join(parts) + ", whichever came first"


def _report(results, output_dir):
    target = _target_text(results)
    classes = results["class_names"]
    size = results["image_size"]
    lines = [
        f"# Pretrained or from scratch: {os.path.basename(results['data_dir'])}",
        "",
        f"{results['num_train_images'] + results['num_validation_images']:,} images of "
        f"{len(classes)} classes ({', '.join(classes)}) from `{results['data_dir']}`, "
        f"split once with seed {results['seed']}: {results['num_train_images']:,} for "
        f"training, {results['num_validation_images']:,} for validation. Inputs "
        f"{size[0]}x{size[1]} px, batches of {results['batch_size']}, Adam. Each run "
        f"stopped after {_limit_text(results)}. Times count from the start of the run: "
        "building the model, loading the weights and caching frozen features (the "
        "setup) included, reading and decoding "
        f"the images (done once before the runs, {_duration(results['data_seconds'])}) "
        "not.",
        "",
        f"Machine: {_machine_text(results['machine'])}",
        "",
        f"| Run | Best train acc. | Final train acc. | Best val. acc. | Final val. acc. "
        f"| Time to {target} val. | Total time | Time per phase |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in results["runs"]:
        phases = [f"setup {_duration(run['setup_seconds'])}"] + [
            f"{p['trainable']} {_duration(p['seconds'])}" for p in run["phases"]
        ]
        reached = run["seconds_to_target"]
        total = _duration(run["total_seconds"])
        if run["stopped_by"] == "budget":
            total += " (budget)"
        lines.append(
            "| "
            + " | ".join(
                [
                    run["label"],
                    _percent(run["best_accuracy"]),
                    _percent(run["final_accuracy"]),
                    _percent(run["best_val_accuracy"]),
                    _percent(run["final_val_accuracy"]),
                    "not reached" if reached is None else _duration(reached),
                    total,
                    "; ".join(phases),
                ]
            )
            + " |"
        )
    if results["skipped"]:
        lines += ["", "Skipped:", ""]
        for skipped in results["skipped"]:
            reason = " ".join(skipped["reason"].split())
            lines.append(f"- {skipped['backbone']}: {reason}")
    if results["conclusion"]:
        lines += ["", "## Conclusion", ""]
        lines += [f"- {sentence}" for sentence in results["conclusion"]]
    lines += [
        "",
        f"![Validation accuracy against wall-clock time]({PLOT_FILE})",
        "",
        f"Per-epoch history: `{RESULTS_FILE}`. Phase timings in TensorBoard: "
        f"`tensorboard --logdir {os.path.join(output_dir, 'tensorboard')}`.",
        "",
    ]
    return "\n".join(lines)


def _conclusion(results):
    """Plain-language findings, each computed from the numbers of the table."""
    target = _target_text(results)
    sentences = []
    by_backbone = {}
    for run in results["runs"]:
        by_backbone.setdefault(run["backbone"], {})[run["method"]] = run
    for backbone, runs in by_backbone.items():
        scratch = runs.get("scratch")
        head = runs.get("head_only")
        fine = runs.get("fine_tune")
        pretrained = [r for r in (head, fine) if r and r["best_val_accuracy"] is not None]
        best = max(pretrained, key=lambda r: r["best_val_accuracy"]) if pretrained else None
        if scratch and best and scratch["best_val_accuracy"] is not None:
            gain = best["best_val_accuracy"] - scratch["best_val_accuracy"]
            if gain > 0.005:
                sentences.append(
                    f"{backbone}: pretrained weights bought {100 * gain:.1f} points of "
                    f"validation accuracy in the same {_limit_text(results, short=True)}: "
                    f"{_percent(best['best_val_accuracy'])} "
                    f"({_METHOD_LABELS[best['method']]}) against "
                    f"{_percent(scratch['best_val_accuracy'])} from scratch."
                )
            else:
                sentences.append(
                    f"{backbone}: the pretrained runs did not beat training from scratch "
                    f"({_percent(best['best_val_accuracy'])} against "
                    f"{_percent(scratch['best_val_accuracy'])} validation accuracy)."
                )
        reached = [r for r in pretrained if r["seconds_to_target"] is not None]
        first = min(reached, key=lambda r: r["seconds_to_target"]) if reached else None
        if scratch:
            scratch_time = scratch["seconds_to_target"]
            if first and scratch_time is not None:
                ratio = scratch_time / first["seconds_to_target"]
                if ratio >= 1:
                    sentences.append(
                        f"{backbone} {_PRETRAINED[first['method']]} reached {target} "
                        f"validation accuracy after {_duration(first['seconds_to_target'])}, "
                        f"{ratio:.1f}x sooner than from scratch ({_duration(scratch_time)})."
                    )
                else:
                    sentences.append(
                        f"{backbone}: from scratch reached {target} validation accuracy "
                        f"first, after {_duration(scratch_time)} (pretrained: "
                        f"{_duration(first['seconds_to_target'])})."
                    )
            elif first:
                sentences.append(
                    f"{backbone} {_PRETRAINED[first['method']]} reached {target} "
                    f"validation accuracy after {_duration(first['seconds_to_target'])}; "
                    f"from scratch, it never did in {_duration(scratch['total_seconds'])}."
                )
            elif scratch_time is not None:
                sentences.append(
                    f"{backbone}: only the run from scratch reached {target} validation "
                    f"accuracy, after {_duration(scratch_time)}."
                )
            else:
                sentences.append(
                    f"{backbone}: no run reached {target} validation accuracy."
                )
            sentences += _scratch_generalisation(backbone, scratch, results)
        if head and fine and head["best_val_accuracy"] is not None and fine["best_val_accuracy"] is not None:
            if len(fine["phases"]) < 2:
                sentences.append(
                    f"{backbone}: the fine-tuning run ended before its first "
                    "unfreeze, so it trained the head only, like the head-only run; "
                    "give it more epochs or a larger budget."
                )
            else:
                change = fine["best_val_accuracy"] - head["best_val_accuracy"]
                verdict = (
                    f"added {100 * change:.1f} points over"
                    if change > 0.005
                    else f"lost {100 * -change:.1f} points against"
                    if change < -0.005
                    else "matched"
                )
                sentences.append(
                    f"{backbone}: fine-tuning the top of the backbone after the head "
                    f"{verdict} the head alone ({_percent(fine['best_val_accuracy'])} "
                    f"against {_percent(head['best_val_accuracy'])})."
                )
    validated = [r for r in results["runs"] if r["best_val_accuracy"] is not None]
    if len(by_backbone) > 1 and validated:
        best = max(validated, key=lambda r: r["best_val_accuracy"])
        sentences.append(
            f"Best run: {best['label']}, {_percent(best['best_val_accuracy'])} "
            f"validation accuracy in {_duration(best['total_seconds'])}."
        )
        reached = [r for r in validated if r["seconds_to_target"] is not None]
        if reached:
            fastest = min(reached, key=lambda r: r["seconds_to_target"])
            sentences.append(
                f"Fastest to {target}: {fastest['label']}, after "
                f"{_duration(fastest['seconds_to_target'])}."
            )
    num_val = results["num_validation_images"]
    if results["runs"] and num_val < 200:
        sentences.append(
            f"With {num_val} validation images, one image is {100 / num_val:.1f} "
            "points of accuracy: differences of a few points are noise."
        )
    if results["skipped"]:
        names = ", ".join(s["backbone"] for s in results["skipped"])
        sentences.append(
            f"Not compared: {names} (weights unavailable, see Skipped above)."
        )
    return sentences


def _scratch_generalisation(backbone, scratch, results):
    """What the run from scratch learned that carries over to new images."""
    best_train, best_val = scratch["best_accuracy"], scratch["best_val_accuracy"]
    final_train, final_val = scratch["final_accuracy"], scratch["final_val_accuracy"]
    if None in (best_train, best_val, final_train, final_val):
        return []
    chance = 1 / len(results["class_names"])
    if best_val <= chance + 0.02 and best_train > chance + 0.1:
        return [
            f"{backbone}: from scratch, validation accuracy never rose above "
            f"{_percent(best_val)} (chance for {len(results['class_names'])} classes: "
            f"{_percent(chance)}) while train accuracy, measured on batch "
            f"statistics during training, reached {_percent(best_train)}. Early in "
            "training from scratch, this usually means that the BatchNormalization "
            "moving statistics, which inference uses, lag behind the weights, "
            "rather than overfitting: the network needs a longer budget."
        ]
    gap = final_train - final_val
    if gap >= 0.1:
        return [
            f"{backbone}: from scratch, the final train accuracy "
            f"({_percent(final_train)}) is {100 * gap:.0f} points above validation "
            f"({_percent(final_val)}): much of what it learned does not carry over "
            "to new images (overfitting)."
        ]
    return []


def _write_plot(path, results):
    # A Figure without pyplot: no global backend switch, no open windows.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 5.5), layout="constrained")
    axes = figure.subplots()
    styles = {"scratch": ":", "head_only": "--", "fine_tune": "-"}
    backbones = list(dict.fromkeys(run["backbone"] for run in results["runs"]))
    colors = {name: f"C{i % 10}" for i, name in enumerate(backbones)}
    for run in results["runs"]:
        points = [r for r in run["history"] if r["val_accuracy"] is not None]
        if not points:
            continue
        seconds = [r["seconds"] for r in points]
        accuracy = [100 * r["val_accuracy"] for r in points]
        color = colors[run["backbone"]]
        axes.plot(
            seconds,
            accuracy,
            linestyle=styles[run["method"]],
            marker="o",
            markersize=3,
            color=color,
            label=run["label"],
        )
        names = {p["index"]: p["trainable"] for p in run["phases"]}
        for before, after in zip(points, points[1:]):
            if after["phase"] != before["phase"]:
                # The new phase starts when the epoch before it ends.
                axes.plot(
                    before["seconds"],
                    100 * before["val_accuracy"],
                    marker="|",
                    markersize=18,
                    markeredgewidth=2,
                    color=color,
                )
                axes.annotate(
                    names.get(after["phase"], ""),
                    (before["seconds"], 100 * before["val_accuracy"]),
                    textcoords="offset points",
                    xytext=(4, -12),
                    fontsize=8,
                    color=color,
                )
    axes.axhline(
        100 * results["target_accuracy"], color="0.6", linewidth=0.8, linestyle="-."
    )
    if results["budget_minutes"]:
        axes.axvline(
            results["budget_minutes"] * 60,
            color="0.6",
            linewidth=0.8,
            linestyle="-.",
            label="budget",
        )
    axes.set_xlabel("wall-clock seconds since the start of the run")
    axes.set_ylabel("validation accuracy (%)")
    axes.set_ylim(0, 100)
    axes.set_xlim(left=0)
    axes.grid(True, alpha=0.3)
    axes.set_title(
        f"{os.path.basename(results['data_dir'])}: validation accuracy against time "
        f"({results['image_size'][0]} px; | marks a phase change)",
        fontsize=10,
    )
    if results["runs"]:
        axes.legend(fontsize=8, loc="lower right")
    temporary = f"{path}.{os.getpid()}.tmp.png"
    try:
        figure.savefig(temporary, dpi=110)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


# --- command line ------------------------------------------------------------


def register(subparsers):
    """Adds the `compare` subcommand to the `keras-transfer` command line."""
    import argparse

    from keras_transfer import cli

    parser = subparsers.add_parser(
        "compare",
        help="measure what a pretrained backbone buys over training from scratch",
        description="Train, on one seeded split of DATA_DIR and for each backbone,\n"
        "(1) from scratch, (2) pretrained with the head only and (3) pretrained\n"
        "with the head first, then progressive fine-tuning; every run stops at the\n"
        "same epoch count or wall-clock budget. Writes OUT/report.md,\n"
        "OUT/results.json, OUT/accuracy_vs_time.png and TensorBoard logs in\n"
        "OUT/tensorboard/<run>. Backbones whose ImageNet weights cannot be had\n"
        "(offline, not cached) are skipped with the reason.",
        epilog="example:\n"
        f"  {cli.PROG} compare flower_photos --backbones mobilenet_v2_050,resnet50 \\\n"
        "      --budget-minutes 25 --image-size 160 --output-dir compare",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "data_dir",
        nargs="?",
        metavar="DATA_DIR",
        help="folder with one subfolder of images per class (default: TensorFlow's "
        "flower_photos from the Keras cache, downloaded if online)",
    )
    parser.add_argument(
        "--backbones",
        default="mobilenet_v2_050",
        metavar="NAMES",
        help="comma-separated registered backbone names (default: %(default)s)",
    )
    parser.add_argument(
        "--budget-minutes",
        type=cli.positive_float,
        metavar="M",
        help="wall-clock minutes per run, model building included (default: none)",
    )
    parser.add_argument(
        "--epochs",
        type=cli.positive_int,
        metavar="N",
        help="most epochs per run (default: 10 without --budget-minutes, "
        "unlimited with it)",
    )
    parser.add_argument(
        "--image-size",
        type=cli.positive_int,
        metavar="PIXELS",
        help="side of the square inputs, the same for every run "
        "(default: the backbones' input size, 224)",
    )
    parser.add_argument(
        "--output-dir",
        default="compare",
        metavar="OUT",
        help="folder for the report, results, plot and logs (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size", type=cli.positive_int, default=32, metavar="N",
        help="(default: %(default)s)",
    )
    parser.add_argument(
        "--learning-rate", type=cli.positive_float, default=1e-3, metavar="LR",
        help="Adam learning rate of every run; the backbone fine-tunes at a tenth "
        "of it (default: %(default)s)",
    )
    parser.add_argument(
        "--validation-split", type=cli.fraction, default=0.2, metavar="FRACTION",
        help="fraction of each class held out for validation (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=1337, metavar="N",
        help="seed of the split, the shuffling and the initial weights "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--target-accuracy", type=cli.fraction, default=0.8, metavar="FRACTION",
        help="validation accuracy whose time-to-reach is reported (default: %(default)s)",
    )
    parser.set_defaults(handler=_compare_command)


def _compare_command(args):
    epochs = args.epochs
    if epochs is None and args.budget_minutes is None:
        epochs = 10
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
