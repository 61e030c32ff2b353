"""Importing a command's modules quietly: TensorFlow's start-up logs stay out of the terminal.

Importing TensorFlow prints about eight lines to stderr before any command
runs (oneDNN, CUDA drivers, CPU instructions, absl's "log messages before
absl::InitializeLog()", twice), and one more when it first lists its devices. In TensorFlow 2.21 most of them are written
before TensorFlow reads `TF_CPP_MIN_LOG_LEVEL`, so the variable alone does not
silence them: `quiet_imports` also points file descriptor 2 at a temporary
file while the modules import, and replays what it caught only if the import
fails. `--verbose` (`verbose=True`) leaves both alone.

This module imports nothing heavy: the command line imports it before
TensorFlow.
"""

import contextlib
import importlib
import os
import sys
import tempfile

# TensorFlow's C++ log level for the commands: errors only, once it reads it.
QUIET_TF_LOG_LEVEL = "2"


@contextlib.contextmanager
def quiet_imports(verbose=False):
    """Within the block, imports print nothing to stderr unless they fail.

    Sets `TF_CPP_MIN_LOG_LEVEL` to `QUIET_TF_LOG_LEVEL` unless it is set
    already (a user's own value wins) and stays set for the rest of the
    process, so that TensorFlow's later C++ warnings stay quiet too.

    Example:

    ```python
    with quiet_imports():
        module = importlib.import_module("keras_transfer.cli.train_command")
    ```

    Args:
        verbose: True leaves stderr and the environment alone.
    """
    if verbose:
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", QUIET_TF_LOG_LEVEL)
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no file descriptor 2 (embedded Python)
        yield
        return
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        except BaseException:
            _restore(saved)
            caught.seek(0)
            sys.stderr.write(caught.read().decode(errors="replace"))
            raise
        else:
            _restore(saved)


def _restore(saved):
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)


def import_quietly(name, verbose=False):
    """`importlib.import_module(name)` inside `quiet_imports(verbose)`.

    When the import brought TensorFlow in, its devices are listed inside the
    block too: TensorFlow logs their start-up (e.g. "failed call to cuInit"
    on a machine without a GPU, at error level) the first time it lists them,
    not when it is imported.
    """
    with quiet_imports(verbose):
        module = importlib.import_module(name)
        tensorflow = sys.modules.get("tensorflow")
        if tensorflow is not None:
            tensorflow.config.list_physical_devices()
    return module
