"""`PhaseTimer`: what each phase of a transfer-learning run cost.

Writes, next to the accuracy curves, how long the head-only phase and each
unfreeze step took, how much of that was spent re-tracing the train function,
and how training throughput changed as more of the backbone trained. Works
with or without `ProgressiveUnfreeze`, beside `keras.callbacks.TensorBoard`
and under KerasTuner. What is measured is in `phase_records`, what is
written, and where, in `phase_summaries`.
"""

import os
import statistics
import time

import keras

from keras_transfer import caching
from keras_transfer.callbacks.phase_records import PhaseRecord
from keras_transfer.callbacks.phase_records import learning_rates
from keras_transfer.callbacks.phase_records import optimizer_iterations
from keras_transfer.callbacks.phase_records import samples_seen
from keras_transfer.callbacks.phase_summaries import PHASES_RUN
from keras_transfer.callbacks.phase_summaries import SummaryWriters
from keras_transfer.callbacks.phase_summaries import check_hparams
from keras_transfer.errors import ConfigurationError
from keras_transfer.unfreeze.phase import current_phase
from keras_transfer.utils.checks import is_int
from keras_transfer.utils.tensors import count_params


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
    - `make_train_function(force=True)` only creates a `tf.function` (a
      `jax.jit` function on JAX); tracing happens in its first call. So `retrace_seconds` is the time of the
      first execution of the phase minus the median time of the phase's other
      executions, clamped at 0. It also contains what every first execution
      of an epoch pays (creating the dataset iterator, filling a shuffle
      buffer), usually small next to tracing. It is not written for a phase
      with a single execution, where there is nothing to compare with.
      PyTorch runs the step eagerly unless `jit_compile=True` (then
      `torch.compile` compiles it in its first call): nothing is traced, and
      `retrace_seconds` is only what the first execution costs more than the
      others (new gradient buffers; on CPU, 1.3 s for a 1.4 s MobileNetV2
      step measured). Keras on PyTorch takes `steps_per_execution=1` only.
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
        if batch_size is not None and (not is_int(batch_size) or batch_size < 1):
            raise ConfigurationError(
                f"Unrecognized value for batch_size: {batch_size!r}. Expected "
                "a positive int (the training batch size) or None."
            )
        self.batch_size = None if batch_size is None else int(batch_size)
        self.hparams = check_hparams(hparams)
        # Opened by on_train_begin: the constructor holds no file, so that a
        # tuner can deep-copy the callback for every trial.
        self._writers = None
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
        self._writers = SummaryWriters(self.log_dir)
        self._writers.writer(PHASES_RUN)
        if self.hparams:
            self._writers.write_hparams(self.hparams)
        # A cached fit (keras_transfer.caching) computes the frozen layers'
        # features before on_train_begin: that pass is part of the first
        # phase. Phases are timed with perf_counter, so the wall-clock shift
        # is carried over to it.
        now = time.perf_counter()
        cache_seconds = time.time() - caching.fit_start_time(self.model)
        self._fit_start = now - cache_seconds

    def on_epoch_begin(self, epoch, logs=None):
        self._reset_epoch_state()
        self._epoch = epoch
        self._epoch_start = time.perf_counter()
        self._epoch_start_iterations = optimizer_iterations(self.model)
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
            train_seconds = max(self._epoch_train_end - self._epoch_train_start - retrace, 0.0)
        phase.epochs += 1
        phase.steps += self._epoch_steps
        phase.train_seconds += train_seconds
        if self._epoch_samples is None:
            phase.samples_known = False
        else:
            phase.samples += self._epoch_samples

        trainable_params = count_params(self.model.trainable_weights)
        rates = learning_rates(self.model, phase.info)
        if phase.trainable_params is None:
            phase.trainable_params = trainable_params
            phase.learning_rates = rates

        self._writers.write_epoch(
            epoch,
            phase.index,
            seconds=now - self._epoch_start,
            train_seconds=train_seconds,
            steps=self._epoch_steps,
            samples=self._epoch_samples,
            trainable_params=trainable_params,
            rates=rates,
        )
        if self.write_metrics:
            self._writers.write_epoch_logs(epoch, logs or {})
        self._writers.flush()

    def on_train_end(self, logs=None):
        if self._phase is not None:
            self._close_phase(time.perf_counter())
        self._close_writers()

    # Phases ----------------------------------------------------------------

    def _resolve_phase(self):
        self._phase_resolved = True
        info = current_phase(self.model)
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
        self._phase = PhaseRecord(index=index, info=info, start_time=start, start_epoch=self._epoch)
        self._epoch_opens_phase = True

    def _close_phase(self, end):
        phase = self._phase
        self._phase = None
        self._writers.write_phase(phase, end - phase.start_time)

    def _end_training_part(self):
        self._in_training = False
        iterations = optimizer_iterations(self.model)
        if iterations is not None and self._epoch_start_iterations is not None:
            self._epoch_steps = iterations - self._epoch_start_iterations
        else:
            known = (self.params or {}).get("steps")
            if known:
                self._epoch_steps = min(self._epoch_steps, known)
        samples = samples_seen(self.model)
        if samples is None and self.batch_size is not None:
            samples = self._epoch_steps * self.batch_size
        self._epoch_samples = samples
        # Reading the counts waited for the device: the training part of the
        # epoch is over now.
        self._epoch_train_end = time.perf_counter()

    # State -----------------------------------------------------------------

    def _close_writers(self):
        if self._writers is not None:
            self._writers.close()
        self._writers = None

    def _reset_fit_state(self):
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
