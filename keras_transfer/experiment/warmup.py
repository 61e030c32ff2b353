"""The warm-up of a backbone: what the first run would pay once for all of them.

The first run of a process, or of a backbone, pays costs that the runs after
it do not: TensorFlow's and oneDNN's first-call initialisation for each
operation and input shape, lazy imports, the weights file read from disk
rather than from the page cache. Without a warm-up, the first pretrained
run of a backbone was reported (issue #19) to take 6.3 s to set up against
2.9 s for the run after it, identical up to its first unfreeze, and the
comparison credited fine-tuning with speed that came from running second.

`warm_up` runs every recipe of a backbone once, unclocked, on a few images
that have every batch shape of the real data (a full batch and the last,
smaller one), with the same models, callbacks and phases (compressed to one
epoch each). Every clocked run of that backbone then starts from the same
warmed-up process; the warm-up's seconds are reported apart
(`results["warmup_seconds"]`). What the warm-up does not take away is what
every run pays for itself and a user would pay too: building its model,
loading its weights, tracing its own functions, computing its cached features.
"""

import dataclasses
import shutil
import tempfile
import time

import keras

from keras_transfer.experiment.methods import METHODS
from keras_transfer.experiment.runs import build_run_model
from keras_transfer.experiment.runs import fit_run
from keras_transfer.experiment.schedule import comparison_schedule


def warm_up(spec, settings, schedule=None):
    """Runs every method of `spec` once on a few images; returns the seconds taken.

    Example:

    ```python
    seconds = warm_up(get_backbone("mobilenet_v2_050"), settings)
    ```

    Args:
        spec: the backbone's `BackboneSpec`.
        settings: the comparison's `RunSettings` (its data, input shape and
            learning rate; its limits do not apply).
        schedule: the `fine_tune` runs' schedule as given to
            `run_comparison`, or None for the default one.

    Raises:
        WeightsError: the ImageNet weights of `spec` cannot be loaded.
    """
    start = time.perf_counter()
    data = settings.data.warm_up_slice()
    phases = _compressed(schedule, len(spec.blocks))
    log_dir = tempfile.mkdtemp(prefix="keras_transfer_warmup_")
    try:
        for method in METHODS:
            keras.backend.clear_session()
            keras.utils.set_random_seed(settings.seed)
            model = build_run_model(spec, method, settings)
            run_schedule = phases if method == "fine_tune" else None
            epochs = 1 + len(phases) if method == "fine_tune" else 1
            fit_run(
                model,
                method,
                _with_epochs(settings, epochs),
                data.train_dataset(),
                data.validation_dataset(),
                run_schedule,
                log_dir,
                progress=False,
            )
            del model
    finally:
        keras.backend.clear_session()
        shutil.rmtree(log_dir, ignore_errors=True)
    return time.perf_counter() - start


def _compressed(schedule, num_units):
    """The schedule's depths, one epoch each: `{1: 3, 2: 6}`."""
    if not isinstance(schedule, dict):
        # The default schedule, and GradualSchedule, which resolves its
        # phases from the model: the default depths stand in for it.
        schedule = comparison_schedule(3, num_units)
    depths = [depth for _, depth in sorted(schedule.items()) if depth]
    return {epoch: depth for epoch, depth in enumerate(depths, 1)}


def _with_epochs(settings, epochs):
    return dataclasses.replace(settings, epochs=epochs, log=None)
