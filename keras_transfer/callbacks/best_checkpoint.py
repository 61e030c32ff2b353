"""`BestCheckpoint`: keep the model of the best epoch, in a file a kill never truncates.

Also home of `save_model`, the atomic save that `keras-transfer train` uses
for its final model too: both must write a file that loads without warnings
after `ProgressiveUnfreeze` has swapped the model's optimizer.
"""

import os

import keras

from keras_transfer.utils.files import fsync_file
from keras_transfer.utils.files import json_number


def save_model(model, path):
    """Saves `model` to the `.keras` file `path` atomically, loadable without warnings.

    The model is saved under a temporary name in the same folder, flushed to
    disk and renamed: an interrupted save never leaves a truncated model
    where the previous one was. A model whose optimizer is
    `ProgressiveUnfreeze`'s per-group optimizer is saved with a fresh copy of
    its head optimizer instead; `model.optimizer` is left as it was.

    Args:
        model: a compiled or uncompiled Keras model.
        path: the `.keras` file to write.

    Example:

    ```python
    save_model(model, "model.keras")
    keras.saving.load_model("model.keras")  # no warning about the optimizer
    ```
    """
    optimizer = model.optimizer
    head = getattr(optimizer, "head_optimizer", None)
    if head is not None:
        # ProgressiveUnfreeze's per-group optimizer is rebuilt by the callback,
        # never loaded from a file: `load_model` would compile the head's
        # optimizer and warn that the saved variables do not fit it. Save a
        # fresh copy of the head's optimizer, built for the weights that are
        # trainable now, which `load_model` restores as it is.
        fresh = head.__class__.from_config(head.get_config())
        fresh.build(model.trainable_variables)
        model.optimizer = fresh
    folder, name = os.path.split(path)
    # Keras picks the format from the suffix: the temporary name keeps it.
    temporary = os.path.join(folder, f".{name}.{os.getpid()}.tmp.keras")
    try:
        model.save(temporary)
        fsync_file(temporary)
        os.replace(temporary, path)
    finally:
        model.optimizer = optimizer
        if os.path.exists(temporary):
            os.remove(temporary)


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the model whenever `monitor` reaches a new maximum.

    Like `ModelCheckpoint(save_best_only=True, mode="max")`, but the file is
    replaced atomically (`save_model`), and a resumed run starts from the
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
