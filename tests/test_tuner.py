"""TransferHyperModel: the search space, the trials it trains, and its tuners."""

import dataclasses
import gc
import os
import warnings
import weakref

import keras
import keras_tuner as kt
import numpy as np
import pytest

import keras_transfer
from keras_transfer import tuner as tuner_lib
from keras_transfer.errors import ConfigurationError
from keras_transfer.models import find_backbone
from keras_transfer.tuner import TransferHyperModel

from conftest import write_image_folder

# MobileNet v1 alpha 0.25: the cheapest registered backbone to trace.
BACKBONE = "mobilenet_v1_025"
SHAPE = (32, 32, 3)


def _data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(80 + 100 * y[:, None, None, None], 30, (n, *SHAPE))
    return np.clip(x, 0, 255).astype("float32"), y


def _hypermodel(**kwargs):
    options = dict(
        num_classes=2,
        backbones=(BACKBONE,),
        input_shape=SHAPE,
        weights=None,
        unfreeze_blocks=(0, 2),
        unfreeze_epoch=1,
        head_units=0,
        head_dropout=0.0,
        head_learning_rate=1e-3,
        backbone_lr_ratio=0.1,
    )
    options.update(kwargs)
    return TransferHyperModel(**options)


def _expected_trainable(model, depth):
    """Head parameters plus the non-BatchNorm weights of the top `depth` blocks."""
    backbone, spec = find_backbone(model)
    head = sum(int(np.prod(w.shape)) for w in model.get_layer("head").weights)
    blocks = spec.block_layers(backbone)[len(spec.blocks) - depth :]
    return head + sum(
        int(np.prod(w.shape))
        for _, layers in blocks
        for layer in layers
        if not isinstance(layer, keras.layers.BatchNormalization)
        for w in layer.trainable_weights
    )


class _SpaceOnly:
    """Mixin: a tuner whose trials build nothing, to exercise an oracle fast."""

    def run_trial(self, trial, *args, **kwargs):
        values = self.hypermodel.declare(trial.hyperparameters)
        self.seen.append(values)
        return {"val_accuracy": values["unfreeze_blocks"] / 10 + values["head_dropout"]}


# ------------------------------------------------------------ search space


def test_searched_values_have_readable_names():
    hp = kt.HyperParameters()
    values = TransferHyperModel(2, weights=None).declare(hp)
    assert tuple(values) == tuner_lib.HYPERPARAMETERS
    assert {p.name for p in hp.space} == set(tuner_lib.HYPERPARAMETERS)
    # The default freeze depth trains the head only: the fine-tuning values
    # are inactive, and conditioned on unfreeze_blocks.
    assert values["unfreeze_blocks"] == 0
    assert values["unfreeze_epoch"] is None and values["backbone_lr_ratio"] is None
    conditional = [p for p in hp.space if p.conditions]
    assert sorted(p.name for p in conditional) == ["backbone_lr_ratio", "unfreeze_epoch"]
    assert conditional[0].conditions[0].values == [2, 4, 8]


def test_constructor_fixes_choices_and_ranges():
    hp = kt.HyperParameters()
    hypermodel = TransferHyperModel(
        2,
        weights=None,
        unfreeze_blocks=3,
        unfreeze_epoch={"min_value": 1, "max_value": 4},
        head_units=[0, 64],
        head_learning_rate=2e-3,
    )
    values = hypermodel.declare(hp)
    kinds = {p.name: type(p).__name__ for p in hp.space}
    assert kinds["unfreeze_blocks"] == "Fixed" and values["unfreeze_blocks"] == 3
    assert kinds["unfreeze_epoch"] == "Int" and values["unfreeze_epoch"] == 1
    assert kinds["head_units"] == "Choice"
    assert kinds["head_learning_rate"] == "Fixed" and values["head_learning_rate"] == 2e-3
    # Asking again (as fit does) returns the same values, declares nothing.
    assert hypermodel.declare(hp) == values
    assert len(hp.space) == len(tuner_lib.HYPERPARAMETERS)


def test_hyperparameters_object_wins_over_constructor():
    hp = kt.HyperParameters()
    hp.Fixed("unfreeze_blocks", 5)
    hp.Fixed("unfreeze_epoch", 3)
    values = TransferHyperModel(2, weights=None).declare(hp)
    assert values["unfreeze_blocks"] == 5
    assert values["unfreeze_epoch"] == 3
    # The condition follows the user's hyperparameter, not the constructor's.
    ratio = [p for p in hp.space if p.name == "backbone_lr_ratio"][0]
    assert ratio.conditions[0].values == [5]
    assert values["backbone_lr_ratio"] == 0.01


def test_tune_new_entries_false_keeps_defaults(tmp_path):
    hp = kt.HyperParameters()
    hp.Choice("unfreeze_blocks", [1, 2])

    class Search(_SpaceOnly, kt.RandomSearch):
        seen = []

    search = Search(
        _hypermodel(unfreeze_epoch=(2, 3), head_dropout=(0.1, 0.3)),
        objective="val_accuracy",
        max_trials=4,
        hyperparameters=hp,
        tune_new_entries=False,
        directory=tmp_path,
        seed=0,
    )
    search.search()
    assert {v["unfreeze_blocks"] for v in Search.seen} <= {1, 2}
    assert {v["unfreeze_epoch"] for v in Search.seen} == {2}
    assert {v["head_dropout"] for v in Search.seen} == {0.1}


@pytest.mark.parametrize("tuner_class", [kt.RandomSearch, kt.BayesianOptimization])
def test_oracles_search_the_conditional_space(tmp_path, tuner_class):
    class Search(_SpaceOnly, tuner_class):
        seen = []

    search = Search(
        _hypermodel(
            unfreeze_blocks={"min_value": 0, "max_value": 4},
            head_dropout={"min_value": 0.0, "max_value": 0.5},
            backbone_lr_ratio=(0.01, 0.1),
        ),
        objective="val_accuracy",
        max_trials=6,
        directory=tmp_path,
        seed=1,
    )
    search.search()
    assert len(Search.seen) == 6
    for values in Search.seen:
        assert 0 <= values["unfreeze_blocks"] <= 4
        fine_tunes = values["unfreeze_blocks"] > 0
        assert (values["backbone_lr_ratio"] in (0.01, 0.1)) == fine_tunes
        assert (values["unfreeze_epoch"] == 1) == fine_tunes


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"unfreeze_blocks": (0, 15)}, "mobilenet_v1_025' has 14 blocks"),
        ({"unfreeze_blocks": {"min_value": 0, "max_value": 99}}, "has 14 blocks"),
        ({"head_dropout": (0.0, 1.0)}, "head_dropout"),
        ({"backbone_lr_ratio": 0}, "backbone_lr_ratio"),
        ({"head_units": 2.5}, "head_units must be an integer"),
        ({"unfreeze_epoch": {"min_value": 1}}, "min_value and max_value"),
        ({"unfreeze_epoch": []}, "empty"),
        ({"num_classes": 1}, "num_classes"),
        ({"backbones": ("mobilenet_v9",)}, "Unknown backbone"),
        ({"optimizer": 3}, "optimizer"),
        (
            {
                "backbones": (
                    dataclasses.replace(keras_transfer.get_backbone(BACKBONE), name="mine"),
                )
            },
            "not registered",
        ),
    ],
)
def test_bad_arguments_name_the_problem(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        _hypermodel(**kwargs)


# ------------------------------------------------------- backbone sharing


def test_later_builds_reuse_the_backbone_reset_to_its_weights():
    tuner_lib.clear_backbone_cache()
    hypermodel = _hypermodel()
    first = hypermodel.build(kt.HyperParameters())
    backbone, _ = find_backbone(first)
    initial = [w.copy() for w in backbone.get_weights()]
    # What a trial leaves behind: trained weights and unfrozen layers.
    backbone.layers[-3].trainable = True
    for variable in backbone.weights:
        variable.assign(np.zeros(variable.shape, variable.dtype))
    first_head = weakref.ref(first.get_layer("head"))
    del first

    second = hypermodel.build(kt.HyperParameters())
    assert find_backbone(second)[0] is backbone
    for before, after in zip(initial, backbone.get_weights()):
        np.testing.assert_array_equal(before, after)
    head = second.get_layer("head")
    assert [id(w) for w in second.trainable_weights] == [id(w) for w in head.trainable_weights]

    # The first trial's layers went with it: the backbone keeps no node of
    # the first model, only the one of its current call.
    gc.collect()
    assert first_head() is None
    assert len(backbone._inbound_nodes) == 1 and len(backbone._outbound_nodes) == 1

    # A backbone in use by a live model is never handed out twice.
    third = hypermodel.build(kt.HyperParameters())
    assert find_backbone(third)[0] is not backbone
    assert len(third.trainable_weights) == len(head.trainable_weights)


@pytest.mark.filterwarnings("ignore:.*input_shape.*:UserWarning")
def test_reused_backbone_holds_the_imagenet_weights(seeded_keras_home):
    tuner_lib.clear_backbone_cache()
    reference = find_backbone(keras_transfer.build_classifier(BACKBONE, 2, input_shape=SHAPE))[
        0
    ].get_weights()
    hypermodel = _hypermodel(weights="imagenet")
    for _ in range(2):  # A fresh build, then a reused one.
        model = hypermodel.build(kt.HyperParameters())
        backbone = find_backbone(model)[0]
        for expected, actual in zip(reference, backbone.get_weights()):
            np.testing.assert_array_equal(expected, actual)
        backbone.weights[0].assign(np.zeros(backbone.weights[0].shape, backbone.weights[0].dtype))
        del model
    tuner_lib.clear_backbone_cache()


# --------------------------------------------------------------- training


def test_trial_unfreezes_the_chosen_blocks_at_the_chosen_epoch():
    hp = kt.HyperParameters()
    hp.Fixed("unfreeze_blocks", 3)
    hypermodel = _hypermodel()
    model = hypermodel.build(hp)
    x, y = _data()
    # One epoch with unfreeze_epoch=1: the head only, and fit says so.
    with pytest.warns(UserWarning, match="trains the head only"):
        history = hypermodel.fit(hp, model, x, y, epochs=1, batch_size=8, verbose=0)
    head_only = _expected_trainable(model, 0)
    assert history.history["unfrozen_blocks"] == [0.0]
    assert history.history["trainable_params"] == [head_only]
    # Continued as Hyperband continues a trial: the schedule follows the
    # epoch number, so epoch 1 fine-tunes the last 3 blocks.
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*trains the head only")
        history = hypermodel.fit(
            hp, model, x, y, epochs=2, initial_epoch=1, batch_size=8, verbose=0
        )
    assert history.history["unfrozen_blocks"] == [3.0]
    assert history.history["trainable_params"] == [_expected_trainable(model, 3)]
    assert _expected_trainable(model, 3) > head_only
    # The trial trained on features of its frozen layers, computed once.
    assert keras_transfer.caching.feature_cache_info(model) is not None


def test_progressive_unfreeze_among_search_callbacks_is_refused():
    hypermodel = _hypermodel()
    hp = kt.HyperParameters()
    model = hypermodel.build(hp)
    x, y = _data(4)
    unfreeze = keras_transfer.ProgressiveUnfreeze(schedule={1: 2})
    with pytest.raises(ConfigurationError, match="Remove the ProgressiveUnfreeze"):
        hypermodel.fit(hp, model, x, y, callbacks=[unfreeze])


def test_grid_search_over_two_freeze_depths_ranks_the_trials(tmp_path):
    folder = write_image_folder(tmp_path / "images", per_class=6, size=(32, 32))
    train_ds, val_ds, _ = keras_transfer.load_image_folder(
        folder, image_size=32, batch_size=8, verbose=False
    )
    tuner = kt.GridSearch(
        _hypermodel(unfreeze_epoch=0),
        objective="val_accuracy",
        directory=tmp_path / "search",
    )
    tensorboard = keras.callbacks.TensorBoard(str(tmp_path / "logs"))
    tuner.search(train_ds, validation_data=val_ds, epochs=1, verbose=0, callbacks=[tensorboard])

    trials = tuner.oracle.get_best_trials(10)
    assert sorted(t.hyperparameters["unfreeze_blocks"] for t in trials) == [0, 2]
    scores = [t.score for t in trials]
    assert scores == sorted(scores, reverse=True)
    for trial in trials:
        depth = trial.hyperparameters["unfreeze_blocks"]
        assert trial.metrics.get_last_value("unfrozen_blocks") == depth
    params = {
        t.hyperparameters["unfreeze_blocks"]: t.metrics.get_last_value("trainable_params")
        for t in trials
    }
    assert params[2] > params[0]

    table = tuner_lib.results_table(tuner).splitlines()
    assert table[0].split()[:5] == ["rank", "trial", "val_accuracy", "backbone", "unfreeze_blocks"]
    assert [row.split()[1] for row in table[1:]] == [t.trial_id for t in trials]
    fine_tuned = {row.split()[4]: row.split(maxsplit=10)[-1] for row in table[1:]}
    assert fine_tuned == {"0": "no", "2": "2 blocks"}

    # Each trial's PhaseTimer followed the tuner's per-trial log directory.
    for trial in trials:
        phases = tmp_path / "logs" / trial.trial_id / "execution0" / "phases"
        assert any(name.startswith("events") for name in os.listdir(phases))


# Hyperband loads a trial's checkpoint into a fresh model; Keras skips the
# optimizer state (the unfreeze optimizer is installed later, in fit).
@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
def test_hyperband_trials_cut_before_unfreezing_are_not_fine_tuned(tmp_path):
    x, y = _data(16)
    tuner = kt.Hyperband(
        _hypermodel(unfreeze_blocks=2, unfreeze_epoch=1, head_units=(0, 8)),
        objective="val_accuracy",
        max_epochs=2,
        factor=2,
        hyperband_iterations=1,
        directory=tmp_path,
        seed=0,
    )
    with warnings.catch_warnings():
        # Budgets below unfreeze_epoch are Hyperband's business: no warning.
        warnings.filterwarnings("error", message=".*trains the head only")
        tuner.search(x, y, validation_data=_data(8, seed=1), epochs=2, batch_size=8, verbose=0)

    trials = [t for t in tuner.oracle.trials.values() if t.status == "COMPLETED"]
    budgets = {}
    for trial in trials:
        epochs = trial.hyperparameters["tuner/epochs"]
        budgets.setdefault(epochs, []).append(trial.metrics.get_last_value("unfrozen_blocks"))
    # One-epoch trials stopped before epoch 1: head only. Two-epoch trials
    # reached it (a continued trial's fit holds epoch 1 alone).
    assert set(budgets[1]) == {0.0}
    continued = [
        t.metrics.get_last_value("unfrozen_blocks")
        for t in trials
        if t.hyperparameters["tuner/initial_epoch"] == 1
    ]
    assert continued and set(continued) == {2.0}
    rows = tuner_lib.results_table(tuner).splitlines()
    assert "epochs" in rows[0].split()
    assert all(row.endswith(("no", "2 blocks")) for row in rows[1:])


def test_trials_with_the_same_frozen_layers_share_their_features(tmp_path):
    folder = write_image_folder(tmp_path / "images", per_class=6, size=(32, 32))
    train_ds, val_ds, _ = keras_transfer.load_image_folder(
        folder, image_size=32, batch_size=8, verbose=False
    )
    reused = []

    class Recording(kt.GridSearch):
        def run_trial(self, trial, *args, **kwargs):
            result = super().run_trial(trial, *args, **kwargs)
            reused.append(keras_transfer.caching.feature_cache_info(self._model).reused)
            return result

        def _try_build(self, hp):
            self._model = super()._try_build(hp)
            return self._model

    # Weights come from a file so that every trial's backbone starts equal,
    # with backbone reuse off: equal features, not the pooled object, count.
    seed_model = keras_transfer.build_classifier(BACKBONE, 2, input_shape=SHAPE, weights=None)
    weights = tmp_path / "backbone.weights.h5"
    find_backbone(seed_model)[0].save_weights(weights)
    hypermodel = _hypermodel(
        weights=str(weights),
        unfreeze_blocks=2,
        head_dropout=(0.0, 0.5),
        reuse_backbones=False,
    )
    tuner = Recording(hypermodel, objective="val_accuracy", directory=tmp_path / "search")
    tuner.search(train_ds, validation_data=val_ds, epochs=2, verbose=0)
    assert reused == [False, True]
    assert hypermodel.feature_store.hits == 1

    assert _hypermodel(share_frozen_features=False).feature_store is None
    with pytest.raises(ConfigurationError, match="share_frozen_features"):
        _hypermodel(share_frozen_features="yes")
