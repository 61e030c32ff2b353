"""`keras-transfer predict` and `keras_transfer.evaluation.predict_images`."""

import csv
import json
import zipfile

import keras
import numpy as np
import pytest
from conftest import write_image_folder
from test_cli import _assert_one_line_error
from test_cli import _run

import keras_transfer
from keras_transfer.data import load_image_folder
from keras_transfer.evaluation import predict_images
from keras_transfer.layers import backbone_preprocessing
from keras_transfer.layers import classifier_head
from keras_transfer.layers import global_pooling


def small_classifier(class_names=("cats", "dogs"), size=32, seed=0):
    """A classifier of the keras-transfer shape (preprocessing, features,
    pooling, head) small enough to save and load in a fraction of a second."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3), name="image")
    x = backbone_preprocessing("tf", (size, size, 3))(inputs)
    x = global_pooling()(keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x))
    head = classifier_head(len(class_names) if class_names else 3, dropout=0.0)
    return keras_transfer.TransferClassifier(
        inputs, head(x), class_names=list(class_names) if class_names else None
    )


def saved_classifier(path, **kwargs):
    model = small_classifier(**kwargs)
    model.save(path)
    return model


def test_predict_writes_the_top_classes_of_every_readable_image(tmp_path, capsys):
    # 40x48 images, a 32x32 model: resized as training resizes them.
    photos = write_image_folder(tmp_path / "photos", per_class=3, size=(40, 48))
    (photos / "dogs" / "nested").mkdir()
    (photos / "cats" / "img_0.jpg").rename(photos / "dogs" / "nested" / "moved.jpg")
    (photos / "cats" / "broken.jpg").write_bytes(b"not a jpeg")
    (photos / "cats" / "notes.txt").write_text("not an image, not listed")
    model = saved_classifier(tmp_path / "m.keras")
    missing = tmp_path / "missing.jpg"
    output = tmp_path / "out" / "predictions.csv"

    status, out, err = _run(
        capsys, "predict", tmp_path / "m.keras", photos, missing,
        "--top-k", 2, "--output", output, "--batch-size", 2,
    )  # fmt: skip
    assert status == 0, err

    # Each unreadable file: one line, with the reason; the rest predicted.
    warnings = err.strip().splitlines()
    assert len(warnings) == 2, err
    assert any(str(missing) in w and "no such file" in w for w in warnings)
    assert any("broken.jpg" in w for w in warnings)
    assert all(w.startswith("keras-transfer: warning: skipped ") for w in warnings)

    # The probabilities are the model's on the training pipeline's pixels,
    # resized as the model says (its head stores no resize: "stretch").
    with pytest.warns(UserWarning, match="broken.jpg"):
        ds, _, _ = load_image_folder(
            photos,
            32,
            validation_split=0,
            shuffle=False,
            cache=False,
            verbose=False,
            resize="stretch",
        )
    expected = dict(zip(ds.file_paths, model.predict(ds, verbose=0)))
    assert len(expected) == 6
    rows = list(csv.DictReader(output.open()))
    assert len(rows) == 8  # 6 predictions, 2 unreadable
    predicted = [r for r in rows if not r["error"]]
    assert {r["path"] for r in predicted} == set(expected)
    for row in predicted:
        probabilities = expected[row["path"]]
        best = int(np.argmax(probabilities))
        assert row["class_1"] == ["cats", "dogs"][best]
        assert float(row["probability_1"]) == pytest.approx(probabilities[best], abs=1e-5)
        assert float(row["probability_2"]) == pytest.approx(probabilities[1 - best], abs=1e-5)
        # The table on the terminal has the same row.
        assert any(
            line.startswith(row["path"]) and row["class_1"] in line for line in out.splitlines()
        )
    errors = {r["path"]: r["error"] for r in rows if r["error"]}
    assert set(errors) == {str(missing), str(photos / "cats" / "broken.jpg")}
    assert out.splitlines()[0].split() == ["IMAGE", "CLASS", "1", "P", "1", "CLASS", "2", "P", "2"]
    assert f"Wrote 6 predictions to {output}" in out


def test_predict_jsonl_and_top_k_beyond_the_classes(tmp_path, capsys):
    photos = write_image_folder(tmp_path / "photos", per_class=1)
    saved_classifier(tmp_path / "m.keras", class_names=("a", "b", "c"))
    output = tmp_path / "p.jsonl"
    status, _, err = _run(
        capsys, "predict", tmp_path / "m.keras", photos / "cats" / "img_0.jpg",
        photos / "dogs", "--top-k", 10, "--output", output,
    )  # fmt: skip
    assert status == 0, err
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["path"] for r in records] == [
        str(photos / "cats" / "img_0.jpg"),
        str(photos / "dogs" / "img_0.jpg"),
    ]
    for record in records:
        top = record["predictions"]
        assert sorted(p["class"] for p in top) == ["a", "b", "c"]  # 10 -> 3
        assert sum(p["probability"] for p in top) == pytest.approx(1.0, abs=1e-5)
        assert [p["probability"] for p in top] == sorted(
            (p["probability"] for p in top), reverse=True
        )


def test_a_model_without_class_names_predicts_class_indices(tmp_path, capsys):
    photos = write_image_folder(tmp_path / "photos", per_class=1)
    saved_classifier(tmp_path / "m.keras", class_names=None)
    status, out, err = _run(capsys, "predict", tmp_path / "m.keras", photos)
    assert status == 0, err
    rows = out.splitlines()[1:3]
    for row in rows:
        # path, then (index, "p %") three times: the classes are indices.
        cells = row.replace(" %", "%").split()
        assert sorted(cells[1::2]) == ["0", "1", "2"]
    hints = [line for line in out.splitlines() if "no class names" in line]
    assert len(hints) == 1 and "history.json" in hints[0]


def test_predict_images_api(tmp_path):
    photos = write_image_folder(tmp_path / "photos", per_class=2)
    model = small_classifier()
    result = predict_images(model, [photos, tmp_path / "nothing.png"], top_k=1)
    assert result.class_names == ["cats", "dogs"]
    assert len(result.images) == 4
    assert result.unreadable == ((str(tmp_path / "nothing.png"), "no such file or folder"),)
    for image in result.images:
        [(index, name, probability)] = image.top
        assert name == ["cats", "dogs"][index] and 0.5 <= probability <= 1


def _plain_model(path, units):
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    keras.Model(inputs, keras.layers.Dense(units, activation="sigmoid")(x)).save(path)


def _zip_without_a_model(path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "no config.json here")


@pytest.mark.parametrize(
    "make_model, fragments",
    [
        (lambda p: _plain_model(p, 1), ["is not a keras-transfer classifier", "(None, 1)"]),
        (lambda p: p.write_text("not a model"), ["Cannot load", "not a .keras archive"]),
        (_zip_without_a_model, ["Cannot load", "as a Keras model ("]),
        (lambda p: None, ["Model file not found"]),
    ],
    ids=["one-output-unit", "not-a-zip", "zip-without-model", "missing"],
)
def test_a_model_file_that_is_not_a_classifier_is_one_line_exit_2(
    tmp_path, capsys, make_model, fragments
):
    photos = write_image_folder(tmp_path / "photos", per_class=1)
    path = tmp_path / "model.keras"
    make_model(path)
    status, _, err = _run(capsys, "predict", path, photos)
    _assert_one_line_error(status, err, str(path), *fragments)


def test_no_readable_image_is_one_line_exit_2(tmp_path, capsys):
    saved_classifier(tmp_path / "m.keras")
    (tmp_path / "bad.jpg").write_bytes(b"garbage")
    status, _, err = _run(capsys, "predict", tmp_path / "m.keras", tmp_path / "bad.jpg")
    _assert_one_line_error(status, err, "No readable image", "bad.jpg")


def test_output_must_be_csv_or_jsonl(tmp_path, capsys):
    saved_classifier(tmp_path / "m.keras")
    status, _, err = _run(
        capsys, "predict", tmp_path / "m.keras", tmp_path, "--output", tmp_path / "p.txt"
    )
    _assert_one_line_error(status, err, "--output must end in .csv or .jsonl")
