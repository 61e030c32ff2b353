"""The comparison's own fine-tuning schedule: the head, then 3 blocks, then 6.

`fine_tune` runs get it unless `run_comparison(schedule=...)` gives one: the
head trains alone for the first third of the run, the last 3 blocks of the
backbone for the second third, the last 6 for the rest. Deeper unfreezing of
a backbone trained on ImageNet rarely pays on a few thousand images and
costs a backward pass through more of it.
"""

import math

# The depths, in blocks from the top of the backbone, of the two unfreezes.
_FINE_TUNE_DEPTHS = (3, 6)


def comparison_schedule(planned_epochs, num_units):
    """The `{epoch: depth}` schedule of a `fine_tune` run, in thirds.

    Every phase gets at least one epoch; the second unfreeze is left out
    when the run is too short for it or the backbone has no more units.

    Example:

    ```python
    comparison_schedule(10, 18)  # {4: 3, 7: 6}
    comparison_schedule(2, 18)   # {1: 3}
    ```

    Args:
        planned_epochs: int >= 1, the epochs the run is expected to train
            (see `planned_epochs`).
        num_units: the backbone's number of blocks; deeper depths are cut
            to it.
    """
    first = max(1, math.ceil(planned_epochs / 3))
    second = max(first + 1, math.ceil(2 * planned_epochs / 3))
    shallow, deep = (min(d, num_units) for d in _FINE_TUNE_DEPTHS)
    schedule = {first: shallow}
    if second < planned_epochs and deep > shallow:
        schedule[second] = deep
    return schedule


def planned_epochs(epochs, head_only):
    """How many epochs a `fine_tune` run is expected to train.

    `epochs`, unless a budget stopped the `head_only` run of the same
    backbone: that run has the same cost per epoch until the first unfreeze,
    so its epoch count is what the budget allows.

    Example:

    ```python
    planned_epochs(10, None)  # 10
    planned_epochs(None, {"stopped_by": "budget", "history": [{}] * 7})  # 7
    ```

    Args:
        epochs: int or None, the comparison's most epochs per run.
        head_only: the `head_only` run's results, or None if it did not run.
    """
    if head_only is None or head_only["stopped_by"] != "budget":
        return epochs or 1
    return max(1, len(head_only["history"]))
