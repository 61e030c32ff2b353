"""What a comparison shows while it runs: one line per run, and a log file.

The terminal gets the comparison's few messages and, per run, one
`keras.utils.Progbar` line that updates in place; every per-epoch line
(metrics, elapsed time, budget left, phase changes) goes to
`OUT/compare.log`, with the messages, so that a long comparison does not
print hundreds of lines and its details stay readable afterwards.
"""

import os
import time

import keras

from keras_transfer.experiment.formatting import format_duration
from keras_transfer.experiment.formatting import format_percent
from keras_transfer.experiment.options import LOG_FILE


class ComparisonLog:
    """The comparison's messages, to the terminal and to `OUT/compare.log`.

    Example:

    ```python
    log = ComparisonLog("compare", verbose=1)
    log.say("Read the images.")   # printed and logged
    log.write("  epoch 1/10, ...")  # logged only
    log.close()
    ```

    Args:
        output_dir: the comparison's folder; the log replaces an earlier one.
        verbose: 0 to print nothing (the log is written all the same).
    """

    def __init__(self, output_dir, verbose=1):
        self.path = os.path.join(output_dir, LOG_FILE)
        self.verbose = verbose
        # Line-buffered: `tail -f` follows a comparison as it runs.
        self._file = open(self.path, "w", buffering=1, encoding="utf-8")

    def say(self, text):
        """Prints `text` (unless silent) and logs it."""
        if self.verbose:
            print(text, flush=True)
        self.write(text)

    def write(self, text):
        """Logs `text` without printing it."""
        if not self._file.closed:
            self._file.write(text + "\n")

    def close(self):
        self._file.close()


class RunProgress(keras.callbacks.Callback):
    """One run's progress line (a `Progbar`) and its per-epoch log lines.

    The bar counts epochs when the run has an epoch limit, else the seconds
    of its budget; it updates after every training step (at most twice a
    second) and shows the last epoch's accuracies. Each
    finished epoch is written to the log by `epoch_done`, the `RunRecorder`
    hook.

    Example:

    ```python
    progress = RunProgress(log, epochs=10, start=start, deadline=None)
    recorder = RunRecorder(start, on_epoch=progress.epoch_done)
    model.fit(..., callbacks=[recorder, progress], verbose=0)
    ```

    Args:
        log: the `ComparisonLog`.
        epochs: int or None, the run's most epochs.
        start: the `time.perf_counter()` value the run's clock started at.
        deadline: the `time.perf_counter()` value of the budget's end, or None.
        phase_name: a function of a phase index saying what trains in it,
            for the log.
    """

    def __init__(self, log, epochs, start, deadline, phase_name=None):
        super().__init__()
        self.log = log
        self.epochs = epochs
        self.start = start
        self.deadline = deadline
        self.phase_name = phase_name or str
        self._epoch = 0
        self._steps = None
        self._phase = None
        self._values = []
        self._bar = None
        if log.verbose:
            if epochs:
                target, unit = epochs, "epoch"
            elif deadline is not None:
                target, unit = max(1, int(round(deadline - start))), "s"
            else:
                target, unit = None, "epoch"
            self._bar = keras.utils.Progbar(
                target, interval=0.5, unit_name=unit, stateful_metrics=_SHOWN
            )

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._steps = (self.params or {}).get("steps")

    def on_train_batch_end(self, batch, logs=None):
        fraction = (batch + 1) / self._steps if self._steps else 0.0
        self._update(self._epoch + min(fraction, 1.0))

    def epoch_done(self, record):
        """Logs the epoch `record` (a `RunRecorder` record) and updates the bar."""
        if record["phase"] != self._phase:
            if self._phase is not None or record["phase"] != 0:
                self.log.write(
                    f"  phase {record['phase']} from epoch {record['epoch'] + 1}: "
                    f"{self.phase_name(record['phase'])} trains"
                )
            self._phase = record["phase"]
        self.log.write(self._epoch_line(record))
        self._values = [(key, record[key]) for key in _SHOWN if record[key] is not None]
        self._update(record["epoch"] + 1)

    def finish(self):
        """Completes the bar (a budget or an epoch limit may end it early)."""
        if self._bar is not None:
            self._bar.update(self._current(self._bar.target or 0), self._values, finalize=True)

    def _update(self, epochs_done):
        if self._bar is not None:
            self._bar.update(self._current(epochs_done), self._values, finalize=False)

    def _current(self, epochs_done):
        if self.epochs or self.deadline is None:
            return epochs_done
        return min(time.perf_counter() - self.start, self._bar.target)

    def _epoch_line(self, record):
        of = f"/{self.epochs}" if self.epochs else ""
        parts = [f"  epoch {record['epoch'] + 1}{of}"]
        if record["partial"]:
            parts[0] += " (partial)"
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            value = record[key]
            if value is not None:
                shown = format_percent(value) if "accuracy" in key else f"{value:.4f}"
                parts.append(f"{key} {shown}")
        parts.append(f"{format_duration(record['seconds'])} elapsed")
        if self.deadline is not None:
            left = max(0.0, self.deadline - time.perf_counter())
            parts.append(f"{format_duration(left)} left in the budget")
        return ", ".join(parts)


# What the bar shows, as is (not averaged over updates): the last epoch's.
_SHOWN = ("accuracy", "val_accuracy")
