"""The options of `keras-transfer backbones`, checked before the registry loads.

`register` adds the command; `parameter_count` reads `--min-params` /
`--max-params` (`5M`, `25M`, `1.5G`, `800K` or a plain count) and
`check_backbones_arguments` refuses bounds no backbone can meet. None of it
imports TensorFlow: the registry, and the table, are `backbones_command`'s,
imported once the arguments are checked.
"""

import argparse
import re

from keras_transfer.errors import ConfigurationError

# Suffixes `--min-params` / `--max-params` accept, as multipliers.
_SUFFIXES = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "B": 10**9}

# The function that prints the table, imported once the arguments are checked.
HANDLER = "keras_transfer.cli.backbones_command:backbones_command"


def register(subparsers):
    """Adds the `backbones` subcommand.

    Args:
        subparsers: the object `ArgumentParser.add_subparsers()` returns.
    """
    parser = subparsers.add_parser(
        "backbones",
        help="list the registered backbones",
        description="List the registered backbones: input size, number of "
        "blocks (the units ProgressiveUnfreeze unfreezes), parameters, whether "
        "their ImageNet weights are in the Keras cache, and their licence.",
    )
    parser.add_argument(
        "pattern",
        nargs="?",
        metavar="PATTERN",
        help="shell-style filter, e.g. 'mobilenet*'",
    )
    parser.add_argument(
        "--min-params",
        type=parameter_count,
        metavar="N",
        help="only backbones with at least N parameters, e.g. 5M",
    )
    parser.add_argument(
        "--max-params",
        type=parameter_count,
        metavar="N",
        help="only backbones with at most N parameters, e.g. 25M",
    )
    parser.set_defaults(check=check_backbones_arguments, handler=HANDLER)


def parameter_count(text):
    """argparse type: a parameter count such as `25M`, `1.5G`, `800K` or `4000000`.

    Example:

    >>> parameter_count("25M")
    25000000
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMGB]?)\s*", str(text), re.IGNORECASE)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"expected a parameter count such as 5M, 25M, 1.5G or 800K, got {text!r}"
        )
    return int(round(float(match.group(1)) * _SUFFIXES[match.group(2).upper()]))


def check_backbones_arguments(args):
    """Refuses `--min-params` above `--max-params`, before the registry loads.

    Raises:
        ConfigurationError: the bounds are crossed.
    """
    low, high = getattr(args, "min_params", None), getattr(args, "max_params", None)
    if low is not None and high is not None and low > high:
        raise ConfigurationError(
            f"--min-params {human_count(low)} is more than --max-params "
            f"{human_count(high)}; no backbone can have both."
        )


def human_count(count):
    """A parameter count as the table shows it, e.g. `2.26M`; "?" when unknown.

    Example:

    >>> human_count(2_257_984)
    '2.26M'
    """
    if not count:
        return "?"
    if count >= 1e9:
        return f"{count / 1e9:.2f}G"
    return f"{count / 1e6:.2f}M"
