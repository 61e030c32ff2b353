"""Behaviour of `keras-transfer compare` / `run_comparison`: the runs and their report."""

import json
import re
import time

import keras
import numpy as np
import pytest
from conftest import write_image_folder

from keras_transfer import cli
from keras_transfer import experiment
from keras_transfer.backbones import weights as weights_lib
from keras_transfer.callbacks.run_recorder import RunRecorder
from keras_transfer.callbacks.wall_clock_budget import WallClockBudget
from keras_transfer.errors import ConfigurationError
from keras_transfer.experiment.conclusion import conclude
from keras_transfer.experiment.flowers import FLOWER_PHOTOS_URL
from keras_transfer.experiment.flowers import default_data_dir
from keras_transfer.experiment.inputs import ComparisonData
from keras_transfer.experiment.methods import METHOD_LABELS
from keras_transfer.experiment.methods import METHODS
from keras_transfer.experiment.plot import draw_figure
from keras_transfer.experiment.report import not_reached_text
from keras_transfer.experiment.report import report_text
from keras_transfer.experiment.runs import RunSettings
from keras_transfer.experiment.runs import train_run
from keras_transfer.experiment.schedule import comparison_schedule
from keras_transfer.backbones import get_backbone

RUN_FIELDS = {
    "name",
    "backbone",
    "method",
    "label",
    "weights",
    "learning_rate",
    "schedule",
    "unit",
    "best_accuracy",
    "final_accuracy",
    "best_val_accuracy",
    "final_val_accuracy",
    "seconds_to_target",
    "setup_seconds",
    "total_seconds",
    "stopped_by",
    "phases",
    "phases_not_reached",
    "history",
    "tensorboard",
}
EPOCH_FIELDS = {
    "epoch",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "seconds",
    "phase",
    "partial",
}
TOP_FIELDS = {
    "data_dir",
    "class_names",
    "num_train_images",
    "num_validation_images",
    "image_size",
    "batch_size",
    "validation_split",
    "seed",
    "epochs",
    "budget_minutes",
    "target_accuracy",
    "data_seconds",
    "warmup_seconds",
    "machine",
    "started_at",
    "log",
    "skipped",
    "runs",
    "conclusion",
}


@pytest.fixture
def offline(monkeypatch):
    """No download host is reachable, whatever the machine's network."""
    monkeypatch.setattr(weights_lib, "reachable", lambda url, timeout=None: False)


def _seconds(cell):
    """Parses the report's durations; returns (seconds, rounding tolerance)."""
    for pattern, scale, tolerance in (
        (r"([\d.]+) s", (1,), 0.051),
        (r"(\d+) min (\d+) s", (60, 1), 0.51),
        (r"(\d+) h (\d+) min", (3600, 60), 30.1),
    ):
        match = re.fullmatch(pattern, cell)
        if match:
            return sum(float(g) * s for g, s in zip(match.groups(), scale)), tolerance
    raise AssertionError(f"not a duration: {cell!r}")


def _percent(cell):
    match = re.fullmatch(r"([\d.]+) %", cell)
    assert match, cell
    return float(match.group(1))


def _table(report):
    rows = [line for line in report.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    return header, [[c.strip() for c in row.strip("|").split("|")] for row in rows[1:]]


def test_compare_runs_three_trainings_and_skips_backbones_without_weights(
    tmp_path, capsys, flower_subset, seeded_keras_home, offline
):
    data = flower_subset(per_class=8, classes=("daisy", "roses", "tulips"))
    out = tmp_path / "out"
    status = cli.main(
        [
            "compare",
            str(data),
            "--backbones",
            "mobilenet_v2_035,resnet50",
            "--epochs",
            "2",
            "--image-size",
            "32",
            "--batch-size",
            "8",
            "--output-dir",
            str(out),
        ]
    )
    stdout, stderr = capsys.readouterr()
    assert status == 0, stderr

    # Progress: which run, on one line per run; the epochs go to the log.
    assert "[1/3] mobilenet_v2_035, from scratch" in stdout
    assert "[3/3] mobilenet_v2_035, pretrained, head then fine-tune" in stdout
    assert "Warmed up mobilenet_v2_035" in stdout
    assert "epoch 1/2" not in stdout and "\r" in stdout
    log = (out / "compare.log").read_text()
    assert log.count("  epoch 1/2, ") == 3 and log.count("  epoch 2/2, ") == 3
    assert "phase 1 from epoch 2: last 3 blocks trains" in log

    results = json.loads((out / "results.json").read_text())
    assert TOP_FIELDS <= set(results)
    assert results["num_train_images"] + results["num_validation_images"] == 24
    assert results["image_size"] == [32, 32]

    # resnet50 has no cached weights and no network: skipped, with the reason.
    assert [s["backbone"] for s in results["skipped"]] == ["resnet50"]
    assert (
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in (results["skipped"][0]["reason"])
    )

    runs = {run["method"]: run for run in results["runs"]}
    assert [run["name"] for run in results["runs"]] == [
        "mobilenet_v2_035-scratch",
        "mobilenet_v2_035-head_only",
        "mobilenet_v2_035-fine_tune",
    ]
    for run in results["runs"]:
        assert RUN_FIELDS <= set(run)
        assert [r["epoch"] for r in run["history"]] == [0, 1]
        for record in run["history"]:
            assert EPOCH_FIELDS <= set(record)
            assert 0 <= record["val_accuracy"] <= 1
            assert record["partial"] is False
        seconds = [r["seconds"] for r in run["history"]]
        assert 0 < run["setup_seconds"] < seconds[0] < seconds[1] <= run["total_seconds"]
        # Setup and phases tile the run.
        assert run["setup_seconds"] + sum(p["seconds"] for p in run["phases"]) == (
            pytest.approx(seconds[-1], abs=0.01)
        )
        assert run["best_val_accuracy"] == max(r["val_accuracy"] for r in run["history"])
        assert run["final_accuracy"] == run["history"][-1]["accuracy"]
        assert run["stopped_by"] == "epochs"
        assert (out / run["tensorboard"] / "phases").is_dir()

    # What trained: everything from scratch, the head alone, then 3 blocks more.
    scratch_params = runs["scratch"]["phases"][0]["trainable_params"]
    head_params = runs["head_only"]["phases"][0]["trainable_params"]
    fine_phases = runs["fine_tune"]["phases"]
    assert runs["scratch"]["weights"] is None and runs["head_only"]["weights"] == "imagenet"
    assert scratch_params > 100 * head_params
    assert [p["trainable"] for p in fine_phases] == ["head", "last 3 blocks"]
    assert [p["start_epoch"] for p in fine_phases] == [0, 1]
    assert fine_phases[0]["trainable_params"] == head_params
    assert head_params < fine_phases[1]["trainable_params"] < scratch_params
    assert runs["fine_tune"]["schedule"] == [[0, 0], [1, 3]]
    assert [r["phase"] for r in runs["fine_tune"]["history"]] == [0, 1]
    assert runs["fine_tune"]["phases_not_reached"] == []

    # The same recipe until the unfreeze, after a run from scratch that
    # consumed data passes and random draws: the same first epoch.
    metrics = ("loss", "accuracy", "val_loss", "val_accuracy")
    head_first, fine_first = runs["head_only"]["history"][0], runs["fine_tune"]["history"][0]
    assert [head_first[k] for k in metrics] == [fine_first[k] for k in metrics]
    assert results["warmup_seconds"]["mobilenet_v2_035"] > 0

    # The report's table says what results.json says.
    report = (out / "report.md").read_text()
    header, rows = _table(report)
    assert header[:8] == [
        "Run",
        "Best train acc.",
        "Final train acc.",
        "Best val. acc.",
        "Final val. acc.",
        "Time to 80 % val.",
        "Total time",
        "Time per phase",
    ]
    assert [row[0] for row in rows] == [run["label"] for run in results["runs"]]
    for row, run in zip(rows, results["runs"]):
        for cell, key in zip(
            row[1:5],
            ("best_accuracy", "final_accuracy", "best_val_accuracy", "final_val_accuracy"),
        ):
            assert _percent(cell) == pytest.approx(100 * run[key], abs=0.051)
        if run["seconds_to_target"] is None:
            assert row[5] == "not reached"
        else:
            value, tolerance = _seconds(row[5])
            assert value == pytest.approx(run["seconds_to_target"], abs=tolerance)
        value, tolerance = _seconds(row[6])
        assert value == pytest.approx(run["total_seconds"], abs=tolerance)
        phases = row[7].split("; ")
        assert len(phases) == 1 + len(run["phases"])
        for cell, phase in zip(phases[1:], run["phases"]):
            assert cell.startswith(phase["trainable"] + " ")
            value, tolerance = _seconds(cell[len(phase["trainable"]) + 1 :])
            assert value == pytest.approx(phase["seconds"], abs=tolerance)
    assert "- resnet50: ImageNet weights for backbone 'resnet50' are not cached" in report
    assert results["conclusion"]
    for sentence in results["conclusion"]:
        assert f"- {sentence}" in report
    assert "![Validation accuracy against wall-clock time](accuracy_vs_time.png)" in report
    assert "unclocked warm-up ran every method once" in report
    assert "mobilenet_v2_035 " in report[report.index("warm-up") : report.index("Machine:")]

    from PIL import Image

    png = out / "accuracy_vs_time.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert image.format == "PNG" and min(image.size) > 300


def test_conclusion_is_computed_from_the_numbers():
    def run(method, best_val, final_val, final_train, to_target, total, phases=1):
        return {
            "backbone": "mobilenet_v2_050",
            "method": method,
            "label": f"mobilenet_v2_050, {METHOD_LABELS[method]}",
            "best_val_accuracy": best_val,
            "final_val_accuracy": final_val,
            "best_accuracy": final_train,
            "final_accuracy": final_train,
            "seconds_to_target": to_target,
            "total_seconds": total,
            "phases": [{}] * phases,
        }

    results = {
        "epochs": None,
        "budget_minutes": 25.0,
        "target_accuracy": 0.8,
        "num_validation_images": 500,
        "skipped": [],
        "class_names": ["daisy", "dandelion", "roses", "sunflowers", "tulips"],
        "runs": [
            run("scratch", 0.70, 0.68, 0.95, None, 1500.0),
            run("head_only", 0.83, 0.83, 0.85, 300.0, 1500.0),
            run("fine_tune", 0.86, 0.85, 0.90, 240.0, 1500.0, phases=3),
        ],
    }
    text = "\n".join(conclude(results))
    assert (
        "pretrained weights bought 16.0 points of validation accuracy in the same "
        "25 min 00 s of wall-clock time" in text
    )
    assert (
        "mobilenet_v2_050 pretrained with the head, then fine-tuned reached 80 % "
        "validation accuracy after 4 min 00 s; from scratch, it never did in "
        "25 min 00 s" in text
    )
    assert "final train accuracy (95.0 %) is 27 points above validation (68.0 %)" in text
    assert "added 3.0 points over the head alone (86.0 % against 83.0 %)" in text
    assert "noise" not in text

    results["runs"][0]["seconds_to_target"] = 960.0
    results["runs"][2]["phases"] = [{}]
    results["num_validation_images"] = 50
    text = "\n".join(conclude(results))
    assert "4.0x sooner than from scratch (16 min 00 s)" in text
    assert "ended before its first unfreeze" in text
    assert "With 50 validation images, one image is 2.0 points" in text

    # From scratch at chance level on validation, whatever it did in training.
    results["runs"][0].update(best_val_accuracy=0.2, final_val_accuracy=0.2, seconds_to_target=None)
    text = "\n".join(conclude(results))
    assert (
        "validation accuracy never rose above 20.0 % (chance for 5 classes: "
        "20.0 %) while train accuracy, measured on batch statistics during "
        "training, reached 95.0 %" in text
    )
    assert "points above validation" not in text


@pytest.mark.parametrize(
    "planned, units, schedule",
    [
        (10, 18, {4: 3, 7: 6}),
        (3, 18, {1: 3, 2: 6}),
        (2, 18, {1: 3}),
        (1, 18, {1: 3}),
        (6, 4, {2: 3, 4: 4}),
    ],
)
def test_default_fine_tune_schedule_in_thirds(planned, units, schedule):
    assert comparison_schedule(planned, units) == schedule


def test_budget_stops_mid_epoch_and_marks_the_epoch_partial():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    x = np.random.rand(40, 4).astype("float32")
    y = np.random.randint(0, 2, 40)
    start = time.perf_counter()
    recorder = RunRecorder(start)
    budget = WallClockBudget(deadline=start)  # spent already
    model.fit(
        x,
        y,
        batch_size=8,
        epochs=5,
        validation_data=(x, y),
        verbose=0,
        callbacks=[recorder, budget],
    )
    assert budget.stopped
    assert int(model.optimizer.iterations) == 1
    assert len(recorder.history) == 1
    assert recorder.history[0]["partial"] is True
    assert recorder.history[0]["val_accuracy"] is not None


def test_run_recorder_counts_from_fit_without_a_start_and_calls_its_hook():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    x = np.random.rand(16, 4).astype("float32")
    y = np.random.randint(0, 2, 16)
    seen = []
    recorder = RunRecorder(on_epoch=seen.append)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[recorder])
    assert seen == recorder.history and [r["epoch"] for r in seen] == [0, 1]
    assert recorder.start == recorder.fit_start
    assert 0 <= seen[0]["seconds"] <= seen[1]["seconds"]
    assert seen[0]["val_accuracy"] is None and seen[0]["partial"] is False
    assert recorder.trainable_params == {0: 10}


def test_wall_clock_budget_rejects_a_deadline_that_is_not_a_number():
    with pytest.raises(ConfigurationError, match="deadline must be a time.perf_counter"):
        WallClockBudget(deadline="60")


def test_without_data_dir_offline_and_nothing_cached_says_what_to_do(
    tmp_path, capsys, keras_home, offline
):
    status = cli.main(["compare", "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    for fragment in (
        "No DATA_DIR given",
        str(keras_home / "datasets"),
        "keras-transfer compare DATA_DIR",
        FLOWER_PHOTOS_URL,
    ):
        assert fragment in lines[0]


@pytest.mark.parametrize("layout", [("flower_photos", "flower_photos"), ("flower_photos",)])
def test_cached_flower_photos_is_used_without_network(keras_home, monkeypatch, layout):
    def no_network(url, timeout=None):
        raise AssertionError("the cached copy should be used without a network check")

    monkeypatch.setattr(weights_lib, "reachable", no_network)
    folder = keras_home.joinpath("datasets", *layout)
    write_image_folder(folder, classes=("daisy", "roses"), per_class=1, size=(8, 8))
    assert default_data_dir() == str(folder)


def test_no_backbone_with_weights_is_an_error(tmp_path, capsys, keras_home, offline):
    data = write_image_folder(tmp_path / "images", per_class=3, size=(8, 8))
    status = cli.main(
        [
            "compare",
            str(data),
            "--backbones",
            "resnet50",
            "--image-size",
            "32",
            "--output-dir",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err
    assert status == 2
    assert "No backbone can run" in err and "resnet50" in err
    skipped = json.loads((tmp_path / "out" / "results.json").read_text())["skipped"]
    assert [s["backbone"] for s in skipped] == ["resnet50"]


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"epochs": None, "budget_minutes": None}, "Give the runs an end"),
        ({"validation_split": 0}, "validation_split must be a number in (0, 1)"),
        ({"backbones": ["mobilenet_v2_05"]}, "Unknown backbone: 'mobilenet_v2_05'"),
        ({"backbones": ["resnet50", "resnet50"]}, "listed twice"),
        ({"budget_minutes": -1}, "budget_minutes must be a number of minutes > 0"),
        ({"image_size": 16}, "at least 32x32 pixels"),
        ({"target_accuracy": 80}, "target_accuracy must be a fraction in (0, 1]"),
    ],
)
def test_argument_errors_come_before_anything_runs(tmp_path, kwargs, fragment):
    arguments = {"data_dir": tmp_path / "missing", "output_dir": tmp_path / "out"}
    with pytest.raises(ConfigurationError, match=re.escape(fragment)):
        experiment.run_comparison(**{**arguments, **kwargs})


def test_runs_sharing_their_first_epochs_match_and_unreached_phases_are_flagged(
    tmp_path, seeded_keras_home
):
    folder = write_image_folder(tmp_path / "images", classes=("a", "b", "c"), per_class=6)
    data = ComparisonData.from_folder(folder, 32, 4, 0.34, seed=7, verbose=False)
    settings = RunSettings(
        data,
        shape=(32, 32, 3),
        epochs=2,
        budget_seconds=None,
        learning_rate=1e-2,
        seed=7,
        target_accuracy=0.8,
        output_dir=str(tmp_path / "out"),
    )
    spec = get_backbone("mobilenet_v2_035")
    head = train_run(spec, "head_only", settings)
    # Passes over the data between the runs must not change the next run's batches.
    for _ in data.train_dataset():
        pass
    fine = train_run(spec, "fine_tune", settings, schedule={1: 3, 5: 6})

    metrics = ("loss", "accuracy", "val_loss", "val_accuracy")
    assert [head["history"][0][k] for k in metrics] == [fine["history"][0][k] for k in metrics]
    # After the unfreeze the recipes differ, and so do the numbers.
    assert head["history"][1]["loss"] != fine["history"][1]["loss"]
    assert fine["phases_not_reached"] == [
        {"index": 2, "start_epoch": 5, "trainable": "last 6 blocks"}
    ]
    assert head["phases_not_reached"] == []
    results = {
        "data_dir": str(folder), "class_names": ["a", "b", "c"], "image_size": [32, 32],
        "num_train_images": data.num_train, "num_validation_images": data.num_validation,
        "batch_size": 4, "seed": 7, "epochs": 2, "budget_minutes": None,
        "target_accuracy": 0.8, "data_seconds": 0.1, "skipped": [], "conclusion": [],
        "machine": {"gpus": [], "system": "Linux", "processor": "cpu", "cpus": 2,
                    "python": "3.11", "tensorflow": "2.21", "keras": "3.15"},
        "runs": [head, fine],
    }  # fmt: skip
    report = report_text(results, str(tmp_path))
    assert "last 6 blocks from epoch 6: not reached within 2 epochs" in report
    assert "last 6 blocks not reached" in _table(report)[1][1][-1]


def test_a_phase_cut_off_by_the_budget_says_so():
    phase = {"index": 2, "start_epoch": 134, "trainable": "last 6 blocks"}
    run = {"stopped_by": "budget", "history": [{}] * 80}
    text = not_reached_text(phase, run, {"budget_minutes": 5.0, "epochs": None})
    assert text == "last 6 blocks from epoch 135: not reached within the 5 min 00 s budget"


def test_plot_has_a_colour_per_backbone_and_a_style_per_method():
    def run(backbone, method):
        history = [
            {"epoch": e, "seconds": 10.0 * (e + 1), "val_accuracy": 0.5, "phase": 0}
            for e in range(3)
        ]
        return {"backbone": backbone, "method": method, "history": history,
                "label": f"{backbone}, {METHOD_LABELS[method]}", "phases": []}  # fmt: skip

    results = {
        "runs": [run(b, m) for b in ("net_a", "net_b") for m in METHODS],
        "target_accuracy": 0.8, "budget_minutes": 1.0, "data_dir": "/d/flowers",
        "image_size": [32, 32],
    }  # fmt: skip
    axes = draw_figure(results).axes[0]
    lines = {line.get_label(): line for line in axes.get_lines()}
    for method in METHODS:
        a, b = (lines[f"{net}, {METHOD_LABELS[method]}"] for net in ("net_a", "net_b"))
        assert a.get_color() != b.get_color()
        # Identical values: still visible through each other.
        assert a.get_alpha() < 1
    styles = {
        (lines[f"net_a, {METHOD_LABELS[m]}"].get_linestyle(),
         lines[f"net_a, {METHOD_LABELS[m]}"].get_marker()) for m in METHODS
    }  # fmt: skip
    assert len(styles) == len(METHODS)
    assert len({lines[f"net_a, {METHOD_LABELS[m]}"].get_color() for m in METHODS}) == 1
    legend_texts = {
        text.get_text()
        for child in axes.get_children()
        if child.__class__.__name__ == "Legend"
        for text in child.get_texts()
    }
    assert {"net_a", "net_b", *METHOD_LABELS.values()} <= legend_texts
