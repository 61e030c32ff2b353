"""KerasTuner search over how deep to fine-tune: `TransferHyperModel` and its tools.

Which backbone, how many of its blocks to unfreeze, when to start, how wide
the head, and at which learning rates: one `keras_tuner.HyperModel` whose
trials train with `ProgressiveUnfreeze` inside a single `fit`, so any
KerasTuner tuner (`RandomSearch`, `BayesianOptimization`, `GridSearch`,
`Hyperband`) and KerasTuner's distributed mode search it.

```python
hypermodel = keras_transfer.TransferHyperModel(
    num_classes=5, backbones=("mobilenet_v2_050",), input_shape=(160, 160, 3))
tuner = keras_tuner.RandomSearch(
    hypermodel, objective="val_accuracy", max_trials=10)
tuner.search(train_ds, validation_data=val_ds, epochs=6)
print(keras_transfer.tuner.results_table(tuner))
```

Trials that use the same backbone at the same input shape share it: the
backbone is built and its weights loaded once per process, then reset to
those weights for every later trial (see `reuse_backbones`). Trials whose
frozen layers and data are the same also share their frozen-feature cache
(see `share_frozen_features`): the backbone runs over the images once per
freeze depth, not once per trial. For searches of many trials with models
of your own, `keras_transfer.search_in_subprocesses` runs a few trials per
fresh process.

Modules:

- `hypermodel`: `TransferHyperModel` (declare, build, fit).
- `search_space`: the searched values (`HYPERPARAMETERS`), their ranges.
- `backbone_pool`: backbones shared across trials (`clear_backbone_cache`).
- `results`: `results_table`.
- `search_processes`: `search_in_subprocesses`.
"""

from keras_transfer.callbacks.unfrozen_blocks_logger import UNFROZEN_BLOCKS_LOG
from keras_transfer.tuner.backbone_pool import clear_backbone_cache
from keras_transfer.tuner.hypermodel import TransferHyperModel
from keras_transfer.tuner.results import results_table
from keras_transfer.tuner.search_processes import search_in_subprocesses
from keras_transfer.tuner.search_space import HYPERPARAMETERS

__all__ = [
    "HYPERPARAMETERS",
    "TransferHyperModel",
    "UNFROZEN_BLOCKS_LOG",
    "clear_backbone_cache",
    "results_table",
    "search_in_subprocesses",
]
