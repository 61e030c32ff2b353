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
"""

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
    from keras_transfer.data.loading import image_dataset

    model = feature_model(backbone, image_size, weights, flip)
    size = model.input_shape[1:3]
    dataset = image_dataset([(p, 0) for p in paths], size, batch_size, resize=resize)
    dataset = dataset.map(lambda images, labels: images)
    return np.asarray(model.predict(dataset, verbose=verbose), dtype=np.float32)


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
