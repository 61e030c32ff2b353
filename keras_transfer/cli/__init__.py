"""The `keras-transfer` command line.

```
keras-transfer backbones [PATTERN]          # the backbone registry, as a table
keras-transfer train [DATA_DIR] [options]   # train a classifier, save it
keras-transfer compare [DATA_DIR] [options] # pretrained against from scratch
keras-transfer audit DATA_DIR [options]     # label errors, duplicates, outliers
```

`train` runs one `model.fit`: `--epochs` epochs train the head with the
backbone frozen, then `--fine-tune-epochs` epochs also train the last
`--unfreeze-blocks` blocks of the backbone at `--backbone-lr-ratio` times the
learning rate (`keras_transfer.ProgressiveUnfreeze`). It writes the model
(`--output`, a `.keras` file that loads with Keras' default `safe_mode=True`)
and, after every epoch, a `history.json` beside it. The model saved is the
mean of the weights at the end of each epoch from the last unfreeze on
(`--keep average`, the default, `keras_transfer.WeightAveraging`; the
history's `saved` names the epochs and the average's `val_accuracy`), that
of the epoch with the best `val_accuracy` (`--keep best`; without a
validation set, the last) or that of the last epoch (`--keep last`); for
those two the history's `saved_epoch` says which. Without DATA_DIR, `train`
(like `compare`) uses TensorFlow's flower_photos from the Keras cache:

```json
{"backbone": "mobilenet_v2_050", "class_names": ["daisy", "roses"],
 "image_size": [160, 160], "weights": "imagenet", ..., "keep": "average",
 "saved": {"kept": "average", "epochs": [3, 10], "val_accuracy": 0.93},
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
  the best finished epoch (`--keep last`: the last; `--keep average`: the
  last, the average being unfinished) is saved to `--output`,
  `history.json` keeps the finished epochs, the backup stays to resume from.
  One line says so.
- 130: interrupted (Ctrl-C); the backup stays to resume from.

Warnings (e.g. image files that cannot be decoded and are skipped) are printed
as `keras-transfer: warning: ...`.

Start-up: the argument parser, its checks and this package's import need
neither TensorFlow nor Keras, so a mistake in the arguments is reported at
once, and `--help` lists the commands without loading them. Each command is
one module (`backbones`, `train`, `predict`, `evaluate`, `export`,
`compare`, `audit`) whose `COMMAND` (an `arguments.Command`) holds its help, the
function that declares its options and its handler, a function that checks
what argparse cannot (paths, bounds), then imports the heavy modules in its
own body. `COMMANDS` lists them.
Before a handler runs, `main` sets `TF_CPP_MIN_LOG_LEVEL` (unless it is set
already), so that TensorFlow's C++ logs stay out of the terminal;
`--verbose` leaves it alone. TensorFlow 2.21 writes a few lines before it
reads the variable (absl's "All log messages before absl::InitializeLog()",
oneDNN's and the CUDA stub's): each handler imports TensorFlow through
`program.import_tensorflow`, which sets stderr aside for that import alone.

`arguments` holds what the commands share (`Command`, the argparse
types and path checks), `program` the program name and exit statuses,
`training` and `run_files` the work and the files of `train`.
"""

import argparse
import os
import sys
import warnings

from keras_transfer import __version__
from keras_transfer.cli import audit
from keras_transfer.cli import backbones
from keras_transfer.cli import compare
from keras_transfer.cli import evaluate
from keras_transfer.cli import export
from keras_transfer.cli import predict
from keras_transfer.cli import train
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
from keras_transfer.cli.train import add_run_arguments
from keras_transfer.cli.train import add_train_arguments
from keras_transfer.errors import KerasTransferError

__all__ = [
    "COMMANDS",
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

# The subcommands, in the order `--help` lists them: each module's `Command`
# (`keras_transfer.cli.arguments.Command`), by name.
COMMANDS = {
    module.COMMAND.name: module.COMMAND
    for module in (backbones, train, predict, evaluate, export, compare, audit)
}

# TensorFlow's C++ log level for the commands, once it reads it: fatal errors
# only. Level 2 would still print "failed call to cuInit" on every machine
# without a GPU driver; the errors that matter reach Python as exceptions.
QUIET_TF_LOG_LEVEL = "3"


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
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    with warnings.catch_warnings():
        # One line per warning, like the errors, instead of Python's
        # "file:line: UserWarning:" and the source line of the caller.
        warnings.showwarning = _show_warning
        try:
            args = build_parser().parse_args(argv)
            if not args.verbose:
                # A user's own value wins.
                os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", QUIET_TF_LOG_LEVEL)
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
    """The argument parser, with the subcommands of `COMMANDS`.

    Example:

    ```python
    args = build_parser().parse_args(["train", "flower_photos"])
    args.handler  # keras_transfer.cli.train.train_command
    ```
    """
    parser = _Parser(
        prog=PROG,
        description="Transfer learning for image classification with Keras 3.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_verbose_argument(parser, default=False)
    subparsers = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", required=True
    )
    for command in COMMANDS.values():
        command.register(subparsers)
    for subparser in subparsers.choices.values():
        # SUPPRESS: a subcommand's default would overwrite a --verbose given
        # before the command (`keras-transfer --verbose train ...`).
        _add_verbose_argument(subparser, default=argparse.SUPPRESS)
    return parser


def _add_verbose_argument(parser, default):
    parser.add_argument(
        "--verbose",
        action="store_true",
        default=default,
        help="show TensorFlow's and absl's start-up logs (hidden by default)",
    )


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
