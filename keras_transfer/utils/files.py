"""Files: written so that a crash or a kill never leaves them half-written, and checked before they are read."""

import json
import math
import os

from keras_transfer.errors import ConfigurationError


def atomic_write_text(path, text):
    """Writes `text` to `path` atomically and durably (see `atomic_write_file`)."""
    atomic_write_file(path, lambda f: f.write(text))


def atomic_write_file(path, write, binary=False):
    """Writes a file atomically and durably: `write(f)` fills it.

    `write` gets a file open on a temporary name in the same folder; the
    file is then flushed to disk (fsync) and replaces `path` in one
    `os.replace`: a reader sees the old file or the new one, never a part,
    even after a power cut.

    Example:

    ```python
    atomic_write_file("state.npz", lambda f: np.savez(f, mean=mean), binary=True)
    ```

    Args:
        path: the file to write.
        write: a function of one argument, the open file.
        binary: open the file in binary mode (default: text).
    """
    folder, name = os.path.split(os.path.abspath(path))
    remove_stale_temporaries(folder, name, ".tmp")
    temporary = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    # os.open rather than mkstemp: the file gets the permissions of any other
    # file the user creates (0o666 less the umask), not 0o600.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def remove_stale_temporaries(folder, name, suffix):
    """Deletes `.{name}.{pid}{suffix}` files in `folder` left by dead processes.

    A process killed while writing `name` atomically leaves its temporary
    file behind (no `finally` runs on SIGKILL); the next writer of `name`
    removes it, so a resumed run leaves nothing half-written. Files of live
    processes are kept.
    """
    prefix = f".{name}."
    try:
        entries = os.listdir(folder or ".")
    except OSError:
        return
    for entry in entries:
        if not (entry.startswith(prefix) and entry.endswith(suffix)):
            continue
        pid = entry[len(prefix) : len(entry) - len(suffix)]
        if not pid.isdigit() or int(pid) == os.getpid() or _process_alive(int(pid)):
            continue
        try:
            os.remove(os.path.join(folder, entry))
        except OSError:
            pass


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # Someone else's live process.
        return True
    return True


def atomic_write_json(path, payload):
    """Writes `payload` as indented JSON, atomically (see `atomic_write_text`).

    Raises ValueError for NaN or infinity: clean numbers with `json_number`.
    """
    atomic_write_text(path, json.dumps(payload, indent=2, allow_nan=False) + "\n")


def fsync_file(path):
    """Flushes a file written by someone else (e.g. `model.save`) to disk."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def json_number(value, digits=None):
    """A float JSON can hold, or None for missing, non-numeric and non-finite.

    Args:
        value: anything; NumPy scalars and 0-d tensors are converted.
        digits: round to this many decimals; None keeps full precision.
    """
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(value):
        return None
    return value if digits is None else round(value, digits)


def atomic_save_figure(figure, path, dpi=110):
    """Saves a matplotlib `figure` as a PNG at `path`, atomically.

    The figure goes to a temporary name in the same folder and replaces
    `path` in one `os.replace`, so a viewer never opens half a plot.

    Example:

    ```python
    figure, axes = matplotlib.pyplot.subplots()
    atomic_save_figure(figure, "plot.png")
    ```
    """
    temporary = f"{path}.{os.getpid()}.tmp.png"
    try:
        figure.savefig(temporary, dpi=dpi)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def check_model_file(path):
    """Checks that `path` is a file, without loading Keras to read it.

    The command line calls it before TensorFlow loads, and
    `keras_transfer.evaluation.load_classifier` before it reads the file.

    Example:

    ```python
    check_model_file("flowers.keras")  # or raises ConfigurationError
    ```

    Raises:
        ConfigurationError: no file at `path`.
    """
    if not os.path.isfile(path):
        raise ConfigurationError(
            f"Model file not found: {path}. Pass a .keras file saved by 'keras-transfer train'."
        )
