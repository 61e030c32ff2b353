"""`python -m keras_transfer`: the `keras-transfer` command line."""

import sys

from keras_transfer.cli import main

if __name__ == "__main__":
    sys.exit(main())
