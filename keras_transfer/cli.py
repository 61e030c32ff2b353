"""The `keras-transfer` command line.

```
keras-transfer backbones [PATTERN]          # the backbone registry, as a table
keras-transfer train DATA_DIR [options]     # train a classifier's head, save it
```

`train` writes the model (`--output`, a `.keras` file) and, after every epoch,
a `history.json` beside it:

```json
{"backbone": "mobilenet_v2_050", "class_names": ["daisy", "roses"],
 "image_size": [160, 160], "weights": "imagenet", ...,
 "epochs": [{"epoch": 0, "loss": 0.61, "accuracy": 0.7, "val_loss": 0.42,
             "val_accuracy": 0.83, "seconds": 12.9}, ...]}
```

`epoch` counts from 0 as in Keras callbacks; `seconds` is the wall-clock time
since `fit` began; values without a validation set, and values that are not
finite, are `null`.

Mistakes in the arguments or the data (an unknown backbone, a folder that does
not hold one subfolder per class, an output path that cannot be written) are
reported in one line, `keras-transfer: error: ...`, with exit status 2, before
anything trains. Ctrl-C exits with status 130.

Other modules add subcommands through `SUBCOMMAND_MODULES`: each module named
there has a `register(subparsers)` function, like `register` below.
"""

import argparse
import importlib
import json
import math
import os
import sys
import tempfile
import time

import keras

from keras_transfer import __version__
from keras_transfer import backbones
from keras_transfer import weights as weights_lib
from keras_transfer.data import load_image_folder
from keras_transfer.errors import ConfigurationError
from keras_transfer.errors import KerasTransferError
from keras_transfer.models import build_classifier

PROG = "keras-transfer"

# Modules that add subcommands besides `backbones` and `train`. Each defines
# `register(subparsers)`; see `register` below for the contract.
SUBCOMMAND_MODULES = ()


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
        in one line on stderr), 130 when interrupted.
    """
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        status = args.handler(args)
    except (_UsageError, KerasTransferError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return 0 if status is None else status


def build_parser():
    """The argument parser, with every registered subcommand."""
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
    register(subparsers)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def register(subparsers):
    """Adds the `backbones` and `train` subcommands.

    A subcommand module does the same: it adds its parsers to `subparsers`
    and gives each a `handler`, a function that takes the parsed arguments
    and returns the exit status (None for 0). Handlers report user mistakes
    by raising a `KerasTransferError`; `main` prints its message.

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
    parser.set_defaults(handler=_backbones_command)

    parser = subparsers.add_parser(
        "train",
        help="train a classifier on a folder of images",
        description="Train a classifier on DATA_DIR, a folder with one subfolder of\n"
        "images per class (DATA_DIR/<class>/<image>). The backbone stays frozen\n"
        "and the head trains with Adam. Saves the model to --output and the\n"
        "per-epoch history to history.json beside it.",
        epilog="example:\n"
        f"  {PROG} train flower_photos --backbone mobilenet_v2_050 \\\n"
        "      --image-size 160 --epochs 5 --output flowers.keras",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_train_arguments(parser)
    parser.set_defaults(handler=_train_command)


def add_train_arguments(parser):
    """Adds the options of `train` to `parser` (also for commands that train)."""
    parser.add_argument(
        "data_dir", metavar="DATA_DIR", help="folder with one subfolder per class"
    )
    parser.add_argument(
        "--backbone",
        default="mobilenet_v2_050",
        metavar="NAME",
        help=f"registered backbone name (see '{PROG} backbones'; "
        "default: %(default)s)",
    )
    parser.add_argument(
        "--weights",
        default="imagenet",
        metavar="{imagenet,none,PATH}",
        help="'imagenet', 'none' (random initialisation) or the path to a "
        "weights file (default: %(default)s)",
    )
    parser.add_argument(
        "--image-size",
        type=positive_int,
        metavar="PIXELS",
        help="side of the square input images are resized to "
        "(default: the backbone's input size)",
    )
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=10,
        metavar="N",
        help="(default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=32,
        metavar="N",
        help="(default: %(default)s)",
    )
    parser.add_argument(
        "--learning-rate",
        type=positive_float,
        default=1e-3,
        metavar="LR",
        help="Adam learning rate (default: %(default)s)",
    )
    parser.add_argument(
        "--validation-split",
        type=fraction,
        default=0.2,
        metavar="FRACTION",
        help="fraction of each class held out for validation, 0 for none "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=1337,
        metavar="N",
        help="seed of the split, the shuffling and the head's initialisation "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--output",
        default="model.keras",
        metavar="PATH",
        help="where to save the trained model, a .keras file (default: %(default)s)",
    )
    parser.add_argument(
        "--history",
        metavar="PATH",
        help="where to write the per-epoch history "
        "(default: history.json beside --output)",
    )


def positive_int(text):
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def positive_float(text):
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def fraction(text):
    """argparse type: a number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a number in [0, 1), e.g. 0.2, got {text!r}"
        )
    return value


# --- backbones ---------------------------------------------------------------


def _backbones_command(args):
    names = backbones.list_backbones(args.pattern)
    if not names:
        raise ConfigurationError(
            f"No backbone matches {args.pattern!r}. Run '{PROG} backbones' to "
            f"list all {len(backbones.list_backbones())}."
        )
    header = ("NAME", "INPUT", "BLOCKS", "PARAMS", "IMAGENET WEIGHTS", "LICENSE")
    rows = []
    for name in names:
        spec = backbones.get_backbone(name)
        path = weights_lib.imagenet_weights_path(spec)
        if path is None:
            status = "-"
        else:
            status = "cached" if path.exists() else "download"
        rows.append(
            (
                spec.name,
                f"{spec.default_input_size} (min {spec.min_input_size})",
                str(len(spec.blocks)),
                _human_count(spec.params),
                status,
                spec.license or "-",
            )
        )
    right_aligned = {2, 3}
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    for row in [header] + rows:
        cells = [
            cell.rjust(width) if i in right_aligned else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths))
        ]
        print("  ".join(cells).rstrip())
    print(f"\nImageNet weights cache: {weights_lib.cache_dir()}")


def _human_count(count):
    if not count:
        return "?"
    if count >= 1e9:
        return f"{count / 1e9:.2f}G"
    return f"{count / 1e6:.2f}M"


# --- train -------------------------------------------------------------------


def _train_command(args):
    # Everything a user can get wrong is checked before the first epoch.
    spec = backbones.get_backbone(args.backbone)
    if not args.output.endswith(".keras"):
        raise ConfigurationError(
            f"--output must be a .keras file (the Keras model format). "
            f"Received: {args.output!r}"
        )
    output = _writable_path(args.output, "--output")
    history_path = _writable_path(
        args.history or os.path.join(os.path.dirname(output), "history.json"),
        "--history",
    )
    weights = _weights_argument(args.weights)
    size = args.image_size or spec.default_input_size
    if size < spec.min_input_size:
        raise ConfigurationError(
            f"--image-size {size} is below the {spec.min_input_size} pixels "
            f"backbone {spec.name!r} accepts. Use --image-size "
            f"{spec.min_input_size} or more (its default is {spec.default_input_size})."
        )

    keras.utils.set_random_seed(args.seed)
    train_ds, val_ds, class_names = load_image_folder(
        args.data_dir,
        size,
        batch_size=args.batch_size,
        validation_split=args.validation_split,
        seed=args.seed,
    )
    model = build_classifier(
        spec.name, len(class_names), input_shape=(size, size, 3), weights=weights
    )
    model.compile(
        optimizer=_build_optimizer(args),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    metadata = {
        "backbone": spec.name,
        "class_names": class_names,
        "image_size": [size, size],
        "weights": args.weights,
        "data_dir": os.path.abspath(args.data_dir),
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "validation_split": args.validation_split,
        "seed": args.seed,
    }
    model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=args.epochs,
        callbacks=_build_callbacks(args, history_path, metadata),
        # The dataset reshuffles itself every epoch; Keras warns when asked to
        # shuffle a tf.data.Dataset.
        shuffle=False,
    )
    _save_model(model, output)
    print(f"Saved the model to {output} and its history to {history_path}.")


def _build_optimizer(args):
    return keras.optimizers.Adam(learning_rate=args.learning_rate)


def _build_callbacks(args, history_path, metadata):
    """The callbacks of `train`; options that add callbacks add them here."""
    return [_JsonHistory(history_path, metadata)]


def _weights_argument(text):
    if text.lower() == "none":
        return None
    if text.lower() == "imagenet":
        return "imagenet"
    path = os.path.expanduser(text)
    if not os.path.isfile(path):
        raise ConfigurationError(
            f"--weights must be 'imagenet', 'none' or the path of a weights file. "
            f"Received: {text!r}, which is not a file."
        )
    return path


def _writable_path(path, option):
    """Checks that a file can be created at `path`; returns it absolute.

    Writes a probe file: `os.access` says yes to root everywhere and knows
    nothing of read-only file systems.
    """
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(path):
        raise ConfigurationError(
            f"{option} must be a file path, but {path} is a folder."
        )
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".keras-transfer-"):
            pass
    except OSError as e:
        raise ConfigurationError(
            f"Cannot write {option} {path}: {e.strerror or e}. Choose a path in a "
            "folder you can write to."
        ) from e
    return path


def _save_model(model, path):
    # Saved under a temporary name, then renamed: an interrupted save never
    # leaves a truncated model where the previous one was.
    folder, name = os.path.split(path)
    temporary = os.path.join(folder, f".{name}.{os.getpid()}.tmp.keras")
    try:
        model.save(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _atomic_write_json(path, payload):
    folder, name = os.path.split(path)
    temporary = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    # os.open rather than mkstemp: the file gets the permissions of any other
    # file the user creates (0o666 less the umask), not 0o600.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


class _JsonHistory(keras.callbacks.Callback):
    """Rewrites a JSON history file after every epoch.

    The file is replaced atomically, so a run killed at any moment leaves the
    history of its finished epochs. A run resumed at epoch `n` (e.g. by
    `BackupAndRestore`) keeps the records of epochs before `n` and continues
    their `seconds`.

    Args:
        path: the JSON file to write.
        metadata: dict written beside the `"epochs"` list.
    """

    def __init__(self, path, metadata=None):
        super().__init__()
        self.path = path
        self.metadata = dict(metadata or {})
        self._epochs = None
        self._start = None
        self._offset = 0.0

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()
        self._epochs = None

    def on_epoch_begin(self, epoch, logs=None):
        if self._epochs is None:
            self._epochs = self._earlier_epochs(epoch)
            self._offset = self._epochs[-1]["seconds"] if self._epochs else 0.0

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        record = {"epoch": epoch}
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            record[key] = _json_number(logs.pop(key, None))
        record["seconds"] = round(self._offset + time.perf_counter() - self._start, 3)
        record.update({key: _json_number(value) for key, value in logs.items()})
        self._epochs = [r for r in self._epochs if r["epoch"] < epoch] + [record]
        _atomic_write_json(self.path, {**self.metadata, "epochs": self._epochs})

    def _earlier_epochs(self, epoch):
        if epoch == 0 or not os.path.exists(self.path):
            return []
        try:
            with open(self.path) as f:
                epochs = json.load(f).get("epochs", [])
        except (OSError, ValueError, AttributeError):
            return []
        return [
            r for r in epochs if isinstance(r, dict) and r.get("epoch", epoch) < epoch
        ]


def _json_number(value):
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """Reports a usage mistake in one line, like every other error of `main`."""

    def error(self, message):
        raise _UsageError(f"{message} (see '{self.prog} --help')")


if __name__ == "__main__":
    sys.exit(main())
