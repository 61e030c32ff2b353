"""The tutorials' models, as their users write them: the cache's equivalence corpus.

"Add two lines to your existing script" is the promise, so the most read
transfer-learning scripts are the test. Each `Tutorial` below is one of them,
built the way its readers build it (small images, a few real flower photos,
`weights=None` where the ImageNet weights are not on this machine), and runs:

- as written: a `keras.Model`, one fit of the head, then the script's
  unfreezing lines, a recompile at a lower learning rate and a second fit;
- with keras-transfer: the same model, same seeds, as a `TransferClassifier`,
  one fit of two epochs with a `ProgressiveUnfreeze` that trains, from epoch
  1, what the script's second fit trains.

What is asserted, per script:

- augmentation in the model (all but the seed script and KerasHub): the
  keras-transfer fit as written trains uncached and says so in exactly one
  warning naming the augmentation layer (read when `fit` has decided, at
  `on_train_begin`). Augmentation makes two fits incomparable draw for
  draw, so the rest is checked on the script with its augmentation left out:
  the rest (preprocessing, nesting, `input_tensor=`, the head) must cache;
- the cached fit claims it (`feature_cache_info`), and its per-epoch losses
  and final weights match the same fit uncached within 1e-4 (the weights
  too: a random Xception's losses hardly leave log(2), its head's steps do);
- it trains the same weights in each phase as the script's two fits, with
  one deliberate exception: `ProgressiveUnfreeze` keeps every backbone
  BatchNormalization frozen (scale, offset and statistics), where the
  scripts that unfreeze them train their scale and offset and, on Keras 3,
  their statistics too (keras-team/keras#20285 drops the `training=False`
  of the backbone's call).

Augmentation that `input_tensor=` puts inside the backbone is also checked
on its own, in the form where the cache could keep it: as K views.

A new pattern found by a user becomes one more `Tutorial` in `CASES`.
"""

import dataclasses
import functools
import warnings

import keras
import numpy as np
import pytest

import keras_transfer
from keras_transfer import caching
from keras_transfer.models import TransferClassifier
from keras_transfer.utils.internals import flatten_layers
from test_augmented_views import EpochTotals
from test_augmented_views import RecordInputs
from test_caching_equivalence import MNV2_035

SIZE = 32  # The smallest input MobileNetV2 and EfficientNetB0 take.
XCEPTION_SIZE = 71  # Xception's smallest.
CLASSES = ("daisy", "dandelion")
TRAIN_PER_CLASS, VAL_PER_CLASS = 4, 1  # Two training steps of 4 photos an epoch.
BATCH = 4
SEED = 7
TOLERANCE = 1e-4

# The warnings of a fit that trains without the cache, or with part of it.
UNCACHED = "without the frozen-feature cache"
PARTLY_CACHED = "Caching only part of the frozen layers"


@dataclasses.dataclass(frozen=True)
class Tutorial:
    """One script's model and its two-fit recipe, as its readers write them.

    Attributes:
        build: `build(augment, weights_dir)` -> `(compiled keras.Model,
            base_model)`, the script's model; `augment=False` leaves its
            augmentation layers out (and nothing else).
        fine_tune: `fine_tune(model, base_model)`, the script's lines between
            its two fits: unfreezing, then `compile` at a lower rate.
        unfreeze: `unfreeze(base_model)` -> the `ProgressiveUnfreeze` that
            trains, from epoch 1, what `fine_tune` makes trainable.
        augmented: whether the script augments inside the model (its
            keras-transfer fit must then warn and train uncached).
        one_hot: whether the script's loss takes one-hot labels.
        size: the image size.
        marks: pytest marks, for a known failure of today's code.
    """

    build: object
    fine_tune: object
    unfreeze: object
    augmented: bool = True
    one_hot: bool = False
    size: int = SIZE
    marks: tuple = ()


def binary_compile(model, optimizer):
    """The compile of the Keras guide and the TensorFlow tutorial: one logit."""
    model.compile(
        optimizer,
        keras.losses.BinaryCrossentropy(from_logits=True),
        metrics=[keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")],
    )


def mobilenet_v2(weights_dir, **kwargs):
    """MobileNetV2 0.35 with its real ImageNet weights (the 224 px file, as offline)."""
    return keras.applications.MobileNetV2(
        alpha=0.35, include_top=False, weights=str(weights_dir / MNV2_035), **kwargs
    )


# ------------------------------------------------------------ 1. seed script


def seed_script(augment, weights_dir):
    """The seed script: the head on `base_model.output`, the backbone's layers inline."""
    base_model = mobilenet_v2(weights_dir, input_shape=(SIZE, SIZE, 3))
    base_model.trainable = False
    x = keras.layers.GlobalAveragePooling2D()(base_model.output)
    outputs = keras.layers.Dense(2, activation="softmax")(x)
    model = keras.Model(base_model.input, outputs)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model, base_model


def seed_script_fine_tune(model, base_model):
    base_model.trainable = True
    for layer in base_model.layers[:-20]:
        layer.trainable = False
    model.compile(
        keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )


# ------------------------------------- 2. Keras guide: transfer learning & fine-tuning


def keras_guide(augment, weights_dir):
    """keras.io's *Transfer learning & fine-tuning*: Xception nested with `training=False`."""
    base_model = keras.applications.Xception(
        weights=None, input_shape=(XCEPTION_SIZE, XCEPTION_SIZE, 3), include_top=False
    )
    base_model.trainable = False
    data_augmentation = keras.Sequential(
        [keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.1)]
    )
    inputs = keras.Input(shape=(XCEPTION_SIZE, XCEPTION_SIZE, 3))
    x = data_augmentation(inputs) if augment else inputs
    x = keras.layers.Rescaling(scale=1 / 127.5, offset=-1)(x)
    x = base_model(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(1)(x)
    model = keras.Model(inputs, outputs)
    binary_compile(model, keras.optimizers.Adam())
    return model, base_model


def keras_guide_fine_tune(model, base_model):
    base_model.trainable = True
    binary_compile(model, keras.optimizers.Adam(1e-5))


# ------------------------- 3. TensorFlow tutorial: transfer learning and fine-tuning


FINE_TUNE_AT = 100


def tensorflow_tutorial(augment, weights_dir):
    """tensorflow.org's *Transfer learning and fine-tuning*: MobileNetV2, `preprocess_input`."""
    data_augmentation = keras.Sequential(
        [keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.2)]
    )
    base_model = mobilenet_v2(weights_dir, input_shape=(SIZE, SIZE, 3))
    base_model.trainable = False
    inputs = keras.Input(shape=(SIZE, SIZE, 3))
    x = data_augmentation(inputs) if augment else inputs
    x = keras.applications.mobilenet_v2.preprocess_input(x)
    x = base_model(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(1)(x)
    model = keras.Model(inputs, outputs)
    binary_compile(model, keras.optimizers.Adam(1e-4))
    return model, base_model


def tensorflow_tutorial_fine_tune(model, base_model):
    base_model.trainable = True
    for layer in base_model.layers[:FINE_TUNE_AT]:
        layer.trainable = False
    binary_compile(model, keras.optimizers.RMSprop(1e-5))


# --------------------------------- 4. keras.io: fine-tuning with EfficientNet


def efficientnet_tutorial(augment, weights_dir):
    """keras.io's *Image classification via fine-tuning with EfficientNet*: `input_tensor=`."""
    img_augmentation = keras.Sequential(
        [
            keras.layers.RandomRotation(factor=0.15),
            keras.layers.RandomTranslation(height_factor=0.1, width_factor=0.1),
            keras.layers.RandomFlip(),
            keras.layers.RandomContrast(factor=0.1),
        ],
        name="img_augmentation",
    )
    inputs = keras.Input(shape=(SIZE, SIZE, 3))
    x = img_augmentation(inputs) if augment else inputs
    model = keras.applications.EfficientNetB0(include_top=False, input_tensor=x, weights=None)
    model.trainable = False
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(model.output)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Dropout(0.2, name="top_dropout")(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="pred")(x)
    backbone = model
    model = keras.Model(inputs, outputs, name="EfficientNet")
    model.compile(
        keras.optimizers.Adam(learning_rate=1e-2),
        "categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model, backbone


def efficientnet_fine_tune(model, base_model):
    # The tutorial's unfreeze_model: the top 20 layers of the whole model
    # (the head's 4 among them), except BatchNormalization.
    for layer in model.layers[-20:]:
        if not isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = True
    model.compile(
        keras.optimizers.Adam(learning_rate=1e-5),
        "categorical_crossentropy",
        metrics=["accuracy"],
    )


# ---------------- 5. keras.io: image classification from scratch, augmentation inside


def from_scratch_style(augment, weights_dir):
    """keras.io's *Image classification from scratch* augmentation, then a pretrained backbone.

    The augmentation layers are applied one by one to the inputs (the
    tutorial's `data_augmentation(images)` loop), inline in the model, and
    the backbone is nested without `training=False`.
    """
    data_augmentation_layers = [
        keras.layers.RandomFlip("horizontal"),
        keras.layers.RandomRotation(0.1),
    ]
    inputs = keras.Input(shape=(SIZE, SIZE, 3))
    x = inputs
    for layer in data_augmentation_layers if augment else []:
        x = layer(x)
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1)(x)
    base_model = mobilenet_v2(weights_dir, input_shape=(SIZE, SIZE, 3))
    base_model.trainable = False
    x = base_model(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.25)(x)
    outputs = keras.layers.Dense(1)(x)
    model = keras.Model(inputs, outputs)
    binary_compile(model, keras.optimizers.Adam(3e-4))
    return model, base_model


def from_scratch_fine_tune(model, base_model):
    base_model.trainable = True
    for layer in base_model.layers[:-20]:
        layer.trainable = False
    binary_compile(model, keras.optimizers.Adam(3e-5))


# ------------------------------------------------ 6. KerasHub ImageClassifier


def keras_hub_classifier(augment, weights_dir):
    """A KerasHub `ImageClassifier` on a ResNet backbone (tiny, built from its config).

    Its readers write `ImageClassifier.from_preset(...)`, which downloads;
    the same task class on a backbone built from its config trains the same way.
    """
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[8],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 8],
        stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2],
        block_type="bottleneck_block",
        use_pre_activation=True,
        image_shape=(SIZE, SIZE, 3),
    )
    classifier = keras_hub.models.ImageClassifier(backbone=backbone, num_classes=2)
    classifier.backbone.trainable = False
    classifier.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return classifier, backbone


def keras_hub_fine_tune(model, base_model):
    base_model.trainable = True
    model.compile(
        keras.optimizers.Adam(1e-5),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def layers_unfreeze(depth, lr_ratio):
    """`ProgressiveUnfreeze` from epoch 1 of `base_model.layers[-depth(base_model):]`.

    `lr_ratio` is the script's fine-tuning rate over its head's rate.
    """
    return lambda base_model: keras_transfer.ProgressiveUnfreeze(
        base_model, {1: depth(base_model)}, unit="layers", lr_ratio=lr_ratio, verbose=0
    )


def whole(base_model):
    """`base_model.trainable = True`: every layer of the backbone."""
    return len(base_model.layers)


CASES = {
    "seed script": Tutorial(
        seed_script,
        seed_script_fine_tune,
        layers_unfreeze(lambda b: 20, 0.1),
        augmented=False,
    ),
    "keras guide, Xception nested": Tutorial(
        keras_guide,
        keras_guide_fine_tune,
        layers_unfreeze(whole, 0.01),
        size=XCEPTION_SIZE,
    ),
    "tensorflow tutorial, fine_tune_at": Tutorial(
        tensorflow_tutorial,
        tensorflow_tutorial_fine_tune,
        layers_unfreeze(lambda b: len(b.layers) - FINE_TUNE_AT, 0.1),
    ),
    # model.layers[-20:] less the head's 4 layers: the backbone's last 16.
    "efficientnet tutorial, input_tensor=": Tutorial(
        efficientnet_tutorial,
        efficientnet_fine_tune,
        layers_unfreeze(lambda b: 16, 1e-3),
        one_hot=True,
    ),
    "from-scratch augmentation, pretrained backbone": Tutorial(
        from_scratch_style,
        from_scratch_fine_tune,
        layers_unfreeze(lambda b: 20, 0.1),
    ),
    "keras-hub ImageClassifier": Tutorial(
        keras_hub_classifier,
        keras_hub_fine_tune,
        layers_unfreeze(whole, 0.01),
        augmented=False,
    ),
}


# ------------------------------------------------------------------ the runs


@functools.lru_cache(maxsize=None)
def load_photos(folder, size):
    """((x, y), (x_val, y_val)): the first real flower photos of two classes."""
    train, val = ([], []), ([], [])
    for label, name in enumerate(CLASSES):
        files = sorted((folder / name).glob("*.jpg"))
        for i, path in enumerate(files[: TRAIN_PER_CLASS + VAL_PER_CLASS]):
            image = keras.utils.load_img(path, target_size=(size, size))
            split = train if i < TRAIN_PER_CLASS else val
            split[0].append(keras.utils.img_to_array(image))
            split[1].append(label)
    return tuple((np.stack(x), np.array(y)) for x, y in (train, val))


@pytest.fixture
def photos(flower_photos_dir):
    """`photos(size)`: `load_photos` of the assets' flower photos at `size` px."""
    return functools.partial(load_photos, flower_photos_dir)


@dataclasses.dataclass
class Run:
    """One run's weights at each phase boundary, history, cache and warnings."""

    snapshots: list
    history: dict = None
    info: object = None
    warnings: list = ()
    backbone_bn: frozenset = frozenset()
    backbone: frozenset = frozenset()

    def changed(self, phase):
        """Paths of the weights that moved during `phase` (0: head, 1: fine-tuning)."""
        before, after = self.snapshots[phase], self.snapshots[phase + 1]
        return {path for path in before if not np.array_equal(before[path], after[path])}


def snapshot(model):
    values = {v.path: keras.ops.convert_to_numpy(v).copy() for v in model.weights}
    assert len(values) == len(model.weights), "weight paths are not unique"
    return values


class Snapshots(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.taken = []

    def on_epoch_begin(self, epoch, logs=None):
        self.taken.append(snapshot(self.model))

    def on_train_end(self, logs=None):
        self.taken.append(snapshot(self.model))


def build(case, augment, weights_dir):
    # A fresh session names the layers alike in every run (weights compare by path).
    keras.backend.clear_session()
    keras.utils.set_random_seed(SEED)
    return case.build(augment, weights_dir)


def fit_kwargs(case, photos):
    (x, y), (x_val, y_val) = photos(case.size)
    if case.one_hot:
        y, y_val = keras.utils.to_categorical(y, 2), keras.utils.to_categorical(y_val, 2)
    return dict(x=x, y=y, batch_size=BATCH, validation_data=(x_val, y_val), verbose=0)


def fit_as_written(case, photos, weights_dir):
    """The script itself: fit the head, unfreeze, recompile, fit again."""
    model, base_model = build(case, True, weights_dir)
    snapshots = [snapshot(model)]
    keras.utils.set_random_seed(SEED)
    # Eager: the same updates, without tracing the fully trainable graph
    # (30 s of the Keras guide's Xception on this CPU, for two steps).
    model.run_eagerly = True
    model.fit(**fit_kwargs(case, photos), epochs=1)
    snapshots.append(snapshot(model))
    case.fine_tune(model, base_model)
    model.run_eagerly = True
    model.fit(**fit_kwargs(case, photos), epochs=1)
    snapshots.append(snapshot(model))
    return Run(snapshots)


def fit_with_keras_transfer(case, photos, weights_dir, augment=True, cache=True):
    """The same script, one word and one callback changed: one fit, the head in epoch 0."""
    model, base_model = build(case, augment, weights_dir)
    model = TransferClassifier.from_model(model, cache_frozen_features=cache)
    if not cache:
        # The reference runs eagerly: tracing whole backbones costs more
        # than two steps of them, and eager steps compute the same.
        model.run_eagerly = True
        # The cache runs the frozen backbone in inference mode, its random
        # layers (EfficientNet's stochastic depth) included, where Keras 3
        # turns them on (keras-team/keras#20285): the documented difference.
        for layer in flatten_layers(base_model, include_self=False):
            if isinstance(layer, keras.layers.Dropout):
                layer.rate = 0.0
    snapshots = Snapshots()
    keras.utils.set_random_seed(SEED)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(
            **fit_kwargs(case, photos),
            epochs=2,
            callbacks=[case.unfreeze(base_model), snapshots],
        )
    layers = flatten_layers(base_model, include_self=False)
    bn = [l for l in layers if isinstance(l, keras.layers.BatchNormalization)]
    return Run(
        snapshots.taken,
        history=history.history,
        info=caching.feature_cache_info(model),
        warnings=cache_warnings(caught),
        backbone_bn=frozenset(v.path for l in bn for v in l.weights),
        backbone=frozenset(v.path for v in base_model.weights),
    )


class DecisionMade(Exception):
    """Raised at `on_train_begin`: the cache has decided, no need to train."""


class StopAtTrainBegin(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        raise DecisionMade()


AUGMENTATION = (
    keras.layers.RandomFlip,
    keras.layers.RandomRotation,
    keras.layers.RandomTranslation,
    keras.layers.RandomContrast,
)


def cache_decision(case, photos, weights_dir):
    """What the keras-transfer fit of the script as written decides, before any epoch.

    `fit` decides (one warning, or features cached and `feature_cache_info`
    set) before `on_train_begin`: stopping there spares the training.

    Returns:
        (warnings about the cache, `FeatureCacheInfo` or None, the names a
        warning may give the augmentation: its layers and their container).
    """
    model, base_model = build(case, True, weights_dir)
    model = TransferClassifier.from_model(model)
    names = set()
    for layer in model.layers:
        inner = flatten_layers(layer, include_self=True)
        if any(isinstance(l, AUGMENTATION) for l in inner):
            names.update(l.name for l in inner)
    assert names, "the script has no augmentation layer"
    with warnings.catch_warnings(record=True) as caught, pytest.raises(DecisionMade):
        warnings.simplefilter("always")
        model.fit(
            **fit_kwargs(case, photos),
            epochs=2,
            callbacks=[case.unfreeze(base_model), StopAtTrainBegin()],
        )
    return cache_warnings(caught), caching.feature_cache_info(model), names


def cache_warnings(caught):
    messages = [str(w.message) for w in caught]
    return [m for m in messages if UNCACHED in m or PARTLY_CACHED in m]


def assert_same_training(cached, uncached):
    """The cache claims it, and the losses and final weights are those of the uncached fit."""
    assert cached.info is not None, f"not cached: {cached.warnings}"
    assert cached.warnings == []
    assert uncached.info is None
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(
            cached.history[key],
            uncached.history[key],
            rtol=TOLERANCE,
            atol=TOLERANCE,
            err_msg=key,
        )
    # Weights too: a randomly initialised backbone (Xception here) can give
    # losses that hardly leave log(2), where the head's steps still differ.
    final, reference = cached.snapshots[-1], uncached.snapshots[-1]
    for path, value in reference.items():
        np.testing.assert_allclose(final[path], value, rtol=TOLERANCE, atol=TOLERANCE, err_msg=path)


def assert_trains_as_written(ours, written):
    """The same weights move in each phase as in the script's two fits."""
    # Head phase: the backbone is frozen in both; exactly the same weights move.
    assert ours.changed(0) == written.changed(0)
    assert ours.changed(0) and not ours.changed(0) & ours.backbone
    # Fine-tuning: the weights the script unfreezes train, and only those,
    # BatchNormalization of the backbone aside (frozen here, see the docstring).
    bn = ours.backbone_bn
    assert (written.changed(1) & ours.backbone) - bn, "the script unfroze nothing"
    assert ours.changed(1) - bn == written.changed(1) - bn
    assert not (ours.changed(0) | ours.changed(1)) & bn, "a backbone BatchNormalization moved"


@pytest.mark.parametrize(
    "case", [pytest.param(case, id=name, marks=case.marks) for name, case in CASES.items()]
)
def test_tutorial_trains_the_same_layers_and_caches_only_what_it_may(case, photos, weights_dir):
    written = fit_as_written(case, photos, weights_dir)
    if case.augmented:
        # Augmentation draws anew each epoch: never one cached clean view.
        warned, info, names = cache_decision(case, photos, weights_dir)
        assert len(warned) == 1, warned or f"no warning, cached: {info}"
        assert any(f"'{name}'" in warned[0] for name in names), (warned, names)
        assert info is None, "cached, with a warning"
    # The rest of the script caches, and trains as uncached and as written.
    cached = fit_with_keras_transfer(case, photos, weights_dir, augment=not case.augmented)
    uncached = fit_with_keras_transfer(
        case, photos, weights_dir, augment=not case.augmented, cache=False
    )
    assert_trains_as_written(cached, written)
    assert_same_training(cached, uncached)


# ------------------------------- augmentation inside the backbone is kept


def augmentation_in_the_backbone(augmented_views):
    """Augmentation fed into the backbone through `input_tensor=`, a recording head.

    The EfficientNet tutorial's pattern on a small backbone: the augmentation
    layers become layers of `base_model`. `record` sums what the head trains
    on in each epoch (the cached features, when cached).
    """
    keras.backend.clear_session()
    keras.utils.set_random_seed(SEED)
    inputs = keras.Input(shape=(SIZE, SIZE, 3))
    x = keras.layers.RandomFlip(name="flip")(inputs)
    x = keras.layers.RandomTranslation(0.2, 0.2, name="translate")(x)
    base_model = keras.applications.MobileNetV2(
        alpha=0.35, include_top=False, input_tensor=x, weights=None
    )
    base_model.trainable = False
    x = keras.layers.GlobalAveragePooling2D()(base_model.output)
    x = RecordInputs(name="record")(x)
    outputs = keras.layers.Dense(2, activation="softmax")(x)
    model = TransferClassifier(inputs, outputs, augmented_views=augmented_views)
    model.compile("adam", "sparse_categorical_crossentropy")
    return model, base_model


@pytest.mark.parametrize(
    "augmented_views, unfreeze",
    [
        pytest.param(None, False, id="alone, no views"),
        pytest.param(2, False, id="alone, 2 views"),
        pytest.param(None, True, id="ProgressiveUnfreeze, no views"),
        pytest.param(2, True, id="ProgressiveUnfreeze, 2 views"),
    ],
)
def test_augmentation_inside_the_backbone_is_not_silently_dropped(
    augmented_views, unfreeze, photos
):
    model, base_model = augmentation_in_the_backbone(augmented_views)
    callbacks = [EpochTotals(model.get_layer("record"))]
    if unfreeze:
        # Names base_model as the backbone, the augmentation among its
        # layers; its unfreezing starts after this fit's epochs.
        callbacks.append(
            keras_transfer.ProgressiveUnfreeze(base_model, {3: 10}, unit="layers", verbose=0)
        )
    (x, y), _ = photos(SIZE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=BATCH, epochs=3, shuffle=False, callbacks=callbacks, verbose=0)
    warned = [str(w.message) for w in caught if UNCACHED in str(w.message)]
    info = caching.feature_cache_info(model)
    if augmented_views is None:
        assert len(warned) == 1 and "'flip'" in warned[0], warned or f"no warning, cached: {info}"
        assert info is None
    else:
        assert warned == [] and info is not None and info.views == 2, (warned, info)
        totals = callbacks[0].totals
        # Epochs 0 and 2 train on view 0, epoch 1 on view 1: another draw.
        assert totals[0] == totals[2]
        assert totals[0] != totals[1], "the two views are one clean view"
