"""`explain` (module `grad_cam`): Grad-CAM heatmaps of a classifier's predictions, for any way of nesting a backbone.

Grad-CAM (Selvaraju et al., 2017) weights the channels of a convolutional
feature map by the mean gradient of a class score over them and keeps the
positive part: where in the image the evidence for that class lies.

The keras.io recipe builds `keras.Model(model.inputs, [target.output,
model.output])`, which fails with "Graph disconnected" when the target
layer sits in a nested backbone (`base_model(x, training=False)`, and every
`build_classifier` model): tensorflow/tensorflow#44462. Here no new model is
built. The model is called as it is, in inference mode (augmentation and
dropout layers off), while the target layer's `call` is wrapped for the
duration to hand its output to the gradient tape (on JAX: to add a zero
whose gradient `jax.grad` takes). So the same code serves a
nested backbone, an inline one (`MobileNetV2(input_tensor=...)`), a
KerasHub classifier and a `build_classifier` model.

The class score is the logit: a final softmax (a `Dense` or `Activation`
with `activation="softmax"`, or a `Softmax` layer) is bypassed while the
gradients are taken, since a saturated probability has no gradient left.

The target layer is, in this order: the one given; the last 4-D layer of
the last block of a registered backbone found in the model
(`keras_transfer.backbones`); the last layer with a 4-D output (batch,
height, width, channels) before the pooling.
"""

import contextlib

import numpy as np

from keras_transfer import backbones
from keras_transfer.errors import ConfigurationError
from keras_transfer.utils.checks import check_int

# Images per forward and backward pass: bounds memory on large inputs.
BATCH_SIZE = 16


def explain(model, images, class_index=None, layer=None, batch_size=BATCH_SIZE):
    """Grad-CAM heatmaps of `model` on `images`, one per image, at the input size.

    Example:

    ```python
    model = keras_transfer.build_classifier("mobilenet_v2_050", 5, input_shape=(160, 160, 3))
    images = np.random.uniform(0, 255, (2, 160, 160, 3)).astype("float32")
    heatmaps = keras_transfer.explain(model, images)  # predicted class of each image
    heatmaps.shape  # (2, 160, 160), values in [0, 1]
    keras_transfer.explain(model, images, class_index=3)  # the evidence for class 3
    ```

    Args:
        model: a Keras image classifier: a `build_classifier` model, a
            functional model with a nested backbone or an inline one, or a
            KerasHub image classifier.
        images: array `(N, height, width, channels)`, as the model takes
            them (raw pixels in [0, 255] for `build_classifier` models).
        class_index: None (default) for each image's predicted class; an
            int for one class for all images; or N ints, one per image.
        layer: None (default) to find the target layer (see the module's
            docstring); a layer name (searched in nested models too); or a
            layer of the model.
        batch_size: images per pass. Defaults to 16.

    Returns:
        A float32 array `(N, height, width)`, each map scaled to [0, 1]
        (its maximum is 1; a map with no positive evidence is all 0).

    Raises:
        ConfigurationError: the backend is neither TensorFlow nor JAX, the model has no
            4-D feature map, `layer` is not in it, `images` is not a batch
            of images of the model's input size, or `class_index` is out of
            range.
    """
    import keras

    if keras.backend.backend() not in ("tensorflow", "jax"):
        raise ConfigurationError(
            f"explain needs the TensorFlow or JAX backend; Keras runs on "
            f"{keras.backend.backend()!r}. Set KERAS_BACKEND=tensorflow (or jax) "
            "before Python starts."
        )
    images = _check_images(model, images)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    target = target_layer(model, layer)
    classes = _check_classes(class_index, len(images))
    maps = []
    with _softmax_bypassed(model):
        for start in range(0, len(images), batch_size):
            stop = start + batch_size
            chosen = None if classes is None else classes[start:stop]
            maps.append(_grad_cam(model, target, images[start:stop], chosen))
    return np.concatenate(maps) if maps else np.zeros((0, *images.shape[1:3]), "float32")


def _grad_cam(model, target, images, classes):
    """Grad-CAM maps of one batch, `(n, height, width)` in [0, 1]."""
    import keras

    if keras.backend.backend() == "jax":
        feature_map, gradients = _jax_gradients(model, target, images, classes)
    else:
        feature_map, gradients = _tf_gradients(model, target, images, classes)
    feature_map = np.asarray(feature_map, dtype="float32")
    weights = np.asarray(gradients, dtype="float32").mean(axis=(1, 2), keepdims=True)
    cam = np.maximum((weights * feature_map).sum(axis=-1), 0.0)
    # Bilinear with half-pixel centres: feature cell (i, j) lands on the
    # image region it sees, not shifted towards the top-left corner.
    cam = keras.ops.image.resize(cam[..., None], images.shape[1:3], interpolation="bilinear")
    cam = np.maximum(keras.ops.convert_to_numpy(cam)[..., 0], 0.0)
    peak = cam.reshape(len(cam), -1).max(axis=1)
    return (cam / np.where(peak > 0, peak, 1.0)[:, None, None]).astype("float32")


def _tf_gradients(model, target, images, classes):
    """`(feature map, its gradient)`: the tape watches the target's output as it runs."""
    import tensorflow as tf

    recorded = []

    def watch(output):
        tape.watch(output)
        recorded.append(output)
        return output

    with tf.GradientTape() as tape, _transformed_output(target, watch):
        scores = _scores(model(tf.convert_to_tensor(images), training=False))
        chosen = _chosen(scores, classes)
    _check_ran(target, recorded)
    return recorded[-1], tape.gradient(chosen, recorded[-1])


def _jax_gradients(model, target, images, classes):
    """`(feature map, its gradient)`: JAX differentiates a zero added to the output."""
    import jax
    import jax.numpy as jnp

    recorded = []
    with _transformed_output(target, lambda output: recorded.append(output) or output):
        scores = _scores(model(jnp.asarray(images), training=False))
    _check_ran(target, recorded)
    classes = np.asarray(scores).argmax(-1) if classes is None else classes

    def score(delta):
        with _transformed_output(target, lambda output: output + delta):
            return _chosen(_scores(model(jnp.asarray(images), training=False)), classes)

    # d score / d delta at delta = 0 is d score / d (the target's output).
    return recorded[-1], jax.grad(score)(jnp.zeros_like(recorded[-1]))


def _scores(outputs):
    return outputs[0] if isinstance(outputs, (list, tuple)) else outputs


def _chosen(scores, classes):
    """The sum over the batch of each image's score for its class (predicted if None)."""
    import keras

    if classes is None:
        classes = keras.ops.argmax(scores, axis=-1)
    _check_in_range(keras.ops.convert_to_numpy(classes), scores.shape[-1])
    one_hot = keras.ops.one_hot(keras.ops.convert_to_tensor(classes), scores.shape[-1])
    return keras.ops.sum(scores * keras.ops.cast(one_hot, scores.dtype))


def _check_ran(target, recorded):
    if not recorded:
        raise ConfigurationError(
            f"Layer {target.name!r} did not run when the model was called: pass "
            "layer= a layer that the model's forward pass goes through."
        )


@contextlib.contextmanager
def _transformed_output(layer, transform):
    """While active, `layer`'s output passes through `transform` (watch, record, shift).

    Wrapping the instance's `call` (restored on exit) is what lets the
    gradient reach a layer inside a nested model without building a new
    model across the nesting boundary.
    """
    call = layer.call
    layer.call = lambda *args, **kwargs: transform(call(*args, **kwargs))
    try:
        yield
    finally:
        del layer.call  # the class's own `call` again


@contextlib.contextmanager
def _softmax_bypassed(model):
    """While active, the model's final softmax (if any) is the identity."""
    import keras

    leaves = _layers_in_order(model)
    final = leaves[-1] if leaves else None
    if getattr(final, "activation", None) is keras.activations.softmax:
        final.activation = keras.activations.linear
        try:
            yield
        finally:
            final.activation = keras.activations.softmax
    elif isinstance(final, keras.layers.Softmax):
        final.call = lambda inputs, *args, **kwargs: inputs
        try:
            yield
        finally:
            del final.call  # the class's own `call` again
    else:
        yield


def _sublayers(layer):
    """The layers inside `layer`, in call order; [] for a plain layer."""
    import keras

    if isinstance(layer, keras.Model):
        return list(layer.layers)
    # The head of earlier releases (keras_transfer.legacy_layers.ClassifierHead).
    if getattr(layer, "stores_metadata", False) and hasattr(layer, "head_layers"):
        return [layer.pool, *layer.head_layers]
    return []


def _layers_in_order(model):
    """Every leaf layer of `model`, nested models opened, in call order."""
    leaves = []
    for layer in _sublayers(model):
        inner = _sublayers(layer)
        leaves.extend(_layers_in_order(layer) if inner else [layer])
    return leaves


def _output_rank(layer):
    try:
        return len(layer.output.shape)
    except (AttributeError, ValueError):
        # Never called, or called more than once (no single output).
        return None


def target_layer(model, layer=None):
    """The layer whose output Grad-CAM explains.

    Example:

    ```python
    model = keras_transfer.build_classifier("mobilenet_v2_050", 5, weights=None)
    target_layer(model).name  # 'out_relu': the last block of MobileNetV2
    ```

    Args:
        model: a Keras model.
        layer: None to choose (a registered backbone's last block, else the
            last layer with a 4-D output before pooling); a layer name,
            searched in nested models too; or a layer.

    Raises:
        ConfigurationError: no such layer, or no 4-D feature map.
    """
    import keras

    leaves = _layers_in_order(model)
    if isinstance(layer, keras.layers.Layer):
        return layer
    if layer is not None:
        for candidate in [*leaves, *_models_in(model)]:
            if candidate.name == layer:
                return candidate
        raise ConfigurationError(
            f"The model has no layer named {layer!r}. Pass layer= one of its layers "
            f"with a 4-D output, e.g. {_feature_map_names(leaves)}."
        )
    found = _registry_target(model) or _last_feature_map(leaves)
    if found is None:
        raise ConfigurationError(
            f"Model {model.name!r} has no convolutional feature map (no layer with a "
            "4-D output (batch, height, width, channels) that the head pools; a "
            "transformer's tokens are not one), so Grad-CAM cannot explain it. Pass "
            "layer= a layer with a spatial output, or use a convolutional backbone."
        )
    return found


def _models_in(model):
    import keras

    found = []
    for layer in _sublayers(model):
        if isinstance(layer, keras.Model):
            found += [layer, *_models_in(layer)]
    return found


def _registry_target(model):
    """The last 4-D layer of the last block of a registered backbone in `model`."""
    for nested in [model, *_models_in(model)]:
        for name in backbones.list_backbones():
            spec = backbones.get_backbone(name)
            if not spec.matches(nested):
                continue
            _, block = spec.block_layers(nested)[-1]
            found = _last_feature_map(block, require_pooling_after=False)
            if found is not None:
                return found
    return None


def _last_feature_map(layers, require_pooling_after=True):
    """The last layer with a spatial 4-D output before the first pooling to 2-D."""
    last = None
    for layer in layers:
        rank = _output_rank(layer)
        if rank == 4 and not _is_input(layer) and _spatial(layer):
            last = layer
        elif rank is not None and rank < 4 and last is not None and require_pooling_after:
            # Pooled to (batch, features): `last` is what the head sees. A
            # sequence (batch, tokens, features) instead means a transformer
            # follows (a ViT's patch embedding): a map there explains nothing.
            return last if rank == 2 else None
    return last


def _spatial(layer):
    height, width = layer.output.shape[1:3]
    return height is None or width is None or height * width > 1


def _is_input(layer):
    import keras

    return isinstance(layer, keras.layers.InputLayer)


def _feature_map_names(leaves):
    names = [layer.name for layer in leaves if _output_rank(layer) == 4][-3:]
    return ", ".join(map(repr, names)) or "a Conv2D layer"


def _check_images(model, images):
    images = np.asarray(images, dtype="float32")
    if images.ndim != 4:
        raise ConfigurationError(
            f"images must be a batch (N, height, width, channels); received an array "
            f"of shape {images.shape}. Add the batch axis: images[None] for one image."
        )
    expected = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else None
    if expected and any(e is not None and e != s for e, s in zip(expected, images.shape[1:])):
        raise ConfigurationError(
            f"The model takes images of shape {expected}; received {images.shape[1:]}. "
            "Resize them to the model's input size first (load_image_folder and "
            "decode_image_file do)."
        )
    return images


def _check_classes(class_index, count):
    if class_index is None:
        return None
    classes = np.asarray(class_index)
    if classes.ndim == 0:
        classes = np.full(count, classes)
    if classes.shape != (count,) or not np.issubdtype(classes.dtype, np.integer):
        raise ConfigurationError(
            f"class_index must be None, an int, or {count} ints (one per image). "
            f"Received: {class_index!r}"
        )
    if (classes < 0).any():
        raise ConfigurationError(f"class_index must be >= 0. Received: {class_index!r}")
    return classes


def _check_in_range(classes, num_classes):
    if classes is not None and (np.asarray(classes) >= num_classes).any():
        raise ConfigurationError(
            f"class_index must be below {num_classes}, the model's number of classes. "
            f"Received: {np.asarray(classes).tolist()}"
        )
