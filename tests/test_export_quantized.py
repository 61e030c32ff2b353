"""Quantized LiteRT exports: smaller files that run on raw pixels, scored against Keras, labelled; their bad inputs."""

import json
import shutil

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
from conftest import copy_flower_subset

import keras_transfer
from keras_transfer import cli
from keras_transfer import export
from keras_transfer.cli.export import calibration_source
from keras_transfer.errors import ConfigurationError
from keras_transfer.errors import DataError
from keras_transfer.export import export_model

SIZE = 96
CLASSES = ("daisy", "roses", "tulips")
WEIGHTS = "mobilenet_2_5_224_tf_no_top.h5"


@pytest.fixture(scope="module")
def photos(tmp_path_factory, flower_photos_dir):
    """16 real photos of each of 3 classes; half of each class held out by a 0.5 split."""
    return copy_flower_subset(
        flower_photos_dir, tmp_path_factory.mktemp("photos"), per_class=16, classes=CLASSES
    )


@pytest.fixture(scope="module")
def model(photos, weights_dir):
    """MobileNet v1 0.25 with ImageNet weights and a head fitted on the training half."""
    keras.utils.set_random_seed(0)
    train, _, names = keras_transfer.load_image_folder(
        photos, SIZE, batch_size=8, validation_split=0.5, verbose=False
    )
    model = keras_transfer.build_classifier(
        "mobilenet_v1_025",
        len(names),
        input_shape=(SIZE, SIZE, 3),
        weights=str(weights_dir / WEIGHTS),
        class_names=names,
    )
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(train, epochs=8, verbose=0)
    return model


@pytest.fixture(scope="module")
def float32_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("float32") / "flowers.tflite"
    export_model(model, path, format="litert")
    return path


def _interpret(path, images):
    """The file's outputs, through ai_edge_litert's interpreter, on raw float32 pixels."""
    interpreter = Interpreter(model_path=str(path))
    (source,), (target,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert source["dtype"] == np.float32 and target["dtype"] == np.float32
    interpreter.resize_tensor_input(source["index"], images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(source["index"], images)
    interpreter.invoke()
    return interpreter.get_tensor(target["index"])


@pytest.mark.parametrize("quantize, max_ratio", [("float16", 0.6), ("int8", 0.4)])
def test_a_quantized_file_is_smaller_runs_on_raw_pixels_and_agrees_with_keras(
    model, photos, float32_file, tmp_path, quantize, max_ratio
):
    path = tmp_path / f"flowers_{quantize}.tflite"
    result = export_model(
        model, path, format="litert", quantize=quantize,
        calibration_data=photos, validation_split=0.5,
    )  # fmt: skip
    assert path.stat().st_size <= max_ratio * float32_file.stat().st_size
    held = export.quantization.quantization_images(model, photos, 0.5)
    assert len(held.images) == 24 and held.images.max() > 200  # raw pixels, not [-1, 1]
    expected = model.predict(held.images, verbose=0)
    actual = _interpret(path, held.images)
    agreement = np.mean(np.argmax(actual, -1) == np.argmax(expected, -1))
    assert agreement >= 0.8, agreement
    if quantize == "float16":
        np.testing.assert_allclose(actual, expected, atol=2e-2)
    # The score written beside the file is of these images and this file.
    score = result.score
    assert score.images == 24 and score.agreement == pytest.approx(agreement)
    assert score.keras_accuracy == pytest.approx(np.mean(np.argmax(expected, -1) == held.labels))
    record = json.loads((tmp_path / f"flowers_{quantize}.accuracy.json").read_text())
    assert record["quantize"] == quantize and record["bytes"] == path.stat().st_size
    assert record["export_accuracy"] == pytest.approx(score.export_accuracy)
    assert (tmp_path / f"flowers_{quantize}.labels.txt").read_text() == "daisy\nroses\ntulips\n"


def test_the_kept_litert_file_drops_internal_names_and_computes_bit_for_bit_the_same(
    model, photos, float32_file, tmp_path
):
    converted = tmp_path / "converted.tflite"
    model.export(str(converted), format="litert", verbose=False)  # the converter's own file
    assert float32_file.stat().st_size < converted.stat().st_size
    names = {d["name"] for d in Interpreter(model_path=str(float32_file)).get_tensor_details()}
    assert not any(";" in name for name in names)  # the fused ops' long names are gone
    images = export.quantization.quantization_images(model, photos, 0.5).images[:4]
    np.testing.assert_array_equal(_interpret(float32_file, images), _interpret(converted, images))
    # What an app calls the file by is kept: the input's name and the signature.
    kept, original = (
        Interpreter(model_path=str(float32_file)),
        Interpreter(model_path=str(converted)),
    )
    assert kept.get_input_details()[0]["name"] == original.get_input_details()[0]["name"]
    assert kept.get_signature_list() == original.get_signature_list()
    outputs = kept.get_signature_runner()(image=images[:1])
    np.testing.assert_array_equal(outputs["output_0"], _interpret(converted, images[:1]))


def test_the_cli_scores_on_the_recorded_training_split_and_exits_4_past_the_tolerance(
    model, photos, float32_file, tmp_path, capsys, monkeypatch
):
    model.save(tmp_path / "flowers.keras")
    history = {"class_names": list(CLASSES), "data_dir": str(photos)}
    history.update(validation_split=0.5, seed=1337, epochs=[])
    (tmp_path / "history.json").write_text(json.dumps(history))
    # The conversion is tested above: here a real .tflite file stands for it,
    # read back with each output shifted by one class, as a broken
    # quantization would give.
    monkeypatch.setattr(keras.Model, "export", lambda m, p, **k: shutil.copy(float32_file, p))
    run_litert = export.RUNTIMES["litert"]
    monkeypatch.setitem(
        export.RUNTIMES, "litert", lambda p, x: np.roll(run_litert(p, x), 1, axis=-1)
    )
    status = cli.main(["export", str(tmp_path / "flowers.keras"), "--format", "litert",
                       "--quantize", "dynamic"])  # fmt: skip
    out, err = capsys.readouterr()
    assert status == 4, err
    assert f"Calibration and scoring images: {photos}" in out
    assert "24 validation images" in out and "(split 0.5, seed 1337)" in out
    assert "more than --max-accuracy-drop 1.5; it was written" in err
    assert len(err.strip().splitlines()) == 1
    record = json.loads((tmp_path / "flowers_dynamic.accuracy.json").read_text())
    assert record["within_tolerance"] is False and record["accuracy_drop"] > 1.5
    assert record["images"] == 24 and record["agreement"] == 0
    assert (tmp_path / "flowers_dynamic.tflite").stat().st_size > 0


def test_calibration_source_ignores_another_models_history(tmp_path, photos):
    (tmp_path / "history.json").write_text(
        json.dumps({"class_names": ["cats", "dogs"], "data_dir": str(photos)})
    )
    assert calibration_source(tmp_path / "m.keras", None, ["daisy", "roses", "tulips"]) == {}
    assert calibration_source(tmp_path / "m.keras", None, ["cats", "dogs"]) == {
        "calibration_data": str(photos),
        "validation_split": 0.2,
        "seed": 1337,
    }
    assert calibration_source(tmp_path / "m.keras", "other", None) == {
        "calibration_data": "other",
        "validation_split": 0.0,
    }


def _must_not_convert(*args, **kwargs):
    raise AssertionError("converted despite bad input")


def test_int8_without_images_asks_for_calibration_data(model, tmp_path, monkeypatch):
    monkeypatch.setattr(keras.Model, "export", _must_not_convert)
    with pytest.raises(ConfigurationError, match="--calibration-data DIR"):
        export_model(model, tmp_path / "m.tflite", format="litert", quantize="int8")


def test_cli_int8_without_images_is_a_one_line_error(model, tmp_path, capsys):
    # No history.json beside the model: nothing to calibrate on.
    model.save(tmp_path / "m.keras")
    status = cli.main(["export", str(tmp_path / "m.keras"), "--format", "litert",
                       "--quantize", "int8"])  # fmt: skip
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert "--calibration-data DIR" in err
    assert not (tmp_path / "m_int8.tflite").exists()


def test_a_calibration_folder_of_other_classes_names_both_lists(
    model, tmp_path, flower_photos_dir, monkeypatch
):
    other = copy_flower_subset(flower_photos_dir, tmp_path / "other", 2, ("daisy", "dandelion"))
    monkeypatch.setattr(keras.Model, "export", _must_not_convert)
    with pytest.raises(DataError) as error:
        export_model(model, tmp_path / "m.tflite", format="litert", quantize="int8",
                     calibration_data=other)  # fmt: skip
    message = str(error.value)
    assert "['daisy', 'dandelion']" in message and "['daisy', 'roses', 'tulips']" in message


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"format": "litert", "quantize": "int4"}, "Unrecognized quantize value: 'int4'"),
        ({"format": "onnx", "quantize": "int8"}, "Quantization (--quantize int8) is for the"),
        (
            {"format": "litert", "quantize": "int8", "max_accuracy_drop": -1},
            "max_accuracy_drop must be at least 0",
        ),
    ],
)
def test_bad_quantize_arguments_are_refused(model, tmp_path, kwargs, fragment):
    suffix = ".onnx" if kwargs["format"] == "onnx" else ".tflite"
    with pytest.raises(ConfigurationError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        export_model(model, tmp_path / f"m{suffix}", **kwargs)


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--format", "litert", "--quantize", "int4"], "argument --quantize: invalid choice"),
        (["--quantize", "float16"], "--quantize is for --format litert; got --format saved_model"),
        (["--format", "litert", "--quantize", "int8", "--max-accuracy-drop", "-1"],
         "--max-accuracy-drop must be at least 0"),
        (["--format", "litert", "--calibration-data", "photos"],
         "--calibration-data is for a quantized export"),
    ],
)  # fmt: skip
def test_cli_bad_quantize_options_are_refused_before_loading(tmp_path, capsys, argv, fragment):
    # The model file need not exist: refused before it is read.
    status = cli.main(["export", str(tmp_path / "m.keras"), *argv])
    err = capsys.readouterr().err
    assert status == 2 and fragment in err, err
