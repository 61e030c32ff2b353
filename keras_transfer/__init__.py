"""keras-transfer: transfer learning for image classification inside one Keras 3 `fit`.

The sub-packages, from the bottom of the stack up (docs/architecture.md):
`errors`, `defaults`, `utils` < `backbones`, `data` < `layers` < `unfreeze`
< `caching` < `models` < `callbacks` < `learning_rate`, `export` < `tuner`,
`experiment`, `evaluation`, `audit` < `cli`.

Importing the package imports nothing else: each public name below (and each
sub-package) is imported on first use (PEP 562), so that the command line
can check its arguments before TensorFlow loads (several seconds), and
`from keras_transfer import X` / `keras_transfer.X` work as they always did.

The Keras-serializable classes (`BackbonePreprocessing`, `ClassifierHead`,
`TransferClassifier`) must be registered before Keras loads a file that holds
them, and `import keras_transfer` has always registered them. It still does,
whichever is imported first: at once when Keras is already imported (it
then costs about a tenth of Keras' own import), else right after Keras is
imported. A process that never imports Keras (a command refused for a bad
argument) never pays for them.
"""

import importlib
import importlib.abc
import importlib.util
import sys

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
    "BackbonePreprocessing": "keras_transfer.layers",
    "ClassifierHead": "keras_transfer.layers",
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
    "layers",
    "learning_rate",
    "models",
    "portable",
    "tuner",
    "unfreeze",
    "utils",
)

# The modules whose import registers the Keras-serializable classes.
_SERIALIZABLE_MODULES = ("keras_transfer.layers", "keras_transfer.models")

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


def _register_serializable_classes():
    for module in _SERIALIZABLE_MODULES:
        importlib.import_module(module)


def _importing_keras_transfer():
    """Whether a keras_transfer module is half-way through its import."""
    return any(
        getattr(getattr(module, "__spec__", None), "_initializing", False)
        for name, module in list(sys.modules.items())
        if name.startswith(f"{__name__}.")
    )


class _RegisterAfterKeras(importlib.abc.MetaPathFinder):
    """Registers the serializable classes right after `keras` is imported.

    It wraps the `exec_module` of Keras' own loader, once; every other import
    passes through untouched. When one of keras-transfer's own modules is
    what imports Keras, it does nothing: that import chain is mid-way, and the
    classes register when it reaches them.
    """

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("keras")
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            if not _importing_keras_transfer():
                _register_serializable_classes()

        loader.exec_module = exec_then_register
        return spec


if "keras" in sys.modules:
    _register_serializable_classes()
elif not any(isinstance(finder, _RegisterAfterKeras) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterKeras())
