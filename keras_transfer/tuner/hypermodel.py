"""`TransferHyperModel`: a KerasTuner search space over how deep to fine-tune.

One `keras_tuner.HyperModel`: `declare` registers the searched values in a
trial's `HyperParameters`, `build` makes the trial's classifier (on a pooled
backbone, see `backbone_pool`), and `fit` trains it with the trial's
`ProgressiveUnfreeze` inside a single `model.fit`.
"""

import os
import warnings

import keras
import keras_tuner

from keras_transfer import backbones as backbones_lib
from keras_transfer import caching
from keras_transfer import defaults
from keras_transfer.callbacks.phase_timer import PhaseTimer
from keras_transfer.callbacks.progressive_unfreeze import ProgressiveUnfreeze
from keras_transfer.callbacks.unfrozen_blocks_logger import UnfrozenBlocksLogger
from keras_transfer.errors import ConfigurationError
from keras_transfer.models import build_classifier
from keras_transfer.tuner.backbone_pool import build_pooled_classifier
from keras_transfer.tuner.search_space import FINE_TUNING_ONLY
from keras_transfer.tuner.search_space import HYPERPARAMETERS
from keras_transfer.tuner.search_space import check_search_space
from keras_transfer.tuner.search_space import declare_value
from keras_transfer.tuner.search_space import possible_values
from keras_transfer.unfreeze import fine_tune_schedule
from keras_transfer.utils.checks import check_int
from keras_transfer.utils.tensors import copy_optimizer


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
    On JAX (and other backends than TensorFlow), where KerasTuner leaves
    the `TensorBoard` directory as given, `fit` moves it to
    `log_dir/<trial_id>/execution<n>` as KerasTuner does on TensorFlow, and
    the `PhaseTimer` writes the trial's HParams record there.

    Backends: searches run on TensorFlow and on JAX (`KERAS_BACKEND=jax`,
    `tests/test_tuner_backends.py`).

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
        backbones=(defaults.BACKBONE,),
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
        self.num_classes = check_int(num_classes, "num_classes", minimum=2)
        specs = _registered_specs(backbones)
        self.backbones = tuple(spec.name for spec in specs)
        self.input_shape = None if input_shape is None else tuple(input_shape)
        for spec in specs:
            spec.check_input_shape(self.input_shape, require_rgb=weights is not None)
        self.weights = _check_weights(weights, self.backbones)
        if head_learning_rate is None:
            head_learning_rate = {
                "min_value": 1e-4,
                "max_value": 1e-2,
                "sampling": "log",
            }
        self.search_space = check_search_space(
            specs,
            unfreeze_blocks=unfreeze_blocks,
            unfreeze_epoch=unfreeze_epoch,
            head_units=head_units,
            head_dropout=head_dropout,
            head_learning_rate=head_learning_rate,
            backbone_lr_ratio=backbone_lr_ratio,
        )
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
        self.feature_store = _feature_store(share_frozen_features)
        # Trial id -> fits (executions) run so far, for their TensorBoard
        # directories on backends where KerasTuner does not set them.
        self._fits_per_trial = {}

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
        values = {"backbone": declare_value(hp, "backbone", self.backbones, str)}
        for name in ("unfreeze_blocks", "head_units", "head_dropout", "head_learning_rate"):
            values[name] = declare_value(hp, name, *self.search_space[name])
        # The condition covers every non-zero value `unfreeze_blocks` can
        # take, read from the registered hyperparameter: the user's own
        # (from a `hyperparameters=` object) may differ from ours.
        parents = [v for v in possible_values(hp, "unfreeze_blocks") if v != 0]
        for name in FINE_TUNING_ONLY:
            values[name] = None
        if parents:
            with hp.conditional_scope("unfreeze_blocks", parents):
                for name in FINE_TUNING_ONLY:
                    values[name] = declare_value(hp, name, *self.search_space[name])
        return {name: values[name] for name in HYPERPARAMETERS}

    def build(self, hp):
        """The trial's classifier, compiled, its backbone frozen.

        Args:
            hp: the trial's `keras_tuner.HyperParameters`.

        Returns:
            A `keras.Model` from `build_classifier`, compiled with the
            trial's `head_learning_rate`.
        """
        values = self.declare(hp)
        spec = backbones_lib.get_backbone(values["backbone"])
        depth = values["unfreeze_blocks"]
        spec.check_depth(depth, name="unfreeze_blocks")
        head = {"hidden_units": int(values["head_units"])}
        dropout = float(values["head_dropout"])
        if self.reuse_backbones:
            model = build_pooled_classifier(
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
            optimizer=copy_optimizer(self.optimizer, float(values["head_learning_rate"])),
            loss=self.loss,
            metrics=self.metrics,
        )
        return model

    def fit(self, hp, model, *args, **kwargs):
        """Trains `model` with the trial's `ProgressiveUnfreeze`, in one `fit`.

        Args:
            hp: the trial's `keras_tuner.HyperParameters`.
            model: the model `build` returned.
            *args: passed to `model.fit`.
            **kwargs: passed to `model.fit`; `callbacks` (the tuner's) run
                after `ProgressiveUnfreeze` and `UnfrozenBlocksLogger`.

        Returns:
            The `History` of `model.fit`.
        """
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
        start = int(values["unfreeze_epoch"]) if depth else 0
        # Hyperband's budgets may end before the unfreeze on purpose.
        if depth and start >= epochs and "tuner/epochs" not in hp.values:
            warnings.warn(
                f"This trial trains for {epochs} epoch(s) and unfreezes at "
                f"epoch {start} (unfreeze_epoch, 0-based): it trains the "
                f"head only, and its unfreeze_blocks={depth} is not tried. "
                "Search with more epochs, or lower unfreeze_epoch.",
                stacklevel=2,
            )
        unfreeze = ProgressiveUnfreeze(
            backbone=None,
            schedule=fine_tune_schedule(start, depth),
            lr_ratio=values["backbone_lr_ratio"] or defaults.LR_RATIO,
            verbose=0 if kwargs.get("verbose", "auto") == 0 else 1,
        )
        callbacks = [unfreeze, UnfrozenBlocksLogger()] + callbacks
        tensorboards = [c for c in callbacks if isinstance(c, keras.callbacks.TensorBoard)]
        trial = _tuner_trial(callbacks)
        hparams = None
        if tensorboards and trial is not None and keras.backend.backend() != "tensorflow":
            # KerasTuner gives each trial its own TensorBoard directory and
            # HParams record on TensorFlow only (it would import TensorFlow
            # for them): on JAX every trial would write into one run. Do
            # here what it does there, on its per-trial copies.
            execution = self._fits_per_trial.get(trial.trial_id, 0)
            self._fits_per_trial[trial.trial_id] = execution + 1
            for tensorboard in tensorboards:
                tensorboard.log_dir = os.path.join(
                    str(tensorboard.log_dir), str(trial.trial_id), f"execution{execution}"
                )
            hparams = trial.hyperparameters
        if tensorboards and not any(isinstance(c, PhaseTimer) for c in callbacks):
            # The tuner has pointed its (per-trial copy of the) TensorBoard
            # at the trial's directory; the PhaseTimer follows it.
            callbacks.append(PhaseTimer(tensorboards[0], hparams=hparams))
        return model.fit(*args, callbacks=callbacks, **kwargs)


def _tuner_trial(callbacks):
    """The KerasTuner trial being fitted, from the tuner's own callback, or None.

    KerasTuner adds a callback holding the `Trial` to every trial's `fit`
    (`TunerCallback`, a private class: found by the public `Trial` it holds).
    """
    for callback in callbacks:
        trial = getattr(callback, "trial", None)
        if isinstance(trial, keras_tuner.engine.trial.Trial):
            return trial
    return None


def _registered_specs(backbones):
    """The `BackboneSpec`s of `backbones`, each registered under its name."""
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
    return specs


def _check_weights(weights, names):
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise ConfigurationError(
            "weights must be 'imagenet', None or the path to a weights "
            f"file. Received: weights={weights!r}"
        )
    if weights not in (None, "imagenet") and len(names) > 1:
        raise ConfigurationError(
            "A weights file fits one architecture, and backbones lists "
            f"{len(names)}: {list(names)}. Pass a single backbone, "
            "or weights='imagenet'."
        )
    return weights


def _feature_store(share_frozen_features):
    if isinstance(share_frozen_features, caching.FeatureStore):
        return share_frozen_features
    if isinstance(share_frozen_features, bool):
        return caching.FeatureStore() if share_frozen_features else None
    raise ConfigurationError(
        "share_frozen_features must be True, False or a "
        "keras_transfer.caching.FeatureStore. Received: "
        f"share_frozen_features={share_frozen_features!r}"
    )
