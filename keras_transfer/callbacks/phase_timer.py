"""`PhaseTimer`: what each phase of a transfer-learning run cost.

Writes, next to the accuracy curves, how long the head-only phase and each
unfreeze step took, how much of that was spent re-tracing the train function,
and how training throughput changed as more of the backbone trained. Works
with or without `ProgressiveUnfreeze`, beside `keras.callbacks.TensorBoard`
and under KerasTuner.
"""

import dataclasses
import math
import numbers
import os
import statistics
import time
from collections.abc import Mapping

import keras
import numpy as np

from keras_transfer import caching
from keras_transfer.unfreeze import phase as unfreeze_phase
from keras_transfer.errors import ConfigurationError

# Name of the run (subdirectory of the log directory) holding PhaseTimer's own
# series; loss and accuracy go to "train" and "validation" like Keras does.
_PHASES_RUN = "phases"

# The only group name used when no `ProgressiveUnfreeze` publishes groups.
_ALL_WEIGHTS = "all"


@dataclasses.dataclass
class _PhaseRecord:
    """What one phase has cost so far."""

    index: int
    info: object  # The PhaseInfo that opened the phase, or None.
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
        if self.first_execution is None or not self.other_executions:
            return None
        typical = statistics.median(self.other_executions)
        return max(0.0, self.first_execution - typical)


class PhaseTimer(keras.callbacks.Callback):
    """Writes the cost of each training phase to TensorBoard.

    A transfer-learning run made of phases (the head alone, then more and
    more of the backbone, as `ProgressiveUnfreeze` schedules them) costs more
    per step in every phase, and each unfreeze step pays for re-tracing the
    train function. `PhaseTimer` writes these costs as TensorBoard scalars so
    that they sit next to the loss and accuracy curves:

    Per epoch (run `phases`, step = epoch):

    - `phase/index`: the phase the epoch belongs to.
    - `epoch/seconds`: wall time of the epoch, validation included.
    - `epoch/steps_per_second`, `epoch/images_per_second`: training
      throughput (see below).
    - `model/trainable_params`: trainable parameters at the end of the epoch.
    - `learning_rate/<group>`: the learning rate of each parameter group
      (`head`, the backbone groups, ... as `ProgressiveUnfreeze` publishes
      them; `learning_rate/all` without it).

    Per phase (run `phases`, step = phase index), written when the phase ends:

    - `phase/duration_seconds`: wall time of the phase. Phases tile the fit:
      the first runs from `on_train_begin`, each next one starts at the
      `on_epoch_begin` of the epoch where the phase index changes, the last
      ends at `on_train_end`, so the durations add up to the fit's wall time
      (less what `fit` does before `on_train_begin`: wrapping the data,
      building the optimizer).
    - `phase/retrace_seconds`: time spent tracing the train function at the
      start of the phase (in phase 0, the initial trace).
    - `phase/epochs`, `phase/steps`: epochs and optimizer steps in the phase.
    - `phase/images_per_second`: the phase's training throughput, re-trace
      excluded.
    - `phase/summary` (text): which blocks were trainable, at which learning
      rates, with how many trainable parameters, and the figures above.

    Without `ProgressiveUnfreeze` (no `PhaseInfo` published on the model) the
    whole fit is phase 0.

    How it is measured:

    - Every step execution (one call of the train function: a single step,
      or `steps_per_execution` steps) is timed from `on_train_batch_begin` to
      `on_train_batch_end` with `time.perf_counter`. Keras converts the batch
      logs to Python numbers before calling `on_train_batch_end`, which waits
      for the device, so the times are real even on accelerators. (Because
      it has batch-level hooks, `PhaseTimer` makes Keras call batch-end
      callbacks synchronously.)
    - `make_train_function(force=True)` only creates a `tf.function`; tracing
      happens in its first call. So `retrace_seconds` is the time of the
      first execution of the phase minus the median time of the phase's other
      executions, clamped at 0. It also contains what every first execution
      of an epoch pays (creating the dataset iterator, filling a shuffle
      buffer), usually small next to tracing. It is not written for a phase
      with a single execution, where there is nothing to compare with.
    - Training time of an epoch runs from its first `on_train_batch_begin` to
      the end of its last training step (before validation), minus the
      re-trace in the first epoch of a phase (estimated as above from that
      epoch's executions). Throughput divides steps and images by it.
    - Steps are the optimizer's iteration count over the epoch, exact with
      `steps_per_execution` too.
    - Images are counted exactly, partial last batch included, by reading
      how many samples the model's loss tracker (the `loss` metric, whose
      weight is the batch size) averaged over the epoch. A model whose
      `train_step` does not update Keras' loss tracker gets
      `steps * batch_size` when `batch_size` is given; otherwise only
      `epoch/steps_per_second` is written.

    Layout and neighbours: the series above go to the run `log_dir/phases`,
    a directory of its own, so that `PhaseTimer` never writes into the runs
    of `keras.callbacks.TensorBoard` (two writers in one run directory leave
    one of them unread by TensorBoard's legacy loader while training).
    Loss, accuracy and the other values of the epoch logs go, as
    `epoch_<name>`, to `log_dir/train` and `log_dir/validation`, exactly as
    `keras.callbacks.TensorBoard` writes them, unless that callback writes
    them already: to use both, pass the `TensorBoard` callback itself as
    `log_dir`. `PhaseTimer` then writes into its log directory and, by
    default, leaves loss and accuracy to it, so nothing is written twice.
    (Passing the same path to both instead would write `epoch_loss` twice.)

    KerasTuner: a tuner deep-copies the callbacks for every trial and gives a
    trial directory, plus an HParams record of the trial's values, only to
    callbacks whose class is named `TensorBoard`. Pass a
    `keras.callbacks.TensorBoard` and a `PhaseTimer` following it; the copy
    keeps them linked (one `deepcopy` of the whole list), and the `PhaseTimer`
    reads the trial directory when the trial's fit begins:

    ```python
    tensorboard = keras.callbacks.TensorBoard("logs/search")
    tuner.search(x, y, epochs=4,
                 callbacks=[tensorboard, PhaseTimer(tensorboard)])
    ```

    A `PhaseTimer` given a path only would make all trials write into the
    same directory. The tuner writes the HParams record itself, so do not
    pass `hparams` there; `hparams` is for runs outside a tuner.

    The constructor opens no file and holds no model: writers are opened in
    `on_train_begin` and closed in `on_train_end`. Every epoch's records are
    flushed at its end, so a fit that raises keeps what it wrote up to the
    last finished epoch (the unfinished phase gets no duration); its writers
    are closed at the next `on_train_begin`.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_transfer import PhaseTimer

    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(2, activation="softmax")]
    )
    model.compile(
        "sgd", "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    x = np.random.rand(64, 8).astype("float32")
    y = np.random.randint(0, 2, 64)
    model.fit(x, y, batch_size=16, epochs=2, validation_split=0.25, verbose=0,
              callbacks=[PhaseTimer("logs/run1")])
    # tensorboard --logdir logs
    ```

    Beside Keras' own TensorBoard callback:

    ```python
    tensorboard = keras.callbacks.TensorBoard("logs/run2")
    model.fit(x, y, epochs=2, verbose=0,
              callbacks=[tensorboard, PhaseTimer(tensorboard)])
    ```

    Args:
        log_dir: str or path-like, the log directory (the one you give
            `tensorboard --logdir`, or a subdirectory of it for one run).
            Or a `keras.callbacks.TensorBoard` instance: its `log_dir` is
            read at the start of every fit (so the directories KerasTuner
            assigns per trial are followed). Defaults to `"logs"`.
        write_metrics: `"auto"`, `True` or `False`. Whether to write the
            epoch logs (loss, accuracy, ...) as `epoch_<name>` to the `train`
            and `validation` runs. `"auto"` (default) writes them unless
            `log_dir` is a `TensorBoard` callback, which writes them itself.
        batch_size: optional int, only used to count images when the model's
            train step does not update Keras' loss tracker (a custom
            `train_step`); assumes every batch is full. Defaults to `None`.
        hparams: optional dict of hyperparameter name to value (bool, int,
            float or str), or a `keras_tuner.HyperParameters`. Written as an
            HParams record at `log_dir` so that the HParams dashboard lists
            the run with these values. Defaults to `None` (nothing written).
    """

    def __init__(
        self,
        log_dir="logs",
        write_metrics="auto",
        batch_size=None,
        hparams=None,
    ):
        super().__init__()
        if isinstance(log_dir, keras.callbacks.TensorBoard):
            self._tensorboard = log_dir
            self._log_dir = None
        elif isinstance(log_dir, (str, os.PathLike)):
            self._tensorboard = None
            self._log_dir = os.fspath(log_dir)
        else:
            raise ConfigurationError(
                "Unrecognized value for log_dir: "
                f"{log_dir!r} (of type {type(log_dir).__name__}). Expected a "
                "directory path (str or path-like) or a "
                "keras.callbacks.TensorBoard instance to share its directory."
            )
        if write_metrics == "auto":
            write_metrics = self._tensorboard is None
        if not isinstance(write_metrics, bool):
            raise ConfigurationError(
                f"Unrecognized value for write_metrics: {write_metrics!r}. "
                "Expected 'auto', True or False."
            )
        self.write_metrics = write_metrics
        if batch_size is not None and (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, numbers.Integral)
            or batch_size < 1
        ):
            raise ConfigurationError(
                f"Unrecognized value for batch_size: {batch_size!r}. Expected "
                "a positive int (the training batch size) or None."
            )
        self.batch_size = None if batch_size is None else int(batch_size)
        self.hparams = _validate_hparams(hparams)
        self._writers = {}
        self._reset_fit_state()

    @property
    def log_dir(self):
        """The log directory, read from the followed `TensorBoard` if any."""
        if self._tensorboard is not None:
            return str(self._tensorboard.log_dir)
        return self._log_dir

    # Keras hooks -----------------------------------------------------------

    def on_train_begin(self, logs=None):
        # Writers left open by a fit that raised are closed here.
        self._close_writers()
        self._reset_fit_state()
        # Read once per fit: KerasTuner sets the followed callback's log_dir
        # before the trial's fit starts.
        self._fit_log_dir = self.log_dir
        self._writer(_PHASES_RUN)
        if self.hparams:
            from tensorboard.plugins.hparams import api as hparams_api

            with self._writer("hparams").as_default():
                hparams_api.hparams(self.hparams)
            self._writer("hparams").flush()
        self._fit_start = time.perf_counter()
        # A cached fit (keras_transfer.caching) computes the frozen layers'
        # features before on_train_begin: that pass is part of the first phase.
        cache = caching.running_cache_info(self.model)
        if cache is not None:
            self._fit_start -= cache.seconds

    def on_epoch_begin(self, epoch, logs=None):
        self._reset_epoch_state()
        self._epoch = epoch
        self._epoch_start = time.perf_counter()
        self._epoch_start_iterations = _optimizer_iterations(self.model)
        self._in_training = True
        # The phase is read at the first batch, after every callback's
        # on_epoch_begin has run, so that the order of callbacks does not
        # matter.
        self._phase_resolved = False

    def on_train_batch_begin(self, batch, logs=None):
        if not self._phase_resolved:
            self._resolve_phase()
        self._batch_start = time.perf_counter()
        if self._epoch_train_start is None:
            self._epoch_train_start = self._batch_start

    def on_train_batch_end(self, batch, logs=None):
        seconds = time.perf_counter() - self._batch_start
        # With steps_per_execution > 1, Keras passes the last step the call
        # may run, which overshoots at the end of the data; the optimizer's
        # step count corrects it at the end of the epoch.
        self._epoch_steps = batch + 1
        self._epoch_executions.append(seconds)
        phase = self._phase
        if phase.first_execution is None:
            phase.first_execution = seconds
        else:
            phase.other_executions.append(seconds)

    def on_test_begin(self, logs=None):
        # Validation inside fit resets the metrics: count the training images
        # before it does.
        if self._in_training:
            self._end_training_part()

    def on_epoch_end(self, epoch, logs=None):
        if self._in_training:
            self._end_training_part()
        if not self._phase_resolved:
            self._resolve_phase()
        now = time.perf_counter()
        phase = self._phase
        retrace = 0.0
        if self._epoch_opens_phase and len(self._epoch_executions) > 1:
            typical = statistics.median(self._epoch_executions[1:])
            retrace = max(0.0, self._epoch_executions[0] - typical)
        train_seconds = 0.0
        if self._epoch_train_start is not None:
            train_seconds = max(
                self._epoch_train_end - self._epoch_train_start - retrace, 0.0
            )
        phase.epochs += 1
        phase.steps += self._epoch_steps
        phase.train_seconds += train_seconds
        if self._epoch_samples is None:
            phase.samples_known = False
        else:
            phase.samples += self._epoch_samples

        trainable_params = _count_trainable_params(self.model)
        rates = _learning_rates(self.model, phase.info)
        if phase.trainable_params is None:
            phase.trainable_params = trainable_params
            phase.learning_rates = rates

        with self._writer(_PHASES_RUN).as_default():
            summary = _summary()
            summary.scalar("phase/index", phase.index, step=epoch)
            summary.scalar("epoch/seconds", now - self._epoch_start, step=epoch)
            if train_seconds > 0:
                summary.scalar(
                    "epoch/steps_per_second",
                    self._epoch_steps / train_seconds,
                    step=epoch,
                )
                if self._epoch_samples is not None:
                    summary.scalar(
                        "epoch/images_per_second",
                        self._epoch_samples / train_seconds,
                        step=epoch,
                    )
            summary.scalar(
                "model/trainable_params", trainable_params, step=epoch
            )
            for group, rate in rates.items():
                summary.scalar(f"learning_rate/{group}", rate, step=epoch)
        if self.write_metrics:
            self._write_epoch_logs(epoch, logs or {})
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs=None):
        if self._phase is not None:
            self._close_phase(time.perf_counter())
        self._close_writers()

    # Phases ----------------------------------------------------------------

    def _resolve_phase(self):
        self._phase_resolved = True
        info = unfreeze_phase.current_phase(self.model)
        index = 0 if info is None else int(info.index)
        if self._phase is not None and self._phase.index == index:
            return
        if self._phase is None:
            # Everything before the first epoch (the first trace is in the
            # first batch) belongs to the first phase.
            start = self._fit_start
        else:
            start = self._epoch_start
            self._close_phase(start)
        self._phase = _PhaseRecord(
            index=index, info=info, start_time=start, start_epoch=self._epoch
        )
        self._epoch_opens_phase = True

    def _close_phase(self, end):
        phase = self._phase
        self._phase = None
        duration = end - phase.start_time
        retrace = phase.retrace_seconds()
        images_per_second = None
        if phase.samples_known and phase.samples and phase.train_seconds > 0:
            images_per_second = phase.samples / phase.train_seconds
        step = phase.index
        with self._writer(_PHASES_RUN).as_default():
            summary = _summary()
            summary.scalar("phase/duration_seconds", duration, step=step)
            if retrace is not None:
                summary.scalar("phase/retrace_seconds", retrace, step=step)
            summary.scalar("phase/epochs", phase.epochs, step=step)
            summary.scalar("phase/steps", phase.steps, step=step)
            if images_per_second is not None:
                summary.scalar(
                    "phase/images_per_second", images_per_second, step=step
                )
            summary.text(
                "phase/summary",
                _phase_markdown(phase, duration, retrace, images_per_second),
                step=step,
            )
        self._writer(_PHASES_RUN).flush()

    def _end_training_part(self):
        self._in_training = False
        iterations = _optimizer_iterations(self.model)
        if iterations is not None and self._epoch_start_iterations is not None:
            self._epoch_steps = iterations - self._epoch_start_iterations
        else:
            known = (self.params or {}).get("steps")
            if known:
                self._epoch_steps = min(self._epoch_steps, known)
        samples = _samples_seen(self.model)
        if samples is None and self.batch_size is not None:
            samples = self._epoch_steps * self.batch_size
        self._epoch_samples = samples
        # Reading the counts waited for the device: the training part of the
        # epoch is over now.
        self._epoch_train_end = time.perf_counter()

    # Writing ---------------------------------------------------------------

    def _writer(self, run):
        # "train" and "validation" are opened on first use, as Keras does, so
        # that a fit without validation leaves no empty run behind.
        if run not in self._writers:
            import tensorflow as tf

            path = self._fit_log_dir
            if run != "hparams":
                path = os.path.join(path, run)
            self._writers[run] = tf.summary.create_file_writer(path)
        return self._writers[run]

    def _write_epoch_logs(self, epoch, logs):
        # Same split and names as keras.callbacks.TensorBoard.
        train = {k: v for k, v in logs.items() if not k.startswith("val_")}
        validation = {k[4:]: v for k, v in logs.items() if k.startswith("val_")}
        for run, values in (("train", train), ("validation", validation)):
            values = {k: v for k, v in values.items() if _is_number(v)}
            if not values:
                continue
            with self._writer(run).as_default():
                for name, value in values.items():
                    _summary().scalar(f"epoch_{name}", float(value), step=epoch)

    def _close_writers(self):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}

    def _reset_fit_state(self):
        self._fit_log_dir = None
        self._fit_start = None
        self._phase = None
        self._phase_resolved = False
        self._epoch = 0
        self._epoch_start = None
        self._reset_epoch_state()
        self._in_training = False
        self._epoch_start_iterations = None
        self._batch_start = None

    def _reset_epoch_state(self):
        self._epoch_train_start = None
        self._epoch_train_end = None
        self._epoch_steps = 0
        self._epoch_samples = None
        self._epoch_executions = []
        self._epoch_opens_phase = False


def _summary():
    import tensorflow as tf

    return tf.summary


def _is_number(value):
    return isinstance(value, numbers.Real) or (
        isinstance(value, np.ndarray) and value.size == 1
    )


def _validate_hparams(hparams):
    if hparams is None:
        return None
    if not isinstance(hparams, Mapping):
        # keras_tuner.HyperParameters keeps the current values in `.values`.
        values = getattr(hparams, "values", None)
        if not isinstance(values, Mapping):
            raise ConfigurationError(
                f"Unrecognized value for hparams: {hparams!r}. Expected a dict "
                "of hyperparameter name to value, a "
                "keras_tuner.HyperParameters, or None."
            )
        hparams = values
    result = {}
    for name, value in hparams.items():
        if isinstance(value, np.generic):
            value = value.item()
        if not isinstance(value, (bool, int, float, str)):
            raise ConfigurationError(
                f"Unrecognized value for hparams[{name!r}]: {value!r}. HParams "
                "values must be bool, int, float or str; leave out the ones "
                "that are not."
            )
        result[str(name)] = value
    return result


def _count_trainable_params(model):
    return int(sum(math.prod(v.shape) for v in model.trainable_weights))


def _samples_seen(model):
    """Training samples averaged by the loss tracker since the last reset.

    Keras' train step updates the `loss` metric with the batch size as its
    weight, so its `count` is the number of samples in the epoch so far.
    """
    tracker = getattr(model, "_loss_tracker", None)
    count = getattr(tracker, "count", None)
    if count is None:
        return None
    count = int(round(float(keras.ops.convert_to_numpy(count))))
    return count or None


def _optimizer_iterations(model):
    """Steps the optimizer has applied, or None without an optimizer."""
    iterations = getattr(getattr(model, "optimizer", None), "iterations", None)
    if iterations is None:
        return None
    return int(keras.ops.convert_to_numpy(iterations))


def _current_rate(optimizer):
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def _learning_rates(model, info):
    """The current learning rate of each parameter group."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return {}
    # LossScaleOptimizer wraps the real one.
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    if info is None or not info.learning_rates:
        try:
            return {_ALL_WEIGHTS: _current_rate(optimizer)}
        except (AttributeError, TypeError, ValueError):
            return {}  # An optimizer without a single learning rate.
    # The groups are those of the phase; an optimizer with per-group
    # optimizers (ProgressiveUnfreeze's) gives their current rates, which
    # move with warm-up and with callbacks such as ReduceLROnPlateau.
    group_optimizer = getattr(optimizer, "group_optimizer", None)
    rates = {}
    for group, rate in info.learning_rates.items():
        try:
            rate = _current_rate(group_optimizer(group))
        except (TypeError, ValueError, KeyError, AttributeError):
            rate = float(rate)
        rates[group] = rate
    return rates


def _phase_markdown(phase, duration, retrace, images_per_second):
    info = phase.info
    if info is None:
        trainable = "the model as compiled (no `ProgressiveUnfreeze`)"
    elif info.trainable_units:
        trainable = f"{info.depth} {info.unit}: " + ", ".join(
            f"`{name}`" for name in info.trainable_units
        )
    else:
        trainable = f"head only (no backbone {info.unit})"
    # The schedule's rates and size at the start of the phase when published,
    # else what was measured at the end of its first epoch.
    rates = (info and info.learning_rates) or phase.learning_rates or {}
    rates = ", ".join(f"{group} {rate:.3g}" for group, rate in rates.items())
    params = (info and info.trainable_params) or phase.trainable_params
    last_epoch = phase.start_epoch + max(phase.epochs, 1) - 1
    rows = [
        ("epochs", f"{phase.start_epoch}-{last_epoch} ({phase.epochs})"),
        ("trainable", trainable),
        ("trainable parameters", f"{params or 0:,}"),
        ("learning rates", rates or "-"),
        ("steps", str(phase.steps)),
        ("duration", f"{duration:.2f} s"),
        ("re-trace", "-" if retrace is None else f"{retrace:.2f} s"),
        (
            "images/s",
            "-" if images_per_second is None else f"{images_per_second:.1f}",
        ),
    ]
    lines = [f"| phase {phase.index} | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in rows]
    return "\n".join(lines)
