"""`search_in_subprocesses`: a KerasTuner search whose memory does not grow with its trials.

A process that builds and fits model after model keeps some memory from each
one, `keras.backend.clear_session()` and `gc.collect()` or not: TensorFlow's
runtime holds on to part of every traced function and graph
(tensorflow/tensorflow#61791, keras-team/keras-tuner#395). Over a long search
this adds up (`benchmarks/memory.py` measures it). The remedy of servers
with the same problem (gunicorn's `max_requests`, Celery's
`max_tasks_per_child`) works here too: run the trials in a child process,
start a fresh one every few trials, and let the search continue from the
tuner's own files, which KerasTuner writes after every trial for exactly
this (`overwrite=False` reloads a search and carries on).

Memory is then bounded by what `trials_per_process` trials take, whatever
the number of trials. Each new process costs its start-up: importing
TensorFlow, loading the data, building the first backbone (a few seconds).
"""

import functools
import multiprocessing
import os
import pickle
import queue as queue_lib
import sys
import traceback

import keras_tuner
from keras_tuner.engine import trial as trial_lib
from keras_tuner.oracles import GridSearchOracle

from keras_transfer.errors import ConfigurationError
from keras_transfer.errors import KerasTransferError
from keras_transfer.utils.checks import check_int
from keras_transfer.utils.internals import MissingInternalError
from keras_transfer.utils.internals import missing_message


def search_in_subprocesses(
    build_tuner, search_arguments, trials_per_process=5, overwrite=False, verbose=1
):
    """Runs `tuner.search` in a series of fresh processes, a few trials each.

    Both functions run in every child process (TensorFlow objects, datasets
    included, cannot cross processes), so they must be importable: defined
    at the top level of a module, and the script that calls this must guard
    its own work with `if __name__ == "__main__":` (processes are started
    with `spawn`, which imports the main module again).

    Example:

    ```python
    import keras_tuner
    import keras_transfer

    def build_tuner(overwrite):
        hypermodel = keras_transfer.TransferHyperModel(
            num_classes=5, input_shape=(128, 128, 3))
        return keras_tuner.RandomSearch(
            hypermodel, objective="val_accuracy", max_trials=20,
            directory="tuning", project_name="flowers", overwrite=overwrite)

    def search_arguments():
        train, val, _ = keras_transfer.load_image_folder("flower_photos", 128)
        return (train,), {"validation_data": val, "epochs": 8}

    if __name__ == "__main__":
        tuner = keras_transfer.search_in_subprocesses(
            build_tuner, search_arguments, trials_per_process=5)
        print(keras_transfer.tuner.results_table(tuner))
    ```

    Args:
        build_tuner: a function of one keyword argument, `overwrite`, that
            returns the KerasTuner tuner and passes `overwrite` to it. It is
            called with `overwrite=False` in every process but the first,
            so that each continues the search from the tuner's directory.
        search_arguments: a function of no argument that returns the
            positional and keyword arguments of `tuner.search`, as a tuple
            `(args, kwargs)`: it loads the data in each process.
        trials_per_process: int >= 1, trials a process runs before a new
            one takes over. Defaults to 5.
        overwrite: bool, whether the first process starts the search anew
            (`True`) or continues the one in the tuner's directory. Defaults
            to False, as for KerasTuner's tuners.
        verbose: 0 for silence, 1 (default) for one line per process.

    Returns:
        The tuner, built in this process with `overwrite=False`: it holds
        every trial of the search (`tuner.oracle.get_best_trials()`,
        `tuner.get_best_models()`, `keras_transfer.tuner.results_table`).

    Raises:
        ConfigurationError: bad arguments, or `build_tuner` ignored
            `overwrite` (a later process found the search emptied).
        Exception: the exception a child raised (a `KerasTransferError` or
            a `RuntimeError` with its traceback), or `RuntimeError` naming
            the exit status of a child that died without a word (e.g. killed
            for memory); the trials finished before are kept on disk.
    """
    for name, function in (("build_tuner", build_tuner), ("search_arguments", search_arguments)):
        if not callable(function):
            raise ConfigurationError(
                f"{name} must be a function defined at the top level of a module. "
                f"Received: {name}={function!r}"
            )
    trials_per_process = check_int(trials_per_process, "trials_per_process", minimum=1)
    context = multiprocessing.get_context("spawn")
    done = None  # Trials the search holds, as the last process left it.
    process_index = 0
    while True:
        queue = context.Queue()
        child = context.Process(
            target=_run_some_trials,
            args=(
                build_tuner,
                search_arguments,
                trials_per_process,
                overwrite and process_index == 0,
                done,
                queue,
            ),
            name=f"keras-transfer-search-{process_index}",
        )
        child.start()
        try:
            report = _wait_for(child, queue)
        except BaseException:  # Ctrl-C here must not leave a child training.
            if child.is_alive():
                child.terminate()
                child.join()
            raise
        if "error" in report:
            raise report["error"]
        if verbose:
            print(
                f"search process {process_index + 1} (pid {child.pid}): ran "
                f"{report['ran']} trial(s), {report['trials']} in the search; "
                f"peak memory {report['peak_mb']:,.0f} MB",
                flush=True,
            )
        done = report["trials"]
        process_index += 1
        if report["finished"]:
            break
        if report["ran"] == 0:
            raise RuntimeError(
                "A search process ran no trial although the oracle has not "
                "finished the search; stopping instead of starting processes "
                "forever."
            )
    return build_tuner(overwrite=False)


def _wait_for(child, queue):
    """The child's report; waits for the report first, then for the exit."""
    report = None
    while report is None:
        try:
            report = queue.get(timeout=1.0)
        except queue_lib.Empty:
            if not child.is_alive():
                # The report may have landed just before the exit.
                try:
                    report = queue.get(timeout=1.0)
                except queue_lib.Empty:
                    child.join()
                    raise RuntimeError(
                        f"Search process {child.name} (pid {child.pid}) exited "
                        f"with status {child.exitcode} without a report"
                        + (
                            f" (killed by signal {-child.exitcode}; out of memory?)"
                            if child.exitcode < 0
                            else ""
                        )
                        + ". The trials finished before it are kept in the "
                        "tuner's directory: run again with overwrite=False to "
                        "continue, and lower trials_per_process if it ran out "
                        "of memory."
                    ) from None
    child.join()
    return report


def _run_some_trials(build_tuner, search_arguments, limit, overwrite, expected, queue):
    """The child process: at most `limit` new trials of the search, then a report."""
    try:
        report = _search(build_tuner, search_arguments, limit, overwrite, expected)
    except BaseException as error:  # Reported, never lost with the process.
        report = {"error": _portable(error)}
    queue.put(report)
    queue.close()
    queue.join_thread()


def _search(build_tuner, search_arguments, limit, overwrite, expected):
    tuner = build_tuner(overwrite=overwrite)
    if not isinstance(tuner, keras_tuner.engine.base_tuner.BaseTuner):
        raise ConfigurationError(
            "build_tuner must return a KerasTuner tuner (e.g. "
            f"keras_tuner.RandomSearch). It returned {type(tuner).__name__}."
        )
    if expected is None:
        _check_overwrite_is_honoured(build_tuner, tuner)
    oracle = tuner.oracle
    if expected and len(oracle.trials) < expected:
        raise ConfigurationError(
            f"The search in {tuner.project_dir} held {expected} trial(s) after "
            f"the last process and {len(oracle.trials)} now: build_tuner does "
            "not pass its overwrite argument to the tuner (overwrite=True "
            "empties the search). Use keras_tuner.RandomSearch(..., "
            "overwrite=overwrite) and so on."
        )
    _restore_grid_position(oracle)
    arguments = search_arguments()
    if (
        not isinstance(arguments, tuple)
        or len(arguments) != 2
        or not isinstance(arguments[0], (tuple, list))
        or not isinstance(arguments[1], dict)
    ):
        raise ConfigurationError(
            "search_arguments must return (args, kwargs) for tuner.search, e.g. "
            "((train_ds,), {'validation_data': val_ds, 'epochs': 8}). It "
            f"returned {type(arguments).__name__}."
        )
    args, kwargs = arguments
    limited = _TrialLimit(oracle, limit)
    oracle.create_trial = limited
    tuner.search(*args, **kwargs)
    return {
        "ran": limited.started,
        "trials": len(oracle.trials),
        # The search is over when the oracle stopped it, not our limit.
        "finished": not limited.stopped_by_limit,
        "peak_mb": _peak_memory_mb(),
    }


def _check_overwrite_is_honoured(build_tuner, tuner):
    """Builds the tuner again, as later processes will, before any trial runs."""
    marker = os.path.join(tuner.project_dir, "keras_transfer_search_processes")
    with open(marker, "w") as f:
        f.write("Written by keras_transfer.search_in_subprocesses.\n")
    build_tuner(overwrite=False)
    if not os.path.exists(marker):
        raise ConfigurationError(
            f"build_tuner(overwrite=False) emptied the search in "
            f"{tuner.project_dir}: build_tuner does not pass its overwrite "
            "argument to the tuner, so every process would delete the trials "
            "of the one before. Use keras_tuner.RandomSearch(..., "
            "overwrite=overwrite) and so on."
        )
    os.remove(marker)


def _restore_grid_position(oracle):
    """Tells a reloaded `GridSearch` which combinations its trials took.

    KerasTuner's `GridSearchOracle` keeps where it is in the grid in memory
    only (`_ordered_ids`, `_populate_next`; keras-team/keras-tuner#1055): a
    reloaded one finds nothing to continue from and ends the search early,
    without a word. Both are rebuilt here from the trials on disk, in grid
    order, as the oracle would have them after running those trials.
    """
    if not isinstance(oracle, GridSearchOracle) or not oracle.trials:
        return
    ordered = getattr(oracle, "_ordered_ids", None)
    pending = getattr(oracle, "_populate_next", None)
    if not (
        hasattr(ordered, "insert")
        and isinstance(getattr(ordered, "_memory", None), list)
        and isinstance(pending, list)
        and hasattr(oracle, "_compare")
    ):
        raise MissingInternalError(
            missing_message(
                "GridSearchOracle._ordered_ids/_populate_next/_compare",
                "search_in_subprocesses (to continue a GridSearch from its files)",
            )
            + " Or run the GridSearch in one process with tuner.search, or use "
            "RandomSearch, BayesianOptimization or Hyperband here."
        )
    if ordered._memory or pending:
        return  # Restored already, or this KerasTuner saves it.
    by_grid_order = functools.cmp_to_key(
        lambda a, b: oracle._compare(
            oracle.trials[a].hyperparameters.values,
            oracle.trials[b].hyperparameters.values,
        )
    )
    for trial_id in sorted(oracle.trials, key=by_grid_order):
        ordered.insert(trial_id)
        # The oracle skips those whose next combination was tried.
        pending.append(trial_id)


class _TrialLimit:
    """`oracle.create_trial` that stops the search after `limit` new trials."""

    def __init__(self, oracle, limit):
        self._create_trial = oracle.create_trial
        self._oracle = oracle
        self._limit = limit
        self.started = 0
        self.stopped_by_limit = False

    def __call__(self, tuner_id):
        oracle = self._oracle
        if self.started >= self._limit and not (
            oracle.max_trials and len(oracle.trials) >= oracle.max_trials
        ):
            # (When the oracle is done, it says so itself below: no process
            # is started only to hear it.)
            self.stopped_by_limit = True
            return trial_lib.Trial(
                hyperparameters=self._oracle.hyperparameters.copy(),
                status=trial_lib.TrialStatus.STOPPED,
            )
        trial = self._create_trial(tuner_id)
        if trial.status == trial_lib.TrialStatus.RUNNING:
            self.started += 1
        return trial


def _peak_memory_mb():
    import resource  # POSIX only.

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes / kB


def _portable(error):
    """`error` if it survives pickling, else a RuntimeError with its traceback."""
    if isinstance(error, KerasTransferError):
        try:
            pickle.loads(pickle.dumps(error))
            return error
        except Exception:
            pass
    text = "".join(traceback.format_exception(error))
    return RuntimeError(f"A search process failed:\n{text}")
