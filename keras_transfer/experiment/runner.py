"""`run_comparison`: every backbone, every method, one report.

Checks the arguments, reads and decodes the images once, checks which
backbones have their ImageNet weights at hand, then, for each backbone,
warms up (`experiment.warmup`, unclocked) and trains its runs one after the
other (`experiment.runs`), rewriting the output files after each.
"""

import datetime
import os
import time
import warnings

import keras

from keras_transfer import defaults
from keras_transfer.errors import WeightsError
from keras_transfer.experiment import arguments
from keras_transfer.experiment.conclusion import conclude
from keras_transfer.experiment.flowers import default_data_dir
from keras_transfer.experiment.formatting import format_duration
from keras_transfer.experiment.inputs import ComparisonData
from keras_transfer.experiment.machine import describe_machine
from keras_transfer.experiment.methods import METHODS
from keras_transfer.experiment.options import DEFAULT_EPOCHS
from keras_transfer.experiment.options import DEFAULT_LEARNING_RATE
from keras_transfer.experiment.options import DEFAULT_OUTPUT_DIR
from keras_transfer.experiment.options import DEFAULT_TARGET_ACCURACY
from keras_transfer.experiment.options import LOG_FILE
from keras_transfer.experiment.options import PLOT_FILE
from keras_transfer.experiment.options import REPORT_FILE
from keras_transfer.experiment.options import RESULTS_FILE
from keras_transfer.experiment.progress import ComparisonLog
from keras_transfer.experiment.report import write_outputs
from keras_transfer.experiment.runs import RunSettings
from keras_transfer.experiment.runs import train_run
from keras_transfer.experiment.schedule import comparison_schedule
from keras_transfer.experiment.schedule import planned_epochs
from keras_transfer.experiment.warmup import warm_up

# Public here as before; defined where the command line reads them cheaply.
__all__ = [
    "DEFAULT_EPOCHS",
    "DEFAULT_LEARNING_RATE",
    "DEFAULT_OUTPUT_DIR",
    "DEFAULT_TARGET_ACCURACY",
    "run_comparison",
]


def run_comparison(
    data_dir=None,
    backbones=(defaults.BACKBONE,),
    output_dir=DEFAULT_OUTPUT_DIR,
    epochs=DEFAULT_EPOCHS,
    budget_minutes=None,
    image_size=None,
    batch_size=defaults.BATCH_SIZE,
    learning_rate=DEFAULT_LEARNING_RATE,
    validation_split=defaults.VALIDATION_SPLIT,
    seed=defaults.SEED,
    target_accuracy=DEFAULT_TARGET_ACCURACY,
    schedule=None,
    verbose=1,
):
    """Trains from scratch and from ImageNet weights, and reports the difference.

    For each backbone, three runs on the same split of `data_dir` (see the
    `keras_transfer.experiment` docstring): `scratch` (random weights,
    everything trainable), `head_only` (frozen ImageNet backbone) and
    `fine_tune` (the head, then the top of the backbone with
    `ProgressiveUnfreeze`). Each run stops after `epochs` epochs or
    `budget_minutes` of wall-clock time, whichever comes first. Writes
    `report.md`, `results.json`, `accuracy_vs_time.png`, `compare.log` (the
    per-epoch lines) and the TensorBoard logs of each run
    (`tensorboard/<run>`) to `output_dir`.

    Fair to every run: before the runs of a backbone, one unclocked warm-up
    runs each method on a few images (reported as `warmup_seconds`), so no
    run pays the process's first-call costs for the others; every run starts
    from a cleared session, the same seeds and new data pipelines, so
    `head_only` and `fine_tune` give the same numbers until the first
    unfreeze. Phases of the schedule that a run did not reach are listed
    (`phases_not_reached`) and flagged in the report.

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
        verbose: 0 for silence, 1 (default) to print the steps of the
            comparison and one progress line per run. The per-epoch lines go
            to `OUT/compare.log` either way.

    Returns:
        The dict written to `results.json`.

    Raises:
        ConfigurationError: an argument is invalid.
        DataError: the images cannot be used, or `data_dir` is None and
            flower_photos is neither cached nor downloadable.
        WeightsError: no backbone has ImageNet weights available.
    """
    specs = arguments.check_backbones(backbones)
    epochs, budget_seconds = arguments.check_limits(epochs, budget_minutes)
    size = arguments.check_image_size(image_size, specs)
    arguments.check_training(validation_split, target_accuracy, learning_rate, schedule)
    output_dir = arguments.prepare_output_dir(output_dir)
    log = ComparisonLog(output_dir, verbose=verbose)
    try:
        return _compare(
            data_dir,
            specs,
            output_dir,
            epochs,
            budget_minutes,
            budget_seconds,
            size,
            batch_size,
            learning_rate,
            validation_split,
            seed,
            target_accuracy,
            schedule,
            log,
        )
    finally:
        log.close()


def _compare(
    data_dir,
    specs,
    output_dir,
    epochs,
    budget_minutes,
    budget_seconds,
    size,
    batch_size,
    learning_rate,
    validation_split,
    seed,
    target_accuracy,
    schedule,
    log,
):
    """`run_comparison` once its arguments are checked."""
    say = log.say
    if data_dir is None:
        data_dir = default_data_dir()
        say(f"No DATA_DIR given: using TensorFlow's flower_photos from {data_dir}.")
    data_start = time.perf_counter()
    data = ComparisonData.from_folder(
        data_dir, size, batch_size, validation_split, seed, verbose=bool(log.verbose)
    )
    data_seconds = time.perf_counter() - data_start
    say(f"Read and decoded the images in {format_duration(data_seconds)} (not counted in any run).")

    results = {
        "data_dir": os.path.abspath(os.fspath(data_dir)),
        "class_names": list(data.class_names),
        "num_train_images": data.num_train,
        "num_validation_images": data.num_validation,
        "image_size": [size, size],
        "batch_size": batch_size,
        "validation_split": float(validation_split),
        "seed": seed,
        "epochs": epochs,
        "budget_minutes": None if budget_minutes is None else float(budget_minutes),
        "target_accuracy": float(target_accuracy),
        "data_seconds": round(data_seconds, 3),
        "warmup_seconds": {},
        "machine": describe_machine(),
        "started_at": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "log": LOG_FILE,
        "skipped": [],
        "runs": [],
        "conclusion": [],
    }
    settings = RunSettings(
        data=data,
        shape=(size, size, 3),
        epochs=epochs,
        budget_seconds=budget_seconds,
        learning_rate=float(learning_rate),
        seed=seed,
        target_accuracy=float(target_accuracy),
        output_dir=output_dir,
        log=log,
    )
    available = _available_backbones(specs, settings.shape, results, output_dir, say)
    _run_all(available, settings, schedule, results, say)
    results["conclusion"] = conclude(results)
    write_outputs(output_dir, results)
    say(
        f"Wrote {os.path.join(output_dir, REPORT_FILE)}, {RESULTS_FILE}, "
        f"{PLOT_FILE} and {LOG_FILE} (per-epoch lines; TensorBoard: tensorboard "
        f"--logdir {os.path.join(output_dir, 'tensorboard')})."
    )
    return results


def _available_backbones(specs, shape, results, output_dir, say):
    """The specs whose ImageNet weights load; the others go to `skipped`."""
    available = []
    for spec in specs:
        reason = _imagenet_unavailable(spec, shape)
        if reason is None:
            available.append(spec)
        else:
            results["skipped"].append({"backbone": spec.name, "reason": reason})
            say(f"Skipping backbone {spec.name}: {reason}")
    if not available:
        write_outputs(output_dir, results)
        raise WeightsError(
            "No backbone can run, none has its ImageNet weights at hand. "
            + " ".join(f"{s['backbone']}: {s['reason']}" for s in results["skipped"])
        )
    return available


def _run_all(specs, settings, schedule, results, say):
    """Warms up each backbone, then trains its methods, writing the outputs after each."""
    total = len(specs) * len(METHODS)
    number = 0
    for spec in specs:
        try:
            seconds = warm_up(spec, settings, schedule)
        except WeightsError as e:
            # Available a moment ago (e.g. the file was removed): report
            # it like a backbone skipped up front.
            results["skipped"].append({"backbone": spec.name, "reason": str(e)})
            say(f"Skipping backbone {spec.name}: {e}")
            number += len(METHODS)
            continue
        results["warmup_seconds"][spec.name] = round(seconds, 3)
        say(
            f"\nWarmed up {spec.name} in {format_duration(seconds)}: every method "
            "once on a few images, not counted in any run."
        )
        head_only = None
        for method in METHODS:
            number += 1
            run_schedule = None
            if method == "fine_tune":
                run_schedule = schedule
                if run_schedule is None:
                    run_schedule = comparison_schedule(
                        planned_epochs(settings.epochs, head_only), len(spec.blocks)
                    )
            try:
                run = train_run(
                    spec,
                    method,
                    settings,
                    schedule=run_schedule,
                    position=(number, total),
                )
            except WeightsError as e:
                results["skipped"].append({"backbone": spec.name, "reason": str(e)})
                say(f"Skipping the rest of backbone {spec.name}: {e}")
                break
            if method == "head_only":
                head_only = run
            results["runs"].append(run)
            results["conclusion"] = conclude(results)
            write_outputs(settings.output_dir, results)


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
