"""How the comparison writes numbers for people: durations, percentages, limits.

The report, the conclusion and the progress lines share these, so that a
time or an accuracy reads the same everywhere.
"""

from keras_transfer.utils.checks import plural


def format_duration(seconds):
    """`42.3 s`, `12 min 05 s` or `2 h 03 min`; `-` for None.

    Example:

    ```python
    format_duration(725)  # "12 min 05 s"
    ```
    """
    if seconds is None:
        return "-"
    if seconds < 59.95:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    minutes = int(round(seconds / 60))
    return f"{minutes // 60} h {minutes % 60:02d} min"


def format_percent(fraction):
    """A fraction in [0, 1] as `83.5 %`; `-` for None.

    Example:

    ```python
    format_percent(0.835)  # "83.5 %"
    ```
    """
    return "-" if fraction is None else f"{100 * fraction:.1f} %"


def target_text(results):
    """The target validation accuracy of `results`, e.g. `80 %`."""
    return f"{100 * results['target_accuracy']:g} %"


def limit_text(results, short=False):
    """What stopped each run, in words.

    Example:

    ```python
    limit_text({"epochs": 10, "budget_minutes": 3})
    # "10 epochs or 3 min 00 s of wall-clock time, whichever came first"
    ```

    Args:
        results: the comparison's results (`epochs`, `budget_minutes`).
        short: leave out ", whichever came first".
    """
    parts = []
    if results["epochs"]:
        parts.append(plural(results["epochs"], "epoch"))
    if results["budget_minutes"]:
        parts.append(f"{format_duration(results['budget_minutes'] * 60)} of wall-clock time")
    if short or len(parts) < 2:
        return " or ".join(parts)
    return " or ".join(parts) + ", whichever came first"
