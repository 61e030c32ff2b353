"""The `keras-transfer` command line.

```
keras-transfer backbones [PATTERN]          # the backbone registry, as a table
keras-transfer train DATA_DIR [options]     # train a classifier, save it
keras-transfer compare [DATA_DIR] [options] # pretrained against from scratch
```

`train` runs one `model.fit`: `--epochs` epochs train the head with the
backbone frozen, then `--fine-tune-epochs` epochs also train the last
`--unfreeze-blocks` blocks of the backbone at `--backbone-lr-ratio` times the
learning rate (`keras_transfer.ProgressiveUnfreeze`). It writes the model
(`--output`, a `.keras` file that loads with Keras' default `safe_mode=True`)
and, after every epoch, a `history.json` beside it:

```json
{"backbone": "mobilenet_v2_050", "class_names": ["daisy", "roses"],
 "image_size": [160, 160], "weights": "imagenet", ...,
 "epochs": [{"epoch": 0, "loss": 0.61, "accuracy": 0.7, "val_loss": 0.42,
             "val_accuracy": 0.83, "seconds": 12.9, "unfreeze_phase": 0.0,
             "trainable_params": 6405.0, ...}, ...]}
```

`epoch` counts from 0 as in Keras callbacks, head epochs first; `seconds` is
the training time since the run began, added up over resumed runs (the time a
run was not running does not count); values without a validation set, and
values that are not finite, are `null`.

Interruptions: after every epoch, `train` backs up the training state
(weights, optimizer state, epoch) to `--backup-dir`, each file written under a
temporary name and renamed, so a run killed at any moment leaves a usable
backup. Running the same command again continues after the last finished
epoch, in the right phase, with the same trainable layers and optimizer
state; `history.json` keeps the finished epochs and TensorBoard gets new
event files beside the old ones. The backup is deleted once the model and
history are saved. Options must match the interrupted run's, except the
learning rates (`--learning-rate`, `--backbone-lr-ratio`), which may be lowered
to resume a run stopped by a NaN loss.

Exit status:

- 0: trained and saved.
- 2: a mistake in the arguments or the data (an unknown backbone, a folder
  that does not hold one subfolder per class, an output path that cannot be
  written, a backup of another run), reported in one line,
  `keras-transfer: error: ...`, before anything trains.
- 3: the loss became NaN or infinite. Training stops at once; the model of
  the last finished epoch is saved to `--output`, `history.json` keeps the
  finished epochs, the backup stays to resume from. One line says so.
- 130: interrupted (Ctrl-C); the backup stays to resume from.

Warnings (e.g. image files that cannot be decoded and are skipped) are printed
as `keras-transfer: warning: ...`.

Each command is one module of this package (`backbones_command`,
`train_command`, `compare_command`) with a `register(subparsers)` function;
`COMMAND_MODULES` lists them. `arguments` holds the argparse types and path
checks they share, `program` the program name and exit statuses.
"""

import argparse
import os
import sys
import warnings

from keras_transfer import __version__
from keras_transfer.cli import backbones_command
from keras_transfer.cli import compare_command
from keras_transfer.cli import evaluate_command
from keras_transfer.cli import export_command
from keras_transfer.cli import predict_command
from keras_transfer.cli import train_command
from keras_transfer.cli.arguments import fraction
from keras_transfer.cli.arguments import non_negative_int
from keras_transfer.cli.arguments import positive_float
from keras_transfer.cli.arguments import positive_int
from keras_transfer.cli.arguments import unit_fraction
from keras_transfer.cli.program import EXIT_INTERRUPTED
from keras_transfer.cli.program import EXIT_NON_FINITE_LOSS
from keras_transfer.cli.program import EXIT_OK
from keras_transfer.cli.program import EXIT_USAGE
from keras_transfer.cli.program import PROG
from keras_transfer.cli.train_arguments import add_run_arguments
from keras_transfer.cli.train_arguments import add_train_arguments
from keras_transfer.errors import KerasTransferError

__all__ = [
    "COMMAND_MODULES",
    "EXIT_NON_FINITE_LOSS",
    "PROG",
    "add_run_arguments",
    "add_train_arguments",
    "build_parser",
    "fraction",
    "main",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "unit_fraction",
]

# The subcommands, in the order `--help` lists them. Each module defines
# `register(subparsers)`: it adds its parsers to `subparsers` and gives each
# a `handler`, a function that takes the parsed arguments and returns the
# exit status (None for 0). Handlers report user mistakes by raising a
# `KerasTransferError`; `main` prints its message.
COMMAND_MODULES = (backbones_command, train_command, predict_command, evaluate_command, export_command, compare_command)


def main(argv=None):
    """Runs the `keras-transfer` command line; returns the exit status.

    Example:

    ```python
    from keras_transfer import cli
    cli.main(["backbones", "mobilenet*"])  # prints a table, returns 0
    ```

    Args:
        argv: the arguments, without the program name; None reads
            `sys.argv[1:]`.

    Returns:
        0 on success, 2 for a mistake in the arguments or the data (reported
        in one line on stderr), 3 when `train` stopped on a NaN loss, 130
        when interrupted.
    """
    with warnings.catch_warnings():
        # One line per warning, like the errors, instead of Python's
        # "file:line: UserWarning:" and the source line of the caller.
        warnings.showwarning = _show_warning
        try:
            parser = build_parser()
            args = parser.parse_args(argv)
            status = args.handler(args)
        except (_UsageError, KerasTransferError) as e:
            print(f"{PROG}: error: {e}", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except BrokenPipeError:
            # `keras-transfer predict ... | head`: the reader has what it
            # wanted. Point stdout at /dev/null so Python's exit flush is quiet.
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError):  # stdout is not a file (captured)
                pass
            return EXIT_OK
    return EXIT_OK if status is None else status


def build_parser():
    """The argument parser, with the subcommands of `COMMAND_MODULES`.

    Example:

    ```python
    args = build_parser().parse_args(["train", "flower_photos"])
    args.handler(args)  # trains, as `keras-transfer train flower_photos` does
    ```
    """
    parser = _Parser(
        prog=PROG,
        description="Transfer learning for image classification with Keras 3.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    subparsers = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", required=True
    )
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"{PROG}: warning: {message}", file=sys.stderr if file is None else file)


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """Reports a usage mistake in one line, like every other error of `main`.

    The subcommands' parsers are of this class too: argparse creates them
    with the class of their parent.
    """

    def error(self, message):
        raise _UsageError(f"{message} (see '{self.prog} --help')")
