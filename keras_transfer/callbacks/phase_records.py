"""What `PhaseTimer` measures: the record of a phase and the model's counters.

`PhaseRecord` adds up one phase's epochs, steps, images and training time;
`samples_seen`, `optimizer_iterations` and `learning_rates` read what the
model itself counts, so that the figures are exact whatever the batch size,
`steps_per_execution` or learning-rate schedule.
"""

import dataclasses
import statistics

import keras

from keras_transfer.utils.tensors import to_float

# The only group name used when no `ProgressiveUnfreeze` publishes groups.
ALL_WEIGHTS = "all"


@dataclasses.dataclass
class PhaseRecord:
    """What one phase has cost so far.

    Example:

    >>> record = PhaseRecord(index=0, info=None, start_time=0.0, start_epoch=0)
    >>> record.first_execution = 2.5
    >>> record.other_executions += [0.5, 0.4, 0.6]
    >>> record.retrace_seconds()
    2.0

    Args:
        index: the phase index (`PhaseInfo.index`, 0 without one).
        info: the `PhaseInfo` that opened the phase, or None.
        start_time: `time.perf_counter()` at the start of the phase.
        start_epoch: the phase's first epoch.
        epochs, steps, samples: counted so far.
        samples_known: False once an epoch's images could not be counted.
        train_seconds: training time so far, re-trace excluded.
        first_execution: seconds of the phase's first step execution.
        other_executions: seconds of each of its other executions.
        learning_rates: each group's rate at the end of the first epoch.
        trainable_params: trainable parameters at the end of the first epoch.
    """

    index: int
    info: object
    start_time: float
    start_epoch: int
    epochs: int = 0
    steps: int = 0
    samples: int = 0
    samples_known: bool = True
    train_seconds: float = 0.0
    first_execution: float = None
    other_executions: list = dataclasses.field(default_factory=list)
    learning_rates: dict = None
    trainable_params: int = None

    def retrace_seconds(self):
        """The first execution less the typical one, or None if unknown."""
        if self.first_execution is None or not self.other_executions:
            return None
        typical = statistics.median(self.other_executions)
        return max(0.0, self.first_execution - typical)

    def images_per_second(self):
        """Training throughput of the phase, or None if unknown."""
        if self.samples_known and self.samples and self.train_seconds > 0:
            return self.samples / self.train_seconds
        return None


def samples_seen(model):
    """Training samples averaged by the `loss` metric since the last reset.

    Keras' train step updates the `loss` metric (the first of the compiled
    model's `metrics`, a `keras.metrics.Mean`) with the batch size as its
    weight, so its `count` is the number of samples in the epoch so far.

    Example:

    ```python
    samples_seen(model)  # 40 after an epoch over 40 images; None if unknown
    ```
    """
    tracker = next((m for m in getattr(model, "metrics", ()) if m.name == "loss"), None)
    count = getattr(tracker, "count", None)
    if count is None:
        return None
    return int(round(float(keras.ops.convert_to_numpy(count)))) or None


def optimizer_iterations(model):
    """Steps the optimizer has applied, or None without an optimizer.

    Example:

    ```python
    optimizer_iterations(model)  # 10 after two epochs of 5 steps
    ```
    """
    iterations = getattr(getattr(model, "optimizer", None), "iterations", None)
    if iterations is None:
        return None
    return int(keras.ops.convert_to_numpy(iterations))


def learning_rates(model, info):
    """The current learning rate of each parameter group.

    Example:

    ```python
    learning_rates(model, current_phase(model))
    # {"head": 0.001, "backbone/group_1": 0.0001}; {"all": 0.001} without
    # ProgressiveUnfreeze
    ```

    Args:
        model: the model being trained.
        info: the phase's `PhaseInfo`, whose groups are reported, or None
            for one group, `"all"`.

    Returns:
        A dict from group name to rate; empty without an optimizer or one
        without a single learning rate.
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return {}
    # LossScaleOptimizer wraps the real one.
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    if info is None or not info.learning_rates:
        try:
            return {ALL_WEIGHTS: to_float(optimizer.learning_rate)}
        except (AttributeError, TypeError, ValueError):
            return {}  # An optimizer without a single learning rate.
    # The groups are those of the phase; an optimizer with per-group
    # optimizers (ProgressiveUnfreeze's) gives their current rates, which
    # move with warm-up and with callbacks such as ReduceLROnPlateau.
    group_optimizer = getattr(optimizer, "group_optimizer", None)
    rates = {}
    for group, rate in info.learning_rates.items():
        try:
            rate = to_float(group_optimizer(group).learning_rate)
        except (TypeError, ValueError, KeyError, AttributeError):
            rate = float(rate)
        rates[group] = rate
    return rates
