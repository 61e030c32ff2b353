"""The experiment: what does a pretrained backbone buy on your own images?

`run_comparison` (and `keras-transfer compare`) trains, on one seeded split of
a folder of images and for each backbone listed, three runs of the same
architecture:

1. `scratch`: random weights, every layer trainable (BatchNormalization
   included);
2. `head_only`: ImageNet weights, backbone frozen, only the head trains;
3. `fine_tune`: ImageNet weights, the head first, then the top blocks of the
   backbone, unfrozen by `ProgressiveUnfreeze` inside the same `fit`.

Every run stops after the same number of epochs or the same wall-clock
budget, whichever comes first, and writes `PhaseTimer` logs to
`OUT/tensorboard/<run>`. The answer is three files in `OUT`, with a fourth
for the details:

- `report.md`: one table row per run (best and final train and validation
  accuracy, time to reach the target validation accuracy, 80 % by default,
  total time, time per phase), then a conclusion in plain words computed
  from those numbers, and the plot.
- `results.json`: the same numbers, plus the setup, the machine and the
  per-epoch history of every run with wall-clock times.
- `accuracy_vs_time.png`: validation accuracy against wall-clock seconds, one
  line per run (a colour per backbone, a line style and marker per
  method), a mark where a fine-tuning run changed phase.
- `compare.log`: every run's per-epoch lines and phase changes; the terminal
  shows one progress line per run, updated in place.

The files are rewritten after every run, so an interrupted comparison keeps
the runs it finished.

What the times count: a run's clock starts before its model is built, so
building it and loading the ImageNet weights count, as do everything `fit`
does (computing the cache of frozen features that `build_classifier` models
keep, tracing) and every validation pass. `setup_seconds` is the time before
Keras' training loop begins: building, loading weights, caching features.
The images are decoded, resized and kept in memory once, before the first
run, so that no run pays for it (`data_seconds` in `results.json`); the
ImageNet weights of every backbone are loaded (downloaded, if the machine is
online) once before the runs too.

Fairness between runs: before the runs of each backbone, an unclocked
warm-up (`warmup`) runs every method once on a few images with every batch
shape of the data, so that the first run does not pay the process's
first-call costs (kernel initialisation, lazy imports, reading the weights
from disk) for the others; its seconds are `warmup_seconds` in
`results.json`, apart from every run's clock. Every run starts from a
cleared Keras session, the global seeds set to `seed` and new data
pipelines (`inputs`): `head_only` and `fine_tune`, the same recipe until the
first unfreeze, give the same metrics for those epochs. A phase of the
schedule that a run did not reach within its limit is listed in
`phases_not_reached` and flagged in the report. The budget is checked after every training
step: the run stops at the first step that ends past the budget, then
validates once, so a run overshoots by at most one step and one validation
pass, and its last epoch may be partial (`"partial": true`).

`results.json`:

```
{"data_dir": ..., "class_names": [...], "num_train_images": 2000,
 "num_validation_images": 500, "image_size": [224, 224], "batch_size": 32,
 "validation_split": 0.2, "seed": 1337, "epochs": 10, "budget_minutes": 25,
 "target_accuracy": 0.8, "data_seconds": 41.2,
 "warmup_seconds": {"mobilenet_v2_050": 12.4}, "machine": {...},
 "started_at": "2026-...", "log": "compare.log", "skipped": [{"backbone": "resnet50", "reason": ...}],
 "runs": [{"name": "mobilenet_v2_050-fine_tune", "backbone": ...,
           "method": "fine_tune", "label": "mobilenet_v2_050, head then fine-tune",
           "weights": "imagenet", "learning_rate": 0.001,
           "schedule": [[0, 0], [4, 3], [7, 6]], "unit": "blocks",
           "best_accuracy": ..., "final_accuracy": ...,
           "best_val_accuracy": ..., "final_val_accuracy": ...,
           "seconds_to_target": 95.2,  # null: not reached
           "setup_seconds": 2.1, "total_seconds": 600.4,
           "stopped_by": "epochs",      # or "budget"
           "phases": [{"index": 0, "start_epoch": 0, "trainable": "head",
                       "trainable_params": 6405, "seconds": 180.2}, ...],
           "phases_not_reached": [{"index": 2, "start_epoch": 7,
                                   "trainable": "last 6 blocks"}],
           "history": [{"epoch": 0, "loss": ..., "accuracy": ...,
                        "val_loss": ..., "val_accuracy": ...,
                        "seconds": 48.3, "phase": 0, "partial": false}, ...],
           "tensorboard": "tensorboard/mobilenet_v2_050-fine_tune"}, ...],
 "conclusion": ["...", ...]}
```

Accuracies are fractions in [0, 1]; `seconds` count from the start of the
run; `epoch` counts from 0 as in Keras callbacks. `schedule` (null except in
`fine_tune` runs) lists the `[start_epoch, depth]` of each phase, the depth in
`unit`s counted from the top of the backbone; `phases` lists the phases the
run reached, their `seconds` after `setup_seconds`, so that setup and phases
add up to the run's time.

The package, by concept:

- `runner`: `run_comparison`, the loop over backbones and methods;
- `options`: the defaults and file names, importable without TensorFlow;
- `methods`: the three methods and their labels;
- `inputs`: the images, decoded once, and new pipelines for every run;
- `warmup`: the unclocked warm-up of a backbone before its runs;
- `runs`: one run: build, train under the budget, summarise;
- `progress`: the progress line of each run and `compare.log`;
- `schedule`: the default fine-tuning schedule (`comparison_schedule`);
- `arguments`: the checks of `run_comparison`'s arguments;
- `flowers`: flower_photos, the images used when none are given;
- `machine`: the machine description of `results.json` and the report;
- `report`: the three output files and the text of `report.md`;
- `conclusion`: the conclusion's sentences;
- `plot`: `accuracy_vs_time.png`;
- `formatting`: durations and percentages as the report writes them.
"""

import importlib

from keras_transfer.experiment.options import DEFAULT_EPOCHS
from keras_transfer.experiment.options import DEFAULT_LEARNING_RATE
from keras_transfer.experiment.options import DEFAULT_OUTPUT_DIR
from keras_transfer.experiment.options import DEFAULT_TARGET_ACCURACY
from keras_transfer.experiment.options import LOG_FILE
from keras_transfer.experiment.options import PLOT_FILE
from keras_transfer.experiment.options import REPORT_FILE
from keras_transfer.experiment.options import RESULTS_FILE
from keras_transfer.experiment.methods import METHOD_LABELS
from keras_transfer.experiment.methods import METHODS

# The names that need TensorFlow, imported on first use (PEP 562): the
# command line reads the defaults above before it imports TensorFlow.
_LAZY = {
    "FLOWER_PHOTOS_URL": "keras_transfer.experiment.flowers",
    "default_data_dir": "keras_transfer.experiment.flowers",
    "run_comparison": "keras_transfer.experiment.runner",
    "comparison_schedule": "keras_transfer.experiment.schedule",
}

__all__ = [
    "DEFAULT_EPOCHS",
    "DEFAULT_LEARNING_RATE",
    "DEFAULT_OUTPUT_DIR",
    "DEFAULT_TARGET_ACCURACY",
    "LOG_FILE",
    "PLOT_FILE",
    "REPORT_FILE",
    "RESULTS_FILE",
    "METHOD_LABELS",
    "METHODS",
    *_LAZY,
]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
