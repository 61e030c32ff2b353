"""The record of the current unfreeze phase, shared between callbacks.

`ProgressiveUnfreeze` publishes a `PhaseInfo` on the model it trains
(`model._keras_transfer_phase`) at the start of every epoch, before the first
batch of that epoch runs. Other callbacks (`PhaseTimer`, the tuner, the
experiment runner) read it with `current_phase(model)` instead of holding a
reference to the `ProgressiveUnfreeze` instance, so callback order and
KerasTuner's per-trial deep copies do not matter.
"""

import dataclasses

_ATTRIBUTE = "_keras_transfer_phase"


@dataclasses.dataclass(frozen=True)
class PhaseInfo:
    """What is trainable during one phase of a progressive unfreeze.

    Attributes:
        index: 0 for the first phase (head only, unless the schedule says
            otherwise), then one more per change of depth.
        start_epoch: the epoch at which this phase began.
        depth: how many units (counted from the top) are trainable.
        unit: `"blocks"` or `"layers"`.
        trainable_units: names of the trainable units, bottom to top.
        trainable_params: number of trainable parameters of the whole model.
        learning_rates: learning rate of each parameter group at the start of
            the phase, e.g. `{"head": 1e-3, "backbone/group_1": 1e-4}`.
        changed: True in the epoch where the phase began (the train function
            was rebuilt at the start of this epoch).
    """

    index: int
    start_epoch: int
    depth: int
    unit: str
    trainable_units: tuple = ()
    trainable_params: int = 0
    learning_rates: dict = dataclasses.field(default_factory=dict)
    changed: bool = False


def current_phase(model):
    """Returns the `PhaseInfo` published on `model`, or None."""
    return getattr(model, _ATTRIBUTE, None)


def publish_phase(model, phase):
    # object.__setattr__ keeps Keras' attribute tracking from treating the
    # record as a layer or variable container.
    object.__setattr__(model, _ATTRIBUTE, phase)
