"""`TransferHyperModel`: a KerasTuner search space over how deep to fine-tune.

Which backbone, how many of its blocks to unfreeze, when to start, how wide
the head, and at which learning rates: one `keras_tuner.HyperModel` whose
trials train with `ProgressiveUnfreeze` inside a single `fit`, so any
KerasTuner tuner (`RandomSearch`, `BayesianOptimization`, `GridSearch`,
`Hyperband`) and KerasTuner's distributed mode search it.

```python
hypermodel = keras_transfer.TransferHyperModel(
    num_classes=5, backbones=("mobilenet_v2_050",), input_shape=(160, 160, 3))
tuner = keras_tuner.RandomSearch(
    hypermodel, objective="val_accuracy", max_trials=10)
tuner.search(train_ds, validation_data=val_ds, epochs=6)
print(keras_transfer.tuner.results_table(tuner))
```

Trials that use the same backbone at the same input shape share it: the
backbone is built and its weights loaded once per process, then reset to
those weights for every later trial (see `reuse_backbones`). Trials whose
frozen layers and data are the same also share their frozen-feature cache
(see `share_frozen_features`): the backbone runs over the images once per
freeze depth, not once per trial. For searches of many trials with models
of your own, `keras_transfer.search_in_subprocesses` runs a few trials per
fresh process.
"""

import dataclasses
import gc
import math
import numbers
import os
import warnings
import weakref

import keras
import keras_tuner
import numpy as np

from keras_transfer import backbones as backbones_lib
from keras_transfer import caching
from keras_transfer.unfreeze import phase as unfreeze_phase
from keras_transfer.callbacks.phase_timer import PhaseTimer
from keras_transfer.callbacks.progressive_unfreeze import ProgressiveUnfreeze
from keras_transfer.errors import ConfigurationError
from keras_transfer.models import build_classifier
from keras_transfer.models import find_backbone

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
_FINE_TUNING_ONLY = ("unfreeze_epoch", "backbone_lr_ratio")

# Epoch log written by every trial: the blocks actually trainable in that
# epoch. KerasTuner keeps the logs of a trial's best epoch, so a trial whose
# budget ended before `unfreeze_epoch` records 0 here, whatever its
# `unfreeze_blocks` says.
UNFROZEN_BLOCKS_LOG = "unfrozen_blocks"

_RANGE_KEYS = ("min_value", "max_value", "step", "sampling", "default")


class TransferHyperModel(keras_tuner.HyperModel):
    """A search space over the choices of transfer learning, freeze depth first.

    Each trial builds a classifier with `keras_transfer.build_classifier`
    (the backbone frozen, a new head) and trains it in one `fit` with a
    `ProgressiveUnfreeze` callback built from the trial's values: the head
    alone until `unfreeze_epoch`, then the last `unfreeze_blocks` blocks of
    the backbone too, at `backbone_lr_ratio` times the head's learning rate.

    Searched values (names as KerasTuner's results show them):

    - `backbone`: a registered backbone name, from `backbones`.
    - `unfreeze_blocks`: how many blocks, counted from the top of the
      backbone, are fine-tuned; 0 trains the head only. Blocks are the
      registry's (`keras_transfer.get_backbone(name).block_names`).
    - `unfreeze_epoch`: the 0-based epoch at which those blocks start
      training. Only active when `unfreeze_blocks` > 0.
    - `head_units`: width of the head's hidden ReLU layer; 0 for none.
    - `head_dropout`: dropout rate of the head.
    - `head_learning_rate`: learning rate of the head's optimizer.
    - `backbone_lr_ratio`: the backbone's learning rate relative to the
      head's (`ProgressiveUnfreeze(lr_ratio=...)`). Only active when
      `unfreeze_blocks` > 0.

    Each constructor argument of that name sets the value's range:

    - a single value fixes it: `unfreeze_epoch=2`;
    - a list or tuple is a choice: `unfreeze_blocks=(0, 2, 4, 8)`;
    - a dict is a numeric range with `keras_tuner.HyperParameters.Int` /
      `Float` arguments: `head_learning_rate={"min_value": 1e-4,
      "max_value": 1e-2, "sampling": "log"}`.

    The usual KerasTuner ways work too: a `keras_tuner.HyperParameters`
    passed to the tuner as `hyperparameters=` wins over the constructor
    (e.g. `hp.Fixed("unfreeze_blocks", 4)`), and with
    `tune_new_entries=False` everything not in it stays at its default (the
    first value of a choice).

    Training: `fit` passes the tuner's arguments to `model.fit` and adds
    `ProgressiveUnfreeze` in front of the callbacks, so every other callback
    (KerasTuner's checkpointing, `TensorBoard`, `EarlyStopping`) sees its
    logs, plus `unfrozen_blocks`, the number of blocks trainable in that
    epoch. With a `keras.callbacks.TensorBoard` among the search's callbacks
    it also adds a `PhaseTimer` that follows the trial's log directory.

    Epoch budgets: `unfreeze_epoch` counts from the start of training, also
    under `Hyperband`, which resumes a trial from its checkpoint with
    `initial_epoch` (the schedule continues where it was). A trial whose
    budget ends before `unfreeze_epoch` only trained the head: its
    `unfrozen_blocks` metric (the value at the trial's best epoch, as
    KerasTuner keeps it) is then 0, and `results_table` shows it as not
    fine-tuned. Outside `Hyperband`, `fit` warns when this happens.

    Example:

    ```python
    import keras, keras_tuner, numpy as np
    import keras_transfer

    x = np.random.uniform(0, 255, (16, 64, 64, 3)).astype("float32")
    y = np.random.randint(0, 2, 16)
    # Compare three freeze depths, everything else fixed.
    hypermodel = keras_transfer.TransferHyperModel(
        num_classes=2, backbones=("mobilenet_v2_035",), input_shape=(64, 64, 3),
        weights=None, unfreeze_blocks=(0, 2, 4), unfreeze_epoch=1,
        head_units=0, head_dropout=0.2, head_learning_rate=1e-3,
        backbone_lr_ratio=0.1)
    tuner = keras_tuner.GridSearch(
        hypermodel, objective="val_accuracy",
        directory="/tmp/tune_demo", overwrite=True)
    tuner.search(x, y, validation_split=0.25, epochs=3, verbose=0)
    print(keras_transfer.tuner.results_table(tuner))
    ```

    Args:
        num_classes: int, number of classes, at least 2.
        backbones: a registered backbone name or a list of them; the
            `backbone` choice. Defaults to `("mobilenet_v2_050",)`.
        input_shape: `(height, width, 3)`, or None for each backbone's
            default (e.g. `(224, 224, 3)`). The data must match it.
        weights: `"imagenet"` (default), None for random initialisation, or
            the path to a weights file (one backbone only).
        unfreeze_blocks: range of `unfreeze_blocks` (see above). Defaults to
            `(0, 2, 4, 8)`. Every value must fit every backbone.
        unfreeze_epoch: range of `unfreeze_epoch`, values >= 0. Defaults to
            `(1, 2, 3)`.
        head_units: range of `head_units`, values >= 0. Defaults to
            `(0, 128)`.
        head_dropout: range of `head_dropout`, values in [0, 1). Defaults to
            `(0.0, 0.2, 0.5)`.
        head_learning_rate: range of `head_learning_rate`, values > 0.
            Defaults to `{"min_value": 1e-4, "max_value": 1e-2, "sampling":
            "log"}`.
        backbone_lr_ratio: range of `backbone_lr_ratio`, values in (0, 1].
            Defaults to `(0.01, 0.1, 0.3)`.
        optimizer: name of a Keras optimizer, or an optimizer whose
            configuration is used; its learning rate is replaced by the
            trial's `head_learning_rate`. Defaults to `"adam"`.
        loss: the loss. Defaults to `"sparse_categorical_crossentropy"`
            (integer labels, as `keras_transfer.load_image_folder` gives).
        metrics: list of metrics. Defaults to `["accuracy"]`.
        reuse_backbones: bool. True (default) builds each backbone once per
            process and input shape and, for later trials, resets it to its
            initial weights instead of constructing it and loading its
            weights again. A backbone still used by a live model (e.g. one
            returned by `tuner.get_best_models()`) is never reused.
        share_frozen_features: True (default), False, or a
            `keras_transfer.caching.FeatureStore`. True gives all trials
            of this hypermodel one store (up to 2 GiB of features, in this
            process): a trial whose frozen layers and data are those of an
            earlier trial reuses its cached features instead of running the
            backbone over every image again; a trial that unfreezes other
            blocks computes its own once. Pass a `FeatureStore` to choose
            its size, False to compute every trial's cache. The store is
            the `feature_store` attribute (`.clear()` frees it).
        name: optional name of the hypermodel.
        tunable: bool, whether the values declared here are added to the
            search space. Defaults to True.
    """

    def __init__(
        self,
        num_classes,
        backbones=("mobilenet_v2_050",),
        input_shape=None,
        weights="imagenet",
        unfreeze_blocks=(0, 2, 4, 8),
        unfreeze_epoch=(1, 2, 3),
        head_units=(0, 128),
        head_dropout=(0.0, 0.2, 0.5),
        head_learning_rate=None,
        backbone_lr_ratio=(0.01, 0.1, 0.3),
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=("accuracy",),
        reuse_backbones=True,
        share_frozen_features=True,
        name=None,
        tunable=True,
    ):
        super().__init__(name=name, tunable=tunable)
        if (
            isinstance(num_classes, bool)
            or not isinstance(num_classes, numbers.Integral)
            or num_classes < 2
        ):
            raise ConfigurationError(
                "num_classes must be an integer >= 2. "
                f"Received: num_classes={num_classes!r}"
            )
        if isinstance(backbones, (str, backbones_lib.BackboneSpec)):
            backbones = (backbones,)
        if not isinstance(backbones, (list, tuple)) or not backbones:
            raise ConfigurationError(
                "backbones must be a registered backbone name or a non-empty "
                "list of them, e.g. ('mobilenet_v2_050', 'mobilenet_v2_035'). "
                f"Received: backbones={backbones!r}"
            )
        specs = [backbones_lib.get_backbone(b) for b in backbones]
        for spec in specs:
            # Trials name their backbone; the callbacks find it by that name.
            if backbones_lib.list_backbones().count(spec.name) == 0 or (
                backbones_lib.get_backbone(spec.name) is not spec
            ):
                raise ConfigurationError(
                    f"Backbone {spec.name!r} is not registered under its name. "
                    "Register it first with keras_transfer.register_backbone(spec), "
                    "then pass its name."
                )
        if head_learning_rate is None:
            head_learning_rate = {
                "min_value": 1e-4,
                "max_value": 1e-2,
                "sampling": "log",
            }
        self.num_classes = int(num_classes)
        self.backbones = tuple(spec.name for spec in specs)
        self.input_shape = None if input_shape is None else tuple(input_shape)
        for spec in specs:
            spec.check_input_shape(self.input_shape, require_rgb=weights is not None)
        if weights is not None and not isinstance(weights, (str, os.PathLike)):
            raise ConfigurationError(
                "weights must be 'imagenet', None or the path to a weights "
                f"file. Received: weights={weights!r}"
            )
        if weights not in (None, "imagenet") and len(specs) > 1:
            raise ConfigurationError(
                "A weights file fits one architecture, and backbones lists "
                f"{len(specs)}: {list(self.backbones)}. Pass a single backbone, "
                "or weights='imagenet'."
            )
        self.weights = weights
        min_blocks = min(len(spec.blocks) for spec in specs)
        smallest = min(specs, key=lambda spec: len(spec.blocks)).name
        self.search_space = {
            "unfreeze_blocks": _check_range(
                "unfreeze_blocks", unfreeze_blocks, int, 0, min_blocks,
                f"(backbone {smallest!r} has {min_blocks} blocks)",
            ),
            "unfreeze_epoch": _check_range(
                "unfreeze_epoch", unfreeze_epoch, int, 0, None
            ),
            "head_units": _check_range("head_units", head_units, int, 0, None),
            "head_dropout": _check_range(
                "head_dropout", head_dropout, float, 0.0, 1.0, upper_open=True
            ),
            "head_learning_rate": _check_range(
                "head_learning_rate", head_learning_rate, float, 0.0, None,
                lower_open=True,
            ),
            "backbone_lr_ratio": _check_range(
                "backbone_lr_ratio", backbone_lr_ratio, float, 0.0, 1.0,
                lower_open=True,
            ),
        }
        if not isinstance(optimizer, (str, keras.optimizers.Optimizer)):
            raise ConfigurationError(
                "optimizer must be the name of a Keras optimizer (e.g. 'adam') "
                f"or a keras.optimizers.Optimizer. Received: {optimizer!r}"
            )
        keras.optimizers.get(optimizer)  # Fails now on an unknown name.
        self.optimizer = optimizer
        self.loss = loss
        self.metrics = list(metrics) if metrics is not None else None
        self.reuse_backbones = bool(reuse_backbones)
        if isinstance(share_frozen_features, caching.FeatureStore):
            self.feature_store = share_frozen_features
        elif isinstance(share_frozen_features, bool):
            self.feature_store = caching.FeatureStore() if share_frozen_features else None
        else:
            raise ConfigurationError(
                "share_frozen_features must be True, False or a "
                "keras_transfer.caching.FeatureStore. Received: "
                f"share_frozen_features={share_frozen_features!r}"
            )

    # ---------------------------------------------------------------- search

    def declare(self, hp):
        """Declares the searched values in `hp` and returns the trial's values.

        `build` and `fit` call it; it returns the same values for the same
        trial. Values that are inactive (`unfreeze_epoch` and
        `backbone_lr_ratio` of a head-only trial) are None.

        Args:
            hp: a `keras_tuner.HyperParameters`.

        Returns:
            A dict from the names in `HYPERPARAMETERS` to the trial's values.
        """
        values = {"backbone": _declare(hp, "backbone", self.backbones, str)}
        for name in ("unfreeze_blocks", "head_units", "head_dropout", "head_learning_rate"):
            values[name] = _declare(hp, name, *self.search_space[name])
        # The condition covers every non-zero value `unfreeze_blocks` can
        # take, read from the registered hyperparameter: the user's own
        # (from a `hyperparameters=` object) may differ from ours.
        parents = [v for v in _possible_values(hp, "unfreeze_blocks") if v != 0]
        for name in _FINE_TUNING_ONLY:
            values[name] = None
        if parents:
            with hp.conditional_scope("unfreeze_blocks", parents):
                for name in _FINE_TUNING_ONLY:
                    values[name] = _declare(hp, name, *self.search_space[name])
        return {name: values[name] for name in HYPERPARAMETERS}

    def build(self, hp):
        values = self.declare(hp)
        spec = backbones_lib.get_backbone(values["backbone"])
        depth = values["unfreeze_blocks"]
        if depth > len(spec.blocks):
            raise ConfigurationError(
                f"unfreeze_blocks={depth} but backbone {spec.name!r} has "
                f"{len(spec.blocks)} blocks ({', '.join(spec.block_names)}). "
                f"Use at most {len(spec.blocks)}."
            )
        head = {"hidden_units": int(values["head_units"])}
        dropout = float(values["head_dropout"])
        if self.reuse_backbones:
            model = _POOL.build(
                spec, self.num_classes, self.input_shape, self.weights, dropout, head
            )
        else:
            model = build_classifier(
                spec,
                self.num_classes,
                input_shape=self.input_shape,
                weights=self.weights,
                dropout=dropout,
                head=head,
            )
        model.feature_store = self.feature_store
        model.compile(
            optimizer=_optimizer(self.optimizer, values["head_learning_rate"]),
            loss=self.loss,
            metrics=self.metrics,
        )
        return model

    def fit(self, hp, model, *args, **kwargs):
        values = self.declare(hp)
        callbacks = list(kwargs.pop("callbacks", None) or [])
        if any(isinstance(c, ProgressiveUnfreeze) for c in callbacks):
            raise ConfigurationError(
                "TransferHyperModel builds each trial's ProgressiveUnfreeze from "
                "the trial's unfreeze_blocks, unfreeze_epoch and "
                "backbone_lr_ratio. Remove the ProgressiveUnfreeze passed to "
                "search(); fix those values instead, e.g. "
                "TransferHyperModel(..., unfreeze_epoch=2)."
            )
        depth = int(values["unfreeze_blocks"])
        epochs = kwargs.get("epochs", 1)
        if depth:
            start = int(values["unfreeze_epoch"])
            schedule = {start: depth}
            if start >= epochs and "tuner/epochs" not in hp.values:
                warnings.warn(
                    f"This trial trains for {epochs} epoch(s) and unfreezes at "
                    f"epoch {start} (unfreeze_epoch, 0-based): it trains the "
                    f"head only, and its unfreeze_blocks={depth} is not tried. "
                    "Search with more epochs, or lower unfreeze_epoch.",
                    stacklevel=2,
                )
        else:
            schedule = {0: 0}
        unfreeze = ProgressiveUnfreeze(
            backbone=None,
            schedule=schedule,
            lr_ratio=values["backbone_lr_ratio"] or 0.1,
            verbose=0 if kwargs.get("verbose", "auto") == 0 else 1,
        )
        callbacks = [unfreeze, _UnfrozenBlocksLogger()] + callbacks
        tensorboards = [
            c for c in callbacks if isinstance(c, keras.callbacks.TensorBoard)
        ]
        if tensorboards and not any(isinstance(c, PhaseTimer) for c in callbacks):
            # The tuner has pointed its (per-trial copy of the) TensorBoard
            # at the trial's directory; the PhaseTimer follows it.
            callbacks.append(PhaseTimer(tensorboards[0]))
        return model.fit(*args, callbacks=callbacks, **kwargs)


class _UnfrozenBlocksLogger(keras.callbacks.Callback):
    """Adds `unfrozen_blocks` (the depth in effect) to each epoch's logs."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        phase = unfreeze_phase.current_phase(self.model)
        logs[UNFROZEN_BLOCKS_LOG] = float(phase.depth if phase is not None else 0)


# ------------------------------------------------------------ search space


def _check_range(name, value, kind, low, high, note="", lower_open=False, upper_open=False):
    """Validates a constructor range; returns `(value, kind)` for `_declare`."""
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(_RANGE_KEYS))
        if unknown or "min_value" not in value or "max_value" not in value:
            raise ConfigurationError(
                f"A range for {name} is a dict with min_value and max_value and "
                f"optionally {', '.join(_RANGE_KEYS[2:])}, as keras_tuner's "
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
                f"{name} must not be an empty list: give a value or a list of "
                "choices."
            )
        checked = list(value)
    else:
        checked = [value]
    for v in checked:
        ok = _is_number(v) and (kind is float or float(v).is_integer())
        if ok and low is not None:
            ok = v > low if lower_open else v >= low
        if ok and high is not None:
            ok = v < high if upper_open else v <= high
        if not ok:
            lower = f"{'>' if lower_open else '>='} {low}"
            bound = (
                f"{'an integer' if kind is int else 'a number'} {lower}"
                + (f" and {'<' if upper_open else '<='} {high}" if high is not None else "")
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


def _declare(hp, name, value, kind):
    """Declares `name` in `hp` once, as fixed, a choice or a range; returns its value."""
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


def _possible_values(hp, name):
    for param in hp.space:
        if param.name != name:
            continue
        if isinstance(param, keras_tuner.engine.hyperparameters.Fixed):
            return [param.value]
        if isinstance(param, keras_tuner.engine.hyperparameters.Choice):
            return list(param.values)
        if isinstance(param, keras_tuner.engine.hyperparameters.Int):
            # A superset when a step skips values: harmless in a condition.
            return list(range(int(param.min_value), int(param.max_value) + 1))
        raise ConfigurationError(
            f"The hyperparameter {name!r} must be an Int, a Choice or a Fixed "
            f"integer. Received: {param!r}"
        )
    return []


def _optimizer(template, learning_rate):
    optimizer = keras.optimizers.get(template)
    config = optimizer.get_config()
    config["learning_rate"] = float(learning_rate)
    return optimizer.__class__.from_config(config)


def _is_number(value):
    return (
        isinstance(value, (numbers.Real, np.number))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


# ------------------------------------------------------- backbone sharing


@dataclasses.dataclass
class _PooledBackbone:
    backbone: keras.Model
    initial_weights: list
    # The model that uses the backbone now; reusable once it is collected.
    user: weakref.ref = None

    def free(self):
        return self.user is None or self.user() is None


class _BackbonePool:
    """Backbones built once per process, reset to their weights for each trial.

    Keyed by (backbone name, input shape, weights, dtype policy). On a busy
    2-core CPU, a trial's `build` with MobileNetV2 (alpha 0.5, 128 px,
    ImageNet weights) took 1.5-2.3 s (median) when it constructed the
    backbone and loaded its weights, 0.17-0.25 s when it reset a pooled one
    (`benchmarks/tuner_trial_overhead.py`). `build_classifier`
    still assembles every trial's model (through a spec whose constructor
    hands out the pooled backbone), so the model is what it would be without
    the pool.
    """

    def __init__(self):
        self._entries = {}

    def clear(self):
        self._entries.clear()

    def build(self, spec, num_classes, input_shape, weights, dropout, head):
        shape = spec.check_input_shape(input_shape, require_rgb=weights is not None)
        key = (
            spec.name,
            shape,
            None if weights is None else os.fspath(weights),
            keras.config.dtype_policy().name,
        )
        entries = self._entries.setdefault(key, [])
        entry = self._free_entry(entries)
        if entry is None:
            model = build_classifier(
                spec, num_classes, input_shape=shape, weights=weights,
                dropout=dropout, head=head,
            )
            backbone, _ = find_backbone(model)
            entry = _PooledBackbone(backbone, backbone.get_weights())
            entries.append(entry)
        else:
            # The last trial trained these weights and left blocks trainable;
            # build_classifier freezes the whole backbone again. It can only
            # if the backbone's own flag changes: on the TensorFlow backend,
            # assigning an attribute the value it already has is skipped
            # (KerasAutoTrackable.__setattr__), so `trainable = False` on a
            # frozen backbone would not reach a block left unfrozen.
            entry.backbone.set_weights(entry.initial_weights)
            entry.backbone.trainable = True
            # Each call of the backbone in a functional model leaves a node
            # on it (and on its output, the head's call): without clearing
            # them the backbone keeps every past trial's head, preprocessing
            # and input layers, and their variables, alive. No live model
            # uses these nodes: the last user of the backbone is gone.
            _forget_nodes(entry.backbone)
            handout = dataclasses.replace(
                spec, constructor=_HandOut(entry.backbone)
            )
            model = build_classifier(
                handout, num_classes, input_shape=shape, weights=None,
                dropout=dropout, head=head,
            )
        entry.user = weakref.ref(model)
        return model

    def _free_entry(self, entries):
        for attempt in range(2):
            for entry in entries:
                if entry.free():
                    return entry
            if not entries or attempt:
                return None
            # The last trial's model may only be held by reference cycles
            # (model <-> History); KerasTuner collects them before each
            # build, a user calling build() directly may not have.
            gc.collect()
        return None


def _forget_nodes(layer):
    """Empties the layer's lists of call nodes where they are kept.

    On the TensorFlow backend each list is a `ListWrapper` that the layer's
    checkpoint dependencies hold too, so assigning a new list would leave the
    old one reachable; it is emptied in place instead. Deleting its items
    through the wrapper would mark it as mutated, and SavedModel export
    refuses mutated wrappers: the wrapped list is cleared and the wrapper's
    snapshot brought up to date.
    """
    for name in ("_inbound_nodes", "_outbound_nodes"):
        nodes = getattr(layer, name)
        storage = getattr(nodes, "_storage", None)
        if isinstance(storage, list) and hasattr(nodes, "_update_snapshot"):
            storage.clear()
            nodes._update_snapshot()
        else:
            del nodes[:]


class _HandOut:
    """A backbone constructor that returns an existing backbone."""

    def __init__(self, backbone):
        self.backbone = backbone

    def __call__(self, **kwargs):
        return self.backbone

    def __repr__(self):
        return f"<pooled {self.backbone.name}>"


_POOL = _BackbonePool()


def clear_backbone_cache():
    """Drops the backbones kept for reuse across trials in this process.

    `TransferHyperModel(reuse_backbones=True)` keeps one backbone per
    (backbone, input shape, weights) alive between trials. Call this to free
    their memory after a search, or after replacing a weights file on disk.

    Example:

    ```python
    keras_transfer.tuner.clear_backbone_cache()
    ```
    """
    _POOL.clear()


# --------------------------------------------------------------- results


def results_table(tuner, num_trials=None):
    """The completed trials of a search as a text table, best first.

    One row per trial: its rank, id and score (the tuner's objective, e.g.
    `val_accuracy`), then the searched values, and `fine-tuned`: how many
    blocks were trainable at the epoch the score comes from ("no" for a
    trial that trained the head only, e.g. one whose `Hyperband` budget
    ended before `unfreeze_epoch`). Inactive values show as `-`.

    Example:

    ```python
    tuner.search(train_ds, validation_data=val_ds, epochs=6)
    print(keras_transfer.tuner.results_table(tuner, num_trials=10))
    ```

    Args:
        tuner: a KerasTuner tuner (or its oracle) that searched a
            `TransferHyperModel`.
        num_trials: optional int, at most this many rows. Defaults to all
            completed trials.

    Returns:
        The table as a string.
    """
    oracle = getattr(tuner, "oracle", tuner)
    trials = oracle.get_best_trials(num_trials or max(len(oracle.trials), 1))
    objective = _objective_name(oracle)
    names = [
        n
        for n in HYPERPARAMETERS
        if any(n in t.hyperparameters.values for t in trials)
    ]
    extra = [
        n
        for n in ("tuner/epochs",)
        if any(n in t.hyperparameters.values for t in trials)
    ]
    header = ["rank", "trial", objective] + names + [
        "epochs" if n == "tuner/epochs" else n for n in extra
    ] + ["fine-tuned"]
    rows = []
    for rank, trial in enumerate(trials, start=1):
        values = trial.hyperparameters.values
        row = [str(rank), trial.trial_id, _format(trial.score)]
        row += [_format(values.get(n)) for n in names + extra]
        reached = _last_metric(trial, UNFROZEN_BLOCKS_LOG)
        if reached is None:
            row.append("?")
        else:
            row.append(_blocks(int(reached)) if reached else "no")
        rows.append(row)
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def _objective_name(oracle):
    objective = oracle.objective
    return getattr(objective, "name", None) or "score"


def _last_metric(trial, name):
    if not trial.metrics.exists(name):
        return None
    return trial.metrics.get_last_value(name)


def _format(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.2e}"
        return f"{value:.4g}"
    return str(value)


def _blocks(count):
    return f"{count} block" + ("" if count == 1 else "s")
