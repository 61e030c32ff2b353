"""ProgressiveUnfreeze: unfreeze the top of a backbone during one `model.fit`.

On Keras 3, setting `layer.trainable` in a callback changes nothing for the
rest of `fit` (the traced train function keeps its variable list), and
rebuilding the train function then fails in the optimizer with
`ValueError: Unknown variable`. This callback makes the change take effect:

1. before training it swaps the compiled optimizer for an
   `UnfreezeOptimizer` built for every variable the schedule will train (the
   compiled optimizer keeps the head and its state; each group of backbone
   weights gets a fresh copy with its own step count and a lower, warmed-up
   learning rate);
2. at the first epoch of each phase it sets `trainable` on the backbone's
   units and rebuilds the train function, so the next step traces the new
   variable list.

BatchNormalization layers stay frozen (inference mode, frozen statistics)
unless `train_bn=True`, also when they sit inline in the user's model.
"""

import math

import keras
import numpy as np
from keras.src.utils import io_utils

from keras_transfer.callbacks import _phase
from keras_transfer.errors import ConfigurationError
from keras_transfer.optimizers import BackboneLearningRate
from keras_transfer.optimizers import UnfreezeOptimizer

_UNITS = ("blocks", "layers")


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
            if not _is_int(value) or value < minimum:
                raise ConfigurationError(
                    f"GradualSchedule: `{arg}` must be an integer >= "
                    f"{minimum}. Received: {arg}={value!r}"
                )
        if max_depth is not None and (not _is_int(max_depth) or max_depth < 1):
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


class ProgressiveUnfreeze(keras.callbacks.Callback):
    """Trains the head first, then unfreezes the top of the backbone, in one `fit`.

    A schedule `{epoch: depth}` says that from `epoch` on, the last `depth`
    units of the backbone are trainable (0 = head only). The change takes
    effect inside the running `fit` call: the train function is rebuilt and
    the new weights train with their own optimizer state.

    What is counted (`unit`):
    - `"blocks"`: the architecture's blocks as the backbone registry lists
      them (`keras_transfer.get_backbone(name).blocks`), e.g. MobileNetV2's
      `stem`, `block_1` ... `block_16`, `Conv_1`. Works for backbones made by
      `build_classifier` and for `keras.applications` models of a registered
      architecture passed directly.
    - `"layers"`: the backbone's layers that own weights (convolutions,
      depthwise convolutions, dense and BatchNormalization layers), in
      topological order; layers without weights (activations, padding,
      add) are not counted. BatchNormalization layers count but stay frozen
      unless `train_bn=True`.

    Learning rates: the head keeps the compiled optimizer, its learning rate
    and its state (moments, iteration count, schedule position). Backbone
    weights unfrozen at the same epoch form a group with a fresh copy of the
    compiled optimizer (zero moments, its own step count, so Adam's bias
    correction starts afresh) whose learning rate is the head's current rate
    times `lr_ratio`, divided by `lr_decay` for each unit below the top
    (ULMFiT's 2.6; fastai's `slice(lo, hi)` spread), warmed up linearly over
    `warmup_steps` steps after each unfreeze. `ReduceLROnPlateau` and
    learning-rate schedules on the head move the groups with it.

    Each epoch adds to `logs` (so `History`, `CSVLogger` and `TensorBoard`
    placed after this callback record them): `unfreeze_phase`,
    `trainable_params` and `backbone_lr` (the rate of the top backbone
    group, 0 while the backbone is frozen).

    Resuming: phases follow the epoch number, so `fit(initial_epoch=k)` with
    a fresh callback, and `keras.callbacks.BackupAndRestore` after a crash,
    continue in the right phase. The optimizer is swapped in `set_model`,
    before any callback's `on_train_begin`, so checkpoints written during a
    run (which hold every group's state) restore into it.

    Example:

    ```python
    import keras, keras_transfer
    model = keras_transfer.build_classifier(
        "mobilenet_v2_035", num_classes=2, input_shape=(64, 64, 3),
        weights=None)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    x = keras.random.uniform((16, 64, 64, 3), 0, 255)
    y = keras.random.randint((16,), 0, 2)
    # Head only for 2 epochs, then the last 3 blocks.
    unfreeze = keras_transfer.ProgressiveUnfreeze(schedule={2: 3})
    model.fit(x, y, epochs=4, callbacks=[unfreeze], verbose=0)
    ```

    The classic script, with the backbone's layers inline in the model:

    ```python
    base_model = keras.applications.MobileNetV2(
        input_shape=(96, 96, 3), include_top=False, weights=None)
    base_model.trainable = False
    x = keras.layers.GlobalAveragePooling2D()(base_model.output)
    outputs = keras.layers.Dense(2, activation="softmax")(x)
    model = keras.Model(base_model.input, outputs)
    model.compile("adam", "sparse_categorical_crossentropy")
    unfreeze = keras_transfer.ProgressiveUnfreeze(
        base_model, {1: 20}, unit="layers")
    ```

    Args:
        backbone: the backbone to unfreeze: the nested backbone sub-model,
            a `keras.applications` model whose layers sit inline in the
            model, the name of a layer of the model, or None (default) to
            find the backbone of a `build_classifier` model. A name or None
            keeps the callback free of model references, as KerasTuner's
            per-trial copies want.
        schedule: `{epoch: depth}` dict or a `GradualSchedule`. Epochs are
            0-based, depths count units from the top and must not decrease.
        unit: `"blocks"` (default) or `"layers"`, see above.
        lr_ratio: float in (0, 1], backbone rate relative to the head's.
            Defaults to 0.1.
        lr_decay: float >= 1, further division per unit below the top.
            Defaults to 1.0 (one rate for the whole backbone).
        warmup_steps: int, or `"auto"` (default) for a quarter of an epoch
            (at least 1 step; 25 steps when the epoch length is unknown).
        train_bn: bool, whether unfrozen BatchNormalization layers train
            (batch statistics, moving averages and scale/offset). Defaults
            to False, which keeps them in inference mode: on Keras 3 a
            `training=False` on the backbone's call does not survive a
            `fit` (keras-team/keras#20285), only a frozen layer does.
        verbose: 0 or 1; 1 prints one line per phase change.
    """

    def __init__(
        self,
        backbone=None,
        schedule=None,
        unit="blocks",
        lr_ratio=0.1,
        lr_decay=1.0,
        warmup_steps="auto",
        train_bn=False,
        verbose=1,
    ):
        super().__init__()
        if schedule is None:
            raise ConfigurationError(
                "ProgressiveUnfreeze needs a `schedule`: a dict {epoch: depth} "
                "such as {5: 3} (from epoch 5 the last 3 units train), or "
                "GradualSchedule(start_epoch=..., every=..., max_depth=...)."
            )
        if unit not in _UNITS:
            raise ConfigurationError(
                f"Unknown unit: {unit!r}. Expected 'blocks' (the "
                "architecture's blocks from the backbone registry) or "
                "'layers' (layers that hold weights)."
            )
        if not isinstance(schedule, (dict, GradualSchedule)):
            raise ConfigurationError(
                "`schedule` must be a dict {epoch: depth} or a "
                f"GradualSchedule. Received: {schedule!r}"
            )
        if isinstance(schedule, dict):
            _check_schedule_types(schedule)
        if not _is_number(lr_ratio) or not 0 < lr_ratio <= 1:
            raise ConfigurationError(
                "`lr_ratio` must be a number in (0, 1], the backbone's "
                f"learning rate relative to the head's. Received: {lr_ratio!r}"
            )
        if not _is_number(lr_decay) or lr_decay < 1:
            raise ConfigurationError(
                "`lr_decay` must be a number >= 1 (1 = one rate for the "
                f"whole backbone, 2.6 = ULMFiT). Received: {lr_decay!r}"
            )
        if warmup_steps != "auto" and (
            not _is_int(warmup_steps) or warmup_steps < 0
        ):
            raise ConfigurationError(
                "`warmup_steps` must be an integer >= 0 or 'auto'. "
                f"Received: {warmup_steps!r}"
            )
        self.backbone = backbone
        self.schedule = schedule
        self.unit = unit
        self.lr_ratio = float(lr_ratio)
        self.lr_decay = float(lr_decay)
        self.warmup_steps = warmup_steps
        self.train_bn = bool(train_bn)
        self.verbose = verbose
        self._reset()

    def _reset(self):
        self._attached_to = None
        self._units = None
        self._phases = None
        self._groups = None
        self._optimizer = None
        self._current_phase = None
        self._trainable_params = 0
        self._backbone_name = None

    def __deepcopy__(self, memo):
        # KerasTuner copies callbacks per trial: copy the configuration,
        # never the model state a previous trial attached.
        # A backbone given as a layer is shared, not copied: a copy would not
        # be part of the trial's model.
        return ProgressiveUnfreeze(
            backbone=self.backbone,
            schedule=self.schedule,
            unit=self.unit,
            lr_ratio=self.lr_ratio,
            lr_decay=self.lr_decay,
            warmup_steps=self.warmup_steps,
            train_bn=self.train_bn,
            verbose=self.verbose,
        )

    # ------------------------------------------------------------------ setup

    def set_model(self, model):
        super().set_model(model)
        # Swapping the optimizer here, not in on_train_begin, puts it in place
        # before BackupAndRestore's on_train_begin loads a checkpoint into it,
        # whatever the order of the callbacks.
        if self._attached_to is not model:
            self._attach(model)

    @property
    def phases(self):
        """The resolved phases, `[(start_epoch, depth), ...]` (after set_model)."""
        return list(self._phases) if self._phases is not None else None

    @property
    def units(self):
        """Names of the backbone's units, bottom to top (after set_model)."""
        return [name for name, _ in self._units] if self._units else None

    def _attach(self, model):
        self._reset()
        if getattr(model, "optimizer", None) is None:
            raise ConfigurationError(
                "ProgressiveUnfreeze needs a compiled model: call "
                "`model.compile(optimizer=..., loss=...)` before `fit`."
            )
        backbone = self._resolve_backbone(model)
        self._units = _resolve_units(backbone, self.unit)
        self._phases = self._resolve_phases(len(self._units))
        self._backbone = backbone
        self._backbone_name = backbone.name
        self._groups = self._plan_groups()
        self._install_optimizer(model)
        self._attached_to = model

    def _resolve_backbone(self, model):
        backbone = self.backbone
        if backbone is None:
            from keras_transfer.models import find_backbone

            backbone, _ = find_backbone(model)
        elif isinstance(backbone, str):
            try:
                backbone = model.get_layer(backbone)
            except ValueError:
                raise ConfigurationError(
                    f"The model has no layer named {backbone!r} to use as "
                    "the backbone. Pass the backbone layer itself, or one of "
                    f"the model's layer names: {[l.name for l in model.layers]}"
                ) from None
        if not isinstance(backbone, keras.layers.Layer):
            raise ConfigurationError(
                "`backbone` must be a Keras layer or model, a layer name, or "
                f"None. Received: {backbone!r}"
            )
        model_layers = {id(l) for l in model._flatten_layers(include_self=False)}
        if id(backbone) not in model_layers:
            weighted = _weighted_layers(backbone)
            if not weighted or any(id(l) not in model_layers for l in weighted):
                raise ConfigurationError(
                    f"The backbone {backbone.name!r} is not part of the model "
                    f"{model.name!r} being trained: neither the backbone nor "
                    "its layers appear in it. Pass the backbone the model was "
                    "built from (the `base_model` whose output or call built "
                    "the model)."
                )
        return backbone

    def _resolve_phases(self, num_units):
        schedule = self.schedule
        if isinstance(schedule, GradualSchedule):
            schedule = schedule.resolve(num_units)
        for epoch, depth in sorted(schedule.items()):
            if depth > num_units:
                raise ConfigurationError(
                    f"The schedule asks for depth {depth} at epoch {epoch}, "
                    f"but the backbone {self._backbone_label()} has only "
                    f"{num_units} {self.unit} (unit={self.unit!r}). Use a "
                    f"depth of at most {num_units}"
                    + (
                        ", or unit='layers' to count layers with weights."
                        if self.unit == "blocks"
                        else "."
                    )
                )
        phases = []
        if 0 not in schedule:
            phases.append((0, 0))
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

    def _backbone_label(self):
        return repr(self._backbone_name) if self._backbone_name else "backbone"

    def _plan_groups(self):
        """One optimizer group per (phase, learning-rate multiplier)."""
        groups = []
        num_units = len(self._units)
        previous_depth = 0
        for phase_index, (_, depth) in enumerate(self._phases):
            by_multiplier = {}
            for distance in range(previous_depth, depth):
                unit_name, layers = self._units[num_units - 1 - distance]
                multiplier = self.lr_ratio / (self.lr_decay**distance)
                key = round(multiplier, 12)
                entry = by_multiplier.setdefault(
                    key, {"multiplier": multiplier, "units": [], "vars": []}
                )
                entry["units"].append(unit_name)
                entry["vars"].extend(self._unit_variables(layers))
            for entry in by_multiplier.values():
                if not entry["vars"]:
                    continue
                units = list(reversed(entry["units"]))  # bottom to top
                label = units[0] if len(units) == 1 else f"{units[0]}-{units[-1]}"
                entry["name"] = f"phase{phase_index}/{label}"
                entry["units"] = units
                entry["phase"] = phase_index
                groups.append(entry)
            previous_depth = depth
        return groups

    def _unit_variables(self, layers):
        variables, seen = [], set()
        for layer in layers:
            if not self._trains(layer):
                continue
            # `_trainable_variables` lists the variables created trainable;
            # `variable.trainable` is False while the layer is frozen.
            for variable in layer._trainable_variables:
                if id(variable) not in seen:
                    seen.add(id(variable))
                    variables.append(variable)
        return variables

    def _trains(self, layer):
        return self.train_bn or not isinstance(
            layer, keras.layers.BatchNormalization
        )

    def _install_optimizer(self, model):
        compiled = model.optimizer
        loss_scale = None
        if isinstance(compiled, keras.optimizers.LossScaleOptimizer):
            loss_scale, compiled = compiled, compiled.inner_optimizer
        head = compiled
        signature = [
            (g["name"], tuple(id(v) for v in g["vars"])) for g in self._groups
        ]
        if isinstance(head, UnfreezeOptimizer):
            if getattr(head, "_keras_transfer_signature", None) == signature:
                # Same schedule on the same model (a later fit, or a resume
                # with initial_epoch): keep every group's state.
                self._optimizer = head
                self._adopt_group_schedules(head)
                return
            head = head.head_optimizer
        strategy = model.distribute_strategy
        with strategy.scope():
            if not head.built:
                head.build(model.trainable_variables)
            head_variables = list(head._trainable_variables)
            group_specs = []
            for group in self._groups:
                schedule = BackboneLearningRate(
                    group["multiplier"],
                    warmup_steps=0,
                    head_learning_rate=_head_rate_reader(head),
                    base_learning_rate=_to_float(head.learning_rate),
                )
                group["schedule"] = schedule
                group_specs.append(
                    (group["name"], _fresh_copy(head, schedule, group["name"]), group["vars"])
                )
            optimizer = UnfreezeOptimizer(head, group_specs)
            all_variables, seen = [], set()
            for variable in head_variables + [
                v for g in self._groups for v in g["vars"]
            ]:
                if id(variable) not in seen:
                    seen.add(id(variable))
                    all_variables.append(variable)
            optimizer.build(all_variables)
        optimizer._keras_transfer_signature = signature
        if loss_scale is not None:
            loss_scale.inner_optimizer = optimizer
        else:
            model.optimizer = optimizer
        self._optimizer = optimizer

    def _adopt_group_schedules(self, optimizer):
        for group in self._groups:
            group["schedule"] = optimizer.group_optimizer(group["name"])._learning_rate

    # --------------------------------------------------------------- training

    def on_train_begin(self, logs=None):
        if self._attached_to is not self.model:
            self._attach(self.model)
        warmup = self.warmup_steps
        if warmup == "auto":
            steps = (self.params or {}).get("steps")
            warmup = max(1, steps // 4) if steps else 25
        for group in self._groups:
            # Read when the train function is traced, i.e. after this point.
            group["schedule"].warmup_steps = int(warmup)
        self._current_phase = None

    def phase_index(self, epoch):
        """Index of the phase that `epoch` (0-based) belongs to."""
        index = 0
        for i, (start, _) in enumerate(self._phases):
            if start <= epoch:
                index = i
        return index

    def on_epoch_begin(self, epoch, logs=None):
        index = self.phase_index(epoch)
        changed = index != self._current_phase
        if changed:
            self._apply_depth(self._phases[index][1])
            self.model.make_train_function(force=True)
            self._current_phase = index
            self._trainable_params = _count(self.model.trainable_variables)
        info = self._phase_info(index, changed)
        _phase.publish_phase(self.model, info)
        if changed and self.verbose:
            self._print_phase(epoch, info)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        logs["unfreeze_phase"] = float(self._current_phase)
        logs["trainable_params"] = float(self._trainable_params)
        logs["backbone_lr"] = self._backbone_rate()

    def on_train_end(self, logs=None):
        # A later fit without this callback must not report a stale phase.
        _phase.publish_phase(self.model, None)

    def _apply_depth(self, depth):
        num_units = len(self._units)
        # Setting a container's `trainable` propagates to every sublayer;
        # start from True so each unit's own flag decides.
        self._backbone.trainable = True
        for position, (_, layers) in enumerate(self._units):
            unfrozen = position >= num_units - depth
            for layer in layers:
                layer.trainable = unfrozen and self._trains(layer)
        if depth == 0:
            self._backbone.trainable = False
        model = self.model
        if hasattr(model, "_compiled_trainable_state"):
            # This change is handled (the train function is rebuilt and the
            # optimizer knows the variables): record it so Keras does not
            # ask for a recompile on the next fit.
            model._compiled_trainable_state = {
                layer: layer.trainable for layer in model._flatten_layers()
            }

    def _trainable_groups(self, index):
        return [g for g in self._groups if g["phase"] <= index]

    def _backbone_rate(self):
        groups = self._trainable_groups(self._current_phase or 0)
        if not groups:
            return 0.0
        top = max(groups, key=lambda g: g["multiplier"])
        optimizer = self._optimizer.group_optimizer(top["name"])
        return _to_float(optimizer.learning_rate)

    def _phase_info(self, index, changed):
        start, depth = self._phases[index]
        head_rate = _to_float(self._optimizer.head_optimizer.learning_rate)
        rates = {"head": head_rate}
        for group in self._trainable_groups(index):
            rates[group["name"]] = head_rate * group["multiplier"]
        units = tuple(name for name, _ in self._units[len(self._units) - depth :])
        return _phase.PhaseInfo(
            index=index,
            start_epoch=start,
            depth=depth,
            unit=self.unit,
            trainable_units=units,
            trainable_params=self._trainable_params,
            learning_rates=rates,
            changed=changed,
        )

    def _print_phase(self, epoch, info):
        if info.depth == 0:
            what = "backbone frozen, head only"
        else:
            units = info.trainable_units
            span = units[0] if len(units) == 1 else f"{units[0]} ... {units[-1]}"
            rates = [r for k, r in info.learning_rates.items() if k != "head"]
            what = (
                f"last {info.depth} {self.unit} trainable ({span}), backbone "
                f"lr {max(rates):.3g}" + (
                    f" to {min(rates):.3g}" if min(rates) != max(rates) else ""
                )
            )
        io_utils.print_msg(
            f"\nProgressiveUnfreeze: epoch {epoch + 1}: phase {info.index}, "
            f"{what}, {info.trainable_params:,} trainable parameters."
        )


def _check_schedule_types(schedule):
    if not schedule:
        raise ConfigurationError(
            "The schedule is empty. Give at least one {epoch: depth} entry, "
            "e.g. {5: 3}."
        )
    for epoch, depth in schedule.items():
        if not _is_int(epoch) or epoch < 0:
            raise ConfigurationError(
                f"Schedule epochs must be integers >= 0 (0-based, as in "
                f"`fit`). Received epoch {epoch!r} in {schedule!r}"
            )
        if not _is_int(depth) or depth < 0:
            raise ConfigurationError(
                f"Schedule depths must be integers >= 0 (how many units from "
                f"the top train; 0 = head only). Received depth {depth!r} at "
                f"epoch {epoch!r}"
            )


def _resolve_units(backbone, unit):
    if unit == "layers":
        return [(layer.name, [layer]) for layer in _weighted_layers(backbone)]
    from keras_transfer import backbones

    spec = backbones.find_spec_for_model(backbone)
    if spec is None:
        raise ConfigurationError(
            f"unit='blocks' needs a backbone of a registered architecture, "
            f"and {backbone.name!r} is not one "
            f"(registered: {', '.join(backbones.list_backbones())}). Use "
            "unit='layers' to count layers with weights, or describe its "
            "blocks with keras_transfer.register_backbone(...)."
        )
    return [(name, list(layers)) for name, layers in spec.block_layers(backbone)]


def _weighted_layers(container):
    layers = container._flatten_layers(include_self=False, recursive=True)
    return [
        layer
        for layer in layers
        if layer.weights and not getattr(layer, "_layers", None)
    ]


def _head_rate_reader(head):
    def read():
        return head.learning_rate

    return read


def _fresh_copy(optimizer, learning_rate, group_name):
    config = optimizer.get_config()
    config["learning_rate"] = learning_rate
    config["name"] = f"{optimizer.name}_{group_name.replace('/', '_')}"
    return optimizer.__class__.from_config(config)


def _count(variables):
    return int(sum(np.prod(v.shape) for v in variables))


def _to_float(value):
    return float(keras.ops.convert_to_numpy(value))


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value):
    return (
        isinstance(value, (int, float, np.integer, np.floating))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )
