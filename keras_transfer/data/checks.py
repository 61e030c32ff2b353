"""`check_dataset_for_model`: a dataset's labels against a classifier's outputs.

Run before `fit`, it turns Keras' late and obscure failures (a label out of
range in the middle of the first epoch on CPU, a NaN loss or nothing at all
on GPU) into a `DataError` that says which number does not fit and what to
change. It takes any `tf.data` dataset or `(x, y)` arrays.
"""

import numpy as np

from keras_transfer.errors import DataError


def check_dataset_for_model(dataset, model, max_batches=None):
    """Checks, before `fit`, that a dataset's labels fit a classifier's outputs.

    A classifier built for the wrong number of classes, or labels outside
    `0 ... num_classes - 1`, fail late and obscurely in Keras: on CPU with
    `InvalidArgumentError: Received a label value of 4 which is outside the
    valid range of [0, 3)` in the middle of the first epoch, on GPU with a
    NaN loss or no error at all. This reads the labels once and raises a
    `DataError` that says which number does not fit and what to change.

    It compares the model's number of outputs (the last dimension of its
    output) with:

    - the dataset's `class_names`, when it has them (as the datasets of
      `load_image_folder` and `keras.utils.image_dataset_from_directory` do),
      without reading any element;
    - every label: integer class indices (for
      `sparse_categorical_crossentropy`) must lie in `[0, num_outputs)`;
      one-hot labels (for `categorical_crossentropy`) must have
      `num_outputs` columns.

    Reading the labels runs the dataset's pipeline once, images included.
    For a `load_image_folder` dataset that pass also fills its in-memory
    cache, so the first epoch does not decode the images again.

    Example:

    ```python
    train_ds, val_ds, class_names = keras_transfer.load_image_folder(
        "flower_photos", image_size=160)
    model = keras_transfer.build_classifier(
        "mobilenet_v2_050", num_classes=3, input_shape=(160, 160, 3))
    keras_transfer.data.check_dataset_for_model(train_ds, model)
    # DataError: The model has 3 outputs (num_classes=3) but the dataset has
    # 5 classes ('daisy', 'dandelion', ...). Build it with num_classes=5 ...
    ```

    Args:
        dataset: a `tf.data.Dataset` yielding `(images, labels)` or
            `(images, labels, sample_weights)`, batched or not; or a tuple
            `(x, y)` of arrays, as passed to `fit`.
        model: the Keras model to train; its output's last dimension is the
            number of classes.
        max_batches: int or None, read at most this many elements of the
            dataset. None (default) reads them all.

    Raises:
        DataError: the class names, a label or the label shape do not fit
            the model, or the dataset yields no labels.
    """
    outputs = _num_outputs(model)
    class_names = getattr(dataset, "class_names", None)
    if class_names is not None and outputs is not None and len(class_names) != outputs:
        shown = ", ".join(repr(n) for n in list(class_names)[:5])
        if len(class_names) > 5:
            shown += ", ..."
        raise DataError(
            f"The model has {outputs} outputs (num_classes={outputs}) but the "
            f"dataset has {len(class_names)} classes ({shown}). Build it with "
            f"num_classes={len(class_names)}, e.g. keras_transfer.build_classifier("
            "backbone, num_classes=len(class_names))."
        )
    if outputs is None:
        return
    low, high = _label_range(dataset, model, outputs, max_batches)
    valid = max(outputs, 2)  # One sigmoid output takes labels 0 and 1.
    if low is not None and low < 0:
        raise DataError(
            f"Label {int(low)} is negative: labels are class indices 0 ... "
            f"{valid - 1} for a model with {outputs} outputs. Fix the labels."
        )
    if high is not None and high >= valid:
        raise DataError(
            f"Label {int(high)} is out of range for a model with {outputs} outputs "
            f"(num_classes={outputs}): labels must be 0 ... {valid - 1}. Build the "
            f"model with num_classes={int(high) + 1} if the data has that many "
            "classes, or fix the labels."
        )


def _label_range(dataset, model, outputs, max_batches):
    """`(lowest, highest)` integer label; checks one-hot widths on the way.

    Raises:
        DataError: one-hot labels of the wrong width, fractional labels, or
            no labels at all.
    """
    low, high, columns, seen = None, None, None, 0
    for labels, batched in _iterate_labels(dataset, model, max_batches):
        labels = np.asarray(labels)
        seen += labels.size
        if labels.size == 0:
            continue
        one_hot = outputs > 1 and labels.ndim == (2 if batched else 1) and labels.shape[-1] > 1
        if one_hot:
            columns = labels.shape[-1]
            if columns != outputs:
                raise DataError(
                    f"The model has {outputs} outputs (num_classes={outputs}) but "
                    f"the dataset's one-hot labels have {columns} columns. Build "
                    f"the model with num_classes={columns}, or fix the labels."
                )
            continue
        flat = labels.ravel()
        fractional = flat[~np.isfinite(flat) | (flat != np.round(flat))]
        if fractional.size:
            raise DataError(
                f"Labels must be integer class indices or one-hot rows; found the "
                f"label {fractional[0].item()!r}. Convert the labels to class indices "
                f"0 ... {outputs - 1}."
            )
        low = labels.min() if low is None else min(low, labels.min())
        high = labels.max() if high is None else max(high, labels.max())
    if not seen:
        raise DataError(
            "The dataset yielded no labels to check: it is empty, or its elements "
            "are not (images, labels) pairs. Pass the dataset given to fit."
        )
    return low, high


def _num_outputs(model):
    try:
        shape = model.outputs[0].shape
    except (AttributeError, IndexError, TypeError, ValueError):
        shape = getattr(model, "output_shape", None)
    if not shape or shape[-1] is None:
        return None
    return int(shape[-1])


def _iterate_labels(dataset, model, max_batches):
    """Yields `(labels, batched)` for the label arrays of `dataset`."""
    if isinstance(dataset, tuple):
        if len(dataset) < 2:
            raise DataError(
                "Pass the data as an (x, y) tuple or a tf.data.Dataset of "
                f"(images, labels); received a tuple of {len(dataset)} item."
            )
        yield np.asarray(dataset[1]), True
        return
    import tensorflow as tf

    if not isinstance(dataset, tf.data.Dataset):
        raise DataError(
            "Expected a tf.data.Dataset of (images, labels) or an (x, y) tuple. "
            f"Received: {type(dataset).__name__}"
        )
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) < 2:
        raise DataError(
            "The dataset's elements are not (images, labels) pairs (element "
            f"spec: {spec}). Pass the dataset given to fit."
        )
    # Batched when the images have the rank of the model's input, batch
    # dimension included; a one-hot label then has rank 2, else rank 1.
    try:
        batched = spec[0].shape.rank == len(model.inputs[0].shape)
    except (AttributeError, IndexError, TypeError):
        batched = True
    labels = dataset.map(lambda *element: element[1])
    if max_batches is not None:
        labels = labels.take(max_batches)
    for batch in labels.as_numpy_iterator():
        yield batch, batched
