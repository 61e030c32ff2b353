"""`WallClockBudget`: stop a `fit` when a wall-clock deadline has passed.

Keras' `EarlyStopping` stops on a metric, `TerminateOnNaN` on a loss; this
stops on time, after any training step, so that runs compared "at the same
budget" get the same number of seconds and not the same number of epochs.
"""

import time

import keras

from keras_transfer.errors import ConfigurationError
from keras_transfer.utils.checks import is_number


class WallClockBudget(keras.callbacks.Callback):
    """Stops `fit` at the first training step that ends past `deadline`.

    The deadline is a `time.perf_counter()` value rather than a duration, so
    that the clock can start before `fit` (e.g. before the model is built,
    to count building and loading weights in the budget). The check runs
    after every training step: `fit` overshoots the deadline by at most one
    step, then, as after any `stop_training`, Keras still validates the
    interrupted epoch and calls `on_epoch_end` for it, so the last epoch's
    logs hold validation metrics of a partial epoch.

    Example:

    ```python
    budget = WallClockBudget(time.perf_counter() + 60)  # one minute
    model.fit(x, y, epochs=1000, callbacks=[budget])
    print("stopped by the budget" if budget.stopped else "ran every epoch")
    ```

    Args:
        deadline: float, the `time.perf_counter()` value past which training
            stops, or None for no limit (the callback then does nothing).

    Attributes:
        stopped: bool, whether this callback stopped training.
    """

    def __init__(self, deadline):
        super().__init__()
        if deadline is not None and not is_number(deadline):
            raise ConfigurationError(
                "deadline must be a time.perf_counter() value (a number) or "
                f"None for no limit. Received: deadline={deadline!r}"
            )
        self.deadline = deadline
        self.stopped = False

    def on_train_batch_end(self, batch, logs=None):
        if self.deadline is not None and time.perf_counter() >= self.deadline:
            self.model.stop_training = True
            self.stopped = True
