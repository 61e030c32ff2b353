"""`JsonHistory`: the per-epoch history of a run, in a JSON file that survives a kill.

`keras-transfer train` writes its `history.json` with it; `history_records`
reads the epochs back (a resumed run keeps them, its checkpoint finds the
best value so far in them).
"""

import json
import time

import keras

from keras_transfer import caching
from keras_transfer.utils.files import atomic_write_json
from keras_transfer.utils.files import json_number

# Written first in every record, `null` when the logs lack them (e.g. no
# validation set); the other logs follow in Keras' order.
_FIRST_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


def history_records(path):
    """The epoch records of a history file; [] if it is missing or unreadable.

    Args:
        path: a JSON file written by `JsonHistory`.

    Returns:
        The dicts of its `"epochs"` list (anything else in the list is
        skipped).

    Example:

    ```python
    best = max(r["val_accuracy"] for r in history_records("history.json"))
    ```
    """
    try:
        with open(path) as f:
            epochs = json.load(f).get("epochs", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [r for r in epochs if isinstance(r, dict)]


def update_history(path, fields):
    """Adds or replaces top-level fields of a history file, atomically.

    For what is known only once training ends, e.g. which epoch's model was
    saved. A missing or unreadable file becomes one with `fields` and no
    epochs.

    Example:

    ```python
    update_history("history.json", {"saved_epoch": 3})
    ```

    Args:
        path: a JSON file written by `JsonHistory`.
        fields: a JSON-serialisable dict; "epochs" is refused.
    """
    if "epochs" in fields:
        raise ValueError("update_history keeps the epochs: pass other fields.")
    try:
        with open(path) as f:
            history = json.load(f)
    except (OSError, ValueError):
        history = None
    if not isinstance(history, dict):
        history = {"epochs": []}
    epochs = history.pop("epochs", [])
    atomic_write_json(path, {**history, **fields, "epochs": epochs})


class JsonHistory(keras.callbacks.Callback):
    """Rewrites a JSON history file after every epoch.

    The file is replaced atomically, so a run killed at any moment leaves the
    history of its finished epochs. A run resumed at epoch `n` (e.g. by
    `BackupAndRestore`) keeps the records of epochs before `n` and continues
    their `seconds`.

    Each record holds `epoch` (from 0), `loss`, `accuracy`, `val_loss`,
    `val_accuracy`, `seconds` (training time since the run began, the
    feature-cache pass included, added up over resumed runs), then every
    other value of the epoch's logs. Values that are missing or not finite
    are `null`, so the file is always valid JSON.

    Example:

    ```python
    model.fit(x, y, epochs=5, callbacks=[JsonHistory("history.json", {"seed": 1})])
    # history.json: {"seed": 1, "epochs": [{"epoch": 0, "loss": ...}, ...]}
    ```

    Args:
        path: the JSON file to write.
        metadata: dict written beside the `"epochs"` list (default: none).
    """

    def __init__(self, path, metadata=None):
        super().__init__()
        self.path = path
        self.metadata = dict(metadata or {})
        self._epochs = None
        self._start = None
        self._offset = 0.0

    def on_train_begin(self, logs=None):
        # A cached fit computes the frozen layers' features before
        # on_train_begin; that time belongs to the first epoch.
        self._start = caching.fit_start_time(self.model)
        self._epochs = None

    def on_epoch_begin(self, epoch, logs=None):
        if self._epochs is None:
            self._epochs = self._earlier_epochs(epoch)
            self._offset = self._epochs[-1]["seconds"] if self._epochs else 0.0

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        record = {"epoch": epoch}
        for key in _FIRST_KEYS:
            record[key] = json_number(logs.pop(key, None))
        record["seconds"] = round(self._offset + time.time() - self._start, 3)
        record.update({key: json_number(value) for key, value in logs.items()})
        self._epochs = [r for r in self._epochs if r["epoch"] < epoch] + [record]
        atomic_write_json(self.path, {**self.metadata, "epochs": self._epochs})

    def _earlier_epochs(self, epoch):
        if epoch == 0:
            return []
        return [r for r in history_records(self.path) if r.get("epoch", epoch) < epoch]
