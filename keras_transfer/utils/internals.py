"""The guarded uses of Keras, TensorFlow and KerasTuner internals, in one place.

Some of what keras-transfer does has no public API (walking nested layers,
resuming `fit` at an epoch, freeing what TensorFlow keeps of traced steps).
Internals that more than one module needs, or that need a guard, live here;
`docs/private_apis.md` lists every one the package uses, and
`tests/test_private_apis.py` fails, naming it, when a version lacks one.

An optional internal (a speed-up, a memory release) missing: one warning per
process naming it (`warn_missing`). An essential one: `MissingInternalError`
naming it, its user and `SUPPORTED_VERSIONS` (the bounds of `setup.cfg`).
"""

import contextlib
import importlib.metadata
import sys
import warnings

import keras
import numpy as np
import tensorflow as tf
from absl import logging as absl_logging

from keras_transfer.errors import KerasTransferError

try:  # Where `keras.utils.get_file` reads its cache folder from.
    from keras.src.backend import config as keras_config
except ImportError:  # pragma: no cover - a future Keras layout
    keras_config = None
try:  # Keras' batching of arrays, to shuffle as its `fit` does.
    from keras.src.trainers.data_adapters.array_data_adapter import ArrayDataAdapter
except ImportError:  # pragma: no cover - a future Keras layout
    ArrayDataAdapter = None
try:  # TensorFlow's process-wide registry of gradient functions.
    from tensorflow.python.framework import ops as tf_ops
except ImportError:  # pragma: no cover - a future TensorFlow layout
    tf_ops = None

# The bounds of setup.cfg's `install_requires`, for messages.
SUPPORTED_VERSIONS = "keras>=3.15,<4, tensorflow>=2.16 and keras-tuner>=1.4,<2"

# The prefix of the names `tf.custom_gradient` registers its functions under.
CUSTOM_GRADIENT_PREFIX = "CustomGradient-"

_warned = set()


class MissingInternalError(KerasTransferError, RuntimeError):
    """An installed Keras, TensorFlow or KerasTuner lacks an internal keras-transfer needs."""


def _installed():
    versions = []
    for name in ("keras", "tensorflow", "keras-tuner"):
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"no {name}")
    return ", ".join(versions)


def missing_message(internal, used_by):
    """The message of a missing internal: what, who needs it, which versions work."""
    return (
        f"{internal} is missing from the installed libraries ({_installed()}); "
        f"{used_by} needs it. keras-transfer supports {SUPPORTED_VERSIONS}: "
        "install one of those (see docs/private_apis.md)."
    )


def require_attributes(obj, names, used_by):
    """Raises `MissingInternalError` unless `obj` has every attribute in `names`.

    For essential internals: a newer library then fails where the feature
    starts, naming the internal, not with an `AttributeError` inside `fit`.

    Args:
        obj: the object (or class); names: its attributes; used_by: who needs them.

    Example:

    ```python
    require_attributes(keras.callbacks.BackupAndRestore, ("_load_model",), "RunBackup")
    ```
    """
    cls = obj if isinstance(obj, type) else type(obj)
    # Name the library's class (BackupAndRestore), not our subclass of it.
    owner = next((c for c in cls.__mro__ if not c.__module__.startswith("keras_transfer")), cls)
    for name in names:
        if not hasattr(obj, name):
            raise MissingInternalError(missing_message(f"{owner.__name__}.{name}", used_by))


def warn_missing(internal, used_by, consequence):
    """Warns, once per process and internal, that an optional internal is missing.

    Args:
        internal, used_by: named in the warning.
        consequence: what the user loses, e.g. `"images/s is not reported"`.

    Example:

    ```python
    warn_missing("TensorBoard._writers", "FlushingTensorBoard", "events are flushed at exit only")
    ```
    """
    if internal in _warned:
        return
    _warned.add(internal)
    warnings.warn(
        f"{missing_message(internal, used_by)} Without it, {consequence}.",
        stacklevel=3,
    )


def print_msg(message):
    """Prints a line the way Keras prints its progress (stdout, or absl's log).

    Keras' own `print_msg` is private (`keras.src.utils.io_utils`); this does
    the same through public APIs: stdout while interactive logging is on
    (`keras.config.is_interactive_logging_enabled()`), else absl's INFO log.

    Example:

    ```python
    print_msg("ProgressiveUnfreeze: epoch 3: phase 1")
    ```
    """
    line = f"{message}\n"
    if not keras.config.is_interactive_logging_enabled():
        absl_logging.info(str(message))
        return
    try:
        sys.stdout.write(line)
    except UnicodeEncodeError:  # A console that cannot show every character.
        encoding = sys.stdout.encoding or "utf-8"
        sys.stdout.write(line.encode(encoding, "replace").decode(encoding))
    sys.stdout.flush()


def flatten_layers(layer, include_self=True, recursive=True, used_by="keras-transfer"):
    """`layer` and every layer nested in it, at any depth (`Layer._flatten_layers`).

    `model.layers` is only the top level; nested layers need Keras' private walk.

    Args:
        layer: a Keras layer or model; include_self: whether it comes first.
        recursive: False for the direct sublayers only; used_by: named in errors.

    Raises:
        MissingInternalError: this Keras has no `_flatten_layers`.

    Example:

    ```python
    [l.name for l in flatten_layers(model, include_self=False)]
    ```
    """
    walk = getattr(layer, "_flatten_layers", None)
    if walk is None:
        raise MissingInternalError(missing_message("Layer._flatten_layers", used_by))
    return list(walk(include_self=include_self, recursive=recursive))


# A functional model's graph and its nodes' fields, as the cache reads them.
_NODES_BY_DEPTH = "_nodes_by_depth"
_NODE_FIELDS = ("operation", "is_input", "input_tensors", "outputs", "arguments")


def functional_nodes_by_depth(functional, used_by="the frozen-feature cache"):
    """`{depth: [Node]}` of a functional model (`Functional._nodes_by_depth`).

    Keras publishes the layers of a functional model (`model.operations`)
    but not the calls between them, which the cache needs to know what each
    layer computes from.

    Raises:
        MissingInternalError: the model or one of its nodes lacks the
            fields; the cache then trains uncached with one warning.

    Example:

    ```python
    depths = functional_nodes_by_depth(model)
    [n.operation.name for n in depths[0]]
    ```
    """
    require_attributes(functional, (_NODES_BY_DEPTH,), used_by)
    depths = getattr(functional, _NODES_BY_DEPTH)
    for nodes in depths.values():
        for node in nodes:
            require_attributes(node, _NODE_FIELDS, used_by)
    return depths


def created_trainable_variables(obj):
    """The variables a layer (or built optimizer) holds as trainable, even while frozen.

    A frozen layer's `trainable_variables` is empty (`_trainable_variables` is not).

    Raises:
        MissingInternalError: this Keras has no `_trainable_variables`.

    Example:

    ```python
    created_trainable_variables(frozen_dense)  # [kernel, bias]
    ```
    """
    if not hasattr(obj, "_trainable_variables"):
        raise MissingInternalError(
            missing_message(f"{type(obj).__name__}._trainable_variables", "the unfreeze plan")
        )
    return list(obj._trainable_variables)


def set_initial_epoch(model, epoch):
    """Makes the next (or running) `fit` of `model` start at `epoch`.

    What `keras.callbacks.BackupAndRestore` does from `on_train_begin`: Keras'
    `fit` reads `model._initial_epoch` after the callbacks' `on_train_begin`.

    Raises:
        MissingInternalError: this Keras has no `Model._initial_epoch`.

    Example:

    ```python
    set_initial_epoch(self.model, 3)  # from a callback's on_train_begin
    ```
    """
    if not hasattr(model, "_initial_epoch"):
        raise MissingInternalError(
            missing_message("Model._initial_epoch", "RunBackup (resuming a run)")
        )
    model._initial_epoch = epoch


def record_built_variables(optimizer, variables):
    """Makes a built optimizer's variable list `variables`, as `build` records it.

    On JAX, `LossScaleOptimizer.stateless_apply` unscales the gradients
    zipped with the variables it was built for (`_trainable_variables`): when
    more variables train later (an unfreeze), the gradients past the end of
    that list are dropped, and the weights they belong to stop training.
    Its inner optimizer is what applies them, so nothing else changes.

    Raises:
        MissingInternalError: this Keras has no `Optimizer._trainable_variables`
            or `_trainable_variables_indices`.

    Example:

    ```python
    record_built_variables(loss_scale_optimizer, head_and_backbone_variables)
    ```
    """
    require_attributes(
        optimizer,
        ("_trainable_variables", "_trainable_variables_indices", "_var_key"),
        "ProgressiveUnfreeze (mixed precision on JAX)",
    )
    variables = list(variables)
    # Past Keras' attribute tracking, which `build` turns off for this too.
    object.__setattr__(optimizer, "_trainable_variables", variables)
    indices = optimizer._trainable_variables_indices
    indices.clear()
    indices.update({optimizer._var_key(v): i for i, v in enumerate(variables)})


@contextlib.contextmanager
def releasing_custom_gradients():
    """Unregisters the custom gradients that tracing registers inside the block.

    Keras' TensorFlow optimizer sums the gradients with `ReplicaContext.all_reduce`,
    a `tf.custom_gradient`: each traced train step registers a gradient function
    (`CustomGradient-<n>`) in TensorFlow's process-wide registry, which never
    drops it, and its closure keeps the step's graph alive
    (tensorflow/tensorflow#97697): 10-30 MB per model in a KerasTuner search.
    Nothing differentiates the traced step, so those added inside the block go
    when it ends. Without the registry: one warning, and the memory stays.

    Example:

    ```python
    with releasing_custom_gradients():
        model.fit(x, y)
    ```
    """
    registry = custom_gradient_registry()
    before = set(registry) if registry is not None else ()
    try:
        yield
    finally:
        if registry is not None:
            for name in set(registry) - before:
                if name.startswith(CUSTOM_GRADIENT_PREFIX):
                    registry.pop(name, None)


def custom_gradient_registry():
    """TensorFlow's gradient registry (a dict), or None off TensorFlow or without it.

    Example: `len(custom_gradient_registry())`, the gradient functions registered.
    """
    if keras.backend.backend() != "tensorflow":
        return None
    registry = getattr(getattr(tf_ops, "_gradient_registry", None), "_registry", None)
    if not isinstance(registry, dict):
        warn_missing(
            "tensorflow.python.framework.ops._gradient_registry._registry",
            "TransferClassifier.fit",
            "each fit keeps its traced train step in memory (10-30 MB per model)",
        )
        return None
    return registry


@contextlib.contextmanager
def keras_home_for_downloads(home):
    """Points `keras.utils.get_file`'s default cache folder at `home` inside the block.

    Keras reads `KERAS_HOME` once, at import (`keras.src.backend.config._KERAS_DIR`);
    the backbone weights are looked up under the call-time `KERAS_HOME`.
    Without it: one warning, and Keras uses its import-time folder.

    Example:

    ```python
    with keras_home_for_downloads(os.environ["KERAS_HOME"]):
        keras.applications.MobileNetV2(weights="imagenet")
    ```
    """
    if not hasattr(keras_config, "_KERAS_DIR"):
        warn_missing(
            "keras.src.backend.config._KERAS_DIR",
            "the backbone weights loader",
            "ImageNet weights are read from (or downloaded to) the KERAS_HOME "
            "Keras was imported with, not the current one",
        )
        yield
        return
    previous = keras_config._KERAS_DIR
    keras_config._KERAS_DIR = home
    try:
        yield
    finally:
        keras_config._KERAS_DIR = previous


def forget_call_nodes(layer):
    """Empties the layer's lists of call nodes (`_inbound_nodes`, `_outbound_nodes`).

    Each call of a layer in a functional model leaves a node on it that holds
    the caller's tensors: a backbone reused across models keeps every past
    model alive. On TensorFlow each list is a `ListWrapper` that checkpoint
    dependencies hold too, so it is emptied in place: the wrapped list
    (`_storage`) is cleared and the snapshot updated (`_update_snapshot`),
    since deleting through the wrapper marks it mutated, which SavedModel
    export refuses. Without the node lists: one warning, and the nodes stay.

    Example:

    ```python
    forget_call_nodes(backbone)  # no model that called it is used any more
    ```
    """
    for name in ("_inbound_nodes", "_outbound_nodes"):
        nodes = getattr(layer, name, None)
        if nodes is None:
            warn_missing(
                f"Operation.{name}",
                "the backbone pool",
                "a reused backbone keeps the earlier trials' models in memory",
            )
            continue
        storage = getattr(nodes, "_storage", None)
        if isinstance(storage, list) and hasattr(nodes, "_update_snapshot"):
            storage.clear()
            nodes._update_snapshot()
            continue
        if type(nodes).__name__ == "ListWrapper":
            warn_missing(
                "ListWrapper._storage/_update_snapshot",
                "the backbone pool",
                "a reused backbone may not export to SavedModel",
            )
        del nodes[:]


def array_index_batches(count, batch_size, shuffle):
    """Batches of the indices `0..count-1`, shuffled as Keras' `fit` shuffles arrays.

    Keras' private `ArrayDataAdapter` draws the order, so features read in it
    make the batches of an uncached fit. Without it: one warning, and a
    `tf.data` shuffle (another order, as random).

    Args:
        count: number of samples; batch_size: samples per batch.
        shuffle: False, True or `"batch"`, as `fit(shuffle=...)`.

    Example:

    ```python
    array_index_batches(10, 4, shuffle=True)  # int64 batches of 4, 4 and 2
    ```
    """
    if ArrayDataAdapter is not None:
        adapter = ArrayDataAdapter(np.arange(count), batch_size=batch_size, shuffle=shuffle)
        if keras.backend.backend() == "tensorflow":
            return adapter.get_tf_dataset()
        # Other backends' fit reads arrays through the NumPy iterator, which
        # draws its order from NumPy's global generator at each epoch.
        return tf.data.Dataset.from_generator(
            adapter.get_numpy_iterator,
            output_signature=tf.TensorSpec((None,), tf.int64),
        )
    warn_missing(
        "keras.src.trainers.data_adapters.array_data_adapter.ArrayDataAdapter",
        "the frozen-feature cache",
        "cached batches come in another random order than an uncached fit's",
    )
    indices = tf.data.Dataset.range(count)
    return (indices.shuffle(count) if shuffle else indices).batch(batch_size)
