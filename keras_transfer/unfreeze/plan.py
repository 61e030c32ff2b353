"""`UnfreezePlan`: which layers of a model train at which epoch.

The one answer that every part of keras-transfer reads: `ProgressiveUnfreeze`
applies it, the feature cache caches what it keeps frozen, `PhaseTimer` and
the command line label epochs with its phases. It is plain data about a
model, computed once, and the mechanics that apply it (`apply_depth`); the
policy (when to call them, at what learning rate) lives in the callback.
"""

import math

import keras

from keras_transfer.utils.internals import created_trainable_variables
from keras_transfer.utils.internals import flatten_layers
from keras_transfer.unfreeze.schedule import check_schedule
from keras_transfer.unfreeze.schedule import resolve_phases
from keras_transfer.unfreeze.units import resolve_backbone
from keras_transfer.unfreeze.units import resolve_units


class UnfreezePlan:
    """Which layers of `model` train at which epoch, for one schedule.

    Example:

    ```python
    model = keras_transfer.build_classifier(
        "mobilenet_v2_035", num_classes=2, input_shape=(64, 64, 3),
        weights=None)
    plan = UnfreezePlan(model, schedule={2: 3})
    plan.phases               # [(0, 0), (2, 3)]
    plan.depth_at(3)          # 3
    plan.trainable_units(3)   # ('block_15', 'block_16', 'Conv_1')
    ```

    Args:
        model: the model that will be trained.
        backbone: None (the registered backbone nested in the model), a
            layer name, or the backbone layer or model (nested or inline).
        schedule: `{epoch: depth}` dict or a `GradualSchedule`.
        unit: `"blocks"` (the registry's blocks), `"layers"` (what
            `backbone.layers` lists, weightless layers included: depth N
            trains `backbone.layers[-N:]`) or `"weighted_layers"` (the leaf
            layers that hold weights).
        train_bn: whether BatchNormalization layers of unfrozen units train.

    Attributes:
        model, backbone, unit, train_bn: as given (the backbone resolved).
        units: names of the backbone's units, bottom to top (for
            `"layers"`, the names of `backbone.layers`).
        phases: `[(start_epoch, depth), ...]`, distinct depths, ascending.
    """

    def __init__(self, model, backbone=None, schedule=None, unit="blocks", train_bn=False):
        check_schedule(schedule)
        self.model = model
        self.backbone = resolve_backbone(model, backbone)
        self.unit = unit
        self.train_bn = bool(train_bn)
        self.schedule = schedule
        self._units = resolve_units(self.backbone, unit)
        self.phases = resolve_phases(schedule, len(self._units), unit, self.backbone.name)
        self._backbone_layer_ids = frozenset(
            id(l) for l in flatten_layers(self.backbone, include_self=True)
        )

    # ------------------------------------------------------------- questions

    @property
    def units(self):
        return [name for name, _ in self._units]

    @property
    def num_units(self):
        return len(self._units)

    def phase_index(self, epoch):
        """Index into `phases` of the phase that `epoch` (0-based) belongs to."""
        index = 0
        for i, (start, _) in enumerate(self.phases):
            if start <= epoch:
                index = i
        return index

    def depth_at(self, epoch):
        """How many units, counted from the top, train during `epoch`."""
        return self.phases[self.phase_index(epoch)][1]

    def phase_end(self, index):
        """The first epoch after phase `index` (`math.inf` for the last)."""
        return self.phases[index + 1][0] if index + 1 < len(self.phases) else math.inf

    def depths_between(self, initial_epoch, epochs):
        """The depths of the phases that epochs `initial_epoch..epochs-1` visit."""
        return [
            depth
            for index, (start, depth) in enumerate(self.phases)
            if start < epochs and self.phase_end(index) > initial_epoch
        ]

    def trainable_units(self, depth):
        """Names of the units trainable at `depth`, bottom to top."""
        return tuple(self.units[self.num_units - depth :]) if depth else ()

    def frozen_units(self, depth):
        """Names of the units frozen at `depth`: the frozen prefix, bottom to top."""
        return tuple(self.units[: self.num_units - depth])

    def layer_trains(self, layer):
        """Whether an unfrozen unit's `layer` trains (BatchNorm only with train_bn)."""
        return self.train_bn or not isinstance(layer, keras.layers.BatchNormalization)

    def trainable_layers(self, depth):
        """The backbone's leaf layers whose weights train at `depth`."""
        layers = []
        for _, unit_layers in self._units[self.num_units - depth :] if depth else []:
            layers.extend(
                l for l in unit_layers if self.layer_trains(l) and created_trainable_variables(l)
            )
        return layers

    def is_backbone_layer(self, layer):
        return id(layer) in self._backbone_layer_ids

    def trains_at(self, depth):
        """A predicate `trains(layer)` for any layer of the model at `depth`.

        Backbone layers train as the plan says; the model's other layers
        (the head, or anything the user left trainable) as they are now.
        A container trains when one of its layers does.
        """
        scheduled = {id(l) for l in self.trainable_layers(depth)}

        def trains(layer):
            if not isinstance(layer, keras.layers.Layer):
                return False
            for inner in flatten_layers(layer, include_self=True):
                if id(inner) in self._backbone_layer_ids:
                    if id(inner) in scheduled:
                        return True
                elif inner.trainable_weights:
                    return True
            return False

        return trains

    def unit_variables(self, distance):
        """Trainable variables of the unit `distance` below the top (0 = top)."""
        _, layers = self._units[self.num_units - 1 - distance]
        variables, seen = [], set()
        for layer in layers:
            if not self.layer_trains(layer):
                continue
            # `_trainable_variables` lists the variables created trainable;
            # `variable.trainable` is False while the layer is frozen.
            for variable in created_trainable_variables(layer):
                if id(variable) not in seen:
                    seen.add(id(variable))
                    variables.append(variable)
        return variables

    # ------------------------------------------------------------- mechanics

    def apply_depth(self, depth):
        """Sets `trainable` so that exactly the top `depth` units train.

        Rebuild the train function afterwards (`make_train_function(force=True)`)
        for a running `fit` to see the change.
        """
        # Setting a container's `trainable` propagates to every sublayer;
        # start from True so each unit's own flag decides.
        self.backbone.trainable = True
        for position, (_, layers) in enumerate(self._units):
            unfrozen = position >= self.num_units - depth
            for layer in layers:
                layer.trainable = unfrozen and self.layer_trains(layer)
        if depth == 0:
            self.backbone.trainable = False
        if hasattr(self.model, "_compiled_trainable_state"):
            # The change is handled (the train function is rebuilt and the
            # optimizer knows the variables): record it so Keras does not
            # ask for a recompile on the next fit.
            self.model._compiled_trainable_state = {
                layer: layer.trainable for layer in flatten_layers(self.model)
            }

    def __repr__(self):
        return (
            f"UnfreezePlan(backbone={self.backbone.name!r}, unit={self.unit!r}, "
            f"units={self.num_units}, phases={self.phases})"
        )


def plan_from_callbacks(callbacks, model):
    """The `UnfreezePlan` that the callbacks of a `fit` will follow, or None.

    A callback takes part by having a `plan_for(model)` method that returns
    its `UnfreezePlan` for `model` (as `ProgressiveUnfreeze` does).

    Raises:
        ValueError: several callbacks each bring a plan.
    """
    if callbacks is None:
        return None
    if isinstance(callbacks, keras.callbacks.CallbackList):
        callbacks = callbacks.callbacks
    owners = [c for c in callbacks if callable(getattr(c, "plan_for", None))]
    if len(owners) > 1:
        raise ValueError("there are several ProgressiveUnfreeze callbacks.")
    return owners[0].plan_for(model) if owners else None
