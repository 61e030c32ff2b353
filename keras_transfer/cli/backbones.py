"""`keras-transfer backbones [PATTERN] [--min-params N] [--max-params N]`: the registry, as a table.

One row per backbone: input size, number of blocks (the units
`ProgressiveUnfreeze` unfreezes), parameters, whether its ImageNet weights
are in the Keras cache, their licence, and the input scaling the model
applies. `--min-params` / `--max-params` (`5M`, `25M`, `1.5G`, `800K` or a
plain count) are read and compared before the registry (and TensorFlow)
loads.
"""

import argparse
import re

from keras_transfer.cli.arguments import Command
from keras_transfer.cli.program import PROG
from keras_transfer.cli.program import import_tensorflow
from keras_transfer.errors import ConfigurationError

# Suffixes `--min-params` / `--max-params` accept, as multipliers.
_SUFFIXES = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "B": 10**9}

_HEADER = ("NAME", "INPUT", "BLOCKS", "PARAMS", "IMAGENET WEIGHTS", "LICENSE", "PREPROCESSING")

# Columns of numbers (BLOCKS, PARAMS), aligned on the right.
_RIGHT_ALIGNED = {2, 3}


SUMMARY = "list the registered backbones"

DESCRIPTION = (
    "List the registered backbones: input size, number of "
    "blocks (the units ProgressiveUnfreeze unfreezes), parameters, whether "
    "their ImageNet weights are in the Keras cache, and their licence."
)


def add_arguments(parser):
    """Declares the options of `backbones`."""
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


def backbones_command(args):
    """Prints the table of the backbones matching `args.pattern` and the size bounds.

    Raises:
        ConfigurationError: the bounds are crossed, or no backbone matches.
    """
    low, high = args.min_params, args.max_params
    if low is not None and high is not None and low > high:
        raise ConfigurationError(
            f"--min-params {human_count(low)} is more than --max-params "
            f"{human_count(high)}; no backbone can have both."
        )
    import_tensorflow(args.verbose)
    from keras_transfer import backbones

    specs = [
        spec
        for spec in map(backbones.get_backbone, backbones.list_backbones(args.pattern))
        if (low is None or spec.params >= low) and (high is None or spec.params <= high)
    ]
    if not specs:
        wanted = [f"{args.pattern!r}"] if args.pattern else []
        wanted += [f"at least {human_count(low)} parameters"] if low is not None else []
        wanted += [f"at most {human_count(high)} parameters"] if high is not None else []
        raise ConfigurationError(
            f"No backbone matches {' with '.join(wanted)}. Run '{PROG} backbones' to "
            f"list all {len(backbones.list_backbones())}."
        )
    _print_table(specs)


def _print_table(specs):
    from keras_transfer.backbones import weights as weights_lib

    rows = [_row(spec, weights_lib) for spec in specs]
    widths = [max(len(row[i]) for row in [_HEADER] + rows) for i in range(len(_HEADER))]
    for row in [_HEADER] + rows:
        cells = [
            cell.rjust(width) if i in _RIGHT_ALIGNED else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths))
        ]
        print("  ".join(cells).rstrip())
    print(f"\nImageNet weights cache: {weights_lib.cache_dir()}")


def _row(spec, weights_lib):
    path = weights_lib.imagenet_weights_path(spec)
    if path is None:
        status = "-"
    else:
        status = "cached" if path.exists() else "download"
    return (
        spec.name,
        f"{spec.default_input_size} (min {spec.min_input_size})",
        str(len(spec.blocks)),
        human_count(spec.params),
        status,
        spec.license or "-",
        "in the model" if spec.preprocessing == "none" else spec.preprocessing,
    )


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


# One paragraph, wrapped to the terminal by argparse.
COMMAND = Command(
    "backbones",
    SUMMARY,
    DESCRIPTION,
    add_arguments,
    backbones_command,
    formatter_class=argparse.HelpFormatter,
)
