"""Test-time augmentation (TTA): a classifier's probabilities averaged over flipped views.

Each batch is predicted as given and mirrored left to right, and the two
probability rows are averaged. Only the horizontal flip: the images reach
the model already at its input size (resized as in training), so a crop
would have to be scaled back up, and an up-scaled crop is a view the model
never trained on; a vertical flip is not a view of an upright photo. Whether
TTA helps is measured, not assumed: `evaluate(..., tta=True)` also reports
the accuracy without it.
"""

import numpy as np

from keras_transfer.utils.checks import check_int

# The views averaged, in order: as given, mirrored left to right.
TTA_VIEWS = ("original", "horizontal_flip")


def flipped(images):
    """`images` `(batch, height, width, channels)` mirrored left to right.

    Example:

    ```python
    flipped(np.arange(4.0).reshape(1, 1, 4, 1))[0, 0, :, 0]  # [3., 2., 1., 0.]
    ```
    """
    import keras

    return keras.ops.flip(keras.ops.convert_to_tensor(images), axis=2)


def tta_batch(model, images):
    """`(plain, averaged)` probabilities of one batch: as given, and over `TTA_VIEWS`.

    Example:

    ```python
    plain, averaged = tta_batch(model, images)  # two (batch, num_classes) arrays
    ```

    Args:
        model: a Keras classifier outputting class probabilities.
        images: a batch `(batch, height, width, channels)` as the model takes it.
    """
    plain = np.asarray(model.predict_on_batch(images), dtype="float64")
    mirrored = np.asarray(model.predict_on_batch(flipped(images)), dtype="float64")
    return plain, (plain + mirrored) / 2


def predict_with_tta(model, images, batch_size=32):
    """Class probabilities of `images`, averaged over the image and its mirror.

    Example:

    ```python
    probabilities = predict_with_tta(model, images)  # (N, num_classes)
    probabilities.argmax(-1)  # the predicted classes
    ```

    Args:
        model: a Keras classifier outputting class probabilities.
        images: an array `(N, height, width, channels)` as the model takes
            it, or a `tf.data.Dataset` of such batches (or of `(images,
            labels)` batches).
        batch_size: images per batch for an array. Defaults to 32.

    Returns:
        A float64 array `(N, num_classes)`.
    """
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    if isinstance(images, np.ndarray):
        batches = (images[i : i + batch_size] for i in range(0, len(images), batch_size))
    else:
        batches = (b[0] if isinstance(b, (tuple, list)) else b for b in images)
    rows = [tta_batch(model, batch)[1] for batch in batches]
    if not rows:
        return np.zeros((0, model.outputs[0].shape[-1]), "float64")
    return np.concatenate(rows)
