"""`keras-transfer evaluate`, `keras_transfer.evaluation.evaluate`, the shared
metrics (`utils.metrics`) and the per-class section of the `compare` report."""

import json

import keras
import numpy as np
import pytest
from conftest import write_image_folder
from test_cli import _assert_one_line_error
from test_cli import _run
from test_predict import saved_classifier
from test_predict import small_classifier

from keras_transfer.data import load_image_folder
from keras_transfer.errors import ConfigurationError
from keras_transfer.errors import DataError
from keras_transfer.evaluation import evaluate
from keras_transfer.experiment.report import report_text
from keras_transfer.experiment.runs import validation_scores
from keras_transfer.utils.metrics import confusion_matrix
from keras_transfer.utils.metrics import per_class_scores


MACHINE = {"gpus": [], "system": "Linux", "processor": "cpu", "cpus": 2,
           "python": "3.11", "tensorflow": "2.21", "keras": "3.15"}  # fmt: skip


def _folder_dataset(folder, size=32):
    ds, _, names = load_image_folder(
        folder, size, batch_size=3, validation_split=0, shuffle=False, cache=False,
        verbose=False,
    )  # fmt: skip
    return ds, names


def _expected_confusion(model, ds, data_names, model_names):
    """The confusion matrix computed by hand, in the model's class order."""
    confusion = np.zeros((len(model_names),) * 2, dtype=int)
    for images, labels in ds:
        predicted = model.predict_on_batch(images).argmax(axis=-1)
        for label, guess in zip(labels.numpy(), predicted):
            confusion[model_names.index(data_names[label]), guess] += 1
    return confusion


def test_train_then_predict_and_evaluate_round_trip(tmp_path, capsys, monkeypatch):
    data_dir = write_image_folder(tmp_path / "images", per_class=4, size=(36, 36))
    model_path = tmp_path / "cats_dogs.keras"
    status, _, err = _run(
        capsys, "train", data_dir, "--backbone", "mobilenet_v1_025", "--weights", "none",
        "--image-size", 32, "--epochs", 1, "--fine-tune-epochs", 0, "--batch-size", 4,
        "--validation-split", 0, "--output", model_path,
    )  # fmt: skip
    assert status == 0, err

    # train stored the folder's class names in the model: predict names them.
    status, out, err = _run(capsys, "predict", model_path, data_dir / "dogs", "--top-k", 1)
    assert status == 0 and not err, err
    rows = [line.split() for line in out.splitlines()[1:]]
    assert len(rows) == 4 and all(row[1] in ("cats", "dogs") for row in rows)

    monkeypatch.chdir(tmp_path)  # the default --output-dir is the current folder
    status, out, err = _run(capsys, "evaluate", model_path, data_dir, "--batch-size", 3)
    assert status == 0 and not err, err  # no warning: classes matched by name

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    confusion = np.array(metrics["confusion_matrix"])
    assert metrics["num_images"] == 8 and metrics["class_names"] == ["cats", "dogs"]
    assert confusion.sum(axis=1).tolist() == [4, 4]
    assert metrics["accuracy"] == pytest.approx(np.trace(confusion) / 8)
    for i, name in enumerate(["cats", "dogs"]):
        scores = metrics["per_class"][name]
        assert set(scores) == {"precision", "recall", "f1", "support"}
        assert scores["support"] == 4
        assert scores["recall"] == pytest.approx(confusion[i, i] / 4)
    assert metrics["model"] == str(model_path)

    assert f"Accuracy: {100 * metrics['accuracy']:.1f} % of 8 images" in out
    lines = out.splitlines()
    assert lines[lines.index("") + 1].split() == ["CLASS", "PRECISION", "RECALL", "F1", "SUPPORT"]
    matrix_start = lines.index("Confusion matrix (rows: true class, columns: predicted class):")
    assert lines[matrix_start + 2].split() == ["cats", *map(str, confusion[0])]
    _assert_png(tmp_path / "confusion_matrix.png")


def _assert_png(path):
    from PIL import Image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()


def test_classes_are_matched_by_name_whatever_their_order(tmp_path):
    folder = write_image_folder(tmp_path / "images", classes=("cats", "dogs", "owls"), per_class=3)
    model_names = ["owls", "cats", "dogs"]  # not the folder's sorted order
    model = small_classifier(class_names=model_names)
    ds, names = _folder_dataset(folder)
    result = evaluate(model, ds)  # the dataset's own class_names
    assert result.class_names == model_names
    expected = _expected_confusion(model, ds, names, model_names)
    np.testing.assert_array_equal(result.confusion_matrix, expected)
    assert result.per_class["owls"]["support"] == 3
    assert result.accuracy == pytest.approx(np.trace(expected) / 9)


def test_evaluate_writes_to_output_dir(tmp_path, capsys):
    folder = write_image_folder(tmp_path / "images", per_class=2)
    saved_classifier(tmp_path / "m.keras")
    out_dir = tmp_path / "new" / "eval"
    status, out, err = _run(
        capsys, "evaluate", tmp_path / "m.keras", folder, "--output-dir", out_dir
    )
    assert status == 0, err
    assert json.loads((out_dir / "metrics.json").read_text())["num_images"] == 4
    _assert_png(out_dir / "confusion_matrix.png")
    assert f"Wrote {out_dir / 'metrics.json'}" in out


@pytest.mark.parametrize(
    "folder_classes, fragments",
    [
        (("cats", "dogs", "owls"), ["classes the model does not know: owls"]),
        (("cats", "owls"), ["does not know: owls", "missing from the data: dogs"]),
    ],
)
def test_a_folder_with_other_classes_is_one_line_exit_2(
    tmp_path, capsys, folder_classes, fragments
):
    folder = write_image_folder(tmp_path / "images", classes=folder_classes, per_class=1)
    saved_classifier(tmp_path / "m.keras")
    status, _, err = _run(
        capsys, "evaluate", tmp_path / "m.keras", folder, "--output-dir", tmp_path
    )
    _assert_one_line_error(status, err, *fragments)
    assert not (tmp_path / "metrics.json").exists()


def test_a_plain_model_is_one_line_exit_2(tmp_path, capsys):
    folder = write_image_folder(tmp_path / "images", per_class=1)
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Dense(1)(keras.layers.Flatten()(inputs))
    keras.Model(inputs, outputs).save(tmp_path / "plain.keras")
    status, _, err = _run(capsys, "evaluate", tmp_path / "plain.keras", folder)
    _assert_one_line_error(status, err, "is not a keras-transfer classifier")


def test_a_model_without_class_names_is_matched_by_position_with_a_warning(tmp_path):
    folder = write_image_folder(tmp_path / "images", classes=("a", "b", "c"), per_class=1)
    model = small_classifier(class_names=None)  # 3 outputs, no names
    ds, names = _folder_dataset(folder)
    with pytest.warns(UserWarning, match="stores no class names"):
        result = evaluate(model, ds)
    assert result.class_names == ["a", "b", "c"]
    np.testing.assert_array_equal(
        result.confusion_matrix, _expected_confusion(model, ds, names, names)
    )
    two = write_image_folder(tmp_path / "two", per_class=1)
    with pytest.raises(DataError, match="2 classes but the model has 3 outputs"):
        evaluate(model, _folder_dataset(two)[0])


def test_metrics_from_labels_and_predictions():
    confusion = confusion_matrix([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 0, 0], num_classes=4)
    np.testing.assert_array_equal(
        confusion, [[2, 1, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    )
    scores = per_class_scores(confusion)
    assert scores[0] == pytest.approx(
        {"precision": 0.5, "recall": 2 / 3, "f1": 4 / 7, "support": 3}
    )
    assert scores[1] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    # Never predicted: no precision; no images: no recall. Not 0.
    assert scores[2] == {"precision": None, "recall": 0.0, "f1": None, "support": 1}
    assert scores[3] == {"precision": None, "recall": None, "f1": None, "support": 0}
    with pytest.raises(ConfigurationError, match="predictions must be class indices"):
        confusion_matrix([0], [2], num_classes=2)
    with pytest.raises(ConfigurationError, match="same length"):
        confusion_matrix([0, 1], [0], num_classes=2)


def test_compare_records_and_reports_each_runs_classes(tmp_path):
    folder = write_image_folder(tmp_path / "images", classes=("a", "b", "c"), per_class=2)
    model = small_classifier(class_names=None)
    ds, names = _folder_dataset(folder)
    scores = validation_scores(model, ds, 3)
    expected = _expected_confusion(model, ds, names, names)
    assert scores["confusion_matrix"] == expected.tolist()
    assert scores["per_class_recall"] == pytest.approx(list(np.diag(expected) / 2))

    run = {"label": "tiny, head only", "per_class_recall": [1.0, 0.5, None],
           "confusion_matrix": [[2, 0, 0], [1, 1, 0], [0, 0, 0]], "phases": [],
           "best_accuracy": None, "final_accuracy": None, "best_val_accuracy": None,
           "final_val_accuracy": None, "seconds_to_target": None, "setup_seconds": 1.0,
           "total_seconds": 2.0, "stopped_by": "epochs"}  # fmt: skip
    results = {"data_dir": "/d/flowers", "class_names": ["a", "b", "c"],
               "image_size": [32, 32], "num_train_images": 6, "num_validation_images": 3,
               "batch_size": 8, "seed": 1, "epochs": 1, "budget_minutes": None,
               "target_accuracy": 0.8, "data_seconds": 0.1, "machine": MACHINE,
               "skipped": [], "conclusion": [], "runs": [run]}  # fmt: skip
    report = report_text(results, str(tmp_path))
    section = report[report.index("## Per class") :]
    assert "tiny, head only  100.0 %  50.0 %  -" in section
    assert "true \\ predicted  a  b  c" in section
    assert "b                 1  1  0" in section
    # The report's only Markdown table is still the runs' table.
    assert not any(line.startswith("|") for line in section.splitlines())
