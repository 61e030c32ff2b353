"""The comparison's images, decoded once, and a fresh pipeline for every run.

A `tf.data` pipeline that reshuffles at every epoch keeps its shuffling
state in the dataset object: each new pass over it draws the next order.
Runs that shared one training dataset therefore saw different orders, as
each run (and the cached-feature pass of each `fit`) consumed passes of it,
and two runs with the same seed and the same first epochs disagreed from
epoch 1 on. `ComparisonData` keeps the decoded images as `uint8` tensors and
builds a new seeded pipeline for every run, so the k-th epoch of every run
sees the same batches.
"""

import dataclasses

import numpy as np

from keras_transfer.data import load_image_folder
from keras_transfer.utils.pipelines import parallel_calls
from keras_transfer.utils.pipelines import prefetched


@dataclasses.dataclass(frozen=True)
class ComparisonData:
    """The training and validation images of a comparison, in memory.

    Example:

    ```python
    data = ComparisonData.from_folder("flower_photos", 128, batch_size=32,
                                      validation_split=0.2, seed=1337)
    train_ds = data.train_dataset()  # a fresh pipeline: same order every time
    ```

    Args:
        train_images, val_images: `uint8` tensors `(n, height, width, 3)`.
        train_labels, val_labels: `int32` tensors `(n,)` of class indices.
        class_names: the class names in label order.
        train_files, val_files: the image paths, in the order above.
        batch_size: int, images per batch.
        seed: int, seed of the training set's shuffling.
    """

    train_images: object
    train_labels: object
    val_images: object
    val_labels: object
    class_names: tuple
    train_files: tuple
    val_files: tuple
    batch_size: int
    seed: int

    @classmethod
    def from_folder(cls, directory, size, batch_size, validation_split, seed, verbose=True):
        """Reads, decodes and resizes the images of `directory` once.

        The split is `load_image_folder`'s (stratified, seeded); the
        validation images keep its mixed-class order.
        """
        train_ds, val_ds, class_names = load_image_folder(
            directory,
            size,
            batch_size=batch_size,
            validation_split=validation_split,
            seed=seed,
            cache=False,
            shuffle=False,
            verbose=verbose,
        )
        train_images, train_labels = _materialise(train_ds, len(train_ds.file_paths))
        val_images, val_labels = _materialise(val_ds, len(val_ds.file_paths))
        return cls(
            train_images=train_images,
            train_labels=train_labels,
            val_images=val_images,
            val_labels=val_labels,
            class_names=tuple(class_names),
            train_files=tuple(train_ds.file_paths),
            val_files=tuple(val_ds.file_paths),
            batch_size=batch_size,
            seed=seed,
        )

    @property
    def num_train(self):
        return int(self.train_labels.shape[0])

    @property
    def num_validation(self):
        return int(self.val_labels.shape[0])

    def train_dataset(self):
        """A new training pipeline: reshuffled every epoch, from the same first order."""
        import tensorflow as tf

        ds = tf.data.Dataset.from_tensor_slices((self.train_images, self.train_labels))
        # A seeded shuffle of a new dataset starts from the same state: the
        # k-th epoch of every run gets the same order.
        ds = ds.shuffle(self.num_train, seed=self.seed, reshuffle_each_iteration=True)
        return _batched(ds, self.batch_size)

    def validation_dataset(self):
        """A new validation pipeline, in the same order at every pass."""
        import tensorflow as tf

        ds = tf.data.Dataset.from_tensor_slices((self.val_images, self.val_labels))
        return _batched(ds, self.batch_size)

    def warm_up_slice(self):
        """A few images giving every batch shape of the full data.

        One full batch and the last, smaller batch (when there is one) of
        the training set, and the same of the validation set: what a run
        traces and runs is then traced and run once on each input shape.
        """
        return dataclasses.replace(
            self,
            **_slice_like(self.train_images, self.train_labels, self.batch_size, "train"),
            **_slice_like(self.val_images, self.val_labels, self.batch_size, "val"),
        )


def _slice_like(images, labels, batch_size, prefix):
    count = int(labels.shape[0])
    keep = count if count <= batch_size else batch_size + count % batch_size
    return {f"{prefix}_images": images[:keep], f"{prefix}_labels": labels[:keep]}


def _batched(ds, batch_size):
    import tensorflow as tf

    def to_float(images, labels):
        return tf.cast(images, tf.float32), labels

    ds = ds.batch(batch_size).map(to_float, num_parallel_calls=parallel_calls())
    return prefetched(ds)


def _materialise(ds, count):
    """All the batches of `ds` as `(uint8 images, int32 labels)` tensors."""
    import tensorflow as tf

    images = labels = None
    filled = 0
    for batch_images, batch_labels in ds:
        if images is None:
            # Filled in place: no second copy of every image while joining.
            images = np.empty((count,) + tuple(batch_images.shape[1:]), np.uint8)
            labels = np.empty((count,), np.int32)
        size = int(batch_labels.shape[0])
        # The pixels are whole numbers in [0, 255]: uint8 keeps them exactly.
        images[filled : filled + size] = batch_images.numpy().astype(np.uint8)
        labels[filled : filled + size] = batch_labels.numpy()
        filled += size
    return tf.constant(images), tf.constant(labels)
