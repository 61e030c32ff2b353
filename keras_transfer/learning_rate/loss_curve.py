"""`LearningRateFinding`: a range test's loss curve, and the rates its rules read off it.

`suggest` holds the rules (`RULES`): the middle of the longest descent
(`"valley"`), the lowest loss / 10 (`"min_loss"`), the steepest descent
(`"steepest"`); `smooth` the moving average they read; `describe` the one
line the command line prints.
"""

import dataclasses

import numpy as np

from keras_transfer.utils.files import atomic_save_figure

# The rules a suggestion can follow, the default first (see `suggest`).
RULES = ("valley", "min_loss", "steepest")

# Smoothing of the recorded losses: an exponential moving average over about
# ten steps. fastai's 0.98 averages over fifty, which on a hundred steps
# lags the loss by a decade of learning rate or more (measured on the
# flower photos: its lowest point came 1 to 1.5 decades late).
BETA = 0.9


@dataclasses.dataclass(frozen=True)
class LearningRateFinding:
    """What a learning-rate range test recorded, and the rate it suggests.

    Attributes:
        learning_rates: the rate of each recorded step, increasing.
        losses: the training loss of each recorded step.
        smoothed_losses: `losses` smoothed by an exponential moving average.
        suggestions: `{rule: learning rate}` for each rule of `RULES` (see
            `suggest`).
        rule: the rule of `suggestion`.
        suggestion: the suggested learning rate, `suggestions[rule]`.
        diverged: whether the test stopped early because the loss exploded.
    """

    learning_rates: tuple
    losses: tuple
    smoothed_losses: tuple
    suggestions: dict
    rule: str
    suggestion: float
    diverged: bool

    def save_plot(self, path):
        """Saves the loss against the learning rate (log scale) as a PNG.

        Example:

        ```python
        finding = keras_transfer.find_learning_rate(model, train_ds)
        finding.save_plot("lr_finder.png")
        ```

        Args:
            path: the PNG file to write; replaced in one step.
        """
        # A Figure without pyplot: no global backend switch, no open windows.
        # Imported here: matplotlib is slow to import and only plots need it.
        from matplotlib.figure import Figure

        figure = Figure(figsize=(7, 4.5), layout="constrained")
        axes = figure.subplots()
        axes.plot(self.learning_rates, self.losses, color="0.75", label="loss")
        axes.plot(self.learning_rates, self.smoothed_losses, color="C0", label="smoothed loss")
        for (rule, rate), style in zip(self.suggestions.items(), ("-", "--", ":")):
            axes.axvline(rate, color="C1", linestyle=style, label=f"{rule}: {rate:.2g}")
        axes.set_xscale("log")
        axes.set_xlabel("learning rate")
        axes.set_ylabel("training loss")
        axes.set_title(f"Learning-rate range test: suggestion {self.suggestion:.2g} ({self.rule})")
        # The divergence spike would flatten the interesting part.
        low, high = min(self.smoothed_losses), max(self.smoothed_losses[:5])
        axes.set_ylim(low - 0.1 * (high - low), high + 0.5 * (high - low))
        axes.legend()
        atomic_save_figure(figure, path)


def describe(finding):
    """One line: the suggestion, how it was found, and the other rules' rates.

    Example:

    ```python
    describe(finding)
    # 'Learning-rate range test (93 steps, 1e-06 to 1): suggestion 0.0025
    #  (valley; min_loss 0.0053, steepest 0.0033).'
    ```
    """
    rates = finding.learning_rates
    stop = ", stopped: the loss diverged" if finding.diverged else ""
    others = ", ".join(
        f"{rule} {rate:.2g}" for rule, rate in finding.suggestions.items() if rule != finding.rule
    )
    return (
        f"Learning-rate range test ({len(rates)} steps, {rates[0]:.2g} to "
        f"{rates[-1]:.2g}{stop}): suggestion {finding.suggestion:.2g} "
        f"({finding.rule}; {others})."
    )


def suggest(rates, smoothed):
    """`{rule: learning rate}`: what each rule of `RULES` reads off a loss curve.

    - `"valley"`: the longest descent of the loss (the longest decreasing
      subsequence of `smoothed`), and the rate in its middle, on the log
      scale. fastai's default since 2021 (its `valley`): robust to the
      noise at the start and to a loss that never diverges.
    - `"min_loss"`: the rate of the lowest loss, divided by 10.
    - `"steepest"`: where the loss falls fastest per decade of learning
      rate, between the first tenth of the test (the average's warm-up)
      and the lowest loss.

    Example:

    >>> rates = np.geomspace(1e-5, 1, 6)
    >>> suggest(rates, np.array([2.0, 1.9, 1.5, 0.8, 0.6, 3.0]))["valley"]
    0.001

    Args:
        rates: the increasing learning rates of the test.
        smoothed: the smoothed loss at each rate.
    """
    lowest = int(np.argmin(smoothed))
    # Length of the longest strictly decreasing run ending at each point.
    lengths = np.ones(len(smoothed), dtype=int)
    for i in range(1, len(smoothed)):
        before = lengths[:i][smoothed[:i] > smoothed[i]]
        if before.size:
            lengths[i] = before.max() + 1
    end = int(np.argmax(lengths))
    start = end - lengths[end] + 1
    skip = max(1, len(rates) // 10)
    steepest = lowest
    if lowest > skip + 1:
        slopes = np.gradient(smoothed, np.log10(rates))
        steepest = skip + int(np.argmin(slopes[skip : lowest + 1]))
    return {
        "valley": float(rates[(start + end) // 2]),
        "min_loss": float(rates[lowest] / 10),
        "steepest": float(rates[steepest]),
    }


class Smoother:
    """An exponential moving average, debiased as Adam's moments are."""

    def __init__(self, beta=BETA):
        self.beta, self.count, self.average = beta, 0, 0.0

    def add(self, value):
        self.count += 1
        self.average = self.beta * self.average + (1 - self.beta) * value
        return self.average / (1 - self.beta**self.count)


def smooth(losses, beta=BETA):
    """The exponential moving average of `losses`, debiased as Adam's moments are.

    Example:

    >>> smooth([1.0, 1.0, 1.0])
    array([1., 1., 1.])
    """
    smoother = Smoother(beta)
    return np.array([smoother.add(loss) for loss in losses])
