"""Classification metrics from labels and predictions: NumPy only, no Keras.

One home for the confusion matrix and the per-class precision, recall and
F1 that `keras_transfer.evaluation` (the `evaluate` command) and
`keras_transfer.experiment` (the `compare` report) both show, so that the
two never count differently.
"""

import numpy as np

from keras_transfer.errors import ConfigurationError


def confusion_matrix(labels, predictions, num_classes):
    """Counts of (true class, predicted class) pairs.

    Row `i` holds the images of class `i`, column `j` those predicted as
    class `j` (scikit-learn's convention): the diagonal is what was right.

    Example:

    ```python
    confusion_matrix([0, 0, 1], [0, 1, 1], num_classes=2)
    # array([[1, 1],
    #        [0, 1]])
    ```

    Args:
        labels: the true class indices, a sequence of integers.
        predictions: the predicted class indices, as many as `labels`.
        num_classes: int, the number of classes; every index must be below it.

    Returns:
        An `int64` array of shape `(num_classes, num_classes)`.

    Raises:
        ConfigurationError: the lengths differ, or an index is out of range.
    """
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    predictions = np.asarray(predictions, dtype=np.int64).reshape(-1)
    if labels.shape != predictions.shape:
        raise ConfigurationError(
            f"labels and predictions must have the same length. Received: "
            f"{labels.size} labels and {predictions.size} predictions."
        )
    for name, values in (("labels", labels), ("predictions", predictions)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ConfigurationError(
                f"{name} must be class indices in [0, {num_classes}). Received: "
                f"values from {values.min()} to {values.max()}."
            )
    counts = np.bincount(labels * num_classes + predictions, minlength=num_classes**2)
    return counts.reshape(num_classes, num_classes)


def accuracy_of(confusion):
    """The fraction of right predictions in a confusion matrix; None if empty.

    Example:

    ```python
    accuracy_of(np.array([[1, 1], [0, 1]]))  # 0.666...
    ```
    """
    confusion = np.asarray(confusion)
    total = confusion.sum()
    return float(np.trace(confusion) / total) if total else None


def per_class_scores(confusion):
    """Precision, recall, F1 and support of each class of a confusion matrix.

    A score whose denominator is 0 (a class never predicted has no
    precision, a class without images no recall) is None, not 0: nothing
    was measured.

    Example:

    ```python
    per_class_scores(np.array([[1, 1], [0, 1]]))
    # [{'precision': 1.0, 'recall': 0.5, 'f1': 0.666..., 'support': 2},
    #  {'precision': 0.5, 'recall': 1.0, 'f1': 0.666..., 'support': 1}]
    ```

    Args:
        confusion: a square matrix from `confusion_matrix` (rows: true class).

    Returns:
        A list with one dict per class, in class order, with the keys
        `precision`, `recall`, `f1` (floats or None) and `support` (the
        number of images of the class).
    """
    confusion = np.asarray(confusion)
    right = np.diag(confusion)
    predicted = confusion.sum(axis=0)
    actual = confusion.sum(axis=1)
    scores = []
    for i in range(confusion.shape[0]):
        precision = _ratio(right[i], predicted[i])
        recall = _ratio(right[i], actual[i])
        f1 = None
        if precision is not None and recall is not None:
            f1 = 0.0 if precision + recall == 0 else (2 * precision * recall / (precision + recall))
        scores.append(
            {
                "precision": precision,
                "recall": recall,
                "f1": f1,
                "support": int(actual[i]),
            }
        )
    return scores


def _ratio(numerator, denominator):
    return float(numerator / denominator) if denominator else None


def format_table(rows):
    """Rows of text cells as aligned lines: the first column left, the rest right.

    How `keras-transfer evaluate` and the `compare` report lay out per-class
    scores and confusion matrices.

    Example:

    ```python
    format_table([("", "cats", "dogs"), ("cats", "9", "1"), ("dogs", "2", "8")])
    # ['      cats  dogs', 'cats     9     1', 'dogs     2     8']
    ```
    """
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths))
        ).rstrip()
        for row in rows
    ]


def confusion_matrix_lines(confusion, class_names):
    """A confusion matrix as aligned text, a header of predicted classes first.

    Example:

    ```python
    confusion_matrix_lines([[9, 1], [2, 8]], ["cats", "dogs"])
    # ['true \\ predicted  cats  dogs', 'cats                 9     1', ...]
    ```

    Args:
        confusion: a square matrix of counts, rows the true classes.
        class_names: the name of each class, in matrix order.
    """
    rows = [("true \\ predicted",) + tuple(class_names)]
    for name, counts in zip(class_names, confusion):
        rows.append((name,) + tuple(str(int(c)) for c in counts))
    return format_table(rows)
