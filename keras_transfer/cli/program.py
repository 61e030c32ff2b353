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

