"""Checks of `run_comparison`'s arguments, made before anything loads or trains.

Each check raises `ConfigurationError` naming the argument, the value
received and what would be accepted.
"""

import os

from keras_transfer import backbones as backbones_lib
from keras_transfer.errors import ConfigurationError
from keras_transfer.unfreeze import GradualSchedule
from keras_transfer.utils.checks import check_int
from keras_transfer.utils.checks import is_int
from keras_transfer.utils.checks import is_number


def check_backbones(names):
    """The `BackboneSpec`s of `names`: a list or a comma-separated string.

    Example:

    ```python
    check_backbones("mobilenet_v2_035,mobilenet_v2_050")  # two specs
    ```
    """
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = list(names or ())
    if not names:
        raise ConfigurationError(
            "backbones is empty. Name at least one registered backbone, e.g. "
            "['mobilenet_v2_050'] (see keras_transfer.list_backbones())."
        )
    specs = [backbones_lib.get_backbone(name) for name in names]
    seen = set()
    for spec in specs:
        if spec.name in seen:
            raise ConfigurationError(
                f"Backbone {spec.name!r} is listed twice in backbones={names!r}."
            )
        seen.add(spec.name)
    return specs


def check_limits(epochs, budget_minutes):
    """`(epochs, budget_seconds)`: at least one of them, each None or > 0.

    Example:

    ```python
    check_limits(None, 2.5)  # (None, 150.0)
    ```
    """
    epochs = check_int(epochs, "epochs", minimum=1, optional=True)
    budget_seconds = None
    if budget_minutes is not None:
        if not is_number(budget_minutes) or budget_minutes <= 0:
            raise ConfigurationError(
                "budget_minutes must be a number of minutes > 0, or None for no "
                f"time limit. Received: budget_minutes={budget_minutes!r}"
            )
        budget_seconds = float(budget_minutes) * 60.0
    if epochs is None and budget_seconds is None:
        raise ConfigurationError(
            "Give the runs an end: epochs, budget_minutes or both. "
            "Received: epochs=None, budget_minutes=None."
        )
    return epochs, budget_seconds


def check_image_size(image_size, specs):
    """The side of the square inputs: `image_size`, or the backbones' largest default.

    Example:

    ```python
    check_image_size(None, [get_backbone("mobilenet_v2_050")])  # 224
    ```
    """
    if image_size is None:
        return max(spec.default_input_size for spec in specs)
    if not is_int(image_size) or image_size < 1:
        raise ConfigurationError(
            "image_size must be an integer number of pixels (the side of the "
            f"square inputs), e.g. 160. Received: image_size={image_size!r}"
        )
    for spec in specs:
        spec.check_input_shape((image_size, image_size, 3))
    return int(image_size)


def check_training(validation_split, target_accuracy, learning_rate, schedule):
    """Checks the split, the target, the learning rate and the schedule.

    Example:

    ```python
    check_training(0.2, 0.8, 1e-3, None)  # passes
    ```
    """
    if not is_number(validation_split) or not 0 < validation_split < 1:
        raise ConfigurationError(
            "validation_split must be a number in (0, 1): the comparison is "
            f"made on validation accuracy. Received: validation_split={validation_split!r}"
        )
    if not is_number(target_accuracy) or not 0 < target_accuracy <= 1:
        raise ConfigurationError(
            "target_accuracy must be a fraction in (0, 1], e.g. 0.8 for 80 %. "
            f"Received: target_accuracy={target_accuracy!r}"
        )
    if not is_number(learning_rate) or learning_rate <= 0:
        raise ConfigurationError(
            f"learning_rate must be a number > 0. Received: learning_rate={learning_rate!r}"
        )
    if schedule is not None and not isinstance(schedule, (dict, GradualSchedule)):
        raise ConfigurationError(
            "schedule must be None (the default schedule), a dict {epoch: depth} "
            f"or a GradualSchedule. Received: schedule={schedule!r}"
        )


def prepare_output_dir(path):
    """Creates `path` if needed and checks it is writable; returns it absolute.

    Example:

    ```python
    prepare_output_dir("~/compare")  # "/home/me/compare"
    ```
    """
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".keras-transfer-probe-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise ConfigurationError(
            f"Cannot write to the output folder {path}: {e.strerror or e}. "
            "Choose a folder you can write to."
        ) from e
    return path
