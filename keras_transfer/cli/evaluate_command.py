"""`keras-transfer evaluate MODEL DATA_DIR`: a classifier's scores on a labelled folder.

DATA_DIR holds one subfolder per class, like the training folder; its
classes are matched to the model's by name. Prints the accuracy, the
per-class precision, recall, F1 and support, and the confusion matrix, and
writes them to `metrics.json` and `confusion_matrix.png` in `--output-dir`.
The options, and their checks before TensorFlow loads, are in
`evaluate_arguments`.
"""

import os

from keras_transfer.cli.evaluate_arguments import CONFUSION_FILE
from keras_transfer.cli.evaluate_arguments import METRICS_FILE
from keras_transfer.cli.evaluate_arguments import check_evaluate_arguments
from keras_transfer.data import load_image_folder
from keras_transfer.evaluation import evaluate
from keras_transfer.evaluation import load_classifier
from keras_transfer.evaluation import write_confusion_matrix_png
from keras_transfer.utils.checks import plural
from keras_transfer.utils.files import atomic_write_json
from keras_transfer.utils.metrics import confusion_matrix_lines
from keras_transfer.utils.metrics import format_table


def evaluate_command(args):
    """Scores the model, prints and writes the results; returns None (exit 0).

    Raises:
        KerasTransferError: the model is not a keras-transfer classifier, the
            folder cannot be used or has other classes, or the output folder
            cannot be written.
    """
    output_dir = check_evaluate_arguments(args)
    model, info = load_classifier(args.model)
    dataset, _, class_names = load_image_folder(
        args.data_dir,
        info.image_size,
        batch_size=args.batch_size,
        validation_split=0,
        cache=False,
        shuffle=False,
        resize=args.resize or info.resize,
    )
    result = evaluate(model, dataset, class_names=class_names)
    print(evaluation_text(result))

    metrics = {
        "model": os.path.abspath(args.model),
        "data_dir": os.path.abspath(args.data_dir),
        **result.to_dict(),
    }
    metrics_path = os.path.join(output_dir, METRICS_FILE)
    confusion_path = os.path.join(output_dir, CONFUSION_FILE)
    atomic_write_json(metrics_path, metrics)
    write_confusion_matrix_png(confusion_path, result)
    print(f"\nWrote {metrics_path} and {confusion_path}.")


def evaluation_text(result):
    """The terminal report of an `Evaluation`: accuracy, per-class table, matrix.

    Example:

    ```python
    print(evaluation_text(keras_transfer.evaluate(model, test_ds)))
    ```
    """
    images = plural(result.num_images, "image")
    lines = [f"Accuracy: {100 * result.accuracy:.1f} % of {images}", ""]
    rows = [("CLASS", "PRECISION", "RECALL", "F1", "SUPPORT")]
    for name, scores in result.per_class.items():
        rows.append(
            (name, *(_score(scores[key]) for key in ("precision", "recall", "f1")),
             str(scores["support"]))
        )
    lines += format_table(rows)
    lines += ["", "Confusion matrix (rows: true class, columns: predicted class):"]
    lines += confusion_matrix_lines(result.confusion_matrix, result.class_names)
    return "\n".join(lines)


def _score(value):
    return "-" if value is None else f"{value:.3f}"
