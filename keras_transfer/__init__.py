"""keras-transfer: transfer learning for image classification inside one Keras 3 `fit`.

The sub-packages, from the bottom of the stack up (docs/architecture.md):
`errors`, `defaults`, `utils` < `backbones`, `data` < `layers` < `unfreeze`
< `caching` < `models` < `callbacks` < `learning_rate`, `export` < `tuner`,
`experiment`, `evaluation`, `audit` < `cli`.

Importing the package imports nothing else: each public name below (and each
sub-package) is imported on first use (PEP 562), so that the command line
can check its arguments before TensorFlow loads (several seconds), and
`from keras_transfer import X` / `keras_transfer.X` work as they always did.

Saved models hold Keras' own classes only (`keras_transfer.portable`), so
nothing needs registering before `keras.models.load_model`. The files of
earlier releases that hold keras_transfer classes load with
`keras_transfer.load_model`, which imports them.
"""

import importlib

__version__ = "0.1.0"

# Public name -> the module that defines it, imported on first access.
_EXPORTS = {
    "BackboneSpec": "keras_transfer.backbones",
    "get_backbone": "keras_transfer.backbones",
    "list_backbones": "keras_transfer.backbones",
    "register_backbone": "keras_transfer.backbones",
    "unregister_backbone": "keras_transfer.backbones",
    "weights": "keras_transfer.backbones",
    "GradualSchedule": "keras_transfer.callbacks",
    "PhaseTimer": "keras_transfer.callbacks",
    "ProgressiveUnfreeze": "keras_transfer.callbacks",
    "WeightAveraging": "keras_transfer.callbacks",
    "check_dataset_for_model": "keras_transfer.data",
    "decode_image_file": "keras_transfer.data",
    "load_image_folder": "keras_transfer.data",
    "evaluate": "keras_transfer.evaluation",
    "predict_images": "keras_transfer.evaluation",
    "run_comparison": "keras_transfer.experiment",
    "export_model": "keras_transfer.export",
    "explain": "keras_transfer.grad_cam",
    "BackbonePreprocessing": "keras_transfer.legacy_layers",
    "ClassifierHead": "keras_transfer.legacy_layers",
    "find_learning_rate": "keras_transfer.learning_rate",
    "TransferClassifier": "keras_transfer.models",
    "build_classifier": "keras_transfer.models",
    "load_model": "keras_transfer.models",
    "TransferHyperModel": "keras_transfer.tuner",
    "search_in_subprocesses": "keras_transfer.tuner",
    "UnfreezePlan": "keras_transfer.unfreeze",
}

# Sub-packages and modules reachable as attributes (`keras_transfer.data`).
_SUBMODULES = (
    "audit",
    "backbones",
    "caching",
    "callbacks",
    "cli",
    "data",
    "defaults",
    "errors",
    "evaluation",
    "experiment",
    "export",
    "grad_cam",
    "layers",
    "learning_rate",
    "legacy_layers",
    "models",
    "portable",
    "tuner",
    "unfreeze",
    "utils",
)

__all__ = sorted([*_EXPORTS, *_SUBMODULES, "__version__"])


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__():
    return sorted({*globals(), *__all__})
