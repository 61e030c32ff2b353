"""Frozen pooled backbone features of a list of image files, in one pass.

Every table of the audit (label issues, duplicates, outliers) reads the same
features, so the images are decoded and run through the pretrained backbone
once. The pixels come from the pipeline `train` uses
(`keras_transfer.data.loading.image_dataset`, hence `decode_image_file`), the
backbone and its input scaling from `build_classifier`'s model (its layers
named `"preprocessing"` and the backbone), and the feature of an image is the
backbone's output averaged over its spatial positions: what the default head
reads. With `flip=True` each image's feature is the mean of the features of
the image and of its mirror image, which makes it steadier (a flower seen
from the left is the same flower); on the flowers this measurably improves
the label-error ranking (see docs/audit.md).

Several backbones describe an image better than one: `backbone_features`
runs each (all their models are built, hence all their weights found,
before the first pass) and `concatenate_features` puts their features side
by side, each scaled to unit length so that none outweighs the others
because its numbers are larger.
"""

import os

import numpy as np

from keras_transfer import defaults


def extract_features(
    paths,
    backbone=defaults.BACKBONE,
    image_size=None,
    weights="imagenet",
    resize=defaults.RESIZE,
    batch_size=defaults.BATCH_SIZE,
    flip=True,
    verbose=1,
):
    """The pooled features of the pretrained backbone for each image file.

    Example:

    ```python
    features = extract_features(["a.jpg", "b.jpg"], "mobilenet_v2_050", 224)
    features.shape  # (2, 1280)
    ```

    Args:
        paths: image files, decodable by `keras_transfer.data.decode_image_file`.
        backbone: a registered backbone name or a `BackboneSpec`.
        image_size: the side of the square input; None for the backbone's
            default.
        weights: `"imagenet"`, None or a weights file, as for
            `build_classifier`.
        resize: `"stretch"`, `"crop"` or `"pad"`.
        batch_size: images per batch.
        flip: average each image's features with those of its mirror image.
        verbose: 1 shows Keras' progress bar, 0 nothing.

    Returns:
        A `float32` array `(len(paths), features)`, in the order of `paths`.
    """
    (blocks,) = backbone_features(
        paths, [backbone], image_size, [weights], resize, batch_size, flip, verbose
    )
    return blocks


def feature_model(backbone=defaults.BACKBONE, image_size=None, weights="imagenet", flip=True):
    """A Keras model from raw `[0, 255]` RGB pixels to pooled backbone features.

    Example:

    ```python
    model = feature_model("mobilenet_v2_050", 96, weights=None)
    model.output_shape  # (None, 1280)
    ```

    Args:
        backbone, image_size, weights, flip: as for `extract_features`.
    """
    import keras

    from keras_transfer.backbones import find_backbone
    from keras_transfer.backbones import get_backbone
    from keras_transfer.models import build_classifier

    spec = get_backbone(backbone)
    size = image_size or spec.default_input_size
    classifier = build_classifier(
        spec, 2, input_shape=(size, size, 3), weights=weights, cache_frozen_features=False
    )
    preprocessing = classifier.get_layer("preprocessing")
    features, _ = find_backbone(classifier)

    def pooled(pixels):
        x = features(preprocessing(pixels), training=False)
        # Feature maps (batch, h, w, c) and token sequences (batch, n, c)
        # are averaged over their positions; vectors are kept.
        axes = tuple(range(1, len(x.shape) - 1))
        return keras.ops.mean(x, axis=axes) if axes else x

    inputs = keras.Input((size, size, 3), name="image")
    outputs = pooled(inputs)
    if flip:
        outputs = (outputs + pooled(keras.ops.flip(inputs, axis=2))) / 2
    return keras.Model(inputs, outputs, name=f"{spec.name}_features")


def backbone_features(
    paths,
    backbones,
    image_size=None,
    weights="imagenet",
    resize=defaults.RESIZE,
    batch_size=defaults.BATCH_SIZE,
    flip=True,
    verbose=1,
):
    """The pooled features of each of several pretrained backbones, one array each.

    Every backbone's model is built before the first pass, so weights that
    cannot be found (offline, no cached file) stop the audit at once rather
    than after minutes of work on the other backbones.

    Example:

    ```python
    blocks = backbone_features(paths, ["mobilenet_v2_050", "mobilenet_v1_025"], 288)
    [b.shape for b in blocks]  # [(N, 1280), (N, 256)]
    ```

    Args:
        paths: image files, as for `extract_features`.
        backbones: registered backbone names or `BackboneSpec`s.
        image_size: the side of the square input of every backbone; None
            for each backbone's default.
        weights: one entry (`"imagenet"` or a weights file) per backbone,
            or a single `"imagenet"` (or None) for all of them.
        resize: `"stretch"`, `"crop"` or `"pad"`.
        batch_size: images per batch.
        flip: average each image's features with those of its mirror image.
        verbose: 1 shows what is done and Keras' progress bar, 0 nothing.

    Returns:
        A list of `float32` arrays `(len(paths), features)`, one per backbone.

    Raises:
        ConfigurationError: `weights` is one file for several backbones, or
            a list of another length than `backbones`.
    """
    from keras_transfer.data.loading import image_dataset

    weights = weights_per_backbone(weights, backbones)
    models = [feature_model(b, image_size, w, flip) for b, w in zip(backbones, weights)]
    items = [(p, 0) for p in paths]
    blocks = []
    for model in models:
        if verbose:
            print(f"Features of {model.name[: -len('_features')]} at {model.input_shape[1]} px.")
        dataset = image_dataset(items, model.input_shape[1:3], batch_size, resize=resize)
        dataset = dataset.map(lambda images, labels: images)
        blocks.append(np.asarray(model.predict(dataset, verbose=verbose), dtype=np.float32))
    return blocks


def weights_per_backbone(weights, backbones):
    """`weights` as one entry per backbone; raises a `ConfigurationError` if it cannot be.

    Example:

    ```python
    weights_per_backbone("imagenet", ["mobilenet_v2_050", "mobilenet_v1_025"])
    # ['imagenet', 'imagenet']
    ```
    """
    from keras_transfer.errors import ConfigurationError

    if weights is None or weights == "imagenet":
        return [weights] * len(backbones)
    if isinstance(weights, (str, os.PathLike)):
        if len(backbones) == 1:
            return [weights]
        weights = [weights]
    weights = list(weights)
    if len(weights) != len(backbones):
        raise ConfigurationError(
            f"The audit needs one weights entry per backbone: {len(backbones)} backbones "
            f"({', '.join(str(getattr(b, 'name', b)) for b in backbones)}) and {len(weights)} weights given. Pass "
            f"weights='imagenet', or a list of files in the order of the backbones "
            f"(--weights once per --backbone)."
        )
    return weights


def concatenate_features(blocks):
    """Several backbones' features side by side, each block scaled to unit length.

    Example:

    ```python
    features = concatenate_features([np.ones((2, 3)), np.ones((2, 5))])
    np.linalg.norm(features[:, :3], axis=1)  # [1., 1.]
    ```
    """
    unit = []
    for block in blocks:
        block = np.asarray(block, dtype=np.float32)
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        unit.append(block / np.maximum(norms, np.finfo(np.float32).tiny))
    return np.concatenate(unit, axis=1)
