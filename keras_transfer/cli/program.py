"""The name the command line reports under, and its exit statuses.

Every command module reads these; `keras_transfer.cli.main` turns errors
into them.
"""

PROG = "keras-transfer"

# Trained (or listed, or compared) and saved.
EXIT_OK = 0

# A mistake in the arguments or the data, reported in one line.
EXIT_USAGE = 2

# `train` stopped because the loss became NaN or infinite.
EXIT_NON_FINITE_LOSS = 3

# Ctrl-C: 128 + SIGINT, as shells report it.
EXIT_INTERRUPTED = 130


def import_tensorflow(verbose=False):
    """Imports TensorFlow with its start-up lines kept out of the terminal unless `verbose`.

    TensorFlow 2.21 writes about eight lines to stderr while it imports and
    first lists its devices (absl's "All log messages before
    absl::InitializeLog()", oneDNN's, the CUDA stub's, twice), most of them
    before it reads `TF_CPP_MIN_LOG_LEVEL`: no variable hides them. So, for
    this import alone, file descriptor 2 points at a temporary file, whose
    text is shown only if the import fails. Each command's handler calls it
    once its light checks passed, where its heavy imports begin; `main` has
    set `TF_CPP_MIN_LOG_LEVEL`, which keeps TensorFlow's later C++ logs quiet.

    Example:

    ```python
    import_tensorflow(args.verbose)
    from keras_transfer.evaluation import load_classifier  # TensorFlow is in
    ```
    """
    import os
    import sys
    import tempfile

    if verbose or "tensorflow" in sys.modules:
        import tensorflow  # noqa: F401  (a no-op when already imported)

        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # No file descriptor 2 (embedded Python).
        import tensorflow  # noqa: F401

        return
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            import tensorflow

            # The CUDA start-up ("failed call to cuInit") logs at the first listing.
            tensorflow.config.list_physical_devices()
        except BaseException:
            caught.seek(0)
            failure = caught.read().decode(errors="replace")
            raise
        else:
            failure = ""
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sys.stderr.write(failure)
