"""search_in_subprocesses: trials in fresh processes, one search on disk."""

import functools
import os

import keras
import keras_tuner as kt
import numpy as np
import pytest

import keras_transfer
from keras_transfer.errors import ConfigurationError

SHAPE = (32, 32, 3)


# Module level: the child processes import these by name.


def build_tuner(directory, max_trials, overwrite, honour_overwrite=True, grid=False):
    hypermodel = keras_transfer.TransferHyperModel(
        num_classes=2,
        backbones=("mobilenet_v2_035",),
        input_shape=SHAPE,
        weights=None,
        unfreeze_blocks=(0, 1, 2),
        unfreeze_epoch=0,
        head_units=0,
        head_dropout=0.0 if grid else (0.0, 0.2),
        head_learning_rate=1e-3,
        backbone_lr_ratio=0.1,
    )
    tuner_class = kt.GridSearch if grid else kt.RandomSearch
    return tuner_class(
        hypermodel,
        objective="val_accuracy",
        max_trials=max_trials,
        seed=0,
        directory=directory,
        project_name="search",
        overwrite=overwrite if honour_overwrite else True,
    )


class RecordProcess(keras.callbacks.Callback):
    """Writes the id of the process that trains, one file per trial."""

    def __init__(self, folder):
        super().__init__()
        self.folder = folder

    def on_train_begin(self, logs=None):
        count = len(os.listdir(self.folder))
        with open(os.path.join(self.folder, f"{count}_{os.getpid()}"), "w"):
            pass


def search_arguments(folder, fail=False):
    if fail:
        raise ConfigurationError("no images in /nowhere: pass an image folder")
    rng = np.random.default_rng(0)
    y = np.arange(24) % 2
    x = rng.uniform(0, 255, (24,) + SHAPE).astype("float32")
    x[y == 1] *= 0.5
    kwargs = dict(validation_split=0.25, epochs=1, verbose=0, callbacks=[RecordProcess(folder)])
    return (x, y), kwargs


def test_trials_run_in_fresh_processes_and_the_grid_continues(tmp_path, capsys):
    pids = tmp_path / "pids"
    pids.mkdir()
    tuner = keras_transfer.search_in_subprocesses(
        functools.partial(build_tuner, str(tmp_path / "tuning"), None, grid=True),
        functools.partial(search_arguments, str(pids)),
        trials_per_process=2,
        overwrite=True,
    )
    by_trial = sorted(os.listdir(pids), key=lambda name: int(name.split("_")[0]))
    processes = [int(name.split("_")[1]) for name in by_trial]
    # 2 + 1 trials, each process a new one, none of them this one.
    # KerasTuner's GridSearch does not save its place in the grid
    # (keras-tuner#1055): without help the second process would have ended
    # the search at once.
    assert len(processes) == 3
    assert processes[0] == processes[1] != processes[2]
    assert os.getpid() not in processes
    out = capsys.readouterr().out
    assert out.count("search process") == 2 and "3 in the search" in out

    # One search: the three depths, completed, ranked, in the tuner returned.
    trials = tuner.oracle.get_best_trials(10)
    assert sorted(t.hyperparameters["unfreeze_blocks"] for t in trials) == [0, 1, 2]
    assert all(t.status == "COMPLETED" for t in trials)
    table = keras_transfer.tuner.results_table(tuner)
    assert len(table.splitlines()) == 4


def test_a_childs_error_reaches_the_caller(tmp_path):
    with pytest.raises(ConfigurationError, match="no images in /nowhere"):
        keras_transfer.search_in_subprocesses(
            functools.partial(build_tuner, str(tmp_path / "tuning"), 2),
            functools.partial(search_arguments, str(tmp_path), fail=True),
            verbose=0,
        )


def die(overwrite):
    import signal

    os.kill(os.getpid(), signal.SIGKILL)  # As the kernel's OOM killer would.


def test_a_child_that_dies_is_reported_with_its_signal(tmp_path):
    with pytest.raises(RuntimeError, match=r"exited with status -9 .*killed by signal 9"):
        keras_transfer.search_in_subprocesses(die, search_arguments, verbose=0)


def test_a_tuner_that_ignores_overwrite_is_refused_before_any_trial(tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    with pytest.raises(ConfigurationError, match="does not pass its overwrite"):
        keras_transfer.search_in_subprocesses(
            functools.partial(build_tuner, str(tmp_path / "tuning"), 2, honour_overwrite=False),
            functools.partial(search_arguments, str(pids)),
            trials_per_process=1,
            verbose=0,
        )
    assert os.listdir(pids) == []  # Refused in the first process, before training.


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(build_tuner=None), "build_tuner must be a function"),
        (dict(search_arguments="data"), "search_arguments must be a function"),
        (dict(trials_per_process=0), "trials_per_process must be an integer >= 1"),
        (dict(trials_per_process=2.5), "trials_per_process must be an integer >= 1"),
    ],
)
def test_bad_arguments_name_the_problem(kwargs, message):
    arguments = dict(build_tuner=build_tuner, search_arguments=search_arguments)
    arguments.update(kwargs)
    with pytest.raises(ConfigurationError, match=message):
        keras_transfer.search_in_subprocesses(**arguments)
