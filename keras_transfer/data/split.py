"""The stratified, deterministic train/validation split of an image folder.

Each class gives the same fraction of its images to validation, so a class
with few images is not left out of validation by chance. Every random choice
draws from its own generator, keyed by the seed and a name, so the same
folder, split and seed give the same split on every machine.
"""

import zlib

import numpy as np


def stratified_split(info, validation_split, seed):
    """Splits the images of `info` into `(train, val)` lists of `(path, label)`.

    In each class, a `seed`ed shuffle puts `round(validation_split * n)`
    images in validation, at least one when the class has two or more
    images, and always leaves one for training.

    Example:

    ```python
    info = keras_transfer.data.scan_image_folder("flower_photos")
    train, val = stratified_split(info, 0.2, seed=1337)
    len(val) / info.num_images   # about 0.2, the same fraction in each class
    ```

    Args:
        info: an `ImageFolderInfo`.
        validation_split: fraction of each class held out, in [0, 1).
        seed: an integer.
    """
    train, val = [], []
    for label, name in enumerate(info.class_names):
        paths = info.files[name]
        count = len(paths)
        num_val = 0
        if validation_split > 0 and count >= 2:
            num_val = min(max(1, round(validation_split * count)), count - 1)
        order = permutation(count, seed, "class", label)
        held_out = set(order[:num_val].tolist())
        for index, path in enumerate(paths):
            (val if index in held_out else train).append((path, label))
    return train, val


def permutation(n, seed, *stream):
    """A permutation of `range(n)` from its own generator for `(seed, *stream)`.

    Independent streams keep each random choice stable when another changes:
    turning `shuffle` off does not reorder the validation set, and adding
    images to one class does not move the split of the others.

    Example:

    ```python
    permutation(5, 1337, "train")   # array([4, 0, 3, 2, 1]) on every machine
    ```
    """
    words = [seed % 2**64] + [zlib.crc32(str(s).encode()) for s in stream]
    return np.random.default_rng(words).permutation(n)
