"""`confusion_matrix.png`: the confusion matrix of an `Evaluation`, as a heat map.

Rows are the true classes, columns the predicted ones; each cell shows its
count, and its colour the share of the row (the class's recall on the
diagonal), so that a small class reads as clearly as a large one.
"""

import numpy as np

from keras_transfer.utils.files import atomic_save_figure


def write_confusion_matrix_png(path, evaluation):
    """Draws `evaluation.confusion_matrix` and saves the PNG to `path`, atomically.

    Example:

    ```python
    write_confusion_matrix_png("confusion_matrix.png", keras_transfer.evaluate(model, ds))
    ```

    Args:
        path: the PNG file to write; replaced in one step.
        evaluation: an `Evaluation`.
    """
    # A Figure without pyplot: no global backend switch, no open windows.
    # Imported here: matplotlib is slow to import and only plots need it.
    from matplotlib.figure import Figure

    confusion = np.asarray(evaluation.confusion_matrix)
    names = list(evaluation.class_names)
    rows = confusion.sum(axis=1, keepdims=True)
    shares = np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)
    side = 2.5 + 0.6 * len(names)
    figure = Figure(figsize=(side + 1.5, side), layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, label="share of the true class")
    for i in range(len(names)):
        for j in range(len(names)):
            axes.text(
                j,
                i,
                str(confusion[i, j]),
                ha="center",
                va="center",
                fontsize=9,
                color="white" if shares[i, j] > 0.5 else "black",
            )
    axes.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axes.set_yticks(range(len(names)), names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    accuracy = "-" if evaluation.accuracy is None else f"{evaluation.accuracy:.1%}"
    axes.set_title(
        f"Confusion matrix: {evaluation.num_images} images, accuracy {accuracy}",
        fontsize=10,
    )
    atomic_save_figure(figure, path)
