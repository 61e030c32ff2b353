"""`results_table`: the trials of a `TransferHyperModel` search, as text."""

from keras_transfer.callbacks.unfrozen_blocks_logger import UNFROZEN_BLOCKS_LOG
from keras_transfer.tuner.search_space import HYPERPARAMETERS
from keras_transfer.utils.checks import plural


def results_table(tuner, num_trials=None):
    """The completed trials of a search as a text table, best first.

    One row per trial: its rank, id and score (the tuner's objective, e.g.
    `val_accuracy`), then the searched values, and `fine-tuned`: how many
    blocks were trainable at the epoch the score comes from ("no" for a
    trial that trained the head only, e.g. one whose `Hyperband` budget
    ended before `unfreeze_epoch`). Inactive values show as `-`.

    Example:

    ```python
    tuner.search(train_ds, validation_data=val_ds, epochs=6)
    print(keras_transfer.tuner.results_table(tuner, num_trials=10))
    ```

    Args:
        tuner: a KerasTuner tuner (or its oracle) that searched a
            `TransferHyperModel`.
        num_trials: optional int, at most this many rows. Defaults to all
            completed trials.

    Returns:
        The table as a string.
    """
    oracle = getattr(tuner, "oracle", tuner)
    trials = oracle.get_best_trials(num_trials or max(len(oracle.trials), 1))
    objective = _objective_name(oracle)
    names = [n for n in HYPERPARAMETERS if any(n in t.hyperparameters.values for t in trials)]
    extra = [n for n in ("tuner/epochs",) if any(n in t.hyperparameters.values for t in trials)]
    header = (
        ["rank", "trial", objective]
        + names
        + ["epochs" if n == "tuner/epochs" else n for n in extra]
        + ["fine-tuned"]
    )
    rows = []
    for rank, trial in enumerate(trials, start=1):
        values = trial.hyperparameters.values
        row = [str(rank), trial.trial_id, _format(trial.score)]
        row += [_format(values.get(n)) for n in names + extra]
        reached = _last_metric(trial, UNFROZEN_BLOCKS_LOG)
        if reached is None:
            row.append("?")
        else:
            row.append(plural(int(reached), "block") if reached else "no")
        rows.append(row)
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def _objective_name(oracle):
    objective = oracle.objective
    return getattr(objective, "name", None) or "score"


def _last_metric(trial, name):
    if not trial.metrics.exists(name):
        return None
    return trial.metrics.get_last_value(name)


def _format(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.2e}"
        return f"{value:.4g}"
    return str(value)
