"""Moved to `keras_transfer.tuner.search_processes`; kept until `keras_transfer/__init__.py` imports from there."""

from keras_transfer.tuner.search_processes import search_in_subprocesses  # noqa: F401
