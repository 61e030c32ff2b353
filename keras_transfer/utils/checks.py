"""Argument checks: one definition of "an integer", "a number", "a size"."""

import math
import numbers

import numpy as np

from keras_transfer.errors import ConfigurationError


def is_int(value):
    """True for Python and NumPy integers, False for bools."""
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(
        value, (bool, np.bool_)
    )


def is_number(value):
    """True for finite real numbers (Python or NumPy), False for bools."""
    return (
        isinstance(value, (numbers.Real, np.number))
        and not isinstance(value, (bool, np.bool_))
        and math.isfinite(value)
    )


def check_int(value, name, minimum=0, optional=False, hint=""):
    """Returns `int(value)`, or raises naming the argument and the minimum.

    Args:
        value: the value received.
        name: the argument's name, as the user wrote it.
        minimum: the smallest value accepted.
        optional: whether None is accepted (and returned).
        hint: a sentence appended to the error, e.g. what 0 means.
    """
    if optional and value is None:
        return None
    if not is_int(value) or value < minimum:
        expected = f"an integer >= {minimum}" + (" or None" if optional else "")
        message = f"{name} must be {expected}. Received: {name}={value!r}"
        raise ConfigurationError(f"{message}. {hint}".rstrip() if hint else message)
    return int(value)


def check_image_size(image_size, name="image_size"):
    """`image_size` as a `(height, width)` pair of positive integers.

    Accepts an integer (a square) or a pair.
    """
    size = (image_size, image_size) if is_int(image_size) else image_size
    try:
        ok = len(size) == 2 and all(is_int(s) and s > 0 for s in size)
    except TypeError:
        ok = False
    if not ok:
        raise ConfigurationError(
            f"{name} must be a positive integer or a (height, width) pair of "
            "positive integers, e.g. 224 or (160, 192). "
            f"Received: {name}={image_size!r}"
        )
    return int(size[0]), int(size[1])


def plural(count, noun):
    """`count` and `noun`, in the plural unless `count` is 1: "1 epoch", "2 epochs".

    Example:

    >>> plural(1, "epoch"), plural(2, "image")
    ('1 epoch', '2 images')
    """
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
