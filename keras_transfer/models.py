"""`build_classifier`: a pretrained backbone with a new head, as one Keras model.

The model is a `TransferClassifier`, a functional `keras.Model`:

    image -> preprocessing -> backbone (frozen, inference mode) -> pool -> head

whose `fit` computes the output of the frozen layers once per image instead
of once per epoch (see `keras_transfer.caching`).

The backbone is the `keras.applications` model itself, nested under the name
Keras gives it, so `find_backbone` (and the callbacks that use it) can find it
and the registry can tell which backbone it is.

BatchNormalization: the backbone is called with `training=False`, as the Keras
transfer-learning guide does, but Keras 3 replaces that flag with the outer
one when the whole model runs with `training=True` (as `fit` does; see
keras-team/keras#20285). What keeps a BatchNormalization layer on its ImageNet
statistics during `fit` is `trainable=False` on that layer: a frozen backbone
is safe, and fine-tuning should unfreeze the other layers of a block and leave
its BatchNormalization layers frozen.
"""

import os

import keras

from keras_transfer import backbones as backbones_lib
from keras_transfer.backbones import find_backbone  # noqa: F401  (public path)
from keras_transfer import caching
from keras_transfer import defaults
from keras_transfer.errors import ConfigurationError
from keras_transfer import layers as layers_lib
from keras_transfer.data.images import check_resize
from keras_transfer.layers import class_names_of  # noqa: F401  (public path)
from keras_transfer.layers import resize_of  # noqa: F401  (public path)
from keras_transfer import portable
from keras_transfer.portable import load_model  # noqa: F401  (public path)
from keras_transfer.portable import save_model  # noqa: F401  (public path)
from keras_transfer.utils.checks import check_int
from keras_transfer.utils.internals import releasing_custom_gradients
from keras_transfer.utils.tensors import global_dtype_policy

_HEAD_ARGS = ("hidden_units", "pooling", "dropout")


def build_classifier(
    backbone,
    num_classes,
    input_shape=None,
    weights="imagenet",
    dropout=defaults.HEAD_DROPOUT,
    head=None,
    name=None,
    cache_frozen_features=True,
    dtype=None,
    class_names=None,
    resize=defaults.RESIZE,
):
    """Builds an image classifier from a registered backbone.

    The backbone starts frozen (`trainable=False`); compile and fit to train
    the head, then unfreeze blocks (e.g. with `ProgressiveUnfreeze`) to
    fine-tune. The model takes raw RGB pixels in [0, 255] and outputs float32
    class probabilities. `model.save("m.keras")` writes a file that plain
    Keras loads (`keras.models.load_model`, default `safe_mode=True`, no
    `import keras_transfer` needed) as a functional model of Keras' own
    layers; `keras_transfer.models.load_model` gives back this model itself
    (see `keras_transfer.portable`).

    `fit` trains on cached outputs of the frozen layers (computed once per
    image, see `TransferClassifier`); `cache_frozen_features=False` turns
    that off. On a GPU, `dtype="mixed_float16"` and
    `model.compile(..., jit_compile=True)` (XLA) speed training up further.

    Example:

    ```python
    model = keras_transfer.build_classifier(
        "mobilenet_v2_050", num_classes=5, input_shape=(128, 128, 3))
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(train_ds, validation_data=val_ds, epochs=5)
    ```

    Args:
        backbone: a registered backbone name (see `list_backbones()`) or a
            `BackboneSpec`.
        num_classes: number of classes, at least 2.
        input_shape: `(height, width, 3)`; None for the backbone's default
            (e.g. `(224, 224, 3)`). Height and width must be at least the
            backbone's `min_input_size` and may differ.
        weights: `"imagenet"` (default; from the Keras cache, downloaded if
            possible), None for random initialisation, or the path to a
            weights file for this backbone.
        dropout: dropout rate of the head. Defaults to 0.2.
        head: None, or a dict of further head arguments: `hidden_units`
            (a hidden ReLU layer's width, 0 for none, see
            `keras_transfer.layers.classifier_head`) and `pooling` (`"avg"`
            or `"max"`), e.g. `{"hidden_units": 256, "pooling": "max"}`.
        name: the model's name; defaults to `"<backbone>_classifier"`.
        cache_frozen_features: bool, whether `fit` computes the output of
            the frozen layers once and trains on it. Defaults to True.
        dtype: None (default: the global dtype policy, usually
            `"float32"`), or a dtype policy name for the whole model, e.g.
            `"mixed_float16"` (GPU) or `"mixed_bfloat16"` (TPU, recent
            CPUs). Mixed-precision models still output float32
            probabilities, and `compile` adds loss scaling for float16.
        class_names: None (default), or the `num_classes` distinct names of
            the classes, in label order (e.g. the `class_names` of
            `load_image_folder`). They are saved with the model;
            `keras_transfer.layers.class_names_of(model)` returns them.
        resize: how the training images are fitted to the input size
            (`"stretch"`, `"crop"`, `"pad"`: the `resize` of
            `load_image_folder`, whose default is this one's). Saved with
            the model, so that `predict_images`, `keras-transfer predict`
            and `evaluate` resize as training did;
            `keras_transfer.layers.resize_of(model)` reads it.

    Returns:
        A `TransferClassifier` with input `"image"` and layers
        `"preprocessing"` (`keras_transfer.layers.backbone_preprocessing`),
        the backbone, `"pool"` (for a backbone that outputs feature maps)
        and `"head"` (`keras_transfer.layers.classifier_head`): all Keras'
        own classes, so a saved model is plain Keras.

    Raises:
        ConfigurationError: unknown backbone, bad input shape, fewer than two
            classes, unknown head arguments or dtype policy, class names
            that are not `num_classes` distinct strings.
        WeightsError: the weights cannot be found or do not fit.
    """
    spec = backbones_lib.get_backbone(backbone)
    # Pretrained or not, the model always takes RGB: the data loader converts
    # grayscale and RGBA images, so a mismatch here is a configuration slip.
    shape = spec.check_input_shape(input_shape)
    head_kwargs = _head_kwargs(head, dropout)
    pooling = head_kwargs.pop("pooling", "avg")
    policy = _dtype_policy(dtype)
    # keras.applications constructors take no dtype: the global policy,
    # set for the duration of the build, reaches every layer.
    with global_dtype_policy(policy or keras.config.dtype_policy()):
        # Checked before the (possibly slow) backbone build.
        pool = layers_lib.global_pooling(pooling)
        classifier_head = layers_lib.classifier_head(num_classes, **head_kwargs)
        layers_lib.check_class_names(class_names, num_classes)
        check_resize(resize)

        features = spec.build(input_shape=shape, weights=weights)
        features.trainable = False

        inputs = keras.Input(shape=shape, name="image")
        x = layers_lib.backbone_preprocessing(spec.preprocessing, shape)(inputs)
        x = features(x, training=False)
        if len(x.shape) == 4:
            x = pool(x)
        outputs = classifier_head(x)
        return TransferClassifier(
            inputs,
            outputs,
            name=name or f"{spec.name}_classifier",
            cache_frozen_features=cache_frozen_features,
            class_names=class_names,
            resize=resize,
        )


def _dtype_policy(dtype):
    if dtype is None:
        return None
    try:
        return keras.dtype_policies.get(dtype)
    except (ValueError, TypeError) as e:
        raise ConfigurationError(
            f"Unrecognized value for dtype: {dtype!r}. Expected None or a "
            "dtype policy name such as 'float32', 'mixed_float16' or "
            f"'mixed_bfloat16' ({e})."
        ) from None


@keras.saving.register_keras_serializable(package="keras_transfer")
class TransferClassifier(keras.Model):
    """A functional model whose `fit` computes frozen layers once per image.

    It also keeps what its outputs mean: `class_names` and `resize`, saved
    with it (`keras_transfer.layers.class_names_of(model)` and `resize_of`
    read them).

    `build_classifier` returns one. While layers are frozen (the backbone,
    or its lower blocks while `ProgressiveUnfreeze` trains the top ones),
    their output for an image never changes, yet a plain `fit` recomputes
    it every epoch: most of the work of transfer learning. `fit` here
    computes it once per training and validation image (one inference
    pass, before the first epoch), then trains only the part that the
    current phase trains, starting from the cached tensors:

    - head-only phase: the head on the backbone's pooled features, a few
      milliseconds per epoch instead of a forward pass of the backbone;
    - fine-tuning the top blocks: those blocks and the head, from the
      output of the last frozen block. With `ProgressiveUnfreeze` among the
      callbacks the cache follows its schedule, phase by phase.

    Call `fit` as usual (arrays or a finite `tf.data.Dataset`, validation
    data, callbacks, `initial_epoch`, `class_weight`, `sample_weight`):
    results match uncached training, callbacks see one ordinary `fit`, and
    `evaluate` and `predict` are unchanged. Features are kept in memory up
    to `cache_memory_limit` bytes and written to a temporary folder beyond
    it (read back by row, in the order the in-memory cache uses). Where caching would change the results (random
    augmentation layers before frozen layers, random operations in the
    `tf.data` pipeline) or cannot work (`steps_per_epoch`, generators,
    `PyDataset`), `fit` trains uncached and says why in one warning. After
    a cached fit, `keras_transfer.caching.feature_cache_info(model)` tells
    what was cached and how long it took.

    Each `fit` call computes its own cache, unless the model has a
    `feature_store` that holds the same features from an earlier fit (a
    KerasTuner search gives all its trials one). Layers whose output is cached
    must stay frozen for the whole `fit`: unfreeze with
    `ProgressiveUnfreeze` (its schedule is known in advance), not with a
    callback of your own (`fit` raises a `ConfigurationError` if one does).

    Augmentation: random layers (`RandomFlip`, `RandomRotation`, ...)
    before frozen layers make each epoch's inputs new, so by default `fit`
    trains uncached. `augmented_views=K` caches them instead: one pass
    computes K augmented views of every training image (the random layers
    in training mode, everything else in inference mode; validation
    unaugmented) and epoch `e` trains on view `e % K`, in every phase. What
    changes against fresh randomness each epoch: each image is seen in K
    distinct augmentations instead of one new one per epoch (with
    K >= epochs, the same distribution); the random layers draw the views
    from their own seed generators, reproducible under
    `keras.utils.set_random_seed` but not the draws of an uncached fit.
    Memory and disk: K times the training features.

    GPU: `build_classifier(..., dtype="mixed_float16")` for mixed precision
    and `compile(..., jit_compile=True)` for XLA apply to the cache pass
    too. On CPU, XLA makes MobileNetV2 over 10x slower (measured with
    TensorFlow 2.21): leave `jit_compile` at its default there.

    Example:

    ```python
    model = keras_transfer.build_classifier(
        "mobilenet_v2_035", num_classes=2, input_shape=(64, 64, 3),
        weights=None)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    x = np.random.uniform(0, 255, (16, 64, 64, 3)).astype("float32")
    y = np.random.randint(0, 2, (16,))
    unfreeze = keras_transfer.ProgressiveUnfreeze(schedule={2: 3}, verbose=0)
    model.fit(x, y, epochs=4, callbacks=[unfreeze], verbose=0)
    keras_transfer.caching.feature_cache_info(model).boundaries
    # (('pool',), ('block_14_add',))
    ```

    Args:
        *args: `inputs, outputs`, as for a functional `keras.Model`.
        cache_frozen_features: bool, whether `fit` caches the output of
            frozen layers. Defaults to True.
        cache_memory_limit: int, bytes of cached features kept in memory;
            beyond, they go to disk. Defaults to 2 GiB.
        cache_dir: folder for features that do not fit in memory; None
            (default) for the system's temporary folder. What `fit`
            writes there is deleted when it returns (or, with a
            `feature_store`, when the store drops it).
        feature_store: None (default), or a `keras_transfer.caching.FeatureStore`
            shared with other models: `fit` then reuses features that an
            earlier fit computed from identical frozen layers and data, and
            leaves its own there for the next. Also settable as the
            `feature_store` attribute.
        augmented_views: None or 0 (default: random layers before frozen
            ones make `fit` train uncached), or an int K >= 1: cache K
            augmented views of each training image, epoch `e` training on
            view `e % K`. Also settable as the `augmented_views` attribute.
        class_names: None (default), or one distinct name per output, in
            output order. Kept as the tuple `class_names`.
        resize: None (default), or how the training images were fitted to
            the input size: `"stretch"`, `"crop"` or `"pad"` (see
            `keras_transfer.data.decode_image_file`). Kept as `resize`.
        **kwargs: `name` and the other arguments of a functional
            `keras.Model`.
    """

    def __init__(
        self,
        *args,
        cache_frozen_features=True,
        cache_memory_limit=defaults.CACHE_MEMORY_LIMIT,
        cache_dir=None,
        feature_store=None,
        augmented_views=None,
        class_names=None,
        resize=None,
        **kwargs,
    ):
        if not isinstance(cache_frozen_features, bool):
            raise ConfigurationError(
                "cache_frozen_features must be True or False. Received: "
                f"cache_frozen_features={cache_frozen_features!r}"
            )
        if (
            isinstance(cache_memory_limit, bool)
            or not isinstance(cache_memory_limit, int)
            or cache_memory_limit < 0
        ):
            raise ConfigurationError(
                "cache_memory_limit must be a number of bytes >= 0 (0 keeps "
                "every cached feature on disk). Received: "
                f"cache_memory_limit={cache_memory_limit!r}"
            )
        if cache_dir is not None and not os.path.isdir(cache_dir):
            raise ConfigurationError(
                f"cache_dir must be an existing folder or None. Received: cache_dir={cache_dir!r}"
            )
        if feature_store is not None and not isinstance(feature_store, caching.FeatureStore):
            raise ConfigurationError(
                "feature_store must be a keras_transfer.caching.FeatureStore or "
                f"None. Received: feature_store={feature_store!r}"
            )
        augmented_views = check_int(
            augmented_views,
            "augmented_views",
            optional=True,
            hint="None or 0 trains uncached when random layers precede frozen ones.",
        )
        super().__init__(*args, **kwargs)
        outputs = self.outputs if len(self.outputs) == 1 else ()
        num_classes = int(outputs[0].shape[-1] or 0) if outputs else 0
        # A tuple: Keras would wrap a list attribute in a tracking list.
        self._class_names = layers_lib.check_class_names(class_names, num_classes)
        self.resize = None if resize is None else check_resize(resize)
        self.augmented_views = augmented_views or None
        self.feature_store = feature_store
        self.cache_frozen_features = cache_frozen_features
        self.cache_memory_limit = cache_memory_limit
        self.cache_dir = None if cache_dir is None else os.fspath(cache_dir)

    @classmethod
    def from_model(cls, model, **cache_options):
        """A `TransferClassifier` over the layers of a built functional or `Sequential` model.

        The one-word swap for a model built elsewhere: the result shares
        `model`'s layers and weights (training one trains the other) and its
        `fit` caches frozen layers. A `Sequential` model becomes a functional
        graph of the same layers. A compiled `model` is compiled again from
        `get_compile_config()`: same loss, metrics and optimizer settings,
        fresh optimizer state.

        Example:

        ```python
        model = keras.Sequential([keras.Input((96, 96, 3)), base_model,
                                  keras.layers.GlobalAveragePooling2D(),
                                  keras.layers.Dense(2, activation="softmax")])
        model.compile("adam", "sparse_categorical_crossentropy")
        model = keras_transfer.TransferClassifier.from_model(model)
        ```

        Args:
            model: a built functional or `Sequential` Keras model.
            **cache_options: `cache_frozen_features`, `cache_memory_limit`,
                `cache_dir`, `feature_store`, `augmented_views`, as for the
                constructor.

        Raises:
            ConfigurationError: a subclassed or unbuilt model, or compile
                settings that cannot be restored (compile the result yourself).
        """
        if isinstance(model, keras.Sequential) and getattr(model, "inputs", None):
            source = model.inputs[0]
            inputs = outputs = keras.Input(shape=source.shape[1:], dtype=source.dtype)
            for layer in model.layers:
                outputs = layer(outputs)
        elif not isinstance(model, keras.Sequential) and getattr(model, "outputs", None):
            inputs, outputs = model.input, model.output
        else:
            raise ConfigurationError(
                f"from_model needs a built functional or Sequential model; {model.name!r} "
                f"({type(model).__name__}) has no inputs: start a Sequential with "
                "keras.Input(shape), or build the model with keras.Model(inputs, outputs)."
            )
        # A model that knows what its outputs mean keeps it.
        for name in ("class_names", "resize"):
            cache_options.setdefault(name, layers_lib.stored_metadata(model, name))
        classifier = cls(inputs, outputs, name=model.name, **cache_options)
        if model.compiled:
            try:
                classifier.compile_from_config(model.get_compile_config())
            except (TypeError, ValueError) as error:
                raise ConfigurationError(
                    f"from_model could not restore the compile settings of {model.name!r} "
                    f"({error}). Call it before compile, or compile the result yourself."
                ) from None
        return classifier

    # What `keras_transfer.layers.class_names_of` and `resize_of` read.
    stores_metadata = True

    @property
    def class_names(self):
        """The name of each output as a list, or None when not given."""
        return None if self._class_names is None else list(self._class_names)

    def __call__(self, *args, **kwargs):
        # During a cached fit the traced steps receive feature dictionaries
        # instead of images; everything else (images, symbolic tensors)
        # takes the ordinary path.
        if args and caching.is_feature_batch(args[0]):
            return caching.call_on_features(self, args[0], kwargs.get("training"))
        return super().__call__(*args, **kwargs)

    def call(self, inputs, training=None, mask=None, **kwargs):
        # Keras' JAX trainer calls `call` directly (`stateless_call`), not
        # `__call__`: the cached fit's feature batches arrive here.
        if caching.is_feature_batch(inputs):
            return caching.call_on_features(self, inputs, training)
        return super().call(inputs, training=training, mask=mask, **kwargs)

    def fit(
        self,
        x=None,
        y=None,
        batch_size=None,
        epochs=1,
        verbose="auto",
        callbacks=None,
        validation_split=0.0,
        validation_data=None,
        shuffle=True,
        class_weight=None,
        sample_weight=None,
        initial_epoch=0,
        steps_per_epoch=None,
        validation_steps=None,
        validation_batch_size=None,
        validation_freq=1,
    ):
        kwargs = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        # TensorFlow never frees the gradient functions a traced step registers.
        with releasing_custom_gradients():
            if not self.cache_frozen_features:
                return super().fit(**kwargs)
            return caching.fit(self, super().fit, kwargs)

    def save(self, filepath, overwrite=True, zipped=None, **kwargs):
        """Saves a `.keras` file that plain Keras loads, without keras_transfer.

        The file holds `keras_transfer.portable.portable_model(self)`: the
        same layers and weights in a plain functional model (so Keras'
        `ModelCheckpoint` writes such files too), and the class names and
        cache settings beside them. `keras.models.load_model`
        gives that functional model back (its `fit` does not cache:
        `TransferClassifier.from_model(model)`);
        `keras_transfer.models.load_model` gives back this class, with the
        class names and cache settings. Arguments as for `keras.Model.save`.

        Example:

        ```python
        model.save("model.keras")
        keras.models.load_model("model.keras").predict(images)  # same predictions
        ```
        """
        portable.save_portable(self, filepath, overwrite=overwrite, zipped=zipped, **kwargs)

    def build_from_config(self, config):
        # A functional model is built when it is constructed. Keras would
        # build it again from the recorded input shape, which is None for
        # functional models, and fail ("Undefined shapes are not
        # supported"): KerasTuner's Hyperband does this to resume a trial
        # from its checkpoint.
        if self.built:
            return
        super().build_from_config(config)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "cache_frozen_features": self.cache_frozen_features,
                "cache_memory_limit": self.cache_memory_limit,
                "augmented_views": self.augmented_views,
                "class_names": self.class_names,
                "resize": self.resize,
            }
        )
        return config


def _head_kwargs(head, dropout):
    if head is None:
        head = {}
    if not isinstance(head, dict):
        raise ConfigurationError(
            f"head must be None or a dict of head arguments, e.g. "
            f"{{'hidden_units': 256}}. Received: head={head!r}"
        )
    unknown = sorted(set(head) - set(_HEAD_ARGS))
    if unknown:
        raise ConfigurationError(
            f"Unknown head argument(s) {unknown}. Expected any of {list(_HEAD_ARGS)}."
        )
    return {"dropout": dropout, **head}
