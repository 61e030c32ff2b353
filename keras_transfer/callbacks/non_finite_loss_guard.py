"""`NonFiniteLossGuard`: stop `fit` at the first NaN loss, before anything saves it.

`keras-transfer train` catches the `NonFiniteLoss` it raises, saves the
weights of the last finished epoch and exits with status 3.
"""

import math

import keras


class NonFiniteLoss(Exception):
    """The loss became NaN or infinite; raised out of `fit` by `NonFiniteLossGuard`.

    Attributes:
        epoch: the epoch (from 0) whose loss was not finite.
        batch: the batch (from 0) of the training loss that was not finite,
            or None when the validation loss was, checked at the end of the
            epoch.
        loss: the value, `nan`, `inf` or `-inf`.
    """

    def __init__(self, epoch, batch, loss):
        super().__init__(f"loss {loss} at epoch {epoch}, batch {batch}")
        self.epoch = epoch
        self.batch = batch
        self.loss = loss


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Stops `fit` at the first NaN or infinite loss, keeping the last good weights.

    Unlike `keras.callbacks.TerminateOnNaN`, which lets the epoch end (so the
    callbacks that run at its end back up and log the broken weights, and
    `BackupAndRestore` deletes its backup), this raises `NonFiniteLoss` from
    the batch: no epoch-end callback runs, the backup and the history keep
    the last finished epoch, and `good_weights` holds its weights. Put it
    before the callbacks that save an epoch, since a non-finite validation
    loss is only seen at the epoch's end.

    Example:

    ```python
    guard = NonFiniteLossGuard()
    try:
        model.fit(x, y, epochs=5, callbacks=[guard, backup])
    except NonFiniteLoss as stop:
        if guard.good_weights is not None:
            model.set_weights(guard.good_weights)  # epoch guard.good_epoch
    ```

    Attributes:
        good_weights: `model.get_weights()` at the end of the last finished
            epoch (or as a resumed run restored them); None before.
        good_epoch: that epoch, from 0; None before.
    """

    def __init__(self):
        super().__init__()
        self.good_weights = None
        self.good_epoch = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        if self.good_epoch is None and epoch > 0:
            # A resumed run: the weights just restored are those of the
            # last finished epoch.
            self.good_epoch = epoch - 1
            self.good_weights = self.model.get_weights()
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLoss(self._epoch, batch, float(loss))

    def on_epoch_end(self, epoch, logs=None):
        # Finite training losses with a non-finite validation loss: broken
        # validation images, or an overflow that the next epoch would train
        # on. The epoch is not kept either way (this runs before the
        # callbacks that save it).
        val_loss = (logs or {}).get("val_loss")
        if val_loss is not None and not math.isfinite(float(val_loss)):
            raise NonFiniteLoss(epoch, None, float(val_loss))
        self.good_epoch = epoch
        self.good_weights = self.model.get_weights()
