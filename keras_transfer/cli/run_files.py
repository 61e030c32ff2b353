"""The files a `train` run keeps between its runs: the backup folder and the history.

`train` deletes the backup folder after a successful run, so
`check_backup_dir` only accepts one that holds nothing but a backup; a
resumed run reads the best value so far from the history with
`best_so_far`, and `best_epoch` says which epoch the kept model is. The model itself is saved with
`keras_transfer.models.save_model`.
"""

import math
import os

from keras_transfer.callbacks.json_history import history_records
from keras_transfer.callbacks.run_backup import RunBackup
from keras_transfer.cli.arguments import probe_folder
from keras_transfer.cli.arguments import writable_dir
from keras_transfer.errors import ConfigurationError


def check_backup_dir(path):
    """Checks `--backup-dir`: writable, and new or holding only a backup.

    Args:
        path: the value given (or its default).

    Returns:
        The absolute path.

    Raises:
        ConfigurationError: the folder cannot be written, or holds files a
            `RunBackup` did not write.

    Example:

    ```python
    backup_dir = check_backup_dir("model.backup")
    ```
    """
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(path):
        # Created at the end of the first epoch; a run that fails before
        # leaves no empty folder behind.
        probe_folder(os.path.dirname(path), "--backup-dir", path)
        return path
    path = writable_dir(path, "--backup-dir")
    foreign = [name for name in os.listdir(path) if not RunBackup.owns(name)]
    if foreign:
        # The folder is deleted after a successful run: never one that holds
        # anything else.
        raise ConfigurationError(
            f"--backup-dir {path} holds files that are not a keras-transfer backup "
            f"(e.g. {sorted(foreign)[0]!r}), and the backup folder is deleted after "
            "training. Pass a new or empty folder."
        )
    return path


def best_so_far(history, best_model, resume_epoch, monitor):
    """The best `monitor` of the finished epochs a resumed run keeps.

    Args:
        history: the path of the history file.
        best_model: the file the best epoch's model is kept in; it must exist
            for a value to count (else the best model restarts from the first
            epoch of this run).
        resume_epoch: the epochs the resumed run has already done.
        monitor: the history key, e.g. "val_accuracy".

    Returns:
        The largest value in the history of the epochs before
        `resume_epoch`, or None (a new run, no best model yet, no value).

    Example:

    ```python
    best = best_so_far("history.json", "best.keras", 3, "val_accuracy")
    ```
    """
    if not resume_epoch or not best_model or not os.path.exists(best_model):
        return None
    found = best_epoch(history, monitor, before=resume_epoch)
    return None if found is None else found[1]


def best_epoch(history, monitor, since=0, before=math.inf):
    """The epoch of the history whose `monitor` is the largest, and that value.

    The first of equal values wins, as `BestCheckpoint` keeps the first.

    Args:
        history: the path of a history file (`JsonHistory`).
        monitor: the history key, e.g. "val_accuracy".
        since: the first epoch to consider.
        before: the first epoch not to consider.

    Returns:
        `(epoch, value)`, or None when no epoch in range has a value.

    Example:

    ```python
    epoch, accuracy = best_epoch("history.json", "val_accuracy")
    ```
    """
    found = None
    for record in history_records(history):
        epoch, value = record.get("epoch"), record.get(monitor)
        if not isinstance(epoch, int) or not since <= epoch < before:
            continue
        if isinstance(value, (int, float)) and (found is None or value > found[1]):
            found = (epoch, value)
    return found
