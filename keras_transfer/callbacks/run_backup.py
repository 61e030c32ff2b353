"""`RunBackup`: the training state of a run, backed up after every epoch.

`keras-transfer train` resumes an interrupted run from it: same epoch, same
phase, same optimizer state. Unlike Keras' `BackupAndRestore`, a kill at any
moment leaves a backup the next run can load, and a backup of another run is
refused instead of half-loaded.
"""

import json
import os

import keras

from keras_transfer.errors import ConfigurationError
from keras_transfer.utils.files import atomic_write_json
from keras_transfer.utils.files import fsync_file
from keras_transfer.utils.internals import require_attributes
from keras_transfer.utils.internals import set_initial_epoch

# What BackupAndRestore calls at the start of fit and at each epoch end.
_BACKUP_HOOKS = ("_load_model", "_save_model")


class RunBackup(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` whose backup survives a kill at any moment.

    Keras' callback overwrites its weights file in place, so a run killed
    while it saves (a sizeable fraction of each epoch for a big model) leaves
    a truncated file that the next run cannot load. Here each epoch's weights
    (model and optimizer) go to a new file, written under a temporary name
    and renamed; then `training_metadata.json` is replaced atomically to name
    it, which is what makes the epoch count; then older files are removed.

    The metadata also records `run`, the options the backup was made with: a
    backup of another run is refused instead of half-loaded. The learning
    rate comes from the caller, not from the backup, so a run stopped by a
    NaN loss can resume with a lower one.

    The backup is not deleted at the end of `fit` (the caller deletes it once
    the model is saved, with `delete`), and only the files it wrote are.
    Errors name `--backup-dir`, the option of `keras-transfer train`.

    Example:

    ```python
    backup = RunBackup("model.backup", {"--seed": 1337}, learning_rate=1e-3)
    done = backup.resume_epoch()  # 0, or the epochs a killed run finished
    model.fit(x, y, epochs=5, callbacks=[backup])  # starts at epoch `done`
    model.save("model.keras")
    backup.delete()
    ```

    Args:
        backup_dir: the folder of the backup; created at the first epoch end.
        run: a JSON-serialisable dict, by option name, of what a backup must
            match to be resumed.
        learning_rate: the learning rate a resumed optimizer continues with.
    """

    METADATA = "training_metadata.json"
    # The best epoch's model, which `keras-transfer train` keeps here during a
    # run (`--keep best`) so that a resumed run still knows it.
    BEST_MODEL = "best.keras"
    # The running mean of `--keep average` (`WeightAveraging`), kept here too.
    AVERAGE = "average.npz"
    _PREFIX = "epoch_"
    _SUFFIX = ".weights.h5"  # Keras requires it of weights files.

    def __init__(self, backup_dir, run, learning_rate):
        super().__init__(backup_dir, save_freq="epoch", delete_checkpoint=False)
        # The hooks and epoch count of BackupAndRestore that this class builds
        # on are private: fail here, by name, rather than resume nothing.
        used_by = "RunBackup (keras-transfer train --backup-dir)"
        require_attributes(keras.callbacks.BackupAndRestore, _BACKUP_HOOKS, used_by)
        require_attributes(self, ("_current_epoch",), used_by)
        self.run = run
        self.learning_rate = learning_rate

    @classmethod
    def owns(cls, name):
        """Whether the file `name` in a backup folder is one this class writes.

        Temporary files count: a run killed while saving leaves one behind
        (`.NAME.PID.tmp`, or `.NAME.PID.tmp.keras` for a model).
        """
        if name.lstrip(".").startswith(cls._PREFIX):
            return name.endswith(cls._SUFFIX)
        return any(
            name == own or (name.startswith(f".{own}.") and name.endswith((".tmp", ".tmp.keras")))
            for own in (cls.METADATA, cls.BEST_MODEL, cls.AVERAGE)
        )

    def resume_epoch(self):
        """The epoch a fit resumes at (0 without a backup); checks the backup.

        Raises:
            ConfigurationError: the backup is of another run (its `run`
                differs), or is not one this class wrote.
        """
        metadata = self._read()
        if metadata is None:
            return 0
        changed = [key for key in self.run if metadata["run"].get(key) != self.run[key]]
        if changed:
            details = "; ".join(
                f"{key} {metadata['run'].get(key)!r} there, {self.run[key]!r} now"
                for key in changed
            )
            raise ConfigurationError(
                f"--backup-dir {self.backup_dir} holds the backup of another run "
                f"({details}). Run that command again to resume it, or delete the "
                "folder (or pass another --backup-dir) to start over."
            )
        return metadata["epoch"]

    def delete(self):
        """Removes the backup's files, and its folder if nothing else is left."""
        if not os.path.isdir(self.backup_dir):
            return
        for name in os.listdir(self.backup_dir):
            if self.owns(name):
                os.remove(os.path.join(self.backup_dir, name))
        try:
            os.rmdir(self.backup_dir)
        except OSError:
            pass

    def _read(self):
        path = os.path.join(self.backup_dir, self.METADATA)
        if not os.path.exists(path):
            return None
        try:
            with open(path) as f:
                metadata = json.load(f)
            ok = (
                isinstance(metadata.get("epoch"), int)
                and isinstance(metadata.get("run"), dict)
                and os.path.isfile(os.path.join(self.backup_dir, metadata["weights"]))
            )
        except (OSError, ValueError, AttributeError, KeyError, TypeError):
            ok = False
        if not ok:
            raise ConfigurationError(
                f"--backup-dir {self.backup_dir} holds a backup that keras-transfer "
                f"cannot resume from ({self.METADATA} is not one it wrote, or its "
                "weights file is missing). Delete the folder to start over."
            )
        return metadata

    # `_load_model` and `_save_model` are the hooks `BackupAndRestore` calls
    # at the start of `fit` and at each epoch end.

    def _load_model(self):
        metadata = self._read()
        if metadata is None:
            return
        model = self.model
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        path = os.path.join(self.backup_dir, metadata["weights"])
        try:
            model.load_weights(path)
        except Exception as e:  # h5py's OSError, Keras' ValueError...
            raise ConfigurationError(
                f"Cannot restore the backup {path}: {e}. Delete {self.backup_dir} to start over."
            ) from e
        model.optimizer.learning_rate = self.learning_rate
        set_initial_epoch(model, metadata["epoch"])

    def _save_model(self):
        folder = self.backup_dir
        os.makedirs(folder, exist_ok=True)
        name = f"{self._PREFIX}{self._current_epoch:04d}{self._SUFFIX}"
        temporary = os.path.join(folder, f".{self._PREFIX}{os.getpid()}.tmp{self._SUFFIX}")
        try:
            self.model.save_weights(temporary, overwrite=True)
            fsync_file(temporary)
            os.replace(temporary, os.path.join(folder, name))
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
        atomic_write_json(
            os.path.join(folder, self.METADATA),
            {"epoch": self._current_epoch, "weights": name, "run": self.run},
        )
        # Older epochs' weights and what a killed writer left; the best
        # model and the average (written before this callback, each epoch) stay.
        keep = (name, self.METADATA, self.BEST_MODEL, self.AVERAGE)
        for other in os.listdir(folder):
            if other not in keep and self.owns(other):
                os.remove(os.path.join(folder, other))
