"""Sharing keys: everything that determines a fit's cached features, as a hashable value.

Two fits may share features only when the frozen layers (class, config,
weight bytes), their wiring from the input, the input dtype and the data
are identical. `sharing_key` says so, or returns None when it cannot tell.
"""

import dataclasses
import hashlib
import json
import shutil
import weakref
import zlib

import keras
import numpy as np
import tensorflow as tf

from keras_transfer.caching.inputs import is_array


@dataclasses.dataclass
class SharedFeatures:
    data: tuple
    names: dict  # cut signature -> feature name in the stores
    train: object
    validation: object
    nbytes: int
    datasets: tuple  # weak references to the tf.data datasets in `data`
    directory: str = None

    def __post_init__(self):
        self._finalizer = None
        if self.directory is not None:
            # Also at interpreter exit: spilled features never outlive us.
            self._finalizer = weakref.finalize(self, shutil.rmtree, self.directory, True)

    def alive(self):
        return all(ref() is not None for ref in self.datasets)

    def release(self):
        self.train = self.validation = None
        if self._finalizer is not None:
            self._finalizer()


@dataclasses.dataclass(frozen=True)
class SharingKey:
    data: tuple  # what the fit reads, hashable
    cuts: dict  # cut tensor id -> signature of how it is computed
    plan_names: dict  # cut tensor id -> feature name in this fit
    datasets: tuple


class Unshareable(Exception):
    pass


def sharing_key(model, plan, kw):
    """What determines this fit's cached features, or None if it cannot be said."""
    datasets = []
    try:
        cuts = _cut_signatures(plan)
        data = (
            _fingerprint(kw["x"], datasets),
            _fingerprint(kw["y"], datasets),
            _fingerprint(kw["sample_weight"], datasets),
            _fingerprint(kw["validation_data"], datasets),
            kw["batch_size"],
            float(kw["validation_split"] or 0.0),
            kw["validation_batch_size"],
            model.jit_compile is True,
        )
    except Unshareable:
        return None
    return SharingKey(data, cuts, dict(plan.keys), tuple(datasets))


def _digest(value):
    return hashlib.sha1(repr(value).encode()).hexdigest()


def _fingerprint(value, datasets):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, tf.data.Dataset):
        try:
            datasets.append(weakref.ref(value))
        except TypeError:
            raise Unshareable() from None
        return ("dataset", id(value))
    if isinstance(value, dict):
        return ("dict",) + tuple((k, _fingerprint(v, datasets)) for k, v in sorted(value.items()))
    if isinstance(value, (tuple, list)):
        return (type(value).__name__,) + tuple(_fingerprint(v, datasets) for v in value)
    if not is_array(value):
        raise Unshareable()
    array = np.asarray(value)
    if array.dtype.hasobject:
        raise Unshareable()
    # crc32 reads ~4 GB/s here: 0.3 s for 2,000 float32 images of 224x224,
    # against a backbone pass over them of 20 s or more.
    contiguous = np.ascontiguousarray(array)
    return ("array", array.shape, array.dtype.str, zlib.crc32(contiguous.view(np.uint8)))


def _cut_signatures(plan):
    """For each cached tensor, a digest of everything that computes it."""
    graph = plan.graph
    digests = {}
    for position, key in enumerate(graph.input_ids):
        tensor = graph.tensors[key]
        digests[key] = _digest(("input", position, tuple(tensor.shape[1:]), str(tensor.dtype)))
    for step in plan.prefix:
        inputs = tuple(digests[k] for k in step.inputs)
        if step.op is None:
            for source, target, dtype in zip(step.inputs, step.outputs, step.casts):
                digests[target] = _digest(("alias", digests[source], str(dtype)))
            continue
        call = (_layer_signature(step.op, with_weights=True), _call_arguments(step.node))
        for index, key in enumerate(step.outputs):
            digests[key] = _digest((call, inputs, index))
    return {key: digests[key] for key in plan.keys}


def _layer_signature(op, with_weights):
    try:
        config = dict(op.get_config())
    except Exception:  # A custom layer without get_config.
        raise Unshareable() from None
    for name in ("name", "trainable"):
        config.pop(name, None)
    text = json.dumps(config, sort_keys=True, default=repr)
    weights = weight_checksums([op])[id(op)] if with_weights else ()
    return (type(op).__module__, type(op).__qualname__, text, weights)


def weight_checksums(ops):
    """`{id(op): (shape, dtype, crc32) of each weight}`: tells whether weights changed.

    A session calls it twice per cached fit that has callbacks: 0.08 s each
    for MobileNetV2's 106 layers with weights (8.7 MB), measured on CPU.

    Args:
        ops: the layers (with or without weights).

    Example:

    ```python
    before = weight_checksums(backbone.layers)
    model.load_weights(path)
    before != weight_checksums(backbone.layers)  # True if any weight changed
    ```
    """
    return {
        id(op): tuple(
            (
                tuple(w.shape),
                str(w.dtype),
                zlib.crc32(
                    np.ascontiguousarray(keras.ops.convert_to_numpy(w)).reshape(-1).view(np.uint8)
                ),
            )
            for w in op.weights
        )
        for op in ops
    }


def _call_arguments(node):
    """The non-tensor arguments a layer was called with."""
    try:
        arguments = keras.tree.map_structure(
            lambda v: "<tensor>" if isinstance(v, keras.KerasTensor) else v,
            (node.arguments.args, node.arguments.kwargs),
        )
        return json.dumps(arguments, sort_keys=True, default=repr)
    except Exception:
        raise Unshareable() from None
