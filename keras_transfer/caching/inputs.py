"""What a `fit` is given: arrays or a finite `tf.data.Dataset`, and whether it is random.

Caching is only correct when every epoch sees the same images: a `tf.data`
pipeline with random operations (augmentation) must train uncached.
`inspect_dataset` reads the pipeline's traced functions for random ops.
"""

import numpy as np
import tensorflow as tf


_RANDOM_OPS = (
    "TruncatedNormal", "ParameterizedTruncatedNormal", "Multinomial",
    "RngReadAndSkip", "RngSkip", "StatelessMultinomial",
    "StatelessParameterizedTruncatedNormal",
)

_RANDOM_OP_PREFIXES = ("Random", "StatelessRandom", "StatelessTruncatedNormal",
                       "StatefulUniform", "StatefulStandardNormal",
                       "StatefulTruncatedNormal")

class Fallback:
    def __init__(self, reason=None):
        self.reason = reason

def is_array(value):
    return isinstance(value, (np.ndarray, tf.Tensor)) or (
        hasattr(value, "__array__") and hasattr(value, "shape")
    )

def inspect_dataset(dataset):
    """Whether a dataset reshuffles each epoch, or a `Fallback` if it is random."""
    try:
        shuffles, random_ops = False, set()
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
            for value in vars(ds).values():
                if type(value).__name__ == "StructuredFunctionWrapper":
                    random_ops |= _random_ops(value.function.graph.as_graph_def())
    except Exception as e:  # Private tf.data structure: never fail a fit.
        return Fallback(
            f"its tf.data pipeline could not be inspected for random "
            f"operations ({type(e).__name__}: {e})."
        )
    if random_ops:
        return Fallback(
            f"the tf.data pipeline has random operations "
            f"({', '.join(sorted(random_ops))}), e.g. data augmentation, so "
            "the images differ at each epoch. Augment inside the model with "
            "keras.layers.Random* layers, or pass cache_frozen_features=False "
            "to silence this warning."
        )
    return shuffles

def _random_ops(graph_def):
    ops = [n.op for n in graph_def.node]
    for function in graph_def.library.function:
        ops.extend(n.op for n in function.node_def)
    return {
        op for op in ops
        if op in _RANDOM_OPS or op.startswith(_RANDOM_OP_PREFIXES)
    }
