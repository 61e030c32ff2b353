"""`evaluate`: a classifier's accuracy, per-class scores and confusion matrix on a dataset.

The dataset's classes are matched to the model's by name, so an evaluation
folder whose classes sort differently from the training folder's is scored
correctly; classes the model does not know, or that the folder lacks, are
refused by name. The arithmetic is `utils.metrics`, shared with the
`compare` report.
"""

import dataclasses
import warnings

import numpy as np

from keras_transfer.errors import DataError
from keras_transfer.evaluation.classifier_file import check_classifier
from keras_transfer.evaluation.tta import TTA_VIEWS
from keras_transfer.evaluation.tta import tta_batch
from keras_transfer.utils.metrics import accuracy_of
from keras_transfer.utils.metrics import confusion_matrix
from keras_transfer.utils.metrics import per_class_scores


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """What `evaluate` measured.

    Example:

    ```python
    result = keras_transfer.evaluate(model, test_ds)
    result.accuracy                      # 0.87
    result.per_class["roses"]["recall"]  # 0.8
    result.confusion_matrix[2]           # the roses, by predicted class
    ```

    Attributes:
        accuracy: float, the fraction of images whose top class is right.
        class_names: the classes, in the model's output order.
        per_class: `{class_name: {"precision", "recall", "f1", "support"}}`
            in that order; a score with nothing to measure (a class never
            predicted has no precision) is None.
        confusion_matrix: `int64` array, row `i` the images of class `i`,
            column `j` those predicted as class `j`.
        num_images: the number of images scored.
        probabilities: float64 array `(num_images, num_classes)`, each
            image's class probabilities (averaged over the views with
            `tta=True`), in dataset order; None when not recorded.
        labels: `int64` array, each image's true class as a model output
            index, in dataset order; None when not recorded.
        accuracy_without_tta: with `tta=True`, the accuracy of the plain
            predictions, so that TTA's gain is measured; else None.
    """

    accuracy: float
    class_names: list
    per_class: dict
    confusion_matrix: np.ndarray
    num_images: int
    probabilities: np.ndarray = dataclasses.field(default=None, repr=False, compare=False)
    labels: np.ndarray = dataclasses.field(default=None, repr=False, compare=False)
    accuracy_without_tta: float = None

    def to_dict(self):
        """The evaluation as JSON-ready Python values (`metrics.json`)."""
        tta = {} if self.accuracy_without_tta is None else {"tta": list(TTA_VIEWS)}
        without = (
            {}
            if self.accuracy_without_tta is None
            else {"accuracy_without_tta": self.accuracy_without_tta}
        )
        return {
            "accuracy": self.accuracy,
            **without,
            **tta,
            "num_images": self.num_images,
            "class_names": list(self.class_names),
            "per_class": self.per_class,
            "confusion_matrix": self.confusion_matrix.tolist(),
        }


def match_class_names(dataset_names, model_names):
    """For each dataset class, the index of the model output of the same name.

    Example:

    ```python
    match_class_names(["roses", "daisy"], ["daisy", "roses"])  # [1, 0]
    ```

    Args:
        dataset_names: the dataset's class names, in label order.
        model_names: the model's class names, in output order.

    Raises:
        DataError: the two sets of names differ; the message names the
            classes the model does not know and those the data lacks.
    """
    unknown = [name for name in dataset_names if name not in model_names]
    missing = [name for name in model_names if name not in dataset_names]
    if unknown or missing:
        parts = []
        if unknown:
            parts.append(f"classes the model does not know: {', '.join(unknown)}")
        if missing:
            parts.append(f"model classes missing from the data: {', '.join(missing)}")
        raise DataError(
            f"The data's classes differ from the model's ({'; '.join(parts)}). The "
            f"model knows {', '.join(model_names)}: evaluate on a folder with one "
            "subfolder for each of them."
        )
    return [list(model_names).index(name) for name in dataset_names]


def evaluate(model, dataset, class_names=None, tta=False):
    """Scores a classifier on a labelled dataset.

    The dataset's labels are mapped to the model's classes by name: with the
    data's names (`class_names`, or the dataset's `class_names` attribute, as
    `load_image_folder` sets it) and the model's (stored by
    `build_classifier(..., class_names=...)`). A model without names is
    matched by position, with a warning.

    Example:

    ```python
    test_ds, _, names = keras_transfer.load_image_folder(
        "flowers_test", image_size=160, validation_split=0, shuffle=False)
    result = keras_transfer.evaluate(model, test_ds)
    print(f"{result.accuracy:.1%}", result.per_class["roses"])
    ```

    Args:
        model: a keras-transfer classifier (see `check_classifier`).
        dataset: a finite `tf.data.Dataset` (or any iterable) of batches
            `(images, labels)` or `(images, labels, weights)`, labels as
            class indices or one-hot rows; images as the model takes them.
        class_names: the names of the dataset's labels, in label order;
            None for the dataset's `class_names` attribute. Without either,
            label `i` is taken to be the model's output `i`.
        tta: bool, whether to average each image's probabilities with its
            mirror image's (`evaluation.tta`); the result then also holds
            `accuracy_without_tta`. Defaults to False.

    Returns:
        An `Evaluation`, in the model's class order.

    Raises:
        ConfigurationError: the model is not a keras-transfer classifier.
        DataError: the classes differ, a label is out of range, or the
            dataset is empty.
    """
    info = check_classifier(model)
    if class_names is None:
        class_names = getattr(dataset, "class_names", None)
    to_model, names = _label_mapping(info, class_names)
    labels, plain, averaged = _predict_labelled(model, dataset, tta)
    bad = labels[(labels < 0) | (labels >= len(to_model))]
    if bad.size:
        raise DataError(
            f"Label {int(bad[0])} is out of range: the data has {len(to_model)} "
            f"classes (labels 0 to {len(to_model) - 1})."
        )
    labels = np.asarray(to_model, dtype="int64")[labels]
    probabilities = plain if averaged is None else averaged
    confusion = confusion_matrix(labels, probabilities.argmax(axis=-1), info.num_classes)
    scores = per_class_scores(confusion)
    return Evaluation(
        accuracy=accuracy_of(confusion),
        class_names=names,
        per_class=dict(zip(names, scores)),
        confusion_matrix=confusion,
        num_images=int(labels.size),
        probabilities=probabilities,
        labels=labels,
        accuracy_without_tta=(
            None if averaged is None else float(np.mean(plain.argmax(axis=-1) == labels))
        ),
    )


def _predict_labelled(model, dataset, tta):
    """`(labels, probabilities, averaged over TTA views or None)` of a dataset."""
    labels, plain, averaged = [], [], []
    for batch in dataset:
        images, batch_labels = batch[0], np.asarray(batch[1])
        if batch_labels.ndim > 1:
            batch_labels = batch_labels.argmax(axis=-1)
        labels.append(batch_labels.reshape(-1).astype("int64"))
        if tta:
            rows, views = tta_batch(model, images)
            averaged.append(views)
        else:
            rows = np.asarray(model.predict_on_batch(images), dtype="float64")
        plain.append(rows)
    if not labels:
        raise DataError("The dataset is empty: there is nothing to evaluate.")
    return (
        np.concatenate(labels),
        np.concatenate(plain),
        np.concatenate(averaged) if tta else None,
    )


def _label_mapping(info, data_names):
    """`(dataset label -> model output, class names in model order)`."""
    if info.class_names is not None:
        if data_names is None:
            return list(range(info.num_classes)), list(info.class_names)
        return match_class_names(list(data_names), info.class_names), list(info.class_names)
    if data_names is None:
        return list(range(info.num_classes)), [str(i) for i in range(info.num_classes)]
    if len(data_names) != info.num_classes:
        raise DataError(
            f"The data has {len(data_names)} classes but the model has "
            f"{info.num_classes} outputs (and no class names to match them by)."
        )
    warnings.warn(
        "The model stores no class names (saved by an older keras-transfer): its "
        "outputs are taken to be the data's classes in sorted folder order, "
        f"{', '.join(data_names)}. Retrain with 'keras-transfer train' to store them.",
        stacklevel=3,
    )
    return list(range(info.num_classes)), list(data_names)
