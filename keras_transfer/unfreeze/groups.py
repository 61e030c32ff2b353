"""Which backbone variables each optimizer group trains, and putting the groups on a model.

`plan_groups` turns an `UnfreezePlan` into groups: one per phase and
learning-rate multiplier (the layer-wise decay gives deeper blocks smaller
rates), each with the variables it unfreezes. `install_unfreeze_optimizer`
builds an `UnfreezeOptimizer` (`unfreeze/optimizer.py`) for those groups in
place of the compiled optimizer, keeping the compiled one as the head's, and
keeps an existing one with its state when the groups are the same (a later
`fit`, a resume). `ProgressiveUnfreeze` calls both when training begins.
"""

import contextlib

import keras

from keras_transfer.unfreeze.optimizer import BackboneLearningRate
from keras_transfer.unfreeze.optimizer import UnfreezeOptimizer
from keras_transfer.utils.internals import record_built_variables
from keras_transfer.utils.tensors import copy_optimizer
from keras_transfer.utils.tensors import to_float


def plan_groups(plan, lr_ratio, lr_decay):
    """One optimizer group per (phase, learning-rate multiplier) of `plan`.

    Returns:
        A list of dicts with `name` (`"phase<i>/<units>"`), `phase`,
        `multiplier` (of the head's rate), `units` (bottom to top) and
        `vars`, most frozen phase first. Groups without variables are left out.
    """
    groups = []
    previous_depth = 0
    for phase_index, (_, depth) in enumerate(plan.phases):
        by_multiplier = {}
        for distance in range(previous_depth, depth):
            multiplier = lr_ratio / (lr_decay**distance)
            entry = by_multiplier.setdefault(
                round(multiplier, 12), {"multiplier": multiplier, "units": [], "vars": []}
            )
            entry["units"].append(plan.units[plan.num_units - 1 - distance])
            entry["vars"].extend(plan.unit_variables(distance))
        for entry in by_multiplier.values():
            if not entry["vars"]:
                continue
            units = list(reversed(entry["units"]))  # bottom to top
            label = units[0] if len(units) == 1 else f"{units[0]}-{units[-1]}"
            entry.update(name=f"phase{phase_index}/{label}", units=units, phase=phase_index)
            groups.append(entry)
        previous_depth = depth
    return groups


def install_unfreeze_optimizer(model, groups):
    """Puts an `UnfreezeOptimizer` for `groups` in place of the compiled one.

    The compiled optimizer stays the head's, with its state. When the model
    already has an `UnfreezeOptimizer` for the same groups (a later `fit`, a
    resume with `initial_epoch`), it is kept with every group's state.
    Under a `LossScaleOptimizer` the inner optimizer is swapped.

    Returns:
        The `UnfreezeOptimizer`; each group dict gets its `schedule`
        (`BackboneLearningRate`).
    """
    compiled = model.optimizer
    loss_scale = None
    if isinstance(compiled, keras.optimizers.LossScaleOptimizer):
        loss_scale, compiled = compiled, compiled.inner_optimizer
    head = compiled
    signature = [(g["name"], tuple(id(v) for v in g["vars"])) for g in groups]
    if isinstance(head, UnfreezeOptimizer):
        if getattr(head, "_keras_transfer_signature", None) == signature:
            for group in groups:
                group["schedule"] = head._keras_transfer_schedules[group["name"]]
            return head
        head = head.head_optimizer
    with _variable_scope(model):
        if not head.built:
            head.build(model.trainable_variables)
        group_specs = []
        for group in groups:
            group["schedule"] = BackboneLearningRate(
                group["multiplier"],
                warmup_steps=0,
                head_learning_rate=_rate_reader(head),
                base_learning_rate=to_float(head.learning_rate),
            )
            name = f"{head.name}_{group['name'].replace('/', '_')}"
            group_specs.append(
                (group["name"], copy_optimizer(head, group["schedule"], name), group["vars"])
            )
        optimizer = UnfreezeOptimizer(head, group_specs)
        all_variables, seen = [], set()
        for variable in list(head._trainable_variables) + [v for g in groups for v in g["vars"]]:
            if id(variable) not in seen:
                seen.add(id(variable))
                all_variables.append(variable)
        optimizer.build(all_variables)
    optimizer._keras_transfer_signature = signature
    # The groups' schedules, for a later fit that keeps this optimizer.
    optimizer._keras_transfer_schedules = {g["name"]: g["schedule"] for g in groups}
    if loss_scale is not None:
        loss_scale.inner_optimizer = optimizer
        if keras.backend.backend() == "jax":
            # Its JAX step unscales only the gradients of what it was built
            # for, and drops the others.
            if loss_scale.built:
                record_built_variables(loss_scale, all_variables)
            else:
                loss_scale.build(all_variables)
    else:
        model.optimizer = optimizer
    return optimizer


def _variable_scope(model):
    # TensorFlow creates optimizer variables under the model's strategy (one
    # copy per replica); JAX and PyTorch place them at creation.
    strategy = getattr(model, "distribute_strategy", None)
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def _rate_reader(optimizer):
    def read():
        return optimizer.learning_rate

    return read
