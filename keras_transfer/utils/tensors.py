"""Reading Keras values: parameter counts, scalars, optimizer copies."""

import contextlib
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

    The configuration is `get_config()`'s plus what Keras keeps outside it:
    the weights excluded from weight decay (`exclude_from_weight_decay`, by
    variable and by name).

    Args:
        optimizer: an optimizer instance or identifier (`"adam"`).
        learning_rate: the copy's learning rate (a float or a schedule);
            None keeps the original's.
        name: the copy's name; None keeps the original's.

    Example:

    >>> adamw = keras.optimizers.AdamW(1e-3, weight_decay=0.01)
    >>> adamw.exclude_from_weight_decay(var_names=["bias"])
    >>> copy = copy_optimizer(adamw, learning_rate=1e-4)
    >>> float(copy.learning_rate), copy.weight_decay
    (9.999999747378752e-05, 0.01)
    """
    optimizer = keras.optimizers.get(optimizer)
    config = optimizer.get_config()
    if learning_rate is not None:
        config["learning_rate"] = learning_rate
    if name is not None:
        config["name"] = name
    copy = optimizer.__class__.from_config(config)
    _copy_weight_decay_exclusions(optimizer, copy)
    return copy


def _copy_weight_decay_exclusions(source, target):
    # Keras keeps `exclude_from_weight_decay(var_list, var_names)` in private
    # attributes only: the variables' keys and one pattern joining the names.
    pattern = getattr(source, "_exclude_from_weight_decay_pattern", None)
    excluded = getattr(source, "_exclude_from_weight_decay", None)
    if pattern is None and not excluded:
        return
    target.exclude_from_weight_decay(var_names=[pattern.pattern] if pattern else None)
    target._exclude_from_weight_decay = set(excluded or ())


@contextlib.contextmanager
def global_dtype_policy(policy):
    """Keras' global dtype policy set to `policy` for a block: layers built in it take it.

    Example:

    ```python
    with global_dtype_policy("mixed_float16"):
        layer = keras.layers.Dense(2)  # computes in float16
    ```
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
