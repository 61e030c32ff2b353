"""`keras-transfer predict MODEL PATH...`: the top classes of images, as a table and a file.

Files and folders (searched recursively) are predicted in batches through
the training pipeline (`keras_transfer.evaluation.predict_images`). Files
that cannot be read are named on stderr, one line each, and the others are
still predicted. `--output` writes every input, readable or not, to a CSV
or JSON Lines file; `--heatmaps DIR` writes each image with its Grad-CAM
heatmap over it; `--tta` averages with the mirror image. An `--output` that
is not a writable `.csv` or `.jsonl` file and a MODEL that is not a file
are refused before TensorFlow loads.
"""

import csv
import io
import json
import sys

from keras_transfer import defaults
from keras_transfer.cli.arguments import Command
from keras_transfer.cli.arguments import add_batch_size_argument
from keras_transfer.cli.arguments import add_resize_argument
from keras_transfer.cli.arguments import add_tta_argument
from keras_transfer.cli.arguments import positive_int
from keras_transfer.cli.arguments import writable_dir
from keras_transfer.cli.arguments import writable_path
from keras_transfer.cli.program import PROG
from keras_transfer.cli.program import import_tensorflow
from keras_transfer.errors import ConfigurationError
from keras_transfer.utils.files import atomic_write_text
from keras_transfer.utils.files import check_model_file

# The suffixes `--output` may end in; the suffix picks the file's format.
OUTPUT_FORMATS = (".csv", ".jsonl")


SUMMARY = "predict the classes of images with a trained model"

DESCRIPTION = f"""\
Predict the top classes of images with MODEL, a .keras file
saved by '{PROG} train'. PATH: image files or folders (searched
recursively). Images are resized to the model's input size as in
training. Unreadable files are listed and skipped. --heatmaps DIR
writes each image with its Grad-CAM heatmap for the top class drawn
over it, as DIR/NAME.heatmap.jpg. --tta averages each prediction with
the mirrored image's.

exit status: 0 done, 2 not a keras-transfer model, no readable image,
or a bad option."""

EXAMPLE = f"{PROG} predict flowers.keras new_photos/ --top-k 2 --output predictions.csv"


def add_arguments(parser):
    """Declares the options of `predict`."""
    parser.add_argument("model", metavar="MODEL", help="the .keras model file")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders of images")
    parser.add_argument(
        "--top-k",
        type=positive_int,
        default=defaults.TOP_K,
        metavar="K",
        help="classes to report per image (default: %(default)s)",
    )
    parser.add_argument(
        "--output",
        metavar="FILE",
        help="also write the predictions to FILE.csv or FILE.jsonl",
    )
    parser.add_argument(
        "--heatmaps",
        metavar="DIR",
        help="also write each image with its Grad-CAM heatmap (top class) to DIR",
    )
    add_tta_argument(parser)
    add_batch_size_argument(parser)
    add_resize_argument(parser)


def predict_command(args):
    """Prints the predictions and writes `--output`; returns None (exit 0).

    Raises:
        KerasTransferError: `--output` does not end in .csv or .jsonl or
            cannot be written, the model is not a keras-transfer classifier,
            or no path holds a readable image.
    """
    output = _output_path(args.output)
    heatmaps_dir = writable_dir(args.heatmaps, "--heatmaps") if args.heatmaps else None
    check_model_file(args.model)
    # Once the paths are known to be good: these load TensorFlow.
    import_tensorflow(args.verbose)
    from keras_transfer.evaluation import load_classifier
    from keras_transfer.evaluation import predict_images
    from keras_transfer.utils.checks import plural

    model, info = load_classifier(args.model)
    result = predict_images(
        model,
        args.paths,
        top_k=args.top_k,
        batch_size=args.batch_size,
        resize=args.resize,
        tta=args.tta,
    )
    for path, reason in result.unreadable:
        print(f"{PROG}: warning: skipped {path}: {reason}", file=sys.stderr)
    print(prediction_table(result))
    if info.class_names is None:
        print(
            "The model stores no class names, so classes are shown by index: index i "
            "is the i-th class folder, sorted, of its training data (class_names in "
            f"the history.json beside the model); models trained by '{PROG} train' "
            "from this version on store them."
        )
    if output:
        atomic_write_text(output, _output_text(output, result))
        print(f"Wrote {plural(len(result.images), 'prediction')} to {output}.")
    if heatmaps_dir:
        written = _write_heatmaps(heatmaps_dir, model, info, result, args)
        print(f"Wrote {plural(len(written), 'heatmap')} to {heatmaps_dir}.")


def _write_heatmaps(folder, model, info, result, args):
    """Each predicted image with its heatmap for its top class, in `folder`."""
    import numpy as np

    from keras_transfer.data import decode_image_file
    from keras_transfer.evaluation.overlay import write_heatmap_overlays
    from keras_transfer.grad_cam import explain

    written = []
    resize = args.resize or info.resize
    for start in range(0, len(result.images), args.batch_size):
        batch = result.images[start : start + args.batch_size]
        pixels = np.stack([decode_image_file(i.path, info.image_size, resize) for i in batch])
        classes = [image.top[0][0] for image in batch]
        heatmaps = explain(model, pixels.astype("float32"), class_index=classes)
        # Across batches, a repeated file name must not overwrite an earlier one.
        written += write_heatmap_overlays(
            folder, [i.path for i in batch], pixels, heatmaps, taken=written
        )
    return written


def _output_path(output):
    """`--output`, checked and absolute, or None."""
    if output is None:
        return None
    if not output.lower().endswith(OUTPUT_FORMATS):
        raise ConfigurationError(f"--output must end in .csv or .jsonl. Received: {output!r}")
    return writable_path(output, "--output")


def prediction_table(result):
    """The predictions of a `Predictions` as an aligned text table, one image a row.

    Example:

    ```python
    print(prediction_table(predict_images(model, ["photos/"])))
    # IMAGE            CLASS 1     P 1  CLASS 2    P 2
    # photos/rose.jpg    roses  93.1 %   tulips  4.9 %
    ```
    """
    # Here, not at the top: NumPy stays out of `--help`'s start-up.
    from keras_transfer.utils.metrics import format_table

    if not result.images:
        return "No image was predicted."
    k = max(len(image.top) for image in result.images)
    header = ["IMAGE"] + [cell for i in range(1, k + 1) for cell in (f"CLASS {i}", f"P {i}")]
    rows = [header]
    for image in result.images:
        row = [image.path]
        for index, name, probability in image.top:
            row += [str(index) if name is None else name, f"{100 * probability:.1f} %"]
        rows.append(row)
    return "\n".join(format_table(rows))


def _output_text(path, result):
    """The `--output` file: every input, its top classes or why it was skipped."""
    if path.lower().endswith(".jsonl"):
        lines = [
            json.dumps(
                {
                    "path": image.path,
                    "predictions": [
                        {"index": index, "class": name, "probability": probability}
                        for index, name, probability in image.top
                    ],
                }
            )
            for image in result.images
        ]
        lines += [json.dumps({"path": p, "error": reason}) for p, reason in result.unreadable]
        return "".join(line + "\n" for line in lines)
    k = max((len(image.top) for image in result.images), default=0)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["path"]
        + [cell for i in range(1, k + 1) for cell in (f"class_{i}", f"probability_{i}")]
        + ["error"]
    )
    for image in result.images:
        cells = [image.path]
        for index, name, probability in image.top:
            cells += [index if name is None else name, f"{probability:.6f}"]
        writer.writerow(cells + [""])
    for p, reason in result.unreadable:
        writer.writerow([p] + [""] * (2 * k) + [reason])
    return buffer.getvalue()


COMMAND = Command("predict", SUMMARY, DESCRIPTION, add_arguments, predict_command, EXAMPLE)
