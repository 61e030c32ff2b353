"""`report.html`: what a classifier gets wrong, in one self-contained page.

The page holds the accuracy (and, with TTA, the accuracy without it), the
per-class precision, recall and F1, the confusion matrix, the most confused
pairs of classes, and the top losses: the images whose true class got the
lowest probability, each as a thumbnail beside its Grad-CAM heatmap (for
the predicted class) with its file name, true class, predicted class and
probability. Images are inlined (`html_page`), so the file opens offline.
"""

import os

import numpy as np

from keras_transfer.errors import ConfigurationError
from keras_transfer.errors import KerasTransferError
from keras_transfer.utils import html_page
from keras_transfer.evaluation.overlay import overlay_heatmap

# How many top losses and confused pairs the report shows by default.
TOP_LOSSES = 16
CONFUSED_PAIRS = 10


def most_confused(evaluation, limit=CONFUSED_PAIRS):
    """The most frequent mistakes: `(true class, predicted class, count)`, most first.

    Example:

    ```python
    most_confused(keras_transfer.evaluate(model, test_ds))  # [('roses', 'tulips', 7), ...]
    ```
    """
    confusion = np.asarray(evaluation.confusion_matrix)
    pairs = [
        (int(confusion[t, p]), t, p)
        for t in range(len(confusion))
        for p in range(len(confusion))
        if t != p and confusion[t, p] > 0
    ]
    pairs.sort(key=lambda pair: (-pair[0], pair[1], pair[2]))
    names = evaluation.class_names
    return [(names[t], names[p], count) for count, t, p in pairs[:limit]]


def top_losses(evaluation, limit=TOP_LOSSES):
    """Indices of the images whose true class got the lowest probability, worst first.

    Example:

    ```python
    worst = top_losses(result, 5)  # positions in the evaluated dataset
    ```
    """
    if evaluation.probabilities is None:
        raise ConfigurationError(
            "This Evaluation holds no per-image probabilities: compute it with "
            "keras_transfer.evaluate(model, dataset)."
        )
    rows = np.arange(len(evaluation.labels))
    losses = -np.log(np.maximum(evaluation.probabilities[rows, evaluation.labels], 1e-12))
    return [int(i) for i in np.argsort(-losses, kind="stable")[:limit]]


def write_report(
    path, evaluation, file_paths, model=None, image_size=None, resize=None, limit=TOP_LOSSES
):
    """Writes `report.html` for an `Evaluation` of the images in `file_paths`.

    Example:

    ```python
    test_ds, _, _ = keras_transfer.load_image_folder(
        "flowers_test", image_size=160, validation_split=0, shuffle=False)
    result = keras_transfer.evaluate(model, test_ds)
    write_report("report.html", result, test_ds.file_paths, model, (160, 160))
    ```

    Args:
        path: the HTML file to write.
        evaluation: an `Evaluation` from `evaluate` (it holds each image's
            probabilities).
        file_paths: the evaluated files, in dataset order (unshuffled:
            `load_image_folder(..., shuffle=False).file_paths`).
        model: the classifier, for the heatmaps; None for none.
        image_size: `(height, width)` the images were evaluated at; needed
            for the thumbnails.
        resize: how they were fitted to it (`"stretch"`, `"crop"`, `"pad"`).
        limit: how many top losses to show. Defaults to 16.
    """
    if len(file_paths) != evaluation.num_images:
        raise ConfigurationError(
            f"{len(file_paths)} file paths for {evaluation.num_images} evaluated images: "
            "pass the file_paths of the dataset that was evaluated, unshuffled."
        )
    sections = [_summary_html(evaluation), _scores_html(evaluation), _confusion_html(evaluation)]
    pairs = most_confused(evaluation)
    sections.append(
        html_page.section_html(
            "Most confused pairs",
            html_page.table_html(["true class", "predicted as", "images"], pairs)
            if pairs
            else "<p>No mistakes.</p>",
        )
    )
    if image_size is not None and limit > 0:
        sections.append(_top_losses_html(evaluation, file_paths, model, image_size, resize, limit))
    html_page.write_page(path, "Evaluation report", sections)


def _summary_html(evaluation):
    rows = [["accuracy", f"{evaluation.accuracy:.4f}"]]
    if evaluation.accuracy_without_tta is not None:
        rows.append(["accuracy without TTA", f"{evaluation.accuracy_without_tta:.4f}"])
    rows.append(["images", str(evaluation.num_images)])
    return html_page.section_html("Summary", html_page.table_html(["", "value"], rows))


def _scores_html(evaluation):
    def score(value):
        return "-" if value is None else f"{value:.3f}"

    rows = [
        [name, score(s["precision"]), score(s["recall"]), score(s["f1"]), s["support"]]
        for name, s in evaluation.per_class.items()
    ]
    header = ["class", "precision", "recall", "F1", "support"]
    return html_page.section_html("Per-class scores", html_page.table_html(header, rows))


def _confusion_html(evaluation):
    confusion = np.asarray(evaluation.confusion_matrix)
    totals = np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    rows, styles = [], []
    for name, counts, shares in zip(evaluation.class_names, confusion, confusion / totals):
        rows.append([name, *(int(c) for c in counts)])
        # The cell's share of its row, as the blue of confusion_matrix.png.
        styles.append([None, *(f"background: rgba(31, 119, 180, {s:.2f})" for s in shares)])
    table = html_page.table_html(["true \\ predicted", *evaluation.class_names], rows, styles)
    note = "Rows: true class; columns: predicted class; shading: the share of the row."
    return html_page.section_html("Confusion matrix", table, note)


def _top_losses_html(evaluation, file_paths, model, image_size, resize, limit):
    from keras_transfer.data import decode_image_file

    indices = top_losses(evaluation, limit)
    pixels = np.stack([decode_image_file(file_paths[i], image_size, resize) for i in indices])
    heatmaps, note = _heatmaps(model, pixels, evaluation.probabilities[indices].argmax(-1))
    names = evaluation.class_names
    # Relative to the evaluated folder: "roses/123.jpg" tells more than "123.jpg".
    root = os.path.commonpath([os.path.dirname(path) for path in file_paths])
    items = []
    for n, i in enumerate(indices):
        predicted = int(evaluation.probabilities[i].argmax())
        uris = [html_page.image_data_uri(pixels[n], max_size=160)]
        if heatmaps is not None:
            uris.append(html_page.image_data_uri(overlay_heatmap(pixels[n], heatmaps[n]), 160))
        lines = [
            os.path.relpath(file_paths[i], root),
            f"true: {names[evaluation.labels[i]]}",
            f"predicted: {names[predicted]} ({evaluation.probabilities[i, predicted]:.1%})",
            f"p(true class): {evaluation.probabilities[i, evaluation.labels[i]]:.1%}",
        ]
        items.append((uris, lines))
    note = (
        "The images whose true class got the lowest probability, worst first"
        + (
            ", each beside its Grad-CAM heatmap for the predicted class. "
            if heatmaps is not None
            else ". "
        )
        + (note or "")
    )
    return html_page.section_html("Top losses", html_page.thumbnail_grid_html(items), note.strip())


def _heatmaps(model, pixels, classes):
    """`(heatmaps, None)`, or `(None, why not)` when the model cannot be explained."""
    if model is None:
        return None, "No model given: no heatmaps."
    from keras_transfer.grad_cam import explain

    try:
        return explain(model, pixels.astype("float32"), class_index=classes), None
    except KerasTransferError as error:
        # Said on the page, where the heatmaps would be.
        return None, f"No heatmaps: {error}"
