"""`heavy_imports`: importing TensorFlow and Keras without the garbage collector's full passes.

Importing TensorFlow and Keras creates millions of long-lived objects, and
Python's cyclic garbage collector walks all of them at every full
collection: eight full collections during the import of `keras-transfer
train`'s modules (about a fifth of the import's CPU time, measured on the
project's 2-core machine), and later ones during training that walk them
again. Modules live as long as the process, so there is nothing to collect
among them: `heavy_imports` turns the collector off while they load, then
moves what they created out of its reach (`gc.freeze`).
"""

import contextlib
import gc
import sys


@contextlib.contextmanager
def heavy_imports():
    """Runs the block with the cyclic garbage collector off, then freezes what it created.

    For a command line's one-time imports: objects alive at the end of the
    block are never examined by the collector again (they stay in memory
    for the whole process, as imported modules do anyway). Once TensorFlow
    is imported (a second command in one process: a test, a notebook) it
    does nothing: freezing then would also keep whatever that process made
    before alive for good.

    Example:

    ```python
    with heavy_imports():
        import tensorflow  # noqa: F401
    ```
    """
    if "tensorflow" in sys.modules:
        yield
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
