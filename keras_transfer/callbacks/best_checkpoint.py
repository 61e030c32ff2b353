"""`BestCheckpoint`: keep the model of the best epoch, in a file a kill never truncates."""

import keras

from keras_transfer.models import save_model
from keras_transfer.utils.files import json_number


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the model whenever `monitor` reaches a new maximum.

    Like `ModelCheckpoint(save_best_only=True, mode="max")`, but the file is
    replaced atomically (`keras_transfer.models.save_model`: a file that
    plain Keras loads, see `keras_transfer.portable`), and a resumed run starts from the
    best value of the epochs already done (`best`) instead of overwriting
    the file with whatever its first epoch gives. Epochs whose `monitor` is
    missing or not finite are never saved.

    Example:

    ```python
    checkpoint = BestCheckpoint("best.keras")
    model.fit(x, y, validation_data=(x_val, y_val), epochs=5, callbacks=[checkpoint])
    checkpoint.best  # the best val_accuracy, that of the model in best.keras
    ```

    Args:
        path: the `.keras` file to write.
        monitor: the log to maximise (default: "val_accuracy").
        best: the value to beat; None saves the first epoch.
    """

    def __init__(self, path, monitor="val_accuracy", best=None):
        super().__init__()
        self.path = path
        self.monitor = monitor
        self.best = best

    def on_epoch_end(self, epoch, logs=None):
        value = json_number((logs or {}).get(self.monitor))
        if value is not None and (self.best is None or value > self.best):
            self.best = value
            save_model(self.model, self.path)
