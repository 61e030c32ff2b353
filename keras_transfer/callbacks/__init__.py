"""Keras callbacks, one per module.

For users' own `fit` calls:
- `ProgressiveUnfreeze` (`progressive_unfreeze.py`): what trains when, inside one fit.
- `PhaseTimer` (`phase_timer.py`; records and TensorBoard summaries in
  `phase_records.py`, `phase_summaries.py`): what each phase cost.
- `WeightAveraging` (`weight_averaging.py`): the mean of the weights over
  the last epochs, the model `fit` ends with.

Run callbacks of the command line, the tuner and `compare`, usable on their own:
`JsonHistory`, `BestCheckpoint`, `RunBackup`, `NonFiniteLossGuard`,
`FlushingTensorBoard`, `UnfrozenBlocksLogger`, `RunRecorder`, `WallClockBudget`.
"""

from keras_transfer.callbacks.best_checkpoint import BestCheckpoint
from keras_transfer.callbacks.flushing_tensorboard import FlushingTensorBoard
from keras_transfer.callbacks.json_history import JsonHistory
from keras_transfer.callbacks.non_finite_loss_guard import NonFiniteLossGuard
from keras_transfer.callbacks.phase_timer import PhaseTimer
from keras_transfer.callbacks.progressive_unfreeze import GradualSchedule
from keras_transfer.callbacks.progressive_unfreeze import ProgressiveUnfreeze
from keras_transfer.callbacks.run_backup import RunBackup
from keras_transfer.callbacks.run_recorder import RunRecorder
from keras_transfer.callbacks.unfrozen_blocks_logger import UnfrozenBlocksLogger
from keras_transfer.callbacks.wall_clock_budget import WallClockBudget
from keras_transfer.callbacks.weight_averaging import WeightAveraging

__all__ = [
    "BestCheckpoint",
    "FlushingTensorBoard",
    "GradualSchedule",
    "JsonHistory",
    "NonFiniteLossGuard",
    "PhaseTimer",
    "ProgressiveUnfreeze",
    "RunBackup",
    "RunRecorder",
    "UnfrozenBlocksLogger",
    "WallClockBudget",
    "WeightAveraging",
]
