"""`find_learning_rate`: a learning-rate range test on the head, through the model's own `fit`.

The test (Smith, "Cyclical Learning Rates for Training Neural Networks",
2017; the "LR finder" of fastai) trains for about a hundred steps while the
learning rate grows exponentially from `min_lr` to `max_lr`, records the
loss of every step, and stops when the loss diverges; `finding.suggest`
reads a rate off the curve.

It is cheap on a `TransferClassifier`: its `fit` computes the frozen
backbone's features once (`keras_transfer.caching`), so the hundred steps
train the head alone on cached features. The test runs on a copy of the
optimizer and the model's variables are restored afterwards: the model
leaves it exactly as it came (weights, optimizer and its state).
"""

import contextlib
import math
import os
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_transfer.errors import ConfigurationError
from keras_transfer.learning_rate.loss_curve import RULES
from keras_transfer.learning_rate.loss_curve import LearningRateFinding
from keras_transfer.learning_rate.loss_curve import Smoother
from keras_transfer.learning_rate.loss_curve import describe
from keras_transfer.learning_rate.loss_curve import smooth
from keras_transfer.learning_rate.loss_curve import suggest
from keras_transfer.utils.checks import check_int
from keras_transfer.utils.checks import is_number
from keras_transfer.utils.internals import print_msg
from keras_transfer.utils.tensors import copy_optimizer

# Smoothed losses recorded before the divergence check starts: the first
# averages rest on a handful of batches.
_WARMUP = 5

# The test stops when the smoothed loss exceeds this many times its lowest.
_DIVERGENCE = 4.0


def find_learning_rate(
    model,
    x,
    y=None,
    *,
    min_lr=1e-6,
    max_lr=1.0,
    steps=100,
    batch_size=None,
    class_weight=None,
    rule="valley",
    plot=None,
    verbose=1,
):
    """Runs a learning-rate range test on `model` and suggests a learning rate.

    Trains the compiled `model` (with a copy of its optimizer) for `steps`
    batches while the learning rate grows exponentially from `min_lr` to
    `max_lr`, through the model's own `fit`: a `TransferClassifier` computes
    its frozen features once and the steps train the head alone. The test
    stops early when the smoothed loss becomes 4 times its lowest. The
    model's variables and optimizer are restored afterwards, so the model
    trains as if the test had never run.

    Run it on a freshly built model, before training: it finds the rate of
    what trains now (the head, while the backbone is frozen).

    Example:

    ```python
    train_ds, val_ds, class_names = keras_transfer.load_image_folder(
        "flower_photos", image_size=160)
    model = keras_transfer.build_classifier(
        "mobilenet_v2_050", len(class_names), input_shape=(160, 160, 3))
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    finding = keras_transfer.find_learning_rate(model, train_ds, plot="lr.png")
    model.optimizer.learning_rate = finding.suggestion
    model.fit(train_ds, validation_data=val_ds, epochs=5)
    ```

    Args:
        model: a compiled Keras model, usually a `TransferClassifier`.
        x: the training data, as for `fit`: a finite `tf.data.Dataset` of
            `(images, labels)` batches, or an array of images.
        y: the labels when `x` is an array; None for a dataset.
        min_lr: the start of the range of learning rates,
            `0 < min_lr < max_lr`. Defaults to 1e-6.
        max_lr: the end of the range. Defaults to 1.
        steps: training steps (batches) of the test, at least 10; the data
            is repeated when it has fewer batches. Defaults to 100.
        batch_size: for arrays, as in `fit`; None means 32.
        class_weight: as in `fit`; pass the one training will use.
        rule: the rule `suggestion` follows: `"valley"` (default), the
            middle of the longest descent of the loss; `"min_loss"`, the
            rate of the lowest loss divided by 10; `"steepest"`, where the
            loss falls fastest. See `suggest`.
        plot: None, or the path of a PNG to save the loss curve to.
        verbose: 0 for silence, 1 (default) for one line with the result.

    Returns:
        A `LearningRateFinding`.

    Raises:
        ConfigurationError: the model is not compiled, an argument is out of
            range, or the test recorded too few steps to suggest a rate.
    """
    _check_arguments(model, min_lr, max_lr, rule)
    steps = check_int(steps, "steps", minimum=10)
    recorder = _RangeTest(min_lr, max_lr, steps)
    with _restoring(model, _range_test_optimizer(model.optimizer, min_lr)):
        model.fit(
            x,
            y,
            batch_size=batch_size,
            epochs=steps,  # At least one batch each; the recorder stops it.
            verbose=0,
            callbacks=[recorder],
            class_weight=class_weight,
            # A dataset shuffles itself; Keras warns when asked to.
            shuffle=not isinstance(x, tf.data.Dataset),
        )
    finding = _finding(recorder, rule)
    if plot is not None:
        finding.save_plot(os.fspath(plot))
    if verbose:
        print_msg(describe(finding))
    return finding


def _check_arguments(model, min_lr, max_lr, rule):
    if getattr(model, "optimizer", None) is None:
        raise ConfigurationError(
            f"find_learning_rate needs a compiled model: call "
            f"{getattr(model, 'name', 'model')}.compile(optimizer, loss) first."
        )
    for name, value in (("min_lr", min_lr), ("max_lr", max_lr)):
        if not is_number(value) or not 0 < value < math.inf:
            raise ConfigurationError(f"{name} must be a number > 0. Received: {name}={value!r}")
    if min_lr >= max_lr:
        raise ConfigurationError(
            f"min_lr must be below max_lr. Received: min_lr={min_lr!r}, max_lr={max_lr!r}"
        )
    if rule not in RULES:
        raise ConfigurationError(f"Unrecognized value for rule: {rule!r}. Expected one of {RULES}.")


@contextlib.contextmanager
def _restoring(model, optimizer):
    """Trains with `optimizer` inside; puts back everything `fit` changes on exit.

    That is: the values of the model's variables (weights, seed generators,
    metric states), its optimizer, its traced functions and `history`.
    """
    saved = [(v, keras.ops.convert_to_numpy(v.value)) for v in model.variables]
    original, history = model.optimizer, getattr(model, "history", None)
    model.optimizer = optimizer
    # A train step traced before would apply the original optimizer.
    model.train_function = None
    try:
        yield
    finally:
        model.optimizer = original
        model.train_function = None
        model.stop_training = False
        model.history = history
        for variable, value in saved:
            variable.assign(value)


def _range_test_optimizer(optimizer, learning_rate):
    """A fresh copy of `optimizer` whose learning rate is a settable float."""
    # ProgressiveUnfreeze's per-group optimizer trains the head with this one.
    optimizer = getattr(optimizer, "head_optimizer", optimizer)
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        # Its config has no learning rate of its own: copy the inner one.
        return keras.optimizers.LossScaleOptimizer(
            copy_optimizer(optimizer.inner_optimizer, learning_rate=learning_rate),
            initial_scale=optimizer.initial_scale,
            dynamic_growth_steps=optimizer.dynamic_growth_steps,
        )
    return copy_optimizer(optimizer, learning_rate=learning_rate)


class _RangeTest(keras.callbacks.Callback):
    """Sets each step's learning rate and records each step's loss.

    Keras reports the mean loss of the epoch so far, weighted by batch size;
    a step's own loss is the difference of two running sums. The last batch
    of an epoch may be smaller, so its loss is not recorded.
    """

    def __init__(self, min_lr, max_lr, steps):
        super().__init__()
        self.rates = np.geomspace(min_lr, max_lr, steps)
        self.step = 0
        self.recorded = []  # (learning rate, loss)
        self.diverged = False
        self._smoothed = Smoother()
        self._best = math.inf

    def on_epoch_begin(self, epoch, logs=None):
        self._seen = 0
        self._mean = 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate = float(self.rates[self.step])

    def on_train_batch_end(self, batch, logs=None):
        seen, mean = batch + 1, float((logs or {}).get("loss", math.nan))
        loss = (seen * mean - self._seen * self._mean) / (seen - self._seen)
        rate = float(self.rates[self.step])
        self._seen, self._mean = seen, mean
        self.step += 1
        last_of_epoch = self.params.get("steps") == seen and seen > 1
        if not last_of_epoch:
            self._record(rate, loss)
        if self.step >= len(self.rates) or self.diverged:
            self.model.stop_training = True

    def _record(self, rate, loss):
        if not math.isfinite(loss):
            self.diverged = True
            return
        self.recorded.append((rate, loss))
        smoothed = self._smoothed.add(loss)
        self._best = min(self._best, smoothed)
        if len(self.recorded) > _WARMUP and smoothed > _DIVERGENCE * self._best:
            self.diverged = True


def _finding(recorder, rule):
    if len(recorder.recorded) < _WARMUP + 3:
        raise ConfigurationError(
            f"The learning-rate range test recorded {len(recorder.recorded)} "
            "steps, too few to suggest a rate (the loss diverged at once, or "
            "the data has too few batches): lower min_lr, or use more data."
        )
    rates, losses = (np.array(v) for v in zip(*recorder.recorded))
    smoothed = smooth(losses)
    if int(np.argmin(smoothed)) <= max(2, len(rates) // 10):
        warnings.warn(
            f"The loss of the learning-rate range test was lowest at its start "
            f"({rates[int(np.argmin(smoothed))]:.2g}): the suggestion is "
            f"unreliable. Lower min_lr (now {rates[0]:.2g}).",
            stacklevel=3,
        )
    suggestions = suggest(rates, smoothed)
    return LearningRateFinding(
        learning_rates=tuple(float(r) for r in rates),
        losses=tuple(float(v) for v in losses),
        smoothed_losses=tuple(float(v) for v in smoothed),
        suggestions=suggestions,
        rule=rule,
        suggestion=suggestions[rule],
        diverged=recorder.diverged,
    )
