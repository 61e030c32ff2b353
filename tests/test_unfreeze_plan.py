"""UnfreezePlan: the one answer to "which layers train at which epoch"."""

import keras
import numpy as np
import pytest
from test_progressive_unfreeze import SIZE
from test_progressive_unfreeze import tiny_model

import keras_transfer
from keras_transfer.errors import ConfigurationError
from keras_transfer.unfreeze import GradualSchedule
from keras_transfer.unfreeze import UnfreezePlan
from keras_transfer.unfreeze import fine_tune_schedule
from keras_transfer.unfreeze import plan_from_callbacks


def inline_model():
    """Three conv/BN units in a nested backbone, as a classic script builds it."""
    return tiny_model(keras.optimizers.Adam(1e-2))


def test_phases_epochs_and_depths():
    model, base = inline_model()
    plan = UnfreezePlan(model, base, {2: 2, 4: 4}, unit="weighted_layers")
    assert plan.units == ["conv0", "bn0", "conv1", "bn1", "conv2", "bn2"]
    assert plan.phases == [(0, 0), (2, 2), (4, 4)]
    assert [plan.depth_at(e) for e in range(6)] == [0, 0, 2, 2, 4, 4]
    assert [plan.phase_index(e) for e in range(6)] == [0, 0, 1, 1, 2, 2]
    assert plan.phase_end(1) == 4 and plan.phase_end(2) == float("inf")
    # A resumed fit from epoch 3 to 4 visits only the middle phase.
    assert plan.depths_between(initial_epoch=3, epochs=4) == [2]
    assert plan.depths_between(initial_epoch=0, epochs=6) == [0, 2, 4]
    assert plan.trainable_units(2) == ("conv2", "bn2")
    assert plan.frozen_units(2) == ("conv0", "bn0", "conv1", "bn1")


def test_applied_depth_trains_exactly_the_layers_the_plan_names():
    model, base = inline_model()
    plan = UnfreezePlan(model, base, {1: 4}, unit="weighted_layers")
    for depth in (4, 0):
        plan.apply_depth(depth)
        trainable = {l.name for l in base.layers if l.trainable_weights}
        assert trainable == {l.name for l in plan.trainable_layers(depth)}
    plan.apply_depth(4)
    # BatchNormalization stays frozen unless train_bn=True.
    assert {l.name for l in plan.trainable_layers(4)} == {"conv1", "conv2"}
    with_bn = UnfreezePlan(model, base, {1: 4}, unit="weighted_layers", train_bn=True)
    assert {l.name for l in with_bn.trainable_layers(4)} == {"conv1", "bn1", "conv2", "bn2"}


def test_trains_at_answers_for_every_layer_of_the_model():
    model, base = inline_model()
    plan = UnfreezePlan(model, base, {1: 2}, unit="weighted_layers")
    head = model.get_layer("head")
    at_head_only, at_two = plan.trains_at(0), plan.trains_at(2)
    assert at_head_only(head) and at_two(head)
    assert not at_head_only(base.get_layer("conv2"))
    assert at_two(base.get_layer("conv2"))
    assert not at_two(base.get_layer("bn2"))  # frozen BatchNorm
    assert not at_two(base.get_layer("conv1"))


def test_the_callback_training_follows_its_plan():
    model, base = inline_model()
    unfreeze = keras_transfer.ProgressiveUnfreeze(base, {1: 2}, unit="weighted_layers", verbose=0)
    plan = plan_from_callbacks([keras.callbacks.History(), unfreeze], model)
    assert plan is unfreeze.plan and plan.model is model
    before = {l.name: [w.numpy().copy() for w in l.weights] for l in base.layers if l.weights}
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (16, SIZE, SIZE, 3)).astype("float32")
    y = rng.integers(0, 2, 16)
    model.fit(x, y, epochs=2, batch_size=8, callbacks=[unfreeze], verbose=0)
    changed = {
        name
        for name, values in before.items()
        if any(
            not np.array_equal(v, w.numpy()) for v, w in zip(values, base.get_layer(name).weights)
        )
    }
    assert changed == {l.name for l in plan.trainable_layers(plan.depth_at(1))} == {"conv2"}


def test_several_plans_are_refused():
    model, base = inline_model()
    callbacks = [
        keras_transfer.ProgressiveUnfreeze(base, {1: 1}, unit="weighted_layers"),
        keras_transfer.ProgressiveUnfreeze(base, {1: 2}, unit="weighted_layers"),
    ]
    with pytest.raises(ValueError, match="several ProgressiveUnfreeze"):
        plan_from_callbacks(callbacks, model)
    assert plan_from_callbacks(None, model) is None


def test_schedule_past_the_backbone_is_refused_with_the_limit():
    model, base = inline_model()
    # unit="layers" counts base.layers: the input, then conv, bn, relu x 3.
    with pytest.raises(ConfigurationError, match="has only 10 layers"):
        UnfreezePlan(model, base, {1: 11}, unit="layers")
    with pytest.raises(ConfigurationError, match="has only 6 weighted_layers"):
        UnfreezePlan(model, base, {1: 7}, unit="weighted_layers")


def test_fine_tune_schedule_is_the_shared_recipe():
    assert fine_tune_schedule(5, 3) == {5: 3}
    assert fine_tune_schedule(5, 0) == {0: 0}
    gradual = fine_tune_schedule(5, 4, fine_tune_epochs=2, gradual=True)
    assert isinstance(gradual, GradualSchedule)
    assert gradual.resolve(10) == {0: 0, 5: 2, 6: 4}
    with pytest.raises(ConfigurationError, match="fine_tune_epochs"):
        fine_tune_schedule(5, 4, gradual=True)
