"""`load_image_folder`: an image folder as `tf.data` training and validation sets.

It follows `keras.utils.image_dataset_from_directory`: classes sorted
alphanumerically, labels as integers, batches of `float32` RGB pixels in
[0, 255] (the classifier does its own preprocessing). It differs where
small transfer-learning data sets and real photos need it: the folder is
checked and unreadable images named and skipped first (`folder.py`), the
validation split is stratified (`split.py`), every file is decoded by
`images.decode_image_file` (upright, more formats, antialiased, `resize`
keeps the aspect ratio if asked), and decoded, resized images are cached
in memory as `uint8` (a quarter of the memory of `float32`), so only the
first epoch decodes.
"""

import os

import numpy as np

from keras_transfer import defaults
from keras_transfer.data.folder import list_image_folder
from keras_transfer.data.folder import warn_left_out
from keras_transfer.data.images import check_resize
from keras_transfer.data.images import decode_image_file
from keras_transfer.data.split import permutation
from keras_transfer.data.split import stratified_split
from keras_transfer.errors import ConfigurationError
from keras_transfer.errors import DataError
from keras_transfer.utils.checks import check_image_size
from keras_transfer.utils.checks import check_int
from keras_transfer.utils.checks import is_int
from keras_transfer.utils.pipelines import parallel_calls
from keras_transfer.utils.pipelines import prefetched


def load_image_folder(
    directory,
    image_size,
    batch_size=defaults.BATCH_SIZE,
    validation_split=defaults.VALIDATION_SPLIT,
    seed=defaults.SEED,
    cache=True,
    shuffle=True,
    verbose=True,
    resize=defaults.RESIZE,
):
    """Loads a folder-per-class image tree as `tf.data` training and validation sets.

    The folder is checked first (see `scan_image_folder`); unreadable images
    are skipped with a warning that names each. Images are decoded in
    parallel by `keras_transfer.data.images.decode_image_file` (the decoder
    `predict` and `evaluate` use too): turned upright by their EXIF
    orientation, converted to RGB (grayscale, CMYK, 16-bit, transparent,
    palette, animated: first frame), resized to `image_size` with
    antialiasing as `resize` says, cached in memory, batched and prefetched.

    The split is stratified and deterministic: in each class, a `seed`ed
    shuffle puts `round(validation_split * n)` images in validation, at least
    one when the class has two or more images, and always leaves one for
    training. The same folder, split and seed give the same split on every
    machine.

    Example:

    ```python
    train_ds, val_ds, class_names = keras_transfer.load_image_folder(
        "flower_photos", image_size=160, batch_size=32, validation_split=0.2
    )
    model = keras_transfer.build_classifier(
        "mobilenet_v2_050", len(class_names), input_shape=(160, 160, 3)
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(train_ds, validation_data=val_ds, epochs=5)
    ```

    Args:
        directory: path of the folder holding one subfolder per class.
        image_size: side of the square images the datasets yield, or
            `(height, width)`.
        batch_size: images per batch. Defaults to 32.
        validation_split: fraction of each class held out for validation, in
            [0, 1). 0 gives no validation set. Defaults to 0.2.
        seed: seed of the split and of the shuffling. None picks one at
            random (the split then changes on every call). Defaults to 1337.
        cache: keep the decoded, resized images in memory after the first
            epoch. Turn off when they do not fit (each image takes
            `height * width * 3` bytes), or when the model caches frozen
            features (`build_classifier`'s models do): its `fit` reads the
            images once, and kept images only make memory grow with the
            photos (`keras-transfer train` turns it off). Defaults to True.
        shuffle: reshuffle the training set at every epoch. The split is
            random either way. Defaults to True.
        verbose: print how many images and classes were found and how they
            were split, like Keras does. Defaults to True.
        resize: how images meet `image_size`: `"stretch"` (to the size, the
            aspect ratio lost, as in Keras), `"crop"` (the shorter side to
            the size, then the centre) or `"pad"` (the whole image,
            letterboxed on black). Pass the model the same value
            (`build_classifier(..., resize=...)`) so that it is saved with
            it and `predict` resizes as training did. Defaults to `"crop"`
            (`defaults.RESIZE`; see docs/photos.md for why).

    Returns:
        `(train_ds, val_ds, class_names)`: two `tf.data.Dataset`s of
        `(images, labels)` batches, `images` `float32` of shape
        `(batch, height, width, 3)` with values in [0, 255] and `labels`
        `int32` class indices (for `sparse_categorical_crossentropy`);
        `val_ds` is None when `validation_split` is 0. `class_names` is the
        list of class names in label order. As in Keras, each dataset also
        has `class_names` and `file_paths` attributes.

    Raises:
        ConfigurationError: an argument has an invalid value.
        DataError: the folder cannot be used (see `scan_image_folder`), or the
            split leaves no image for validation.
    """
    height, width = check_image_size(image_size)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    validation_split = _check_split(validation_split)
    seed = _check_seed(seed)
    resize = check_resize(resize)

    info = list_image_folder(directory)
    warn_left_out(info, stacklevel=3)
    train, val = stratified_split(info, validation_split, seed)
    if validation_split > 0 and not val:
        raise DataError(
            f"validation_split={validation_split} leaves no image for validation in "
            f"{info.directory}: every class has a single image. Add images, or pass "
            "validation_split=0 to train without validation."
        )

    class_names = list(info.class_names)
    if verbose:
        message = f"Found {info.num_images} images belonging to {len(class_names)} classes"
        if validation_split > 0:
            message += f" ({len(train)} for training, {len(val)} for validation)"
        print(message + ".")

    if shuffle:
        train = [train[i] for i in permutation(len(train), seed, "train")]
    train_ds = image_dataset(train, (height, width), batch_size, cache, shuffle, seed, resize)
    train_ds.class_names = class_names
    train_ds.file_paths = [path for path, _ in train]
    val_ds = None
    if val:
        # Mixed classes in every batch, fixed order across epochs.
        val = [val[i] for i in permutation(len(val), seed, "validation")]
        val_ds = image_dataset(val, (height, width), batch_size, cache, False, seed, resize)
        val_ds.class_names = class_names
        val_ds.file_paths = [path for path, _ in val]
    return train_ds, val_ds, class_names


def _check_split(value):
    try:
        ok = not isinstance(value, bool) and 0 <= float(value) < 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigurationError(
            "validation_split must be a number in [0, 1), e.g. 0.2; 0 means no "
            f"validation set. Received: validation_split={value!r}"
        )
    return float(value)


def _check_seed(seed):
    """`seed`, or a random one for None (the split then changes every call)."""
    if seed is None:
        return int(np.random.randint(2**31 - 1))
    if not is_int(seed):
        raise ConfigurationError(f"seed must be an integer or None. Received: seed={seed!r}")
    return seed


def image_dataset(
    items,
    image_size,
    batch_size,
    cache=False,
    shuffle=False,
    seed=None,
    resize=defaults.RESIZE,
):
    """The `tf.data` pipeline of `load_image_folder`: decode, resize, cache, batch.

    Prediction and evaluation feed images through this same pipeline, so a
    model sees the pixels it was trained on: every file goes through
    `images.decode_image_file` (EXIF orientation, scaled JPEG decoding,
    RGB conversion, antialiased resize to `uint8`).

    Example:

    ```python
    ds = image_dataset([("a.jpg", 0), ("b.png", 0)], (160, 160), batch_size=32)
    probabilities = model.predict(ds)
    ```

    Args:
        items: `(path, label)` pairs; the files must be decodable (see
            `decoding.decode_errors`).
        image_size: `(height, width)`.
        batch_size: images per batch.
        cache: keep the decoded, resized images in memory as `uint8`.
        shuffle: reshuffle the items at every epoch.
        seed: seed of the shuffling.
        resize: `"stretch"`, `"crop"` or `"pad"`: how the aspect ratio is
            handled (see `images.decode_image_file`).

    Returns:
        A `tf.data.Dataset` of `(images, labels)` batches, `images` `float32`
        in [0, 255], in the order of `items` unless `shuffle`.
    """
    import tensorflow as tf

    resize = check_resize(resize)
    paths = tf.constant([os.fsencode(path) for path, _ in items])
    labels = tf.constant([label for _, label in items], dtype=tf.int32)
    height, width = image_size

    def decode(path):
        return decode_image_file(path, (height, width), resize)

    def load(path, label):
        # Pillow releases the GIL while it decodes and resizes, so the
        # parallel map runs this on several cores.
        image = tf.numpy_function(decode, [path], tf.uint8, stateful=False)
        image.set_shape((height, width, 3))
        return image, label

    def to_float(images, labels):
        return tf.cast(images, tf.float32), labels

    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    if shuffle and not cache:
        # Shuffling paths is cheap, so it can cover the whole set.
        ds = ds.shuffle(len(items), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(load, num_parallel_calls=parallel_calls())
    if cache:
        ds = ds.cache()
        if shuffle:
            # Cached elements are shared, not copied, so a buffer as large as
            # the set costs no extra memory and gives a full reshuffle.
            ds = ds.shuffle(len(items), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(to_float, num_parallel_calls=parallel_calls())
    return prefetched(ds)
