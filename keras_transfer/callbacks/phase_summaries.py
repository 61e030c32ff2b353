"""What `PhaseTimer` writes to TensorBoard, and where.

The run layout (`phases` for PhaseTimer's own series, `train` and
`validation` for the epoch logs as `keras.callbacks.TensorBoard` writes
them, the HParams record at the log directory), the scalars of an epoch and
of a phase, the phase's text summary, and the checks of `hparams`.
TensorFlow is imported when a writer opens, not with this module.
"""

import numbers
import os
from collections.abc import Mapping

import numpy as np

from keras_transfer.errors import ConfigurationError

# Name of the run (subdirectory of the log directory) holding PhaseTimer's own
# series; loss and accuracy go to "train" and "validation" like Keras does.
PHASES_RUN = "phases"

# The run whose writer opens at the log directory itself.
_HPARAMS_RUN = "hparams"


class SummaryWriters:
    """TensorBoard writers of one fit, one per run, opened on first use.

    Example:

    ```python
    writers = SummaryWriters("logs/run1")
    writers.write_epoch_logs(0, {"loss": 0.7, "val_loss": 0.8})
    writers.close()  # logs/run1/train and logs/run1/validation
    ```

    Args:
        log_dir: the fit's log directory.
    """

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self._writers = {}

    def writer(self, run):
        """The `tf.summary` writer of `run`, opened on first use."""
        # "train" and "validation" are opened on first use, as Keras does, so
        # that a fit without validation leaves no empty run behind.
        if run not in self._writers:
            import tensorflow as tf

            path = self.log_dir
            if run != _HPARAMS_RUN:
                path = os.path.join(path, run)
            self._writers[run] = tf.summary.create_file_writer(path)
        return self._writers[run]

    def flush(self):
        for writer in self._writers.values():
            writer.flush()

    def close(self):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}

    def write_hparams(self, hparams):
        """Writes the HParams record of the run (a dict from `check_hparams`)."""
        from tensorboard.plugins.hparams import api as hparams_api

        with self.writer(_HPARAMS_RUN).as_default():
            hparams_api.hparams(hparams)
        self.writer(_HPARAMS_RUN).flush()

    def write_epoch_logs(self, epoch, logs):
        """Writes `logs` as `epoch_<name>`, split as keras.callbacks.TensorBoard does."""
        train = {k: v for k, v in logs.items() if not k.startswith("val_")}
        validation = {k[4:]: v for k, v in logs.items() if k.startswith("val_")}
        for run, values in (("train", train), ("validation", validation)):
            values = {k: v for k, v in values.items() if _is_scalar(v)}
            if not values:
                continue
            with self.writer(run).as_default():
                for name, value in values.items():
                    _summary().scalar(f"epoch_{name}", float(value), step=epoch)

    def write_epoch(
        self, epoch, phase_index, seconds, train_seconds, steps, samples, trainable_params, rates
    ):
        """Writes the per-epoch series of the `phases` run.

        Throughput is written only when the epoch's training time is known,
        images per second only when its images are.
        """
        with self.writer(PHASES_RUN).as_default():
            summary = _summary()
            summary.scalar("phase/index", phase_index, step=epoch)
            summary.scalar("epoch/seconds", seconds, step=epoch)
            if train_seconds > 0:
                summary.scalar("epoch/steps_per_second", steps / train_seconds, step=epoch)
                if samples is not None:
                    summary.scalar(
                        "epoch/images_per_second",
                        samples / train_seconds,
                        step=epoch,
                    )
            summary.scalar("model/trainable_params", trainable_params, step=epoch)
            for group, rate in rates.items():
                summary.scalar(f"learning_rate/{group}", rate, step=epoch)

    def write_phase(self, phase, duration):
        """Writes the per-phase series and summary of a finished `PhaseRecord`."""
        retrace = phase.retrace_seconds()
        images_per_second = phase.images_per_second()
        step = phase.index
        with self.writer(PHASES_RUN).as_default():
            summary = _summary()
            summary.scalar("phase/duration_seconds", duration, step=step)
            if retrace is not None:
                summary.scalar("phase/retrace_seconds", retrace, step=step)
            summary.scalar("phase/epochs", phase.epochs, step=step)
            summary.scalar("phase/steps", phase.steps, step=step)
            if images_per_second is not None:
                summary.scalar("phase/images_per_second", images_per_second, step=step)
            summary.text(
                "phase/summary",
                phase_markdown(phase, duration, retrace, images_per_second),
                step=step,
            )
        self.writer(PHASES_RUN).flush()


def check_hparams(hparams):
    """`hparams` as a dict of name to bool, int, float or str, or None.

    Example:

    >>> check_hparams({"unfreeze_blocks": np.int64(4), "backbone": "resnet50"})
    {'unfreeze_blocks': 4, 'backbone': 'resnet50'}

    Args:
        hparams: None, a dict, or a `keras_tuner.HyperParameters` (its
            `values`).

    Raises:
        ConfigurationError: `hparams` or one of its values has another type.
    """
    if hparams is None:
        return None
    if not isinstance(hparams, Mapping):
        # keras_tuner.HyperParameters keeps the current values in `.values`.
        values = getattr(hparams, "values", None)
        if not isinstance(values, Mapping):
            raise ConfigurationError(
                f"Unrecognized value for hparams: {hparams!r}. Expected a dict "
                "of hyperparameter name to value, a "
                "keras_tuner.HyperParameters, or None."
            )
        hparams = values
    result = {}
    for name, value in hparams.items():
        if isinstance(value, np.generic):
            value = value.item()
        if not isinstance(value, (bool, int, float, str)):
            raise ConfigurationError(
                f"Unrecognized value for hparams[{name!r}]: {value!r}. HParams "
                "values must be bool, int, float or str; leave out the ones "
                "that are not."
            )
        result[str(name)] = value
    return result


def phase_markdown(phase, duration, retrace, images_per_second):
    """The `phase/summary` text of a `PhaseRecord`: a two-column Markdown table.

    Example:

    ```python
    phase_markdown(record, 12.5, 3.1, 410.0)
    # | phase 1 | |
    # |---|---|
    # | epochs | 1-2 (2) |
    # ...
    ```
    """
    info = phase.info
    if info is None:
        trainable = "the model as compiled (no `ProgressiveUnfreeze`)"
    elif info.trainable_units:
        trainable = f"{info.depth} {info.unit}: " + ", ".join(
            f"`{name}`" for name in info.trainable_units
        )
    else:
        trainable = f"head only (no backbone {info.unit})"
    # The schedule's rates and size at the start of the phase when published,
    # else what was measured at the end of its first epoch.
    rates = (info and info.learning_rates) or phase.learning_rates or {}
    rates = ", ".join(f"{group} {rate:.3g}" for group, rate in rates.items())
    params = (info and info.trainable_params) or phase.trainable_params
    last_epoch = phase.start_epoch + max(phase.epochs, 1) - 1
    rows = [
        ("epochs", f"{phase.start_epoch}-{last_epoch} ({phase.epochs})"),
        ("trainable", trainable),
        ("trainable parameters", f"{params or 0:,}"),
        ("learning rates", rates or "-"),
        ("steps", str(phase.steps)),
        ("duration", f"{duration:.2f} s"),
        ("re-trace", "-" if retrace is None else f"{retrace:.2f} s"),
        (
            "images/s",
            "-" if images_per_second is None else f"{images_per_second:.1f}",
        ),
    ]
    lines = [f"| phase {phase.index} | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in rows]
    return "\n".join(lines)


def _summary():
    import tensorflow as tf

    return tf.summary


def _is_scalar(value):
    # Not utils.checks.is_number: a NaN or infinite loss is written, as
    # keras.callbacks.TensorBoard writes it, and Keras may log a value as a
    # one-element array.
    return isinstance(value, numbers.Real) or (isinstance(value, np.ndarray) and value.size == 1)
