"""`keras-transfer backbones [PATTERN] [--min-params N] [--max-params N]`: the registry, as a table.

One row per backbone: input size, number of blocks (the units
`ProgressiveUnfreeze` unfreezes), parameters, whether its ImageNet weights
are in the Keras cache, their licence, and the input scaling the model
applies. `--min-params` / `--max-params` keep the backbones of a size
(`5M`, `25M`, `1.5G`, `800K` or a plain count).
"""

import argparse
import re

from keras_transfer import backbones
from keras_transfer.backbones import weights as weights_lib
from keras_transfer.cli.program import PROG
from keras_transfer.errors import ConfigurationError

_HEADER = ("NAME", "INPUT", "BLOCKS", "PARAMS", "IMAGENET WEIGHTS", "LICENSE", "PREPROCESSING")

# Suffixes `--min-params` / `--max-params` accept, as multipliers.
_SUFFIXES = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "B": 10**9}

# Columns of numbers (BLOCKS, PARAMS), aligned on the right.
_RIGHT_ALIGNED = {2, 3}


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
    parser.set_defaults(handler=backbones_command)


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


def backbones_command(args):
    """Prints the table of the backbones matching `args.pattern` and the size bounds.

    Raises:
        ConfigurationError: no backbone matches, or the bounds are crossed.
    """
    low, high = getattr(args, "min_params", None), getattr(args, "max_params", None)
    if low is not None and high is not None and low > high:
        raise ConfigurationError(
            f"--min-params {_human_count(low)} is more than --max-params "
            f"{_human_count(high)}; no backbone can have both."
        )
    specs = [
        spec
        for spec in map(backbones.get_backbone, backbones.list_backbones(args.pattern))
        if (low is None or spec.params >= low) and (high is None or spec.params <= high)
    ]
    if not specs:
        wanted = [f"{args.pattern!r}"] if args.pattern else []
        wanted += [f"at least {_human_count(low)} parameters"] if low is not None else []
        wanted += [f"at most {_human_count(high)} parameters"] if high is not None else []
        raise ConfigurationError(
            f"No backbone matches {' with '.join(wanted)}. Run '{PROG} backbones' to "
            f"list all {len(backbones.list_backbones())}."
        )
    rows = [_row(spec) for spec in specs]
    widths = [
        max(len(row[i]) for row in [_HEADER] + rows) for i in range(len(_HEADER))
    ]
    for row in [_HEADER] + rows:
        cells = [
            cell.rjust(width) if i in _RIGHT_ALIGNED else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths))
        ]
        print("  ".join(cells).rstrip())
    print(f"\nImageNet weights cache: {weights_lib.cache_dir()}")


def _row(spec):
    path = weights_lib.imagenet_weights_path(spec)
    if path is None:
        status = "-"
    else:
        status = "cached" if path.exists() else "download"
    return (
        spec.name,
        f"{spec.default_input_size} (min {spec.min_input_size})",
        str(len(spec.blocks)),
        _human_count(spec.params),
        status,
        spec.license or "-",
        "in the model" if spec.preprocessing == "none" else spec.preprocessing,
    )


def _human_count(count):
    if not count:
        return "?"
    if count >= 1e9:
        return f"{count / 1e9:.2f}G"
    return f"{count / 1e6:.2f}M"
