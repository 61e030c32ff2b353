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

Backends: TensorFlow (with `tf.distribute` strategies), JAX (one device;
its train step gets the optimizer the new trainable variables at each phase,
`UnfreezeOptimizer.set_active_variables`) and PyTorch (one device; eager,
or `jit_compile=True`, which compiles the step again at each phase).
"""

import keras

from keras_transfer import defaults
from keras_transfer.errors import ConfigurationError
from keras_transfer.utils.internals import print_msg
from keras_transfer.unfreeze import phase as unfreeze_phase
from keras_transfer.unfreeze.groups import install_unfreeze_optimizer
from keras_transfer.unfreeze.groups import plan_groups
from keras_transfer.unfreeze.plan import UnfreezePlan
from keras_transfer.unfreeze.schedule import GradualSchedule  # noqa: F401  (public path)
from keras_transfer.unfreeze.schedule import check_schedule
from keras_transfer.unfreeze.units import check_unit
from keras_transfer.utils.checks import is_int
from keras_transfer.utils.checks import is_number
from keras_transfer.utils.tensors import count_params
from keras_transfer.utils.tensors import to_float


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
    - `"layers"`: exactly what `base_model.layers` lists, weightless layers
      (input, activations, padding, add) included, and a nested model among
      them as one unit, so `{epoch: N}` trains `base_model.layers[-N:]`:
      the port of `for layer in base_model.layers[:-N]: layer.trainable =
      False` is `{epoch: N}`, and of the tutorial's `fine_tune_at` is
      `{epoch: len(base_model.layers) - fine_tune_at}`. BatchNormalization
      layers among them stay frozen unless `train_bn=True`.
    - `"weighted_layers"`: the backbone's leaf layers that own weights
      (convolutions, depthwise convolutions, dense and BatchNormalization
      layers), in topological order, nested models walked into.

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
    # As `for layer in base_model.layers[:-20]: layer.trainable = False`:
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
        unit: `"blocks"` (default), `"layers"` or `"weighted_layers"`,
            see above.
        lr_ratio: float in (0, 1], backbone rate relative to the head's.
            Defaults to `keras_transfer.defaults.LR_RATIO` (0.1).
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
        lr_ratio=defaults.LR_RATIO,
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
        check_unit(unit)
        check_schedule(schedule)
        if not is_number(lr_ratio) or not 0 < lr_ratio <= 1:
            raise ConfigurationError(
                "`lr_ratio` must be a number in (0, 1], the backbone's "
                f"learning rate relative to the head's. Received: {lr_ratio!r}"
            )
        if not is_number(lr_decay) or lr_decay < 1:
            raise ConfigurationError(
                "`lr_decay` must be a number >= 1 (1 = one rate for the "
                f"whole backbone, 2.6 = ULMFiT). Received: {lr_decay!r}"
            )
        if warmup_steps != "auto" and (not is_int(warmup_steps) or warmup_steps < 0):
            raise ConfigurationError(
                f"`warmup_steps` must be an integer >= 0 or 'auto'. Received: {warmup_steps!r}"
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
        self._plan = None
        self._groups = None
        self._optimizer = None
        self._current_phase = None
        self._trainable_params = 0

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
        self.plan_for(model)

    def plan_for(self, model):
        """The `UnfreezePlan` this callback follows on `model`.

        Attaches to `model` first if needed (resolves the backbone and the
        schedule, and installs the per-group optimizer), as `set_model` does.
        The feature cache calls it before `fit` starts.
        """
        if self._plan is None or self._plan.model is not model:
            self._attach(model)
        return self._plan

    @property
    def plan(self):
        """The `UnfreezePlan` of the model this callback is attached to, or None."""
        return self._plan

    @property
    def phases(self):
        """The resolved phases, `[(start_epoch, depth), ...]` (after set_model)."""
        return list(self._plan.phases) if self._plan is not None else None

    @property
    def units(self):
        """Names of the backbone's units, bottom to top (after set_model)."""
        return self._plan.units if self._plan is not None else None

    def _attach(self, model):
        self._reset()
        if getattr(model, "optimizer", None) is None:
            raise ConfigurationError(
                "ProgressiveUnfreeze needs a compiled model: call "
                "`model.compile(optimizer=..., loss=...)` before `fit`."
            )
        plan = UnfreezePlan(
            model, self.backbone, self.schedule, unit=self.unit, train_bn=self.train_bn
        )
        self._groups = plan_groups(plan, self.lr_ratio, self.lr_decay)
        self._optimizer = install_unfreeze_optimizer(model, self._groups)
        self._plan = plan

    # --------------------------------------------------------------- training

    def on_train_begin(self, logs=None):
        self.plan_for(self.model)
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
        return self._plan.phase_index(epoch)

    def on_epoch_begin(self, epoch, logs=None):
        index = self._plan.phase_index(epoch)
        changed = index != self._current_phase
        if changed:
            self._plan.apply_depth(self._plan.phases[index][1])
            # JAX's train step hands the optimizer the new trainable list.
            self._optimizer.set_active_variables(self.model.trainable_variables)
            self.model.make_train_function(force=True)
            if keras.backend.backend() == "jax":
                # Under a keras.distribution, Keras' JAX trainer fixes the test
                # step's state shardings when it builds it: rebuild it too, or
                # the validation after an unfreeze fails on the new state.
                self.model.test_function = None
            self._current_phase = index
            self._trainable_params = count_params(self.model.trainable_variables)
        info = self._phase_info(index, changed)
        unfreeze_phase.publish_phase(self.model, info)
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
        unfreeze_phase.publish_phase(self.model, None)

    def _trainable_groups(self, index):
        return [g for g in self._groups if g["phase"] <= index]

    def _backbone_rate(self):
        groups = self._trainable_groups(self._current_phase or 0)
        if not groups:
            return 0.0
        top = max(groups, key=lambda g: g["multiplier"])
        return to_float(self._optimizer.group_optimizer(top["name"]).learning_rate)

    def _phase_info(self, index, changed):
        start, depth = self._plan.phases[index]
        head_rate = to_float(self._optimizer.head_optimizer.learning_rate)
        rates = {"head": head_rate}
        for group in self._trainable_groups(index):
            rates[group["name"]] = head_rate * group["multiplier"]
        return unfreeze_phase.PhaseInfo(
            index=index,
            start_epoch=start,
            depth=depth,
            unit=self.unit,
            trainable_units=self._plan.trainable_units(depth),
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
                f"lr {max(rates):.3g}"
                + (f" to {min(rates):.3g}" if min(rates) != max(rates) else "")
            )
        print_msg(
            f"\nProgressiveUnfreeze: epoch {epoch + 1}: phase {info.index}, "
            f"{what}, {info.trainable_params:,} trainable parameters."
        )
