"""Unfreeze schedules: `{epoch: depth}` dicts, `GradualSchedule`, and the phases they resolve to."""

from keras_transfer.errors import ConfigurationError
from keras_transfer.utils.checks import is_int


class GradualSchedule:
    """ULMFiT-style gradual unfreezing: one more unit every few epochs.

    From `start_epoch` on, `step` more units (counted from the top of the
    backbone) become trainable every `every` epochs, until `max_depth` units
    are trainable. Before `start_epoch` only the head trains.

    Args:
        start_epoch: int, first epoch at which backbone units train.
        every: int, epochs between two unfreeze steps. Defaults to 1.
        max_depth: int or None, most units trainable at once. None means
            the whole backbone.
        step: int, units unfrozen at each step. Defaults to 1.

    Example:

    >>> GradualSchedule(start_epoch=3, every=2, max_depth=3).resolve(10)
    {0: 0, 3: 1, 5: 2, 7: 3}
    """

    def __init__(self, start_epoch, every=1, max_depth=None, step=1):
        for arg, value, minimum in (
            ("start_epoch", start_epoch, 0),
            ("every", every, 1),
            ("step", step, 1),
        ):
            if not is_int(value) or value < minimum:
                raise ConfigurationError(
                    f"GradualSchedule: `{arg}` must be an integer >= "
                    f"{minimum}. Received: {arg}={value!r}"
                )
        if max_depth is not None and (not is_int(max_depth) or max_depth < 1):
            raise ConfigurationError(
                "GradualSchedule: `max_depth` must be a positive integer or "
                f"None (the whole backbone). Received: max_depth={max_depth!r}"
            )
        self.start_epoch = start_epoch
        self.every = every
        self.max_depth = max_depth
        self.step = step

    def resolve(self, num_units):
        """Returns the `{epoch: depth}` schedule for a backbone of `num_units`."""
        max_depth = num_units if self.max_depth is None else self.max_depth
        schedule = {0: 0}
        depth, epoch = 0, self.start_epoch
        while depth < max_depth:
            depth = min(max_depth, depth + self.step)
            schedule[epoch] = depth
            epoch += self.every
        return schedule

    def __repr__(self):
        return (
            f"GradualSchedule(start_epoch={self.start_epoch}, every="
            f"{self.every}, max_depth={self.max_depth}, step={self.step})"
        )


def fine_tune_schedule(head_epochs, depth, fine_tune_epochs=None, gradual=False):
    """The schedule of "train the head, then fine-tune the top `depth` units".

    The one recipe the command line, `compare` and the tuner share.

    Args:
        head_epochs: epochs of head-only training before the first unfreeze.
        depth: units trainable at the end (0: head only throughout).
        fine_tune_epochs: epochs after the head phase; needed with `gradual`.
        gradual: unfreeze one step at a time over `fine_tune_epochs`
            (a `GradualSchedule`) instead of all `depth` units at once.

    Returns:
        A `{epoch: depth}` dict or a `GradualSchedule`.

    Example:

    >>> fine_tune_schedule(5, 3)
    {5: 3}
    >>> fine_tune_schedule(5, 4, fine_tune_epochs=2, gradual=True)
    GradualSchedule(start_epoch=5, every=1, max_depth=4, step=2)
    """
    if not depth:
        return {0: 0}
    if gradual:
        if not fine_tune_epochs:
            raise ConfigurationError(
                "A gradual schedule needs fine_tune_epochs >= 1, the epochs over "
                f"which the {depth} units unfreeze."
            )
        return GradualSchedule(
            start_epoch=head_epochs,
            every=max(1, fine_tune_epochs // depth),
            max_depth=depth,
            step=-(-depth // fine_tune_epochs),
        )
    return {head_epochs: depth}


def check_schedule(schedule):
    """Raises `ConfigurationError` unless `schedule` is a usable schedule."""
    if not isinstance(schedule, (dict, GradualSchedule)):
        raise ConfigurationError(
            "`schedule` must be a dict {epoch: depth} or a "
            f"GradualSchedule. Received: {schedule!r}"
        )
    if isinstance(schedule, GradualSchedule):
        return
    if not schedule:
        raise ConfigurationError(
            "The schedule is empty. Give at least one {epoch: depth} entry, e.g. {5: 3}."
        )
    for epoch, depth in schedule.items():
        if not is_int(epoch) or epoch < 0:
            raise ConfigurationError(
                f"Schedule epochs must be integers >= 0 (0-based, as in "
                f"`fit`). Received epoch {epoch!r} in {schedule!r}"
            )
        if not is_int(depth) or depth < 0:
            raise ConfigurationError(
                f"Schedule depths must be integers >= 0 (how many units from "
                f"the top train; 0 = head only). Received depth {depth!r} at "
                f"epoch {epoch!r}"
            )


def resolve_phases(schedule, num_units, unit, backbone_name):
    """`[(start_epoch, depth), ...]`: the schedule's distinct phases, in order.

    The first phase starts at epoch 0 (head only when the schedule does not
    say otherwise); an entry that keeps the depth is no new phase.

    Raises:
        ConfigurationError: a depth past the backbone's `num_units`, or a
            depth that decreases.
    """
    if isinstance(schedule, GradualSchedule):
        schedule = schedule.resolve(num_units)
    for epoch, depth in sorted(schedule.items()):
        if depth > num_units:
            hint = (
                ", or unit='layers' to count what `base_model.layers` lists."
                if unit == "blocks"
                else "."
            )
            raise ConfigurationError(
                f"The schedule asks for depth {depth} at epoch {epoch}, but the "
                f"backbone {backbone_name!r} has only {num_units} {unit} "
                f"(unit={unit!r}). Use a depth of at most {num_units}{hint}"
            )
    phases = [] if 0 in schedule else [(0, 0)]
    for epoch, depth in sorted(schedule.items()):
        if phases and depth < phases[-1][1]:
            raise ConfigurationError(
                f"The schedule lowers the depth from {phases[-1][1]} to "
                f"{depth} at epoch {epoch}; depths must not decrease "
                "(unfrozen units stay trainable). Received: "
                f"{dict(sorted(schedule.items()))}"
            )
        if phases and depth == phases[-1][1]:
            continue
        phases.append((epoch, depth))
    return phases
