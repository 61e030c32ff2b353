"""The search space of `TransferHyperModel`: its values, their ranges, how they are declared.

A user gives each searched value as a single value (fixed), a list (a
choice) or a dict (a numeric range); `check_search_space` (`check_range`
for each value) validates them once, in the constructor, and
`declare_value` registers each in a trial's `keras_tuner.HyperParameters`,
as `hp.Fixed`, `hp.Choice` or `hp.Int` / `hp.Float`.
"""

import keras_tuner

from keras_transfer.errors import ConfigurationError
from keras_transfer.utils.checks import is_number

# The searched values, in the order a results table shows them.
HYPERPARAMETERS = (
    "backbone",
    "unfreeze_blocks",
    "unfreeze_epoch",
    "head_units",
    "head_dropout",
    "head_learning_rate",
    "backbone_lr_ratio",
)

# Only meaningful when some blocks are unfrozen: declared in a conditional
# scope on `unfreeze_blocks`, so tuners do not spend trials varying them for
# head-only models.
FINE_TUNING_ONLY = ("unfreeze_epoch", "backbone_lr_ratio")

# The keys of a range given as a dict, as `HyperParameters.Int` / `Float`
# take them.
RANGE_KEYS = ("min_value", "max_value", "step", "sampling", "default")


def check_range(name, value, kind, low, high, note="", lower_open=False, upper_open=False):
    """Validates the range a user gave for one searched value.

    Example:

    >>> check_range("unfreeze_blocks", [0, 2, 4], int, 0, 8)
    ((0, 2, 4), <class 'int'>)

    Args:
        name: the value's name, as in `HYPERPARAMETERS`.
        value: a single value, a list or tuple of choices, or a dict with
            `min_value` and `max_value` (and optionally the other
            `RANGE_KEYS`).
        kind: `int` or `float`, what every value must be.
        low: the smallest value accepted, or None.
        high: the largest value accepted, or None.
        note: appended to the error, e.g. why `high` is what it is.
        lower_open: whether `low` itself is refused.
        upper_open: whether `high` itself is refused.

    Returns:
        `(value, kind)`, the value as `declare_value` takes it: a `kind`, a
        tuple of them, or a copy of the dict.

    Raises:
        ConfigurationError: naming the value, the bounds and what was
            received.
    """
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(RANGE_KEYS))
        if unknown or "min_value" not in value or "max_value" not in value:
            raise ConfigurationError(
                f"A range for {name} is a dict with min_value and max_value and "
                f"optionally {', '.join(RANGE_KEYS[2:])}, as keras_tuner's "
                f"HyperParameters.{kind.__name__.title()} takes them. Received: "
                f"{name}={value!r}"
            )
        checked = [value["min_value"], value["max_value"]]
        if value["min_value"] > value["max_value"]:
            raise ConfigurationError(
                f"{name}: min_value is larger than max_value. Received: {value!r}"
            )
    elif isinstance(value, (list, tuple)):
        if not value:
            raise ConfigurationError(
                f"{name} must not be an empty list: give a value or a list of choices."
            )
        checked = list(value)
    else:
        checked = [value]
    for v in checked:
        ok = is_number(v) and (kind is float or float(v).is_integer())
        if ok and low is not None:
            ok = v > low if lower_open else v >= low
        if ok and high is not None:
            ok = v < high if upper_open else v <= high
        if not ok:
            lower = f"{'>' if lower_open else '>='} {low}"
            bound = f"{'an integer' if kind is int else 'a number'} {lower}" + (
                f" and {'<' if upper_open else '<='} {high}" if high is not None else ""
            )
            raise ConfigurationError(
                f"Every value of {name} must be {bound}{' ' + note if note else ''}. "
                f"Received: {name}={value!r}"
            )
    if isinstance(value, dict):
        value = dict(value)
    elif isinstance(value, (list, tuple)):
        value = tuple(kind(v) for v in value)
    else:
        value = kind(value)
    return value, kind


def declare_value(hp, name, value, kind):
    """Declares `name` in `hp` once, as fixed, a choice or a range.

    Example:

    >>> hp = keras_tuner.HyperParameters()
    >>> declare_value(hp, "head_units", (0, 128), int)
    0

    Args:
        hp: the trial's `keras_tuner.HyperParameters`.
        name: the value's name.
        value: as `check_range` returns it: a single value (`hp.Fixed`), a
            tuple (`hp.Choice`) or a dict (`hp.Int` / `hp.Float`).
        kind: `int`, `float` or `str`.

    Returns:
        The trial's value, or None when `name` is inactive in this trial.
    """
    if any(p.name == name for p in hp.space):
        # Declared before: by this trial's first call, or by the user's
        # `hyperparameters=` object, which wins over the constructor.
        return hp.get(name) if hp.is_active(name) else None
    if isinstance(value, dict):
        declare = hp.Int if kind is int else hp.Float
        return declare(name, **value)
    if isinstance(value, tuple):
        return hp.Choice(name, list(value))
    return hp.Fixed(name, value)


def possible_values(hp, name):
    """The integer values the hyperparameter `name` of `hp` can take.

    Example:

    >>> hp = keras_tuner.HyperParameters()
    >>> hp.Choice("unfreeze_blocks", [0, 2, 4])
    0
    >>> possible_values(hp, "unfreeze_blocks")
    [0, 2, 4]

    Returns:
        A list; empty when `name` is not declared. For an `Int` with a step,
        every integer of its range (a superset, harmless in a condition).

    Raises:
        ConfigurationError: `name` is declared as something else than an
            `Int`, a `Choice` or a `Fixed` integer.
    """
    for param in hp.space:
        if param.name != name:
            continue
        if isinstance(param, keras_tuner.engine.hyperparameters.Fixed):
            return [param.value]
        if isinstance(param, keras_tuner.engine.hyperparameters.Choice):
            return list(param.values)
        if isinstance(param, keras_tuner.engine.hyperparameters.Int):
            return list(range(int(param.min_value), int(param.max_value) + 1))
        raise ConfigurationError(
            f"The hyperparameter {name!r} must be an Int, a Choice or a Fixed "
            f"integer. Received: {param!r}"
        )
    return []


def check_search_space(specs, **ranges):
    """Checks the ranges of the numeric values; the result `declare_value` takes.

    Example:

    >>> from keras_transfer import get_backbone
    >>> space = check_search_space(
    ...     [get_backbone("mobilenet_v2_035")],
    ...     unfreeze_blocks=(0, 2), unfreeze_epoch=1, head_units=0,
    ...     head_dropout=0.2, head_learning_rate=1e-3, backbone_lr_ratio=0.1)
    >>> space["unfreeze_blocks"]
    ((0, 2), <class 'int'>)

    Args:
        specs: the `BackboneSpec`s searched; `unfreeze_blocks` must fit the
            one with the fewest blocks.
        **ranges: the range of every name in `HYPERPARAMETERS` but
            `backbone` (a value, a list of choices or a dict, see
            `check_range`).

    Returns:
        A dict from each name to `(value, kind)`.
    """
    min_blocks = min(len(spec.blocks) for spec in specs)
    smallest = min(specs, key=lambda spec: len(spec.blocks)).name
    return {
        "unfreeze_blocks": check_range(
            "unfreeze_blocks",
            ranges["unfreeze_blocks"],
            int,
            0,
            min_blocks,
            f"(backbone {smallest!r} has {min_blocks} blocks)",
        ),
        "unfreeze_epoch": check_range("unfreeze_epoch", ranges["unfreeze_epoch"], int, 0, None),
        "head_units": check_range("head_units", ranges["head_units"], int, 0, None),
        "head_dropout": check_range(
            "head_dropout", ranges["head_dropout"], float, 0.0, 1.0, upper_open=True
        ),
        "head_learning_rate": check_range(
            "head_learning_rate",
            ranges["head_learning_rate"],
            float,
            0.0,
            None,
            lower_open=True,
        ),
        "backbone_lr_ratio": check_range(
            "backbone_lr_ratio",
            ranges["backbone_lr_ratio"],
            float,
            0.0,
            1.0,
            lower_open=True,
        ),
    }
