"""The comparison's three output files, and the text of `report.md`.

`write_outputs` rewrites all three after every run, so that an interrupted
comparison keeps the runs it finished:

- `results.json`: the dict `run_comparison` returns;
- `accuracy_vs_time.png`: see `experiment.plot`;
- `report.md`: the setup, the machine, one table row per run, what was
  skipped, the conclusion, the plot, and each run's per-class recall and
  confusion matrix on the validation set.
"""

import os

from keras_transfer.experiment.formatting import format_duration
from keras_transfer.experiment.formatting import format_percent
from keras_transfer.experiment.formatting import limit_text
from keras_transfer.experiment.formatting import target_text
from keras_transfer.experiment.machine import machine_text
from keras_transfer.experiment.options import LOG_FILE
from keras_transfer.experiment.options import PLOT_FILE
from keras_transfer.experiment.options import REPORT_FILE
from keras_transfer.experiment.options import RESULTS_FILE
from keras_transfer.experiment.plot import write_plot
from keras_transfer.utils.checks import plural
from keras_transfer.utils.files import atomic_write_json
from keras_transfer.utils.files import atomic_write_text
from keras_transfer.utils.metrics import confusion_matrix_lines
from keras_transfer.utils.metrics import format_table

__all__ = [
    "LOG_FILE",
    "PLOT_FILE",
    "REPORT_FILE",
    "RESULTS_FILE",
    "class_lines",
    "not_reached_text",
    "report_text",
    "write_outputs",
]


def write_outputs(output_dir, results):
    """Writes `results.json`, the plot and `report.md` to `output_dir`.

    Each file is replaced in one step: a reader sees the previous version or
    the new one, never a part.

    Example:

    ```python
    write_outputs("compare", results)
    ```
    """
    atomic_write_json(os.path.join(output_dir, RESULTS_FILE), results)
    write_plot(os.path.join(output_dir, PLOT_FILE), results)
    atomic_write_text(os.path.join(output_dir, REPORT_FILE), report_text(results, output_dir))


def report_text(results, output_dir):
    """The Markdown of `report.md` for `results`, written to `output_dir`.

    Example:

    ```python
    print(report_text(results, "compare"))
    ```
    """
    lines = _setup_lines(results)
    lines += _table_lines(results)
    flags = [
        f"- {run['label']}: {not_reached_text(phase, run, results)}"
        for run in results["runs"]
        for phase in run.get("phases_not_reached") or ()
    ]
    if flags:
        lines += ["", "Phases of the schedule that did not start:", ""] + flags
    if results["skipped"]:
        lines += ["", "Skipped:", ""]
        for skipped in results["skipped"]:
            reason = " ".join(skipped["reason"].split())
            lines.append(f"- {skipped['backbone']}: {reason}")
    if results["conclusion"]:
        lines += ["", "## Conclusion", ""]
        lines += [f"- {sentence}" for sentence in results["conclusion"]]
    lines += [
        "",
        f"![Validation accuracy against wall-clock time]({PLOT_FILE})",
        "",
    ]
    lines += class_lines(results)
    lines += [
        f"Per-epoch history: `{RESULTS_FILE}` and `{LOG_FILE}`. Phase timings in "
        "TensorBoard: "
        f"`tensorboard --logdir {os.path.join(output_dir, 'tensorboard')}`.",
        "",
    ]
    return "\n".join(lines)


def class_lines(results):
    """Per-class recall of every run, then each run's confusion matrix.

    Both are of the final model of each run, on the validation set: a class
    that one method learns and another misses shows here, not in the
    overall accuracy. Runs recorded without them are left out. Aligned text
    in code blocks: the report keeps a single Markdown table, the runs'.

    Example:

    ```python
    class_lines(results)  # ["## Per class (validation set, ...)", "", ...]
    ```
    """
    names = results["class_names"]
    runs = [run for run in results["runs"] if run.get("confusion_matrix")]
    if not runs:
        return []
    recalls = [("recall",) + tuple(names)] + [
        (run["label"],) + tuple(format_percent(r) for r in run["per_class_recall"]) for run in runs
    ]
    lines = [
        "## Per class (validation set, final model of each run)",
        "",
        "Recall: the share of each class's validation images that the run got right.",
        "",
        "```text",
        *format_table(recalls),
        "```",
        "",
        "Confusion matrices (rows: true class, columns: predicted class):",
    ]
    for run in runs:
        lines += ["", f"{run['label']}:", "", "```text"]
        lines += confusion_matrix_lines(run["confusion_matrix"], names)
        lines += ["```"]
    return lines + [""]


def _setup_lines(results):
    """The title, the data, what the times count, and the machine."""
    classes = results["class_names"]
    size = results["image_size"]
    num_train = results["num_train_images"]
    num_val = results["num_validation_images"]
    return [
        f"# Pretrained or from scratch: {os.path.basename(results['data_dir'])}",
        "",
        f"{num_train + num_val:,} images of "
        f"{len(classes)} classes ({', '.join(classes)}) from `{results['data_dir']}`, "
        f"split once with seed {results['seed']}: {num_train:,} for "
        f"training, {num_val:,} for validation. Inputs "
        f"{size[0]}x{size[1]} px, batches of {results['batch_size']}, Adam. Each run "
        f"stopped after {limit_text(results)}. Times count from the start of the run: "
        "building the model, loading the weights and caching frozen features (the "
        "setup) included, reading and decoding "
        f"the images (done once before the runs, "
        f"{format_duration(results['data_seconds'])}) not.",
        "",
        *_warmup_lines(results),
        f"Machine: {machine_text(results['machine'])}",
        "",
    ]


def not_reached_text(phase, run, results):
    """Why a phase did not start, e.g. "last 6 blocks from epoch 135: not reached
    within the 5 min 00 s budget".

    Example:

    ```python
    not_reached_text({"start_epoch": 134, "trainable": "last 6 blocks"},
                     {"stopped_by": "budget"}, {"budget_minutes": 5, "epochs": None})
    ```
    """
    if run.get("stopped_by") == "budget" and results.get("budget_minutes"):
        limit = f"the {format_duration(results['budget_minutes'] * 60)} budget"
    else:
        limit = plural(len(run.get("history") or ()) or results.get("epochs"), "epoch")
    return f"{phase['trainable']} from epoch {phase['start_epoch'] + 1}: not reached within {limit}"


def _warmup_lines(results):
    """What the warm-up before each backbone's runs took (not in any run's time)."""
    warmup = results.get("warmup_seconds")
    if not warmup:
        return []
    times = ", ".join(f"{name} {format_duration(s)}" for name, s in warmup.items())
    return [
        "Before the runs of each backbone, an unclocked warm-up ran every method once "
        "on a few images, so that no run pays the process's first-call costs for the "
        f"others ({times}); every run then started from the same seeds and new data "
        "pipelines, so runs with the same first epochs match until their recipes "
        "differ.",
        "",
    ]


def _table_lines(results):
    """One row per run: accuracies, time to the target, total and per phase."""
    lines = [
        f"| Run | Best train acc. | Final train acc. | Best val. acc. | Final val. acc. "
        f"| Time to {target_text(results)} val. | Total time | Time per phase |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in results["runs"]:
        phases = (
            [f"setup {format_duration(run['setup_seconds'])}"]
            + [f"{p['trainable']} {format_duration(p['seconds'])}" for p in run["phases"]]
            + [f"{p['trainable']} not reached" for p in run.get("phases_not_reached") or ()]
        )
        reached = run["seconds_to_target"]
        total = format_duration(run["total_seconds"])
        if run["stopped_by"] == "budget":
            total += " (budget)"
        cells = [
            run["label"],
            format_percent(run["best_accuracy"]),
            format_percent(run["final_accuracy"]),
            format_percent(run["best_val_accuracy"]),
            format_percent(run["final_val_accuracy"]),
            "not reached" if reached is None else format_duration(reached),
            total,
            "; ".join(phases),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines
