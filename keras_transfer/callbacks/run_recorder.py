"""`RunRecorder`: each epoch's metrics with the wall-clock time it ended at.

Keras' `History` keeps the metrics of each epoch but not when the epoch
ended, which unfreeze phase it trained in, or whether a stop cut it short;
plotting accuracy against time, or timing phases, needs all of these.
"""

import time

import keras

from keras_transfer.unfreeze import current_phase
from keras_transfer.utils.files import json_number
from keras_transfer.utils.tensors import count_params

# The logs each record keeps, rounded for a JSON file a person reads.
_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")
_DIGITS = 6


class RunRecorder(keras.callbacks.Callback):
    """Records every epoch with its wall-clock time, phase and completeness.

    After each epoch, appends to `history` a JSON-ready dict:

    - `epoch`: counted from 0, as in Keras callbacks;
    - `loss`, `accuracy`, `val_loss`, `val_accuracy`: from the epoch logs,
      rounded to 6 decimals; None when missing or not finite;
    - `seconds`: when the epoch (validation included) ended, in seconds
      since `start`;
    - `phase`: the unfreeze phase the epoch trained in (the `PhaseInfo`
      that `ProgressiveUnfreeze` publishes; 0 without it);
    - `partial`: True when training stopped before the epoch's last step
      (e.g. `WallClockBudget`); Keras validated it all the same.

    It also keeps the time `fit` began training (`fit_start`) and the
    trainable parameters of each phase (`trainable_params`), measured at the
    end of the phase's epochs.

    Example:

    ```python
    recorder = RunRecorder(on_epoch=lambda record: print(record["seconds"]))
    model.fit(x, y, validation_data=(x_val, y_val), epochs=3,
              callbacks=[recorder])
    print(recorder.history[-1]["val_accuracy"], recorder.fit_start)
    ```

    Args:
        start: float, the `time.perf_counter()` value that `seconds` count
            from, so that the clock can start before `fit` (e.g. before the
            model is built). None (default) counts from the start of the
            first `fit`.
        on_epoch: None (default), or a function called with each new record
            once it is in `history`, e.g. to print progress.

    Attributes:
        history: list of the records above, one per epoch.
        fit_start: float, the `time.perf_counter()` value at which `fit`
            began training (`on_train_begin`): what came before it since
            `start` is setup (building, loading weights, caching features).
        trainable_params: dict `{phase index: trainable parameters}`.
    """

    def __init__(self, start=None, on_epoch=None):
        super().__init__()
        self.start = start
        self.on_epoch = on_epoch
        self.history = []
        self.fit_start = start
        self.trainable_params = {}
        self._steps = 0

    def on_train_begin(self, logs=None):
        self.fit_start = time.perf_counter()
        if self.start is None:
            self.start = self.fit_start

    def on_epoch_begin(self, epoch, logs=None):
        self._steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        now = time.perf_counter()
        phase = current_phase(self.model)
        steps = (self.params or {}).get("steps")
        record = {"epoch": epoch}
        for key in _METRICS:
            record[key] = json_number(logs.get(key), digits=_DIGITS)
        record.update(
            seconds=round(now - self.start, 3),
            phase=0 if phase is None else int(phase.index),
            partial=bool(steps) and self._steps < steps,
        )
        self.trainable_params[record["phase"]] = count_params(self.model.trainable_weights)
        self.history.append(record)
        if self.on_epoch is not None:
            self.on_epoch(record)
