"""`keras-transfer backbones [PATTERN]`: the backbone registry, as a table.

One row per backbone: input size, number of blocks (the units
`ProgressiveUnfreeze` unfreezes), parameters, whether its ImageNet weights
are in the Keras cache, and its licence.
"""

from keras_transfer import backbones
from keras_transfer.backbones import weights as weights_lib
from keras_transfer.cli.program import PROG
from keras_transfer.errors import ConfigurationError

_HEADER = ("NAME", "INPUT", "BLOCKS", "PARAMS", "IMAGENET WEIGHTS", "LICENSE")

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
    parser.set_defaults(handler=backbones_command)


def backbones_command(args):
    """Prints the table of the backbones matching `args.pattern`.

    Raises:
        ConfigurationError: no backbone matches.
    """
    names = backbones.list_backbones(args.pattern)
    if not names:
        raise ConfigurationError(
            f"No backbone matches {args.pattern!r}. Run '{PROG} backbones' to "
            f"list all {len(backbones.list_backbones())}."
        )
    rows = [_row(backbones.get_backbone(name)) for name in names]
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
    )


def _human_count(count):
    if not count:
        return "?"
    if count >= 1e9:
        return f"{count / 1e9:.2f}G"
    return f"{count / 1e6:.2f}M"
