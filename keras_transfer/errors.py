"""Exception types raised by keras-transfer for user mistakes.

Every error a user can fix derives from `KerasTransferError`, and its message
names the problem, the value received and the fix. The `keras-transfer`
command line prints the message alone (no traceback) and exits with status 2.
The subclasses also derive from the built-in exception a caller would expect
(`ValueError`, `OSError`), so ``except ValueError`` keeps working.
"""


class KerasTransferError(Exception):
    """Base class of the errors keras-transfer raises for user mistakes."""


class ConfigurationError(KerasTransferError, ValueError):
    """An argument or a combination of arguments is not valid."""


class DataError(KerasTransferError, ValueError):
    """The training data cannot be read or does not fit the task."""


class WeightsError(KerasTransferError, OSError):
    """Pretrained weights cannot be found, downloaded or loaded."""
