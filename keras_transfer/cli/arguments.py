"""What the commands of the command line share: their parsers' shape, argparse types, path checks.

`Command` describes a subcommand: its help, its options and the function
that runs it. The argparse types (`positive_int`, `fraction`, ...) reject a
value while the command line is parsed, so that `main` reports it as a usage mistake.
The path checks run before any data is read: a run never trains for an hour
to find that it cannot write its model.
"""

import argparse
import dataclasses
import math
import os
import tempfile

from keras_transfer import defaults
from keras_transfer.errors import ConfigurationError

# `--learning-rate auto`: a learning-rate range test picks the head's rate.
AUTO = "auto"

# The smallest image side any registered backbone accepts (BackboneSpec's
# default `min_input_size`, keras.applications' floor): `--image-size` below it
# is refused while parsing, before the registry (and TensorFlow) loads.
MIN_IMAGE_SIZE = 32


def positive_int(text):
    """argparse type: an integer >= 1.

    Example:

    ```python
    parser.add_argument("--epochs", type=positive_int, default=5)
    ```
    """
    return _int_at_least(text, 1)


def image_size(text):
    """argparse type: an image side in pixels, at least `MIN_IMAGE_SIZE`.

    Each backbone's own minimum (`BackboneSpec.min_input_size`, larger for
    some) is checked once the registry is loaded.

    Example:

    ```python
    parser.add_argument("--image-size", type=image_size)
    ```
    """
    return _int_at_least(text, MIN_IMAGE_SIZE, what="pixels, the smallest input a backbone accepts")


def non_negative_int(text):
    """argparse type: an integer >= 0."""
    return _int_at_least(text, 0)


def _int_at_least(text, minimum, what=None):
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        unit = f" ({what})" if what else ""
        raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}{unit}, got {text!r}")
    return value


def positive_float(text):
    """argparse type: a finite number > 0."""
    value = _float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def fraction(text):
    """argparse type: a number in [0, 1)."""
    value = _float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), e.g. 0.2, got {text!r}")
    return value


def unit_fraction(text):
    """argparse type: a number in (0, 1]."""
    value = _float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], e.g. 0.1, got {text!r}")
    return value


def learning_rate_argument(text):
    """argparse type: a learning rate > 0, or `"auto"` (`AUTO`).

    Example:

    ```python
    parser.add_argument("--learning-rate", type=learning_rate_argument)
    ```
    """
    if text == AUTO:
        return AUTO
    try:
        return positive_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a number > 0 or 'auto', got {text!r}") from None


def _float(text):
    """`float(text)`, or NaN, which fails every range check, for non-numbers."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def weights_argument(text):
    """The checked `--weights`: "imagenet", None (for "none") or a file path.

    Raises:
        ConfigurationError: `text` is none of them, or no such file exists.
    """
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


def check_image_folder(path, default=None):
    """Checks that DATA_DIR `path` is a folder, before anything reads it.

    Its classes and images are checked when the data loads
    (`keras_transfer.data.scan_image_folder`); this only refuses a path
    that is missing or a file, without waiting for TensorFlow.

    Example:

    ```python
    check_image_folder("flower_photos")  # or raises ConfigurationError
    ```

    Args:
        path: the DATA_DIR given.
        default: what the command uses without DATA_DIR (e.g.
            "flower_photos"), named in the message; None if DATA_DIR is
            required.

    Raises:
        ConfigurationError: `path` does not exist or is a file.
    """
    if os.path.isdir(path):
        return
    instead = f", or no DATA_DIR for {default}" if default else ""
    raise ConfigurationError(
        f"Image folder not found: {os.path.abspath(path)} (DATA_DIR "
        f"{'does not exist' if not os.path.exists(path) else 'is a file'}). "
        f"Pass the folder that holds one subfolder per class: DIR/<class>/<image>{instead}."
    )


def keras_file_path(path, option):
    """Checks that `path` is a writable `.keras` file path; returns it absolute.

    Args:
        path: the value given.
        option: the option that gave it, for the messages (e.g. "--output").

    Example:

    ```python
    output = keras_file_path("model.keras", "--output")
    ```
    """
    if not path.endswith(".keras"):
        raise ConfigurationError(
            f"{option} must be a .keras file (the Keras model format). Received: {path!r}"
        )
    return writable_path(path, option)


def writable_path(path, option):
    """Checks that a file can be created at `path`; returns it absolute.

    Writes a probe file: `os.access` says yes to root everywhere and knows
    nothing of read-only file systems. Creates the missing folders.

    Args:
        path: the value given.
        option: the option that gave it, for the messages.
    """
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(path):
        raise ConfigurationError(f"{option} must be a file path, but {path} is a folder.")
    probe_folder(os.path.dirname(path), option, path)
    return path


def writable_dir(path, option):
    """Checks that files can be created in folder `path`; returns it absolute.

    Args:
        path: the value given; created if missing.
        option: the option that gave it, for the messages.
    """
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigurationError(f"{option} must be a folder, but {path} is a file.")
    probe_folder(path, option, path)
    return path


def probe_folder(folder, option, path):
    """Creates `folder` if needed and a file in it, or raises `ConfigurationError`.

    Args:
        folder: the folder that must be writable.
        option: the option whose value needs it, for the message.
        path: that value, for the message.
    """
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".keras-transfer-"):
            pass
    except OSError as e:
        raise ConfigurationError(
            f"Cannot write {option} {path}: {e.strerror or e}. Choose a path in a "
            "folder you can write to."
        ) from e


def add_batch_size_argument(parser, help_text="images per batch"):
    """Adds `--batch-size N` (an integer >= 1, default `defaults.BATCH_SIZE`)."""
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=defaults.BATCH_SIZE,
        metavar="N",
        help=f"{help_text} (default: %(default)s)".lstrip(),
    )


def add_tta_argument(parser):
    """Adds `--tta` (test-time augmentation, `keras_transfer.evaluation.tta`)."""
    parser.add_argument(
        "--tta",
        action="store_true",
        help="test-time augmentation: average each prediction with the mirrored image's",
    )


def add_data_dir_argument(parser):
    """Adds the optional DATA_DIR of `train` and `compare` (default: flower_photos)."""
    parser.add_argument(
        "data_dir",
        nargs="?",
        metavar="DATA_DIR",
        help="folder with one subfolder of images per class (default: TensorFlow's "
        "flower_photos from the Keras cache, downloaded if online)",
    )


@dataclasses.dataclass(frozen=True)
class Command:
    """A subcommand of `keras-transfer`: its help, its options and its handler.

    Each command module defines one, `COMMAND`, and `keras_transfer.cli`
    lists them. `handler(args)` gets the parsed arguments and returns the
    exit status (None for 0). It checks what argparse cannot (paths,
    bounds), then imports the heavy modules it needs (TensorFlow, Keras, the
    models) in its own body, so that `--help` and a bad argument answer
    before they load. It reports a user's mistake by raising
    `KerasTransferError`, which `keras_transfer.cli.main` prints in one line.

    Example:

    ```python
    def add_arguments(parser):
        parser.add_argument("--times", type=positive_int, default=1)

    def hello(args):
        print("hello " * args.times)

    COMMAND = Command("hello", "say hello", "Say hello.", add_arguments, hello)
    ```

    Args:
        name: the command's name.
        summary: its line in `keras-transfer --help`.
        description: the text of `keras-transfer NAME --help`, laid out by
            hand (line breaks kept) unless `formatter_class` says otherwise.
        add_arguments: a function that declares the options on the parser.
        handler: the function that runs the command.
        example: a command line shown at the end of the help, or None.
        formatter_class: the parser's `argparse` help formatter.
    """

    name: str
    summary: str
    description: str
    add_arguments: object
    handler: object
    example: str = None
    formatter_class: type = argparse.RawDescriptionHelpFormatter

    def register(self, subparsers):
        """Adds the command to `subparsers` (from `add_subparsers()`); returns its parser."""
        parser = subparsers.add_parser(
            self.name,
            help=self.summary,
            description=self.description,
            epilog=f"example:\n  {self.example}" if self.example else None,
            formatter_class=self.formatter_class,
        )
        self.add_arguments(parser)
        parser.set_defaults(handler=self.handler)
        return parser


def add_resize_argument(parser, default=None):
    """Adds `--resize {stretch,crop,pad}`; None as default means the model's own.

    Example:

    ```python
    add_resize_argument(parser, default=defaults.RESIZE)  # train
    add_resize_argument(parser)  # predict, evaluate: what the model was trained with
    ```
    """
    if default is None:
        what = "default: what the model was trained with, stretch for older models"
    else:
        what = "default: %(default)s; saved with the model for predict and evaluate"
    parser.add_argument(
        "--resize",
        choices=defaults.RESIZE_MODES,
        default=default,
        help="how images meet the square input: stretch to it (the aspect ratio "
        "is lost), crop the centre, or pad (letterbox) "
        f"({what})",
    )
