"""The unfreeze plan: which layers train at which epoch, and the mechanics to apply it.

- `schedule`: `{epoch: depth}` dicts, `GradualSchedule`, the shared
  fine-tuning recipe, and their resolution into phases.
- `units`: a backbone's units (registry blocks or weighted layers).
- `plan`: `UnfreezePlan`, the one source of truth the callbacks, the feature
  cache, the timer, the tuner and the command line read.
- `optimizer`: per-group optimizers built for every variable a plan trains.
- `phase`: the `PhaseInfo` record published on the model each epoch.
"""

from keras_transfer.unfreeze.optimizer import BackboneLearningRate
from keras_transfer.unfreeze.optimizer import UnfreezeOptimizer
from keras_transfer.unfreeze.phase import PhaseInfo
from keras_transfer.unfreeze.phase import current_phase
from keras_transfer.unfreeze.phase import publish_phase
from keras_transfer.unfreeze.plan import UnfreezePlan
from keras_transfer.unfreeze.plan import plan_from_callbacks
from keras_transfer.unfreeze.schedule import GradualSchedule
from keras_transfer.unfreeze.schedule import fine_tune_schedule
