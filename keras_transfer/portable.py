"""Model files that plain Keras loads: no `import keras_transfer` needed.

A model built by `build_classifier` is made of Keras' own layers (see
`keras_transfer.layers`) except for its class, `TransferClassifier` (the
feature cache of `fit`). Keras only finds classes of its own (and of
KerasHub) when it loads a file, so a file that names it would fail in a
Python that never imported keras_transfer ("Could not locate class
'TransferClassifier'").

`save_model` (what `keras-transfer train` and `BestCheckpoint` write) and
`TransferClassifier.save` (hence `ModelCheckpoint`) write the same layers in
a plain functional `keras.Model` (`portable_model`), with the compile
settings and the optimizer with its state, except that
`ProgressiveUnfreeze`'s per-group optimizer (`UnfreezeOptimizer`) is
replaced by a fresh copy of its head optimizer (the callback rebuilds the
groups; nothing outside keras_transfer could). Nothing is converted: every
layer and weight is the model's own.

The file also holds a `keras_transfer.json` entry, which Keras ignores: the
class names and the resize mode (`read_metadata(path)["class_names"]`,
`["resize"]`, readable with `zipfile` and `json` alone) and the model's
class and cache settings.

What loads what:

- `keras.models.load_model(path)`, with or without keras_transfer: the plain
  functional model. Its `fit` does not cache; for that,
  `keras_transfer.TransferClassifier.from_model(model)`.
- `keras_transfer.load_model(path)` (this module's `load_model`, through
  `keras_transfer.models`): the model as it was saved (a
  `TransferClassifier` with its class names, resize mode and cache
  settings), compiled as Keras would compile it. Files of earlier releases
  load too: those with keras_transfer layer classes in them
  (`keras_transfer.legacy_layers`), and those whose head held the pooling.
"""

import json
import os
import warnings
import zipfile

import keras

from keras_transfer.errors import ConfigurationError
from keras_transfer import legacy_layers
from keras_transfer.layers import stored_metadata
from keras_transfer.utils.files import fsync_file
from keras_transfer.utils.files import remove_stale_temporaries
from keras_transfer.utils.tensors import copy_optimizer
from keras_transfer.utils.tensors import global_dtype_policy

METADATA_NAME = "keras_transfer.json"
FORMAT = "keras_transfer.portable"
# 2: the model's own layers; 1: the head held the pooling, and the file
# said which keras_transfer layers each Sequential stood for.
FORMAT_VERSION = 2
# What a functional model's `get_config` holds, and the metadata kept apart;
# a subclass adds its own keys.
_NOT_SETTINGS = ("name", "trainable", "layers", "input_layers", "output_layers")
_METADATA = ("class_names", "resize")


def portable_model(model):
    """`model` as a plain functional `keras.Model` of the same layers.

    Example:

    ```python
    model = keras_transfer.build_classifier("mobilenet_v2_035", 2, weights=None)
    plain = portable_model(model)
    [layer.__class__.__name__ for layer in plain.layers]
    # ['InputLayer', 'Sequential', 'Functional', 'GlobalAveragePooling2D', 'Sequential']
    ```

    Args:
        model: a built functional or `Sequential` model.

    Returns:
        A functional `keras.Model` with the same name, inputs, outputs and
        layers (not copies). Compiled with `model`'s settings when `model`
        is compiled (see the module docstring for the optimizer).

    Raises:
        ConfigurationError: a subclassed or unbuilt model.
    """
    plain = _functional_view(model)
    if getattr(model, "compiled", False):
        _compile_like(plain, model)
    return plain


def save_model(model, path):
    """Saves `model` to the `.keras` file `path` atomically, loadable by plain Keras.

    The file holds `portable_model(model)` and the keras_transfer metadata
    (see the module docstring). It is written under a temporary name in the
    same folder, flushed to disk and renamed: an interrupted save never
    leaves a truncated model where the previous one was. `model` itself
    (its optimizer included) is left as it was.

    Example:

    ```python
    save_model(model, "model.keras")
    keras.models.load_model("model.keras")  # a plain functional model
    keras_transfer.portable.load_model("model.keras")  # the model as it was
    ```

    Args:
        model: a compiled or uncompiled Keras model.
        path: the `.keras` file to write.
    """
    path = os.fspath(path)
    folder, name = os.path.split(path)
    remove_stale_temporaries(folder, name, ".tmp.keras")
    # Keras picks the format from the suffix: the temporary name keeps it.
    temporary = os.path.join(folder, f".{name}.{os.getpid()}.tmp.keras")
    try:
        save_portable(model, temporary, shown_as=path)
        fsync_file(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def save_portable(model, filepath, shown_as=None, **save_kwargs):
    """`model.save(filepath, **save_kwargs)`, of `portable_model(model)`, plus the metadata.

    What `TransferClassifier.save` does. A model that is neither functional
    nor `Sequential` is saved as it is. A file that still needs keras_transfer
    (a keras_transfer layer inside a nested model, a keras_transfer loss)
    is written all the same, with a one-line warning that says so.

    Example:

    ```python
    save_portable(model, "model.keras")
    ```

    Args:
        model: a Keras model.
        filepath: the `.keras` file (or what `keras.Model.save` accepts).
        shown_as: the path to name in the warning; defaults to `filepath`.
        **save_kwargs: `overwrite`, `zipped`, ... as for `keras.Model.save`.
    """
    try:
        plain = portable_model(model)
    except ConfigurationError:
        plain = None  # A subclassed model: nothing to replace.
    keras.Model.save(model if plain is None else plain, filepath, **save_kwargs)
    if not isinstance(filepath, (str, os.PathLike)) or not zipfile.is_zipfile(filepath):
        return
    with zipfile.ZipFile(filepath, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(METADATA_NAME, json.dumps(_metadata(model)))
        needed = _keras_transfer_classes(json.loads(archive.read("config.json")))
    if needed:
        warnings.warn(
            f"{shown_as or os.fspath(filepath)} needs keras_transfer to load: it holds "
            f"{', '.join(needed)}, which plain Keras cannot build. Load it with "
            "keras_transfer.load_model (or run `import keras_transfer.models` before "
            "keras.models.load_model).",
            stacklevel=2,
        )


def read_metadata(path):
    """The keras_transfer entry of a `.keras` file, or None if it has none.

    Example:

    ```python
    read_metadata("model.keras")["class_names"]  # ['cats', 'dogs']
    ```

    Args:
        path: a model file.

    Returns:
        A dict with `format`, `version`, `class_names` (a list, or None),
        `resize` (how training images met the input size; absent from files
        saved before it existed, which were stretched) and `model` (its
        class, cache settings and dtype policy); None for a file
        without it (saved by Keras, or by an earlier release).

    Raises:
        ConfigurationError: the entry is there but unreadable, or of a newer
            format version.
    """
    path = os.fspath(path)
    if not os.path.isfile(path) or not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as archive:
        if METADATA_NAME not in archive.namelist():
            return None
        try:
            metadata = json.loads(archive.read(METADATA_NAME))
            version = metadata["version"] if metadata.get("format") == FORMAT else None
        except (ValueError, KeyError, TypeError, AttributeError):
            version = None
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ConfigurationError(
            f"{path} holds a {METADATA_NAME} entry that this keras_transfer cannot "
            f"read (format {FORMAT!r} version {FORMAT_VERSION} expected). Upgrade "
            "keras_transfer, or load the file with keras.models.load_model."
        )
    return metadata


def load_model(path, compile=True, safe_mode=True):
    """Loads a `.keras` file, giving back the keras_transfer model that was saved.

    For a file with keras_transfer metadata (`save_model`, `model.save` of a
    `TransferClassifier`): the model that Keras loads, in its class
    (`TransferClassifier`, with its class names, resize mode and cache
    settings). Layers, weights, compile settings and the optimizer state
    are the loaded ones. A `TransferClassifier` of a release that saved
    keras_transfer layers comes back with today's layers (see
    `keras_transfer.legacy_layers`). Any other file: what
    `keras.models.load_model` gives.

    Example:

    ```python
    model = keras_transfer.load_model("model.keras")
    keras_transfer.layers.class_names_of(model)  # ['cats', 'dogs']
    ```

    Use it as `keras_transfer.load_model` (or `keras_transfer.models.load_model`):
    that path imports `keras_transfer.models`, which registers
    `TransferClassifier`, the class a saved file's metadata names.

    Args:
        path: the `.keras` file.
        compile: bool, whether to compile the model as it was saved.
        safe_mode: as for `keras.models.load_model`.

    Raises:
        ConfigurationError: the metadata cannot be read or applied.
        Exception: whatever `keras.models.load_model` raises for a file it
            cannot load.
    """
    metadata = read_metadata(path)
    loaded = keras.models.load_model(path, compile=compile, safe_mode=safe_mode)
    try:
        if metadata is not None:
            return _restore(loaded, metadata)
        if legacy_layers.holds_legacy_layers(loaded) and getattr(loaded, "stores_metadata", False):
            return _restore_legacy(loaded)
        return loaded
    except (ValueError, TypeError, KeyError) as e:
        reason = " ".join(str(e).split())[:300]
        raise ConfigurationError(
            f"Cannot rebuild the keras_transfer model of {os.fspath(path)} ({reason}). "
            "keras.models.load_model loads it as a plain Keras model."
        ) from None


def _functional_view(model):
    """A plain functional model over `model`'s layers (no copy, not compiled)."""
    if isinstance(model, keras.Sequential) and getattr(model, "inputs", None):
        source = model.inputs[0]
        inputs = outputs = keras.Input(batch_shape=source.shape, dtype=source.dtype)
        for layer in model.layers:
            outputs = layer(outputs)
        return keras.Model(inputs, outputs, name=model.name)
    if not isinstance(model, keras.Sequential) and getattr(model, "outputs", None):
        return keras.Model(model.input, model.output, name=model.name)
    raise ConfigurationError(
        f"Only functional and Sequential models can be made Keras-only; {model.name!r} "
        f"({type(model).__name__}) has no inputs: build it with keras.Model(inputs, outputs)."
    )


def _compile_like(plain, model):
    """Compiles `plain` as `model` is, with a Keras-only optimizer."""
    try:
        plain.compile_from_config(model.get_compile_config())
    except (TypeError, ValueError) as e:
        warnings.warn(
            f"Saving {model.name!r} uncompiled: its compile settings do not "
            f"deserialize ({' '.join(str(e).split())[:200]}).",
            stacklevel=3,
        )
        return
    # Without its loss scaling: Keras loads a functional model under the
    # global dtype policy (usually float32), and compiles it with the bare
    # optimizer, whose variables must be the ones in the file.
    optimizer = _unscaled(model.optimizer)
    head = getattr(optimizer, "head_optimizer", None)
    if head is not None or (optimizer is not None and not optimizer.built):
        # A fresh copy, built: `load_model` builds the optimizer it compiles
        # and warns when the file's has other variables. The groups' state
        # of ProgressiveUnfreeze's optimizer would not fit a plain one; a
        # model never trained has no state (and its own optimizer stays
        # unbuilt, free to take the variables that train at its first fit).
        optimizer = copy_optimizer(optimizer if head is None else head)
        optimizer.build(plain.trainable_variables)
    plain.optimizer = optimizer


def _unscaled(optimizer):
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer.inner_optimizer
    return optimizer


def _metadata(model):
    # Keras' own model classes come back as a functional keras.Model.
    model_class = None
    if not type(model).__module__.startswith("keras."):
        model_class = keras.saving.get_registered_name(type(model))
    config = model.get_config() if model_class else {}
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        **{name: stored_metadata(model, name) for name in _METADATA},
        "model": {
            "registered_name": model_class,
            "config": {k: v for k, v in config.items() if k not in _NOT_SETTINGS + _METADATA},
            "dtype_policy": model.dtype_policy.name,
        },
    }


def _restore(loaded, metadata):
    """The model of a file with metadata, from what Keras loaded."""
    info = metadata["model"]
    model_class = keras.Model
    if info["registered_name"]:
        model_class = keras.saving.get_registered_object(info["registered_name"])
        if model_class is None:
            raise TypeError(
                f"the model class {info['registered_name']} is not registered: "
                "import the module that defines it first"
            )
    settings = dict(info["config"])
    if model_class is not keras.Model:
        settings.update({name: metadata.get(name) for name in _METADATA})
    inputs, outputs = loaded.input, loaded.output
    if metadata["version"] == 1:
        inputs, outputs = _pooling_out_of_the_head(loaded)
    # The model's policy: a mixed-precision model compiles with loss scaling.
    with global_dtype_policy(info["dtype_policy"]):
        model = model_class(inputs, outputs, name=loaded.name, **settings)
    _compile_as_loaded(model, loaded)
    return model


def _restore_legacy(loaded):
    """A model of a release that saved keras_transfer layers, with today's layers."""
    inputs, outputs, metadata = legacy_layers.upgrade_legacy_layers(loaded)
    config = loaded.get_config()
    settings = {k: v for k, v in config.items() if k not in _NOT_SETTINGS}
    settings.update({k: v for k, v in metadata.items() if v is not None})
    with global_dtype_policy(loaded.dtype_policy.name):
        model = type(loaded)(inputs, outputs, name=loaded.name, **settings)
    _compile_as_loaded(model, loaded)
    return model


def _pooling_out_of_the_head(loaded):
    """`(inputs, outputs)` of a format-1 model, its head's pooling moved before the head."""

    def call(layer, *args, **kwargs):
        first = layer.layers[0] if isinstance(layer, keras.Sequential) and layer.layers else None
        if layer.name == "head" and isinstance(first, _GLOBAL_POOLINGS):
            x = first(args[0])
            return keras.Sequential(layer.layers[1:], name=layer.name)(x)
        return layer(*args, **kwargs)

    graph = keras.models.clone_model(
        keras.Model(loaded.input, loaded.output, name=loaded.name),
        clone_function=lambda layer: layer,
        call_function=call,
    )
    return graph.input, graph.output


# The classes `keras_transfer.layers.global_pooling` builds.
_GLOBAL_POOLINGS = (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)


def _compile_as_loaded(model, loaded):
    if getattr(loaded, "compiled", False):
        model.compile_from_config(loaded.get_compile_config())
        _copy_optimizer_state(loaded.optimizer, model)


def _copy_optimizer_state(source, model):
    # Both optimizers hold one slot per trainable variable, in the order of
    # the layers, which the restored model keeps: the state carries over.
    # Loss scaling (mixed precision) starts afresh, as after keras' load.
    source, target = _unscaled(source), _unscaled(model.optimizer)
    if source is None or not source.built or target is None:
        return
    target.build(model.trainable_variables)
    pairs = list(zip(source.variables, target.variables))
    if len(source.variables) == len(target.variables) and all(
        tuple(a.shape) == tuple(b.shape) for a, b in pairs
    ):
        for a, b in pairs:
            b.assign(a)


def _keras_transfer_classes(config):
    """The keras_transfer classes named anywhere in a serialized config."""
    found = set()

    def walk(node):
        if isinstance(node, dict):
            if str(node.get("module", "")).startswith("keras_transfer"):
                found.add(str(node.get("class_name")))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return sorted(found)
