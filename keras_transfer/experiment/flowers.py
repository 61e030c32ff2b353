"""The images a comparison uses when given none: TensorFlow's flower_photos.

About 3,700 photos of 5 kinds of flowers, one folder per class: small
enough to download once into the Keras cache (`$KERAS_HOME/datasets`), hard
enough that training from scratch and from ImageNet weights differ.
"""

import os

import keras

from keras_transfer.backbones import weights as weights_lib
from keras_transfer.errors import DataError

FLOWER_PHOTOS_URL = (
    "https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz"
)


def default_data_dir():
    """flower_photos from the Keras cache; downloaded only when reachable.

    Example:

    ```python
    data_dir = default_data_dir()  # .../datasets/flower_photos/flower_photos
    ```

    Returns:
        The folder holding one subfolder of images per class.

    Raises:
        DataError: flower_photos is not cached and its host cannot be
            reached (offline); the message says how to seed the cache.
    """
    datasets = os.path.join(_writable_keras_home(), "datasets")
    extracted = os.path.join(datasets, "flower_photos")
    # keras.utils.get_file("flower_photos", extract=True) extracts the
    # archive's top folder into `flower_photos/`; Keras 2 (untar=True) put
    # the class folders there directly.
    for candidate in (os.path.join(extracted, "flower_photos"), extracted):
        if _has_class_folders(candidate):
            return candidate
    archive = os.path.join(datasets, "flower_photos_archive")
    if not os.path.exists(archive) and not weights_lib.reachable(FLOWER_PHOTOS_URL):
        raise DataError(
            "No DATA_DIR given, and TensorFlow's flower_photos is not in the "
            f"Keras cache ({datasets}) and cannot be downloaded (offline?). "
            "Either pass a folder with one subfolder of images per class "
            "(keras-transfer train DATA_DIR, keras-transfer compare DATA_DIR, or data_dir=...), or seed the "
            f"cache: download {FLOWER_PHOTOS_URL} on a machine with internet "
            f"and save it as {archive}, or extract it so that "
            f"{os.path.join(extracted, 'flower_photos', 'daisy')} exists."
        )
    path = keras.utils.get_file(
        "flower_photos",
        origin=FLOWER_PHOTOS_URL,
        extract=True,
        cache_dir=_writable_keras_home(),
    )
    nested = os.path.join(path, "flower_photos")
    return nested if os.path.isdir(nested) else path


def _writable_keras_home():
    # The folder keras.utils.get_file caches in, read at call time.
    return str(weights_lib.cache_dir().parent)


def _has_class_folders(path):
    try:
        return any(entry.is_dir() and not entry.name.startswith(".") for entry in os.scandir(path))
    except OSError:
        return False
