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
    # Each map peaks at 1, or is all 0 where Grad-CAM finds no positive
    # evidence for the class (explain's contract); such a map counts as a miss.
    peaks = heatmaps.max(axis=(1, 2))
    assert heatmaps.min() >= 0 and np.all(np.isclose(peaks, 1) | (peaks == 0)), peaks
    hits = (peak_quadrants(heatmaps) == quadrants) & (peaks > 0)
    # Chance is 0.25. Measured: 0.78 here; a horizontally flipped map 0.07, a
    # transposed one 0.4 (only the diagonal quadrants stay put). A few photos
    # draw the map outside themselves whatever the quadrant, hence not 1.
    assert hits.mean() >= 0.7, (hits.mean(), peak_quadrants(heatmaps), quadrants)


def last_dense(model):
    head = model.get_layer("head")
    return [layer for layer in head.layers if isinstance(layer, keras.layers.Dense)][-1]


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


SMALL = 96


def recipe_heatmaps(model, images, layer_name):
    """The keras.io Grad-CAM recipe: a two-output model; works on an inline backbone only."""
    import tensorflow as tf

    final = model.layers[-1]
    grad_model = keras.Model(model.input, [model.get_layer(layer_name).output, model.output])
    final.activation = keras.activations.linear
    try:
        with tf.GradientTape() as tape:
            feature_map, logits = grad_model(images, training=False)
            chosen = tf.gather(logits, tf.argmax(logits, axis=-1), axis=-1, batch_dims=1)
        weights = tf.reduce_mean(tape.gradient(chosen, feature_map), axis=(1, 2))
    finally:
        final.activation = keras.activations.softmax
    cam = tf.nn.relu(tf.einsum("nhwc,nc->nhw", feature_map, weights))
    cam = tf.image.resize(cam[..., None], images.shape[1:3])[..., 0].numpy()
    return cam / cam.max(axis=(1, 2), keepdims=True)


@pytest.fixture(scope="module")
def three_models(weights_dir):
    """The same MobileNetV2-0.35 classifier held three ways: nested, inline, build_classifier."""
    weights = str(weights_dir / WEIGHTS_035)
    shape = (SMALL, SMALL, 3)
    keras.utils.set_random_seed(1)
    # keras.io / TensorFlow tutorial style: augmentation, then the backbone
    # called as a layer in inference mode.
    base = keras.applications.MobileNetV2(
        input_shape=shape, alpha=0.35, include_top=False, weights=weights
    )
    inputs = keras.Input(shape)
    x = keras.layers.RandomFlip("horizontal")(inputs)
    x = keras.layers.RandomRotation(0.2)(x)
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(x)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.5)(x)
    nested = keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(x))
    # Inline: the backbone's layers in the model's own graph.
    inputs = keras.Input(shape)
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    inline_base = keras.applications.MobileNetV2(
        input_tensor=x, alpha=0.35, include_top=False, weights=weights
    )
    x = keras.layers.GlobalAveragePooling2D()(inline_base.output)
    inline = keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(x))
    inline.layers[-1].set_weights(nested.layers[-1].get_weights())
    built = keras_transfer.build_classifier(
        "mobilenet_v2_035", 5, input_shape=shape, weights=weights, dropout=0.5
    )
    last_dense(built).set_weights(nested.layers[-1].get_weights())
    return nested, inline, built


def test_nested_inline_and_built_models_give_the_recipes_maps(three_models, flower_photos_dir):
    nested, inline, built = three_models
    photos = held_out_photos(flower_photos_dir, SMALL)
    expected = recipe_heatmaps(inline, photos, "out_relu")
    for model in three_models:
        assert target_layer(model).name == "out_relu"
        np.testing.assert_allclose(keras_transfer.explain(model, photos), expected, atol=2e-3)
    # The keras.io recipe itself cannot reach into the nested backbone.
    with pytest.raises(ValueError):
        recipe_heatmaps(nested, photos, "out_relu")


def test_class_index_and_layer_choose_what_is_explained(three_models, flower_photos_dir):
    _, _, built = three_models
    photos = held_out_photos(flower_photos_dir, SMALL)
    predicted = built.predict(photos, verbose=0).argmax(-1)
    np.testing.assert_allclose(
        keras_transfer.explain(built, photos, class_index=predicted),
        keras_transfer.explain(built, photos),
        atol=1e-5,
    )
    other = (predicted + 1) % 5
    assert not np.allclose(
        keras_transfer.explain(built, photos, class_index=other),
        keras_transfer.explain(built, photos),
        atol=0.05,
    )
    earlier = keras_transfer.explain(built, photos, layer="block_13_expand_relu")
    assert earlier.shape == (5, SMALL, SMALL)
    assert not np.allclose(earlier, keras_transfer.explain(built, photos), atol=0.05)


def test_bad_inputs_are_refused_with_the_fix(three_models):
    _, _, built = three_models
    photos = np.zeros((2, SMALL, SMALL, 3), "float32")
    with pytest.raises(ConfigurationError, match="images of shape"):
        keras_transfer.explain(built, np.zeros((2, 64, 64, 3)))
    with pytest.raises(ConfigurationError, match="Add the batch axis"):
        keras_transfer.explain(built, photos[0])
    with pytest.raises(ConfigurationError, match="below 5"):
        keras_transfer.explain(built, photos, class_index=7)
    with pytest.raises(ConfigurationError, match="no layer named 'nope'"):
        keras_transfer.explain(built, photos, layer="nope")
    inputs = keras.Input((16, 16, 3))
    flat = keras.layers.Flatten()(inputs)
    dense_only = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(flat))
    with pytest.raises(ConfigurationError, match="no convolutional feature map"):
        keras_transfer.explain(dense_only, np.zeros((1, 16, 16, 3)))
    keras_hub = pytest.importorskip("keras_hub")
    # A ViT: its patch embedding is 4-D, but tokens, not a map, reach the head.
    vit = keras_hub.models.ViTBackbone(
        image_shape=(32, 32, 3), patch_size=8, num_layers=1, num_heads=2, hidden_dim=16,
        mlp_dim=32,
    )  # fmt: skip
    inputs = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalAveragePooling1D()(vit(inputs))
    vit_classifier = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(pooled))
    with pytest.raises(ConfigurationError, match="transformer's tokens"):
        keras_transfer.explain(vit_classifier, np.zeros((1, 32, 32, 3)))


def test_keras_hub_image_classifier():
    keras_hub = pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(2)
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 64],
        stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2],
        block_type="basic_block",
        use_pre_activation=False,
        image_shape=(32, 32, 3),
    )
    classifier = keras_hub.models.ImageClassifier(
        backbone=backbone, num_classes=3, preprocessor=None
    )
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    layer = target_layer(classifier)
    assert layer.name == "stack1_block0_out"  # the last stage, before the pooler
    # The reference: a two-output model inside the backbone, then the head by hand.
    import tensorflow as tf

    inner = keras.Model(backbone.input, [layer.output, backbone.output])
    with tf.GradientTape() as tape:
        feature_map, features = inner(images, training=False)
        tape.watch(feature_map)
        logits = classifier.get_layer("predictions")(classifier.get_layer("pooler")(features))
        chosen = tf.reduce_sum(logits[:, 1])
    weights = tf.reduce_mean(tape.gradient(chosen, feature_map), axis=(1, 2))
    cam = tf.nn.relu(tf.einsum("nhwc,nc->nhw", feature_map, weights))
    cam = tf.image.resize(cam[..., None], (32, 32))[..., 0].numpy()
    expected = cam / cam.max(axis=(1, 2), keepdims=True)
    heatmaps = keras_transfer.explain(classifier, images, class_index=1)
    np.testing.assert_allclose(heatmaps, expected, atol=2e-3)


def test_another_backend_is_refused_with_the_fix(three_models, monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    with pytest.raises(ConfigurationError, match="KERAS_BACKEND=tensorflow"):
        keras_transfer.explain(three_models[2], np.zeros((1, SMALL, SMALL, 3)))


JAX_SCRIPT = """
import sys
import numpy as np, keras, keras_transfer
data = np.load(sys.argv[1])
model = keras.models.load_model(sys.argv[2])
assert keras.backend.backend() == "jax"
np.save(sys.argv[3], keras_transfer.explain(model, data["images"], class_index=data["classes"]))
"""


def test_jax_backend_gives_the_tensorflow_maps(tmp_path):
    pytest.importorskip("jax")
    import os
    import subprocess
    import sys

    keras.utils.set_random_seed(3)
    inputs = keras.Input((24, 24, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="last_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    model.save(tmp_path / "m.keras")
    images = np.random.default_rng(0).uniform(0, 1, (4, 24, 24, 3)).astype("float32")
    classes = np.array([0, 1, 2, 1])
    np.savez(tmp_path / "in.npz", images=images, classes=classes)
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT, tmp_path / "in.npz", tmp_path / "m.keras",
         tmp_path / "out.npy"],
        env=env, check=True, timeout=300,
    )  # fmt: skip
    expected = keras_transfer.explain(model, images, class_index=classes)
    assert expected.max() == 1
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-4)
