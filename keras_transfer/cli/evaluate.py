"""`keras-transfer evaluate MODEL DATA_DIR`: a classifier's scores on a labelled folder.

DATA_DIR holds one subfolder per class, like the training folder; its
classes are matched to the model's by name. Prints the accuracy, the
per-class precision, recall, F1 and support, and the confusion matrix, and
writes them to `metrics.json`, `confusion_matrix.png` and `report.html` (with
the most confused pairs and the top losses, heatmaps beside them) in
`--output-dir`. `--tta` averages each prediction with the mirror image's.
An `--output-dir` that cannot be written, a MODEL that is not a file and a
DATA_DIR that is not a folder are refused before TensorFlow loads.
"""

import os

from keras_transfer.cli.arguments import Command
from keras_transfer.cli.arguments import add_batch_size_argument
from keras_transfer.cli.arguments import add_resize_argument
from keras_transfer.cli.arguments import add_tta_argument
from keras_transfer.cli.arguments import check_image_folder
from keras_transfer.cli.arguments import non_negative_int
from keras_transfer.cli.arguments import writable_dir
from keras_transfer.cli.program import PROG
from keras_transfer.cli.program import import_tensorflow
from keras_transfer.utils.files import atomic_write_json
from keras_transfer.utils.files import check_model_file

# The files `evaluate` writes to `--output-dir`.
METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion_matrix.png"
REPORT_FILE = "report.html"
# Top losses shown in report.html (evaluation.report.TOP_LOSSES, kept here
# so that `--help` does not import NumPy).
TOP_LOSSES = 16

SUMMARY = "score a trained model on a folder of labelled images"

DESCRIPTION = f"""\
Score MODEL, a .keras file saved by '{PROG} train', on DATA_DIR, a
folder with one subfolder of images per class (the same classes as the
model's, matched by name). Prints the accuracy, per-class precision,
recall, F1 and support and the confusion matrix; writes {METRICS_FILE},
{CONFUSION_FILE} and {REPORT_FILE} (one self-contained page: scores,
most confused classes, top losses with Grad-CAM heatmaps) to
--output-dir. --tta averages each image's prediction with its mirror
image's; {METRICS_FILE} then holds accuracy and accuracy_without_tta.

exit status: 0 done, 2 not a keras-transfer model, a folder whose
classes differ from the model's, or a bad option."""

EXAMPLE = f"{PROG} evaluate flowers.keras flowers_test --output-dir eval"


def add_arguments(parser):
    """Declares the options of `evaluate`."""
    parser.add_argument("model", metavar="MODEL", help="the .keras model file")
    parser.add_argument(
        "data_dir", metavar="DATA_DIR", help="folder with one subfolder of images per class"
    )
    parser.add_argument(
        "--output-dir",
        default=".",
        metavar="DIR",
        help=f"where to write {METRICS_FILE}, {CONFUSION_FILE} and {REPORT_FILE} "
        "(default: the current folder)",
    )
    add_tta_argument(parser)
    parser.add_argument(
        "--top-losses",
        type=non_negative_int,
        default=TOP_LOSSES,
        metavar="N",
        help=f"images shown in {REPORT_FILE}'s top losses (default: %(default)s)",
    )
    add_batch_size_argument(parser)
    add_resize_argument(parser)


def evaluate_command(args):
    """Scores the model, prints and writes the results; returns None (exit 0).

    Raises:
        KerasTransferError: `--output-dir` cannot be written (it is created if
            missing), MODEL is not a keras-transfer classifier, the folder
            cannot be used or has other classes.
    """
    output_dir = writable_dir(args.output_dir, "--output-dir")
    check_model_file(args.model)
    check_image_folder(args.data_dir)
    # Once the paths are known to be good: these load TensorFlow.
    import_tensorflow(args.verbose)
    from keras_transfer.data import load_image_folder
    from keras_transfer.evaluation import evaluate
    from keras_transfer.evaluation import load_classifier
    from keras_transfer.evaluation import write_confusion_matrix_png
    from keras_transfer.evaluation.report import write_report

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
    result = evaluate(model, dataset, class_names=class_names, tta=args.tta)
    print(evaluation_text(result))

    metrics = {
        "model": os.path.abspath(args.model),
        "data_dir": os.path.abspath(args.data_dir),
        **result.to_dict(),
    }
    metrics_path = os.path.join(output_dir, METRICS_FILE)
    confusion_path = os.path.join(output_dir, CONFUSION_FILE)
    report_path = os.path.join(output_dir, REPORT_FILE)
    atomic_write_json(metrics_path, metrics)
    write_confusion_matrix_png(confusion_path, result)
    write_report(
        report_path,
        result,
        dataset.file_paths,
        model,
        info.image_size,
        args.resize or info.resize,
        limit=args.top_losses,
    )
    print(f"\nWrote {metrics_path}, {confusion_path} and {report_path}.")


def evaluation_text(result):
    """The terminal report of an `Evaluation`: accuracy, per-class table, matrix.

    Example:

    ```python
    print(evaluation_text(keras_transfer.evaluate(model, test_ds)))
    ```
    """
    # Here, not at the top: NumPy stays out of `--help`'s start-up.
    from keras_transfer.utils.checks import plural
    from keras_transfer.utils.metrics import confusion_matrix_lines
    from keras_transfer.utils.metrics import format_table

    images = plural(result.num_images, "image")
    lines = [f"Accuracy: {100 * result.accuracy:.1f} % of {images}"]
    if result.accuracy_without_tta is not None:
        lines[0] += f" with TTA ({100 * result.accuracy_without_tta:.1f} % without)"
    lines.append("")
    rows = [("CLASS", "PRECISION", "RECALL", "F1", "SUPPORT")]
    for name, scores in result.per_class.items():
        rows.append(
            (
                name,
                *(_score(scores[key]) for key in ("precision", "recall", "f1")),
                str(scores["support"]),
            )
        )
    lines += format_table(rows)
    lines += ["", "Confusion matrix (rows: true class, columns: predicted class):"]
    lines += confusion_matrix_lines(result.confusion_matrix, result.class_names)
    return "\n".join(lines)


def _score(value):
    return "-" if value is None else f"{value:.3f}"


COMMAND = Command("evaluate", SUMMARY, DESCRIPTION, add_arguments, evaluate_command, EXAMPLE)
