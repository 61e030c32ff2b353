"""`export_model` and `keras-transfer export`: each format, loaded by its own runtime, agrees with Keras."""

import importlib.util
import json

import keras
import numpy as np
import onnxruntime
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from conftest import copy_flower_subset

import keras_transfer
from keras_transfer import cli
from keras_transfer import export
from keras_transfer.errors import ConfigurationError
from keras_transfer.export import ExportCheckError
from keras_transfer.export import export_model
from keras_transfer.layers import backbone_preprocessing
from keras_transfer.layers import classifier_head
from keras_transfer.layers import global_pooling

SIZE = 48
TOLERANCE = 1e-4
CLASS_NAMES = ["daisy", "roses", "tulips"]


def tiny_classifier():
    """A TransferClassifier as build_classifier makes them, with a tiny backbone.

    Raw pixels -> preprocessing -> frozen conv + BatchNormalization
    -> pooling -> head: the preprocessing must be inside every export.
    """
    keras.utils.set_random_seed(3)
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = backbone_preprocessing("tf", (SIZE, SIZE, 3))(inputs)
    backbone = keras.Sequential(
        [
            keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.DepthwiseConv2D(3, activation="relu6"),
        ],
        name="tiny_backbone",
    )
    backbone.trainable = False
    x = backbone(x, training=False)
    outputs = classifier_head(3, dropout=0.0)(global_pooling()(x))
    return keras_transfer.TransferClassifier(
        inputs, outputs, name="tiny_classifier", class_names=CLASS_NAMES
    )


@pytest.fixture(scope="module")
def model():
    return tiny_classifier()


@pytest.fixture(scope="module")
def photos(tmp_path_factory, flower_photos_dir):
    """Real flower photos, decoded and resized by the training pipeline."""
    folder = copy_flower_subset(
        flower_photos_dir,
        tmp_path_factory.mktemp("photos"),
        per_class=2,
        classes=("daisy", "roses", "tulips"),
    )
    dataset, _, _ = keras_transfer.load_image_folder(
        folder, SIZE, validation_split=0, shuffle=False, verbose=False
    )
    return np.concatenate([images.numpy() for images, _ in dataset])


def _check_against_keras(model, photos, outputs):
    expected = model.predict(photos, verbose=0)
    # Real photos give distinct outputs: a constant export would not pass.
    assert np.ptp(expected[:, 0]) > 1e-3
    np.testing.assert_allclose(outputs, expected, rtol=0, atol=TOLERANCE)


def test_saved_model_export_runs_in_tensorflow(model, photos, tmp_path):
    result = export_model(model, tmp_path / "tiny", images=photos)
    assert result.format == "saved_model" and result.max_difference <= TOLERANCE
    loaded = tf.saved_model.load(str(tmp_path / "tiny"))
    _check_against_keras(model, photos, loaded.serve(tf.constant(photos)).numpy())

    # TensorFlow Serving's default signature: probabilities and the top
    # classes by name, most probable first (3 classes: all of them).
    outputs = loaded.signatures["serving_default"](images=tf.constant(photos))
    assert sorted(outputs) == ["classes", "probabilities", "scores"]
    _check_against_keras(model, photos, outputs["probabilities"].numpy())
    order = np.argsort(-model.predict(photos, verbose=0), axis=-1)
    classes = outputs["classes"].numpy().astype(str)
    assert classes.tolist() == np.array(CLASS_NAMES)[order].tolist()
    scores = outputs["scores"].numpy()
    np.testing.assert_allclose(scores, np.sort(outputs["probabilities"].numpy())[:, ::-1])
    assert (tmp_path / "tiny" / "labels.txt").read_text() == "daisy\nroses\ntulips\n"
    assert result.labels == str(tmp_path / "tiny" / "labels.txt")


def test_litert_export_runs_in_the_litert_interpreter(model, photos, tmp_path):
    path = tmp_path / "tiny.tflite"
    result = export_model(model, path, format="litert", images=photos)
    assert result.checked_images == len(photos)
    interpreter = Interpreter(model_path=str(path))
    (source,), (target,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.resize_tensor_input(source["index"], photos.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(source["index"], photos)
    interpreter.invoke()
    _check_against_keras(model, photos, interpreter.get_tensor(target["index"]))
    assert (tmp_path / "tiny.labels.txt").read_text() == "daisy\nroses\ntulips\n"


def test_onnx_export_runs_in_onnx_runtime_at_any_batch_size(model, photos, tmp_path):
    path = tmp_path / "tiny.onnx"
    export_model(model, path, format="onnx", images=photos)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] != 1  # a named or unknown batch dimension
    seven = np.concatenate([photos, photos[:1]])
    for batch in (photos[:1], seven):
        outputs = session.run(None, {session.get_inputs()[0].name: batch})[0]
        assert outputs.shape == (len(batch), 3)
        np.testing.assert_allclose(outputs, model.predict(batch, verbose=0), rtol=0, atol=TOLERANCE)
    _check_against_keras(model, seven, session.run(None, {"image": seven})[0])
    # The class names travel in the file and beside it.
    metadata = session.get_modelmeta().custom_metadata_map
    assert json.loads(metadata["class_names"]) == CLASS_NAMES
    assert (tmp_path / "tiny.labels.txt").read_text() == "daisy\nroses\ntulips\n"


def test_an_export_that_disagrees_is_refused_and_not_kept(model, tmp_path, monkeypatch):
    path = tmp_path / "tiny"
    export_model(model, path)
    before = sorted(p.name for p in path.iterdir())
    monkeypatch.setitem(
        export.RUNTIMES, "saved_model", lambda p, images: model.predict(images) + 1e-3
    )
    with pytest.raises(ExportCheckError, match="differ by up to 0.001"):
        export_model(model, path)
    # The earlier, good export is still there, and no temporary is left.
    assert sorted(p.name for p in path.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"]


def test_an_export_its_runtime_cannot_run_is_one_line_error(model, tmp_path, monkeypatch):
    def flex_ops(path, images):
        raise RuntimeError("Select TensorFlow op(s) are not supported.\nMore details.")

    monkeypatch.setitem(export.RUNTIMES, "saved_model", flex_ops)
    with pytest.raises(ExportCheckError) as error:
        export_model(model, tmp_path / "tiny")
    assert "does not run in its runtime (Select TensorFlow op(s) are not supported)" in (
        str(error.value)
    )
    assert "\n" not in str(error.value) and list(tmp_path.iterdir()) == []


def test_cli_export_writes_a_checked_artifact(model, tmp_path, capsys):
    # ONNX from a model fresh from its file: Keras' exporter refuses a model
    # that was never called.
    model.save(tmp_path / "tiny.keras")
    status = cli.main(["export", str(tmp_path / "tiny.keras"), "--format", "onnx"])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert f"to {tmp_path / 'tiny.onnx'} (onnx)" in out
    assert "differ from the Keras model's by at most" in out
    assert onnxruntime.InferenceSession(str(tmp_path / "tiny.onnx")).get_inputs()


def _one_line_error(capsys, *argv):
    status = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("keras-transfer: error: "), err
    return lines[0]


def test_a_missing_converter_names_the_extra_to_install(tmp_path, capsys, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tf2onnx" else find_spec(name, *a),
    )
    # Checked before the model is read: the file need not even exist.
    line = _one_line_error(capsys, "export", tmp_path / "m.keras", "--format", "onnx")
    assert "needs tf2onnx" in line and "pip install keras-transfer[onnx]" in line


@pytest.mark.parametrize(
    "format, output, fragment",
    [
        ("litert", "m.onnx", "The litert format writes a .tflite file"),
        ("onnx", "m.tflite", "The onnx format writes a .onnx file"),
        ("saved_model", "not_a_model", "is not a SavedModel folder"),
    ],
)
def test_wrong_outputs_are_refused_before_exporting(
    model, tmp_path, monkeypatch, format, output, fragment
):
    (tmp_path / "not_a_model").mkdir()
    (tmp_path / "not_a_model" / "notes.txt").write_text("keep me")
    monkeypatch.setattr(keras.Model, "export", _must_not_be_called)
    with pytest.raises(ConfigurationError, match=fragment):
        export_model(model, tmp_path / output, format=format)
    assert (tmp_path / "not_a_model" / "notes.txt").read_text() == "keep me"


def _must_not_be_called(*args, **kwargs):
    raise AssertionError("exported despite a wrong output")
