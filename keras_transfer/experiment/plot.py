"""`accuracy_vs_time.png`: validation accuracy against wall-clock time, per run.

One line per run: a colour per backbone, a line style and a marker per
method, drawn half transparent with the wider lines underneath, so that runs
that coincide (`head_only` and `fine_tune` before the first unfreeze) show
as overlapping lines rather than one. A mark and a label where a fine-tuning
run changed phase; the target accuracy and the budget as dash-dotted lines.
Two legends: the colour of each backbone, the style of each method.
"""

import os

from keras_transfer.experiment.methods import METHOD_LABELS
from keras_transfer.experiment.methods import METHODS
from keras_transfer.utils.files import atomic_save_figure

# How each method's runs are drawn: line style, marker, line width. The
# widest is drawn first, so a narrower line on top leaves it visible.
_STYLES = {
    "scratch": {"linestyle": ":", "marker": "s", "linewidth": 2.0},
    "head_only": {"linestyle": "--", "marker": "o", "linewidth": 3.2},
    "fine_tune": {"linestyle": "-", "marker": "^", "linewidth": 1.4},
}
_ALPHA = 0.75


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
    atomic_save_figure(draw_figure(results), path)


def draw_figure(results):
    """The plot of `results` as a matplotlib `Figure` (not saved).

    Example:

    ```python
    figure = draw_figure(results)
    figure.axes[0].get_legend()  # the backbones' colours
    ```
    """
    # A Figure without pyplot: no global backend switch, no open windows.
    # Imported here: matplotlib is slow to import and only plots need it.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 5.5), layout="constrained")
    axes = figure.subplots()
    backbones = list(dict.fromkeys(run["backbone"] for run in results["runs"]))
    colors = {name: f"C{i % 10}" for i, name in enumerate(backbones)}
    order = sorted(results["runs"], key=lambda run: -_STYLES[run["method"]]["linewidth"])
    for run in order:
        _plot_run(axes, run, colors[run["backbone"]])
    _decorate(axes, results)
    _legends(axes, colors, results)
    return figure


def _plot_run(axes, run, color):
    points = [r for r in run["history"] if r["val_accuracy"] is not None]
    if not points:
        return
    axes.plot(
        [r["seconds"] for r in points],
        [100 * r["val_accuracy"] for r in points],
        **_STYLES[run["method"]],
        markersize=5,
        alpha=_ALPHA,
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
    axes.axhline(100 * results["target_accuracy"], color="0.6", linewidth=0.8, linestyle="-.")
    if results["budget_minutes"]:
        axes.axvline(
            results["budget_minutes"] * 60,
            color="0.6",
            linewidth=0.8,
            linestyle="-.",
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


def _legends(axes, colors, results):
    """Colour = backbone (lower right), line style and marker = method (lower left)."""
    from matplotlib.lines import Line2D

    if not results["runs"]:
        return
    backbone_handles = [
        Line2D([], [], color=color, linewidth=3, label=name) for name, color in colors.items()
    ]
    methods = [m for m in METHODS if any(r["method"] == m for r in results["runs"])]
    method_handles = [
        Line2D([], [], color="0.3", markersize=5, label=METHOD_LABELS[m], **_STYLES[m])
        for m in methods
    ]
    if results["budget_minutes"]:
        method_handles.append(
            Line2D([], [], color="0.6", linewidth=0.8, linestyle="-.", label="budget")
        )
    backbones = axes.legend(
        handles=backbone_handles,
        title="backbone (colour)",
        fontsize=8,
        title_fontsize=8,
        loc="lower right",
    )
    # A second legend replaces the first unless the first is kept as an artist.
    axes.add_artist(backbones)
    axes.legend(
        handles=method_handles,
        title="method (line, marker)",
        fontsize=8,
        title_fontsize=8,
        loc="lower left",
    )
