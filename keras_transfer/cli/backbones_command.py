"""`keras-transfer backbones [PATTERN] [--min-params N] [--max-params N]`: the registry, as a table.

One row per backbone: input size, number of blocks (the units
`ProgressiveUnfreeze` unfreezes), parameters, whether its ImageNet weights
are in the Keras cache, their licence, and the input scaling the model
applies. The options, and their checks before the registry (and TensorFlow)
loads, are in `backbones_arguments`.
"""

from keras_transfer import backbones
from keras_transfer.backbones import weights as weights_lib
from keras_transfer.cli.backbones_arguments import check_backbones_arguments
from keras_transfer.cli.backbones_arguments import human_count
from keras_transfer.cli.program import PROG
from keras_transfer.errors import ConfigurationError

_HEADER = ("NAME", "INPUT", "BLOCKS", "PARAMS", "IMAGENET WEIGHTS", "LICENSE", "PREPROCESSING")

# Columns of numbers (BLOCKS, PARAMS), aligned on the right.
_RIGHT_ALIGNED = {2, 3}


def backbones_command(args):
    """Prints the table of the backbones matching `args.pattern` and the size bounds.

    Raises:
        ConfigurationError: no backbone matches, or the bounds are crossed.
    """
    check_backbones_arguments(args)
    low, high = getattr(args, "min_params", None), getattr(args, "max_params", None)
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
        human_count(spec.params),
        status,
        spec.license or "-",
        "in the model" if spec.preprocessing == "none" else spec.preprocessing,
    )
