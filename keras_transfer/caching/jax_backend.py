"""The cache on JAX: the pass as one `jax.jit` of the frozen steps, the randomness probe, DataParallel.

Keras' JAX trainer runs a model as a pure function of its variables'
values (`stateless_call`, inside a `keras.StatelessScope`). The cache does
the same: `extractor` compiles the frozen steps of the pass with the
variables' values as arguments (so weights restored later are read, never
baked in), and writes back only what the pass assigned, the seed
generators' states of the random layers it runs once per augmented view.
`probe_calls` calls a user layer as a training step would and reads its
trace (`jax.make_jaxpr`) for random primitives. Under
`keras.distribution.DataParallel` the pass shards each batch over the
devices, and Keras shards the feature batches as it would the images.

TensorFlow stays the storage's engine on every backend: the features reach
Keras as a `tf.data` pipeline, which its JAX trainer reads.
"""

import keras
import numpy as np

if keras.backend.backend() == "jax":
    import jax
else:  # JAX is an optional extra: only its backend needs it.
    jax = None

# Primitives through which JAX draws random numbers: `jax.random`'s keys
# and bits (Keras' JAX random functions among them) and XLA's generators.
RANDOM_PRIMITIVES = frozenset(
    {
        "random_bits",
        "random_seed",
        "random_wrap",
        "random_unwrap",
        "random_split",
        "random_fold_in",
        "threefry2x32",
        "rng_bit_generator",
        "rng_uniform",
    }
)


def distribution_fallback():
    """Why the `keras.distribution` in force rules the cache out, or None.

    No distribution, or `DataParallel` in one process: the pass runs once
    (each batch sharded over the devices) and Keras shards the feature
    batches as it would the images, so each device trains on its part of
    every batch. Model parallelism shards weights, which the pass does not
    handle; several processes would each compute every feature. Neither is
    tested: uncached.
    """
    distribution = keras.distribution.distribution()
    if distribution is None:
        return None
    if type(distribution) is not keras.distribution.DataParallel:
        return (
            "under keras.distribution it supports DataParallel only; the "
            f"distribution is {type(distribution).__name__}."
        )
    if jax.process_count() > 1:
        return (
            "keras.distribution.DataParallel over several processes is not "
            f"supported ({jax.process_count()} processes)."
        )
    return None


def stateless(function, variables):
    """`function(*args)` as a pure function of the values of `variables`.

    Returns `pure(values, *args) -> (outputs, updates)`: inside, each of
    `variables` reads its entry of `values` (as in Keras' `stateless_call`),
    and `updates` maps the index of each variable that `function` assigned
    (a seed generator's state) to its new value; nothing is written.

    Example:

    ```python
    pure = stateless(lambda x: layer(x, training=True), layer.variables)
    outputs, updates = pure([v.value for v in layer.variables], x)
    ```
    """
    variables = list(variables)

    def pure(values, *args):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))) as scope:
            before = [scope.get_current_value(v) for v in variables]
            outputs = function(*args)
        updates = {}
        for index, variable in enumerate(variables):
            value = scope.get_current_value(variable)
            if value is not before[index]:
                updates[index] = value
        return outputs, updates

    return pure


def extractor(model, extract, pad):
    """The pass on JAX: `run(images, augment) -> {feature name: NumPy array}`.

    One compiled function per value of `augment` (whether the per-view
    random steps run in training mode) and batch shape. With `pad`, a
    smaller batch (the last one) is padded with copies of its last image to
    the largest batch seen, and its features cut back: no compilation for
    it (3 s for MobileNetV2 on CPU). Only for graphs of Keras' own layers,
    which compute each image apart from the others in inference mode; user
    code could mix the batch.

    Args:
        model: the model; its `variables` are read at every call.
        extract: `extract(images, augment) -> {name: tensor}`, the frozen steps.
        pad: bool, whether smaller batches may be padded.
    """
    variables = list(model.variables)
    pure = stateless(extract, variables)
    compile_ = model.jit_compile is not False  # "auto" compiles on JAX.
    functions = {}
    largest = [0]

    def function(augment):
        if augment not in functions:

            def call(values, images):
                return pure(values, images, augment)

            functions[augment] = jax.jit(call) if compile_ else call
        return functions[augment]

    def run(images, augment):
        images = np.asarray(images)
        count = len(images)
        largest[0] = max(largest[0], count)
        if pad and count < largest[0]:
            filler = np.repeat(images[-1:], largest[0] - count, axis=0)
            images = np.concatenate([images, filler])
        features, updates = function(bool(augment))([v.value for v in variables], _shard(images))
        for index, value in updates.items():
            variables[index].assign(value)
        return {name: np.asarray(value)[:count] for name, value in features.items()}

    return run


def _shard(images):
    """`images` split over the devices of a DataParallel distribution, when they divide evenly."""
    distribution = keras.distribution.distribution()
    if distribution is None:
        return images
    layout = distribution.get_data_layout(images.shape)
    devices = distribution.device_mesh.shape[0]
    if len(images) % devices:
        return images  # Each device computes the whole (small) batch.
    return jax.device_put(images, layout.backend_layout)


def probe_calls(call, variables, tensors, calls):
    """Calls a user step as training does, and traces it: what `graph.probe_steps` judges.

    Args:
        call: `call(tensors, training) -> [output tensors]`.
        variables: the variables the step may read or assign (its layer's).
        tensors: its input values.
        calls: how many calls in training mode.

    Returns:
        `(training, inference, random)`: the outputs of `calls` training
        calls in a row, each seeing the state the one before left (a seed
        generator moves on, as in `fit`; the real variables are left as they
        were), the outputs in inference mode, and the random primitives of
        the training call's trace.
    """
    values = [v.value for v in variables]
    train = stateless(lambda *args: call(args, True), variables)
    trace = jax.make_jaxpr(train)(values, *tensors)
    found = random_primitives(trace.jaxpr)
    # Eagerly: a layer that draws from NumPy or Python state (which a
    # compiled step would freeze at its trace) still shows it.
    outputs, state = [], list(values)
    for _ in range(calls):
        result, updates = train(state, *tensors)
        for index, value in updates.items():
            state[index] = value
        outputs.append(result)
    inference, _ = stateless(lambda *args: call(args, False), variables)(values, *tensors)
    return outputs, inference, found


def random_primitives(jaxpr):
    """The names of the random primitives in a jaxpr, nested ones (jit, cond, scan) included.

    Example:

    >>> random_primitives(jax.make_jaxpr(lambda k: jax.random.normal(k, (2,)))(jax.random.key(0)).jaxpr)
    {'random_bits', ...}
    """
    found, stack, seen = set(), [jaxpr], set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        for equation in current.eqns:
            if equation.primitive.name in RANDOM_PRIMITIVES:
                found.add(equation.primitive.name)
            for param in equation.params.values():
                for value in param if isinstance(param, (tuple, list)) else (param,):
                    # A ClosedJaxpr holds its Jaxpr; a Jaxpr holds equations.
                    inner = getattr(value, "jaxpr", value)
                    if hasattr(inner, "eqns"):
                        stack.append(inner)
    return found
