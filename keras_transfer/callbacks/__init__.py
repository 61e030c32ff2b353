"""Callbacks: `ProgressiveUnfreeze` (what trains when) and `PhaseTimer` (what it cost)."""

from keras_transfer.callbacks.phase_timer import PhaseTimer
from keras_transfer.callbacks.progressive_unfreeze import GradualSchedule
from keras_transfer.callbacks.progressive_unfreeze import ProgressiveUnfreeze
