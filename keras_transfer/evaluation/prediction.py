"""`predict_images`: the top classes of image files, through the training pipeline.

Images are decoded, turned upright, converted to RGB and resized to the
model's input size, as the model says it was trained (`resize`), by the
`tf.data` pipeline `load_image_folder` trains with
(`data.loading.image_dataset`), so a model sees the pixels it was trained
on. Files that cannot be decoded (checked by `data.decoding`, the check
training uses) are returned with the reason instead of stopping the rest.
"""

import dataclasses
import os
import warnings

import numpy as np

from keras_transfer import defaults
from keras_transfer.data import loading
from keras_transfer.data.decoding import check_files
from keras_transfer.data.folder import IMAGE_EXTENSIONS
from keras_transfer.errors import DataError
from keras_transfer.evaluation.classifier_file import check_classifier
from keras_transfer.evaluation.tta import predict_with_tta
from keras_transfer.utils.checks import check_int
from keras_transfer.utils.checks import plural

# How many classes `predict_images` and `keras-transfer predict` report per image.
DEFAULT_TOP_K = defaults.TOP_K


@dataclasses.dataclass(frozen=True)
class ImagePrediction:
    """The top classes of one image, most probable first.

    Example:

    ```python
    image = predict_images(model, ["rose.jpg"]).images[0]
    image.top[0]  # (2, 'roses', 0.93): the best class, its name, its probability
    ```

    Attributes:
        path: the image file.
        top: `(class_index, class_name, probability)` tuples; `class_name`
            is None for a model without class names.
    """

    path: str
    top: tuple


@dataclasses.dataclass(frozen=True)
class Predictions:
    """What `predict_images` returns.

    Example:

    ```python
    result = predict_images(model, ["photos/"])
    len(result.images), result.unreadable  # (41, (('photos/notes.jpg', 'Unknown ...'),))
    ```

    Attributes:
        images: one `ImagePrediction` per readable image, in input order.
        unreadable: `(path, reason)` for each file that could not be read
            (missing, not an image, corrupt); these have no prediction.
        class_names: the model's class names, or None when it has none.
    """

    images: tuple
    unreadable: tuple
    class_names: object


def find_images(paths):
    """The image files named by `paths`; folders are searched recursively.

    Files named directly are kept whatever their extension (the decoder
    decides); in folders, files with an image extension (`IMAGE_EXTENSIONS`)
    are taken and hidden files and folders skipped, as in training.

    Example:

    ```python
    files, missing = find_images(["photos/", "extra.jpg"])
    ```

    Args:
        paths: file and folder paths.

    Returns:
        `(files, missing)`: the files, in the order given (each folder's
        sorted), without repeats; and `(path, reason)` for paths that do
        not exist.
    """
    files, missing = [], []
    for path in map(os.fspath, paths):
        if os.path.isdir(path):
            files.extend(_images_in(path))
        elif os.path.exists(path):
            files.append(path)
        else:
            missing.append((path, "no such file or folder"))
    return list(dict.fromkeys(files)), missing


def _images_in(folder):
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(
            os.path.join(dirpath, name)
            for name in sorted(filenames)
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)
        )
    return found


def predict_images(
    model, paths, top_k=DEFAULT_TOP_K, batch_size=defaults.BATCH_SIZE, resize=None, tta=False
):
    """Predicts the `top_k` classes of each image file, with their probabilities.

    Example:

    ```python
    model = keras.saving.load_model("flowers.keras")
    result = keras_transfer.predict_images(model, ["photos/"], top_k=2)
    for image in result.images:
        print(image.path, image.top)  # ((2, 'roses', 0.93), (4, 'tulips', 0.05))
    for path, reason in result.unreadable:
        print("skipped", path, reason)
    ```

    Args:
        model: a keras-transfer classifier (see `check_classifier`).
        paths: image files and folders (searched recursively).
        top_k: int >= 1, classes per image; at most the number of classes.
            Defaults to 3.
        batch_size: images per batch. Defaults to 32.
        resize: `"stretch"`, `"crop"` or `"pad"`, or None (default) for
            what the model was trained with (`keras_transfer.layers.resize_of`).
        tta: bool, whether to average each image's probabilities with its
            mirror image's (`keras_transfer.evaluation.tta`). Defaults to False.

    Returns:
        A `Predictions`.

    Raises:
        ConfigurationError: the model is not a keras-transfer classifier, or
            an argument is invalid.
        DataError: no path holds a readable image.
    """
    info = check_classifier(model)
    top_k = min(check_int(top_k, "top_k", minimum=1), info.num_classes)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    files, unreadable = find_images(paths)
    checks = check_files(files)
    errors = {path: check.error for path, check in checks.items() if check.error}
    noted = [f"{path} ({check.note})" for path, check in checks.items() if check.note]
    if noted:
        warnings.warn(
            f"Predicting {plural(len(noted), 'image')} as stored, not turned "
            f"upright: {'; '.join(noted)}. Re-save them upright to silence this warning.",
            stacklevel=2,
        )
    readable = [path for path in files if path not in errors]
    unreadable += [(path, errors[path]) for path in files if path in errors]
    if not readable:
        listed = "; ".join(f"{p} ({reason})" for p, reason in unreadable[:5])
        raise DataError(
            "No readable image to predict"
            + (f": {listed}" if listed else f" in {', '.join(map(str, paths))}")
            + f". Pass image files or folders of images ({', '.join(IMAGE_EXTENSIONS)})."
        )
    dataset = loading.image_dataset(
        [(path, 0) for path in readable],
        info.image_size,
        batch_size,
        resize=info.resize if resize is None else resize,
    )
    if tta:
        probabilities = predict_with_tta(model, dataset)
    else:
        probabilities = np.asarray(model.predict(dataset, verbose=0), dtype="float64")
    images = []
    for path, row in zip(readable, probabilities):
        # Stable sort: equal probabilities keep the lower class index first.
        order = np.argsort(-row, kind="stable")[:top_k]
        top = tuple(
            (int(i), None if info.class_names is None else info.class_names[i], float(row[i]))
            for i in order
        )
        images.append(ImagePrediction(path, top))
    return Predictions(tuple(images), tuple(unreadable), info.class_names)
