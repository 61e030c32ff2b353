"""The layer classes of earlier releases, for the model files that hold them.

Releases before the model was made of Keras' own layers saved
`BackbonePreprocessing` and `ClassifierHead` in their files (and a head that
carried the class names and the resize mode). Both are registered here under
their old names so those files load, and `keras_transfer.load_model` turns
such a model into today's (`upgrade_legacy_layers`): the same weights in
`keras_transfer.layers.backbone_preprocessing`, `global_pooling` and
`classifier_head`. Both classes run the layers those functions build, so
there is one definition of what each computes.

New models do not need them: `build_classifier` builds the new layers, and
models of your own can call `keras_transfer.layers.classifier_head(...)`.
"""

import keras
from keras import ops

from keras_transfer import defaults
from keras_transfer import layers as layers_lib
from keras_transfer.data.images import check_resize
from keras_transfer.utils.tensors import global_dtype_policy


@keras.saving.register_keras_serializable(package="keras_transfer")
class BackbonePreprocessing(keras.layers.Layer):
    """Scales raw RGB pixels as `keras_transfer.layers.backbone_preprocessing` does.

    Example:

    >>> layer = keras_transfer.BackbonePreprocessing("tf")
    >>> layer(np.array([[[[0.0, 127.5, 255.0]]]])).numpy()
    array([[[[-1.,  0.,  1.]]]], dtype=float32)

    Args:
        mode: one of `"tf"`, `"caffe"`, `"torch"`, `"none"`.
        **kwargs: base layer keyword arguments, e.g. `name`, `dtype`.
    """

    def __init__(self, mode, **kwargs):
        # Resized pixels are not integers: float16 would round them before
        # the float32 scaling.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        scale, offset = layers_lib.rescaling_of(mode)
        self.mode = mode
        self.rescaling = keras.layers.Rescaling(scale, offset, dtype="float32")

    def build(self, input_shape):
        self.rescaling.build(input_shape)

    def call(self, inputs):
        x = self.rescaling(ops.cast(inputs, "float32"))
        if self.mode == "caffe":
            x = ops.flip(x, axis=-1)
        return ops.cast(x, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="keras_transfer")
class ClassifierHead(keras.layers.Layer):
    """`global_pooling` then `classifier_head`, as one layer that stores class names.

    Example:

    >>> head = keras_transfer.ClassifierHead(2, class_names=["cats", "dogs"])
    >>> head(np.zeros((2, 7, 7, 1280))).shape
    (2, 2)

    Args:
        num_classes: number of classes, at least 2.
        dropout: dropout rate before each Dense layer, in [0, 1).
        hidden_units: width of an optional hidden ReLU layer; 0 for none.
        pooling: `"avg"` or `"max"`; `(batch, features)` inputs are not pooled.
        class_names: None, or the name of each output.
        resize: None, or `"stretch"`, `"crop"` or `"pad"`.
        **kwargs: base layer keyword arguments, e.g. `name`.
    """

    # What `keras_transfer.layers.class_names_of` and `resize_of` read.
    stores_metadata = True

    def __init__(
        self,
        num_classes,
        dropout=defaults.HEAD_DROPOUT,
        hidden_units=0,
        pooling="avg",
        class_names=None,
        resize=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        layers = {
            layer.name: layer
            for layer in layers_lib.head_layers(num_classes, dropout, hidden_units)
        }
        self.resize = None if resize is None else check_resize(resize)
        self._class_names = layers_lib.check_class_names(class_names, num_classes)
        self.num_classes, self.dropout = int(num_classes), float(dropout)
        self.hidden_units, self.pooling = int(hidden_units), pooling
        # The attribute names are the weights' paths in the files of old releases.
        self.pool = layers_lib.global_pooling(pooling, name="pool")
        self.dropout_layer = layers.get("dropout")
        self.hidden = layers.get("hidden")
        self.hidden_dropout = layers.get("hidden_dropout")
        self.classifier = layers["predictions"]

    @property
    def head_layers(self):
        """The layers after the pooling, in order."""
        layers = (self.dropout_layer, self.hidden, self.hidden_dropout, self.classifier)
        return [layer for layer in layers if layer is not None]

    @property
    def class_names(self):
        return None if self._class_names is None else list(self._class_names)

    def build(self, input_shape):
        shape = (input_shape[0], input_shape[-1])
        for layer in self.head_layers:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)

    def call(self, inputs, training=None):
        x = self.pool(inputs) if len(inputs.shape) == 4 else inputs
        for layer in self.head_layers:
            x = layer(x, training=training) if isinstance(layer, keras.layers.Dropout) else layer(x)
        return x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def compute_output_spec(self, inputs, training=None):
        return keras.KerasTensor((inputs.shape[0], self.num_classes), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            dropout=self.dropout,
            hidden_units=self.hidden_units,
            pooling=self.pooling,
            class_names=self.class_names,
            resize=self.resize,
        )
        return config


def holds_legacy_layers(model):
    """Whether `model` has a `BackbonePreprocessing` or `ClassifierHead` layer."""
    return any(
        isinstance(layer, (BackbonePreprocessing, ClassifierHead))
        for layer in getattr(model, "layers", ())
    )


def upgrade_legacy_layers(model):
    """`(inputs, outputs, metadata)` of `model` with today's layers for its legacy ones.

    The backbone and the head's weights are `model`'s own (shared, not
    copied); the preprocessing is built anew (it has no trained weights).
    `metadata` holds the class names and resize mode the old head stored.

    Example:

    ```python
    inputs, outputs, metadata = upgrade_legacy_layers(old_model)
    keras_transfer.TransferClassifier(inputs, outputs, **metadata)
    ```

    Args:
        model: a built functional model.
    """
    metadata = {}

    def call(layer, *args, **kwargs):
        x = args[0]
        if isinstance(layer, BackbonePreprocessing):
            with global_dtype_policy(layer.dtype_policy.name):
                return layers_lib.backbone_preprocessing(layer.mode, tuple(x.shape[1:]))(x)
        if isinstance(layer, ClassifierHead):
            metadata.update(class_names=layer.class_names, resize=layer.resize)
            if len(x.shape) == 4:
                x = layer.pool(x)
            return keras.Sequential(layer.head_layers, name=layer.name)(x)
        return layer(*args, **kwargs)

    graph = keras.models.clone_model(
        keras.Model(model.input, model.output, name=model.name),
        clone_function=lambda layer: layer,
        call_function=call,
    )
    return graph.input, graph.output, metadata
