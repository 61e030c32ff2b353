"""Per-group optimizers for progressive unfreezing.

Keras 3 optimizers are built once, for a fixed list of variables: a variable
that becomes trainable later raises `ValueError: Unknown variable` from
`apply`, and reusing one optimizer for weights unfrozen late would hand them a
stale Adam bias correction (a first step up to about 3x the learning rate).

`UnfreezeOptimizer` is a `keras.optimizers.MultiOptimizer` that is built up
front for every variable a schedule will ever train:

- the head group is the optimizer the user compiled with, untouched: its
  moments, iteration count and learning-rate schedule carry across phases;
- each backbone group is a fresh copy of that optimizer with its own
  iteration count, so its state starts at zero when its weights are unfrozen,
  and a `BackboneLearningRate` that follows the head's learning rate times a
  multiplier, with a linear warm-up over its first steps;
- `apply` accepts any subset of those variables (the ones trainable in the
  current phase); a group's state only moves on steps where it trains.

On JAX the train step passes the optimizer the values of the variables
trainable now, not every one it was built for: `stateless_apply` maps them to
the variables named by `set_active_variables`, which `ProgressiveUnfreeze`
calls at each phase. PyTorch's train step calls `apply` with the
variables trainable now, as TensorFlow's does.

Because the variable list never changes, the optimizer's variables have the
same structure in every phase, so `model.save_weights`, `ModelCheckpoint` and
`BackupAndRestore` checkpoints restore into any phase.

The compiled optimizer's options keep the meaning they have with one
optimizer over the weights that train:

- `global_clipnorm` clips the gradients of all groups together (in `apply`,
  before they are split); `clipnorm` and `clipvalue` act per variable and
  `loss_scale_factor` on every gradient alike, the same in any group;
- `weight_decay` (AdamW) scales with each group's learning rate, as in
  Keras and PyTorch; `exclude_from_weight_decay` is carried to every group;
- `use_ema`: the head's average runs on; a group's starts at its unfreeze,
  as a freshly compiled optimizer's would; `fit` writes them into the weights;
- refused, because each group counts its own steps:
  `gradient_accumulation_steps` and `ema_overwrite_frequency`.
"""

import keras
from keras import ops

from keras_transfer.errors import ConfigurationError


@keras.saving.register_keras_serializable(package="keras_transfer")
class BackboneLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """A backbone group's learning rate: the head's, scaled, with warm-up.

    `lr(step) = head_lr * multiplier * min(1, (step + 1) / warmup_steps)`,
    where `step` is the group's own iteration count (0 at the first step after
    its weights are unfrozen) and `head_lr` is the head optimizer's current
    learning rate, read at every step, so `ReduceLROnPlateau` or a schedule on
    the head moves the backbone groups with it.

    Args:
        multiplier: float, ratio of this group's rate to the head's.
        warmup_steps: int, steps of linear warm-up (0 or 1: none).
        head_learning_rate: callable with no arguments returning the head's
            current learning rate. Not serialized: when deserialized
            without it, `base_learning_rate` is used as the head's rate.
        base_learning_rate: float, fallback head rate (see above).

    Example:

    >>> head = keras.optimizers.Adam(1e-3)
    >>> schedule = BackboneLearningRate(0.1, 4, lambda: head.learning_rate)
    >>> round(float(schedule(0)), 7)
    2.5e-05
    """

    def __init__(
        self,
        multiplier,
        warmup_steps=0,
        head_learning_rate=None,
        base_learning_rate=1e-3,
    ):
        self.multiplier = float(multiplier)
        self.warmup_steps = int(warmup_steps)
        self.base_learning_rate = float(base_learning_rate)
        self._head_learning_rate = head_learning_rate

    def __call__(self, step):
        if self._head_learning_rate is None:
            head_lr = ops.convert_to_tensor(self.base_learning_rate, "float32")
        else:
            head_lr = ops.cast(self._head_learning_rate(), "float32")
        rate = head_lr * self.multiplier
        if self.warmup_steps > 1:
            progress = (ops.cast(step, "float32") + 1.0) / self.warmup_steps
            rate = rate * ops.minimum(1.0, progress)
        return rate

    def get_config(self):
        return {
            "multiplier": self.multiplier,
            "warmup_steps": self.warmup_steps,
            "base_learning_rate": self.base_learning_rate,
        }


class _VariableGroups:
    """Maps a variable to its group's optimizer (the head's by default).

    Shaped as `MultiOptimizer` expects of an optimizer map: callable on a
    variable, with `values()` and `default_optimizer`.
    """

    def __init__(self, head_optimizer, groups):
        self.default_optimizer = head_optimizer
        self._groups = list(groups)
        self._by_variable = {}
        for optimizer, variables in self._groups:
            for variable in variables:
                self._by_variable[id(variable)] = optimizer

    def values(self):
        return [self.default_optimizer] + [opt for opt, _ in self._groups]

    def __call__(self, variable):
        return self._by_variable.get(id(variable), self.default_optimizer)


class UnfreezeOptimizer(keras.optimizers.MultiOptimizer):
    """A head optimizer plus one fresh optimizer per group of backbone weights.

    Usually created by `ProgressiveUnfreeze`, not by hand. Built on every
    variable the schedule will ever train; `apply` takes any subset of them.

    `learning_rate` reads and sets the head optimizer's learning rate, so
    callbacks written for a plain optimizer (`ReduceLROnPlateau`,
    `LearningRateScheduler`) keep working; backbone groups follow through
    their `BackboneLearningRate`. Unlike a plain `MultiOptimizer` it has no
    `optimizers` attribute (those callbacks would set each group's rate on
    its own); `group_optimizers` maps group names to optimizers.

    The head optimizer's `global_clipnorm` clips the gradients of all groups
    together, as one optimizer would; `gradient_accumulation_steps` and
    `ema_overwrite_frequency` raise a `ConfigurationError` when there are
    backbone groups (see the module's docstring for every option).

    Args:
        head_optimizer: the optimizer the model was compiled with (not a
            `LossScaleOptimizer`: wrap the `UnfreezeOptimizer` instead).
        groups: list of `(name, optimizer, variables)`, one per backbone
            group; each optimizer should be fresh (never applied).
        name: optional name.

    Example:

    >>> head = keras.optimizers.Adam(1e-3)
    >>> w_head = keras.Variable([1.0])
    >>> w_backbone = keras.Variable([1.0])
    >>> group = keras.optimizers.Adam(
    ...     BackboneLearningRate(0.1, 0, lambda: head.learning_rate))
    >>> opt = UnfreezeOptimizer(head, [("backbone", group, [w_backbone])])
    >>> opt.build([w_head, w_backbone])
    >>> opt.apply([keras.ops.ones((1,))], [w_head])  # backbone still frozen
    >>> float(w_backbone[0])
    1.0
    """

    def __init__(self, head_optimizer, groups, name=None):
        if groups:
            for optimizer in [head_optimizer] + [group[1] for group in groups]:
                _check_per_group_options(optimizer)
        group_names = ["head"] + [group[0] for group in groups]
        optimizer_map = _VariableGroups(
            head_optimizer, [(opt, variables) for _, opt, variables in groups]
        )
        loss_scale_factor = head_optimizer.loss_scale_factor
        super().__init__(
            optimizer_map,
            loss_scale_factor=loss_scale_factor,
            name=name or "unfreeze_optimizer",
        )
        self.group_names = group_names

    @property
    def head_optimizer(self):
        return self._optimizer_map.default_optimizer

    def group_optimizer(self, name):
        """Returns the optimizer of group `name` (`"head"` or a group name)."""
        return self._inner_optimizers[self.group_names.index(name)]

    @property
    def group_optimizers(self):
        """`{group name: optimizer}`, the head's first."""
        return dict(zip(self.group_names, self._inner_optimizers))

    @property
    def optimizers(self):
        # Keras' ReduceLROnPlateau and LearningRateScheduler set the rate of
        # each of a MultiOptimizer's `optimizers`, which fails on the groups'
        # schedules and would break their ratio to the head. Without this
        # attribute they set `learning_rate`, i.e. the head's, and the groups
        # follow it. Use `group_optimizers` instead.
        raise AttributeError(
            "UnfreezeOptimizer has one learning rate, the head's "
            "(`learning_rate`); the backbone groups follow it. Use "
            "`group_optimizers` to reach the optimizer of each group."
        )

    @property
    def learning_rate(self):
        return self.head_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        # Optimizer.__init__ assigns a learning rate before the map exists.
        if hasattr(self, "_optimizer_map"):
            self.head_optimizer.learning_rate = value

    def _get_current_learning_rate(self):
        return self.head_optimizer._get_current_learning_rate()

    def apply(self, grads, trainable_variables=None):
        grads = list(grads)
        if trainable_variables is None:
            if not self.built or len(grads) != len(self._trainable_variables):
                # Keras' own errors: build first, one gradient per variable.
                return super().apply(grads)
            trainable_variables = self._trainable_variables
        trainable_variables = list(trainable_variables)
        if not grads:
            return
        if not self.built:
            self.build(trainable_variables)
            self.built = True
        self._check_variables_are_known(trainable_variables)
        grads = self._clip_by_global_norm(grads)

        per_optimizer = [[] for _ in self._inner_optimizers]
        for grad, variable in zip(grads, trainable_variables):
            index = self._var_to_optimizer_idx[self._var_key(variable)]
            per_optimizer[index].append((grad, variable))
        for optimizer, pairs in zip(self._inner_optimizers, per_optimizer):
            if pairs:
                sub_grads, sub_variables = zip(*pairs)
                optimizer.apply(list(sub_grads), list(sub_variables))
        self._iterations.assign_add(1)

    def set_active_variables(self, variables):
        """Names the variables that train now, in the model's order.

        `stateless_apply` (the JAX train step) receives the values of
        `model.trainable_variables` only, a subset of what this optimizer
        was built for that changes with each phase: call this with them
        whenever they change (`ProgressiveUnfreeze` does, at each phase).
        """
        variables = tuple(variables)
        self._check_variables_are_known(variables)
        # Past Keras' tracker, which would add them to the optimizer's variables.
        object.__setattr__(self, "_active_variables", variables)

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        # Keras' version maps the values to every variable the optimizer was
        # built for; JAX's train step passes those of the trainable ones only.
        # The model's order, not the built one (head first), even when
        # every variable trains.
        active = getattr(self, "_active_variables", None)
        if active is None and len(trainable_variables) == len(self._trainable_variables):
            active = self._trainable_variables
        if active is None or len(active) != len(trainable_variables):
            raise ConfigurationError(
                f"UnfreezeOptimizer received {len(trainable_variables)} trainable "
                "variables, not the ones set by `set_active_variables` "
                f"({'none' if active is None else len(active)}): call it with "
                "`model.trainable_variables` after changing `trainable`."
            )
        if len(optimizer_variables) != len(self.variables):
            return super().stateless_apply(optimizer_variables, grads, trainable_variables)
        mapping = list(zip(active, trainable_variables))
        mapping += list(zip(self.variables, optimizer_variables))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            self.apply(grads, active)
        return (
            [scope.get_current_value(v) for v in active],
            [scope.get_current_value(v) for v in self.variables],
        )

    def _clip_by_global_norm(self, grads):
        # Clipped per group, the head's and each group's gradients would each
        # reach the norm. Clipped here, every share is within the norm, so the
        # clip that the head and its copies apply again changes nothing.
        clip = self.head_optimizer.global_clipnorm
        present = [g for g in grads if g is not None]
        if not clip or clip <= 0 or not present:
            return grads
        norm = ops.sqrt(
            ops.sum(ops.stack([ops.sum(ops.square(ops.cast(g, "float32"))) for g in present]))
        )
        if self.loss_scale_factor is not None:
            # The groups unscale the gradients after this: clip on their scale.
            norm = norm / self.loss_scale_factor
        # Keras' formula: 1 below the norm, NaN for a non-finite norm.
        factor = clip * ops.minimum(1.0 / norm, 1.0 / clip) + (norm - norm)
        return [g if g is None else g * ops.cast(factor, g.dtype) for g in grads]

    def finalize_variable_values(self, var_list):
        # MultiOptimizer hands each group its variables in `var_list`'s order,
        # but a group's moving averages follow the order it was built in (its
        # units top first): a shape error, or averages written into the wrong
        # weights. A group that has not trained yet has only zeros to write.
        keys = {self._var_key(variable) for variable in var_list}
        for optimizer in self._inner_optimizers:
            if not optimizer.use_ema or int(ops.convert_to_numpy(optimizer.iterations)) == 0:
                continue
            # Keras keeps the built order only in this attribute.
            built = optimizer._trainable_variables
            if any(self._var_key(variable) in keys for variable in built):
                optimizer.finalize_variable_values(built)

    def get_config(self):
        # The groups hold live variable references; an UnfreezeOptimizer is
        # rebuilt by ProgressiveUnfreeze, never deserialized on its own.
        return {
            "name": self.name,
            "loss_scale_factor": self.loss_scale_factor,
            "group_names": list(self.group_names),
        }


def _check_per_group_options(optimizer):
    # Each group counts its own steps from its unfreeze: options that act
    # every N steps would act out of step with the head's.
    steps = optimizer.gradient_accumulation_steps
    if steps:
        raise ConfigurationError(
            f"ProgressiveUnfreeze does not support gradient_accumulation_steps="
            f"{steps} (optimizer {optimizer.name!r}): each group of backbone "
            "weights would count its own steps and update out of step with the "
            "head. Compile without it and use a larger batch size instead."
        )
    frequency = optimizer.ema_overwrite_frequency if optimizer.use_ema else None
    if frequency:
        raise ConfigurationError(
            f"ProgressiveUnfreeze does not support ema_overwrite_frequency="
            f"{frequency} (optimizer {optimizer.name!r}): each group of backbone "
            "weights would count its own steps and take its moving average at "
            "other steps than the head. Use ema_overwrite_frequency=None: `fit` "
            "writes the moving averages into the weights at its end."
        )
