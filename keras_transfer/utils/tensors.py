"""Reading Keras values: parameter counts, scalars, optimizer copies."""

import math

import keras


def count_params(variables):
    """Number of scalars in `variables` (e.g. `model.trainable_weights`)."""
    return int(sum(math.prod(v.shape) for v in variables))


def to_float(value):
    """A Python float from a Keras variable, tensor or number."""
    return float(keras.ops.convert_to_numpy(value))


def copy_optimizer(optimizer, learning_rate=None, name=None):
    """A new, unbuilt optimizer of the same class and configuration.

    Args:
        optimizer: an optimizer instance or identifier (`"adam"`).
        learning_rate: the copy's learning rate (a float or a schedule);
            None keeps the original's.
        name: the copy's name; None keeps the original's.
    """
    optimizer = keras.optimizers.get(optimizer)
    config = optimizer.get_config()
    if learning_rate is not None:
        config["learning_rate"] = learning_rate
    if name is not None:
        config["name"] = name
    return optimizer.__class__.from_config(config)
