"""`accuracy_vs_time.png`: validation accuracy against wall-clock time, per run.

One line per run (a colour per backbone, a line style per method), a mark
and a label where a fine-tuning run changed phase, the target accuracy and
the budget as dashed lines.
"""

import os

from keras_transfer.utils.files import atomic_save_figure

# Line style of each method's runs.
_STYLES = {"scratch": ":", "head_only": "--", "fine_tune": "-"}


def write_plot(path, results):
    """Draws the runs of `results` and saves the PNG to `path`, atomically.

    Example:

    ```python
    write_plot("compare/accuracy_vs_time.png", results)
    ```

    Args:
        path: the PNG file to write; replaced in one step, so a reader never
            sees half an image.
        results: the comparison's results (the dict `run_comparison` returns).
    """
    # A Figure without pyplot: no global backend switch, no open windows.
    # Imported here: matplotlib is slow to import and only plots need it.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 5.5), layout="constrained")
    axes = figure.subplots()
    backbones = list(dict.fromkeys(run["backbone"] for run in results["runs"]))
    colors = {name: f"C{i % 10}" for i, name in enumerate(backbones)}
    for run in results["runs"]:
        _plot_run(axes, run, colors[run["backbone"]])
    _decorate(axes, results)
    atomic_save_figure(figure, path)


def _plot_run(axes, run, color):
    points = [r for r in run["history"] if r["val_accuracy"] is not None]
    if not points:
        return
    axes.plot(
        [r["seconds"] for r in points],
        [100 * r["val_accuracy"] for r in points],
        linestyle=_STYLES[run["method"]],
        marker="o",
        markersize=3,
        color=color,
        label=run["label"],
    )
    names = {p["index"]: p["trainable"] for p in run["phases"]}
    for before, after in zip(points, points[1:]):
        if after["phase"] != before["phase"]:
            # The new phase starts when the epoch before it ends.
            axes.plot(
                before["seconds"],
                100 * before["val_accuracy"],
                marker="|",
                markersize=18,
                markeredgewidth=2,
                color=color,
            )
            axes.annotate(
                names.get(after["phase"], ""),
                (before["seconds"], 100 * before["val_accuracy"]),
                textcoords="offset points",
                xytext=(4, -12),
                fontsize=8,
                color=color,
            )


def _decorate(axes, results):
    axes.axhline(
        100 * results["target_accuracy"], color="0.6", linewidth=0.8, linestyle="-."
    )
    if results["budget_minutes"]:
        axes.axvline(
            results["budget_minutes"] * 60,
            color="0.6",
            linewidth=0.8,
            linestyle="-.",
            label="budget",
        )
    axes.set_xlabel("wall-clock seconds since the start of the run")
    axes.set_ylabel("validation accuracy (%)")
    axes.set_ylim(0, 100)
    axes.set_xlim(left=0)
    axes.grid(True, alpha=0.3)
    axes.set_title(
        f"{os.path.basename(results['data_dir'])}: validation accuracy against time "
        f"({results['image_size'][0]} px; | marks a phase change)",
        fontsize=10,
    )
    if results["runs"]:
        axes.legend(fontsize=8, loc="lower right")
