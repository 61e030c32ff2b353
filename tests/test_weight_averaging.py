"""WeightAveraging: the model a fit ends with is the mean of its epochs' weights."""

import os

import keras
import numpy as np
import pytest

import keras_transfer
from keras_transfer.callbacks import WeightAveraging

EPOCHS = 6
START = 2


class _Counter(keras.layers.Layer):
    """Passes its input through; counts its training calls in an integer weight."""

    def build(self, input_shape):
        self.calls = self.add_weight(shape=(), dtype="int32", initializer="zeros", trainable=False)

    def call(self, x, training=False):
        if training:
            self.calls.assign_add(1)
        return x


class _Snapshots(keras.callbacks.Callback):
    """Records the weights at each epoch end; raises `_Killed` after epoch `kill_at`."""

    def __init__(self, kill_at=None):
        super().__init__()
        self.kill_at = kill_at
        self.weights = {}

    def on_epoch_end(self, epoch, logs=None):
        self.weights[epoch] = [np.array(w) for w in self.model.get_weights()]
        if epoch == self.kill_at:
            raise _Killed


class _Killed(Exception):
    pass


def _model():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((4,))
    frozen = keras.layers.Dense(5, activation="relu", name="frozen")
    frozen.trainable = False
    x = frozen(inputs)
    x = keras.layers.Dense(2, activation="softmax")(x)
    model = keras.Model(inputs, _Counter()(x))
    # Plain SGD has no state: a fit resumed from the weights alone trains as
    # the uninterrupted one does.
    model.compile(keras.optimizers.SGD(0.5), "sparse_categorical_crossentropy")
    return model


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    return x, (x[:, 0] > 0).astype("int32")


def _fit(model, callbacks, **kwargs):
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=EPOCHS, shuffle=False, verbose=0,
              callbacks=callbacks, **kwargs)  # fmt: skip


def _mean(snapshots, epochs):
    return [np.mean([snapshots[e][i] for e in epochs], axis=0) for i in range(len(snapshots[0]))]


def _assert_close(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def test_the_fit_ends_with_the_mean_of_the_epochs_from_start_epoch():
    model = _model()
    initial = model.get_weights()
    averaging, snapshots = WeightAveraging(start_epoch=START), _Snapshots()
    _fit(model, [snapshots, averaging])
    assert (averaging.count, averaging.first_epoch, averaging.last_epoch) == (4, 2, 5)

    final = model.get_weights()
    floats = [i for i, w in enumerate(initial) if w.dtype.kind == "f"]
    expected = _mean(snapshots.weights, range(START, EPOCHS))
    _assert_close([final[i] for i in floats], [expected[i] for i in floats])
    # The epochs before start_epoch are left out, and leaving them out matters.
    with_all = _mean(snapshots.weights, range(EPOCHS))
    assert not np.allclose(final[2], with_all[2], rtol=1e-3)
    # Frozen weights: exactly as they were.
    for weight in model.get_layer("frozen").weights:
        i = [id(w) for w in model.weights].index(id(weight))
        assert np.array_equal(final[i], initial[i])
    # The integer weight is not averaged: it keeps its last value.
    [counter] = [i for i, w in enumerate(initial) if w.dtype.kind == "i"]
    assert final[counter] == snapshots.weights[EPOCHS - 1][counter] == EPOCHS * 4


def test_without_an_epoch_to_average_the_model_is_left_alone():
    model = _model()
    snapshots = _Snapshots()
    with pytest.warns(UserWarning, match="no epoch was averaged .*start_epoch=9"):
        _fit(model, [snapshots, WeightAveraging(start_epoch=9)])
    _assert_close(model.get_weights(), snapshots.weights[EPOCHS - 1])


@pytest.mark.parametrize(
    "killed_after, backed_up",
    [
        (3, 3),  # the backup of the last epoch averaged was written
        (3, 2),  # killed between the average's write and the backup's
        (START, START - 1),  # the same, at the first epoch averaged
        (EPOCHS - 1, EPOCHS - 1),  # killed once every epoch was done
    ],
)
def test_a_resumed_fit_continues_the_average_of_the_backed_up_epoch(
    tmp_path, recwarn, killed_after, backed_up
):
    uninterrupted = _model()
    _fit(uninterrupted, [WeightAveraging(START, path=tmp_path / "reference.npz")])

    path = tmp_path / "average.npz"
    killed, snapshots = _model(), _Snapshots(kill_at=killed_after)
    with pytest.raises(_Killed):
        _fit(killed, [WeightAveraging(START, path=path), snapshots])
    # The backup restores the weights of the epoch it holds.
    resumed = _model()
    resumed.set_weights(snapshots.weights[backed_up])
    averaging = WeightAveraging(START, path=path)
    _fit(resumed, [averaging], initial_epoch=backed_up + 1)

    assert (averaging.count, averaging.first_epoch, averaging.last_epoch) == (4, 2, 5)
    _assert_close(resumed.get_weights(), uninterrupted.get_weights())
    assert not [w for w in recwarn if "WeightAveraging" in str(w.message)]


def test_a_file_that_holds_another_epoch_is_ignored_with_a_warning(tmp_path):
    path = tmp_path / "average.npz"
    killed = _model()
    with pytest.raises(_Killed):
        _fit(killed, [WeightAveraging(START, path=path), _Snapshots(kill_at=3)])
    # The file holds epochs 3 and 2; a fit resumed at epoch 5 needs epoch 4.
    resumed, snapshots = _model(), _Snapshots()
    averaging = WeightAveraging(START, path=path)
    with pytest.warns(UserWarning, match="average.npz holds the mean of epochs 2-3, 2-2"):
        _fit(resumed, [snapshots, averaging], initial_epoch=5)
    assert (averaging.count, averaging.first_epoch) == (1, 5)
    _assert_close(resumed.get_weights()[:4], snapshots.weights[5][:4])

    # Neither is a model with other weights continued.
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    other.compile("sgd", "mse")
    averaging = WeightAveraging(0, path=path)
    x, _ = _data()
    with pytest.warns(UserWarning, match="holds weights of another model"):
        other.fit(x, np.zeros((32, 3)), epochs=EPOCHS + 1, initial_epoch=EPOCHS, verbose=0,
                  callbacks=[averaging])  # fmt: skip
    assert averaging.count == 1


def test_cached_fit_with_progressive_unfreeze(tmp_path):
    """A TransferClassifier's cached fit, the last block unfrozen at epoch 1."""
    keras.utils.set_random_seed(0)
    model = keras_transfer.build_classifier(
        "mobilenet_v2_035", num_classes=2, input_shape=(32, 32, 3), weights=None
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    y = np.arange(8) % 2
    initial = model.get_weights()
    snapshots = _Snapshots()
    averaging = WeightAveraging(start_epoch=1, path=tmp_path / "average.npz")
    unfreeze = keras_transfer.ProgressiveUnfreeze(schedule={1: 1}, verbose=0)
    model.fit(x, y, epochs=3, batch_size=4, verbose=0,
              callbacks=[unfreeze, snapshots, averaging])  # fmt: skip
    assert keras_transfer.caching.feature_cache_info(model) is not None

    final = model.get_weights()
    expected = _mean(snapshots.weights, [1, 2])
    _assert_close(final, expected)
    changed = [i for i, w in enumerate(initial) if not np.array_equal(w, final[i])]
    assert changed  # the head and the last block trained
    for i, w in enumerate(initial):
        if all(np.array_equal(s[i], w) for s in snapshots.weights.values()):
            assert np.array_equal(final[i], w)  # frozen: exactly unchanged
    assert os.path.exists(tmp_path / "average.npz")
