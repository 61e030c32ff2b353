"""The accuracy of a quantized export against the Keras model's, on held-out images.

A quantized file cannot agree with Keras to 1e-4 as a float32 one does, so
it is scored instead: top-1 accuracy of the file (run by its own runtime on
raw pixels) and of the Keras model on the same held-out images, with how
often the two agree. The scores go to a JSON file beside the export, and a
drop beyond the tolerance is reported (`ExportScore.within_tolerance`).
"""

import dataclasses
import json
import os

import numpy as np

from keras_transfer import defaults


@dataclasses.dataclass(frozen=True)
class ExportScore:
    """How a quantized export scores against its Keras model.

    Attributes:
        keras_accuracy: the Keras model's top-1 accuracy, in [0, 1].
        export_accuracy: the export's, on the same images.
        agreement: the fraction of images both give the same top-1 class.
        images: how many images were scored.
        source: where the images came from, in words.
        max_accuracy_drop: the tolerance, in accuracy points.
    """

    keras_accuracy: float
    export_accuracy: float
    agreement: float
    images: int
    source: str
    max_accuracy_drop: float = defaults.MAX_ACCURACY_DROP

    @property
    def accuracy_drop(self):
        """What the export loses against Keras, in accuracy points (negative: it gains)."""
        return 100.0 * (self.keras_accuracy - self.export_accuracy)

    @property
    def within_tolerance(self):
        """Whether the export loses at most `max_accuracy_drop` points."""
        return self.accuracy_drop <= self.max_accuracy_drop

    def summary(self):
        """One line: both accuracies, the drop and the tolerance."""
        return (
            f"accuracy {100 * self.export_accuracy:.2f}% against the Keras model's "
            f"{100 * self.keras_accuracy:.2f}% on {self.source} (a drop of "
            f"{self.accuracy_drop:.2f} points; tolerance {self.max_accuracy_drop:g})"
        )


def score_export(expected, actual, labels, source, max_accuracy_drop):
    """Scores an export's outputs `actual` against Keras' `expected` on images of class `labels`.

    Example:

    ```python
    score = score_export(model.predict(images), run_litert(path, images), labels,
                         "500 validation images", 1.5)
    score.within_tolerance  # True
    ```
    """
    keras_top1 = np.argmax(expected, axis=-1)
    export_top1 = np.argmax(actual, axis=-1)
    return ExportScore(
        keras_accuracy=float(np.mean(keras_top1 == labels)),
        export_accuracy=float(np.mean(export_top1 == labels)),
        agreement=float(np.mean(keras_top1 == export_top1)),
        images=len(labels),
        source=source,
        max_accuracy_drop=float(max_accuracy_drop),
    )


def score_path(path):
    """Where the scores of the export at `path` are written: `<name>.accuracy.json`.

    Example:

    ```python
    score_path("out/flowers_int8.tflite")  # 'out/flowers_int8.accuracy.json'
    ```
    """
    return os.path.splitext(path)[0] + ".accuracy.json"


def write_score(path, score, quantize):
    """Writes `score` of the export at `path`, quantized as `quantize`, to `score_path(path)`."""
    record = dataclasses.asdict(score)
    record.update(
        export=os.path.basename(path),
        quantize=quantize,
        accuracy_drop=score.accuracy_drop,
        within_tolerance=score.within_tolerance,
        bytes=os.path.getsize(path),
    )
    with open(score_path(path), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    return score_path(path)
