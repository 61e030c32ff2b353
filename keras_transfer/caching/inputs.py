"""What a `fit` is given: arrays or a finite `tf.data.Dataset`, and whether it is random.

Caching is only correct when every epoch sees the same images: a `tf.data`
pipeline with random operations (augmentation) must train uncached.
`inspect_dataset` reads the pipeline's traced functions for random ops;
`sample_batch` gives a few inputs to try the model's own layers on.
"""

import keras
import numpy as np
import tensorflow as tf

# Inputs in the batch on which user layers are tried for randomness.
PROBE_BATCH = 4
# Size of a dimension that neither the model nor the dataset fixes.
_FREE_DIMENSION = 32


_RANDOM_OPS = (
    "TruncatedNormal",
    "ParameterizedTruncatedNormal",
    "Multinomial",
    "RngReadAndSkip",
    "RngSkip",
    "StatelessMultinomial",
    "StatelessParameterizedTruncatedNormal",
)

_RANDOM_OP_PREFIXES = (
    "Random",
    "StatelessRandom",
    "StatelessTruncatedNormal",
    "StatefulUniform",
    "StatefulStandardNormal",
    "StatefulTruncatedNormal",
)


class Fallback:
    """Why a fit trains uncached (`reason` None: say nothing, Keras will)."""

    def __init__(self, reason=None):
        self.reason = reason


class FallbackError(Exception):
    """Raised once the data has been read, when it shows caching cannot be exact."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


# tf.data datasets that run a user function on each element.
_FUNCTION_DATASETS = (
    "MapDataset",
    "ParallelMapDataset",
    "FilterDataset",
    "FlatMapDataset",
    "InterleaveDataset",
    "ParallelInterleaveDataset",
    "_ScanDataset",
)


def is_array(value):
    return isinstance(value, (np.ndarray, tf.Tensor)) or (
        hasattr(value, "__array__") and hasattr(value, "shape")
    )


def inspect_dataset(dataset):
    """Whether a dataset reshuffles each epoch, or a `Fallback` if it is random."""
    try:
        shuffles, found = False, set()
        stack, seen = [dataset], set()
        while stack:
            ds = stack.pop()
            if id(ds) in seen:
                continue
            seen.add(id(ds))
            stack.extend(ds._inputs())
            name = type(ds).__name__
            if "Shuffle" in name and getattr(ds, "_reshuffle_each_iteration", True):
                shuffles = True
            wrappers = [
                value
                for value in vars(ds).values()
                if type(value).__name__ == "StructuredFunctionWrapper"
            ]
            if not wrappers and name.endswith(_FUNCTION_DATASETS):
                # A renamed wrapper would hide augmentation: refuse, not guess.
                raise LookupError(f"{name} holds no traced function to read")
            for wrapper in wrappers:
                found |= random_ops(wrapper.function.graph.as_graph_def())
    except Exception as e:  # Private tf.data structure: never fail a fit.
        return Fallback(
            f"its tf.data pipeline could not be inspected for random "
            f"operations ({type(e).__name__}: {e})."
        )
    if found:
        return Fallback(
            f"the tf.data pipeline has random operations "
            f"({', '.join(sorted(found))}), e.g. data augmentation, so "
            "the images differ at each epoch. Augment inside the model with "
            "keras.layers.Random* layers, or pass cache_frozen_features=False "
            "to silence this warning."
        )
    return shuffles


def sample_batch(x, model_input):
    """A few inputs like those `fit` will read, to call the model's layers on.

    The first rows of arrays. For a dataset, seeded noise in [0, 255] (raw
    pixels) of the model input's dtype and shape: taking a real batch would
    move a reshuffling dataset on by one epoch. None when no batch can be
    made (non-numeric inputs).

    Example:

    >>> sample_batch(np.zeros((10, 32, 32, 3)), keras.Input((32, 32, 3))).shape
    (4, 32, 32, 3)

    Args:
        x: the `x` given to `fit`: an array or a `tf.data.Dataset`.
        model_input: the model's symbolic input (`model.inputs[0]`).
    """
    if is_array(x) and len(x):
        rows = x[:PROBE_BATCH]
        return rows if isinstance(rows, (np.ndarray, tf.Tensor)) else np.asarray(rows)
    shape = list(model_input.shape[1:])
    if isinstance(x, tf.data.Dataset):
        spec = keras.tree.flatten(x.element_spec[0])[0]
        if getattr(spec, "shape", None) is not None and spec.shape.rank == len(shape) + 1:
            shape = [m if m is not None else d for m, d in zip(shape, spec.shape[1:])]
    shape = [PROBE_BATCH] + [_FREE_DIMENSION if d is None else d for d in shape]
    dtype = keras.backend.standardize_dtype(model_input.dtype)
    rng = np.random.default_rng(0)
    if keras.backend.is_float_dtype(dtype):
        return rng.uniform(0, 255, shape).astype(dtype)
    if keras.backend.is_int_dtype(dtype):
        return rng.integers(0, 256, shape).astype(dtype)
    if dtype == "bool":
        return rng.integers(0, 2, shape).astype(bool)
    return None


def random_ops(graph_def):
    """The names of the random operations in a TensorFlow `GraphDef`.

    Example:

    >>> f = tf.function(lambda x: x + tf.random.uniform(tf.shape(x)))
    >>> random_ops(f.get_concrete_function(tf.zeros(2)).graph.as_graph_def())
    {'RandomUniform'}
    """
    ops = [n.op for n in graph_def.node]
    for function in graph_def.library.function:
        ops.extend(n.op for n in function.node_def)
    return {op for op in ops if op in _RANDOM_OPS or op.startswith(_RANDOM_OP_PREFIXES)}
