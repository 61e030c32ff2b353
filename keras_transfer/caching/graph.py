"""The model's graph as steps: which tensors stay constant while some layers train.

A functional model (nested functional models flattened into it) becomes a
list of `Step`s in topological order. Given a predicate `trains(layer)`, the
`Graph` says which tensors cannot change during training: those computed
from the input by layers that do not train and do not draw anew each epoch.

What draws anew is decided by what a random layer does, not by where it
sits. Augmentation does, wherever it sits (in the user's model, in a
`Sequential` before the backbone, or inside the backbone's own layers when
it was fed through `input_tensor=`): Keras' random preprocessing layers
(`RandomFlip`, `RandAugment`, `MixUp`, ...) and any other random layer that
comes before every weighted layer. Regularisation between the weighted
layers of a frozen backbone (stochastic depth, `Dropout`) runs in inference
mode, as `base_model(x, training=False)` asks; outside the backbone every
random layer draws anew.

Which layers are random is known for Keras' own layers (`Dropout`, the
`Random*` layers and `GaussianNoise` hold a `SeedGenerator`). Any other
layer runs code Keras cannot vouch for (`tf.random` in a custom `call`, a
`Lambda`, NumPy in a `py_function`), so `probe_steps` decides by behaviour:
it calls the layer on a sample batch in training mode and watches it, and
reads its trace for random operations (a `tf.function`'s graph on
TensorFlow, a jaxpr's random primitives on JAX).
"""

import inspect
import re

import keras
import numpy as np
import tensorflow as tf

from keras_transfer.caching import jax_backend
from keras_transfer.caching.inputs import random_ops
from keras_transfer.utils.internals import flatten_layers
from keras_transfer.utils.internals import functional_nodes_by_depth

# Calls of a probed layer in training mode. A layer that draws one coin per
# batch looks constant over n calls with probability 2**(1 - n); the traced
# graph's random operations catch those that the calls miss.
PROBE_CALLS = 4

# What a probe found, besides an exception (kept as its text).
RANDOM = "random"
TRAINING_MODE = "training mode"

# Keras' own layers that run user code: probed like user layers.
_USER_CODE_LAYERS = tuple(
    getattr(keras.layers, name)
    for name in ("Lambda", "TFSMLayer", "TorchModuleWrapper", "JaxLayer", "FlaxLayer")
    if hasattr(keras.layers, name)
)
_KNOWN_MODULES = ("keras.", "keras_transfer.")

# Keras' preprocessing layers (public names only). Those of them that hold a
# SeedGenerator are augmentation: RandomFlip ... RandAugment, MixUp, CutMix.
_PREPROCESSING_LAYERS = tuple(
    layer
    for layer in vars(keras.layers).values()
    if isinstance(layer, type)
    and issubclass(layer, keras.layers.Layer)
    and ".preprocessing." in layer.__module__
)


class Step:
    """One operation call of the model's graph, nested models flattened.

    An alias step (`op` None) passes tensors into or out of a nested model.
    """

    def __init__(self, op, node, inputs, outputs, casts=None, in_backbone=False, name=None):
        self.op = op
        # What the step's outputs are called: its layer, or the nested model
        # whose outputs an alias step passes out.
        self.name = name if op is None else op.name
        self.node = node
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self.casts = casts
        self.in_backbone = in_backbone
        self.random = op is not None and is_random_layer(op)
        self.augmentation = op is not None and is_augmentation_layer(op)
        # Whether no weighted layer computes any of the step's inputs (set
        # by the Graph): a random layer there can only be augmentation.
        self.before_weights = False
        # Why a probed step is not constant: RANDOM, TRAINING_MODE or the
        # exception its probe raised; None when known from its class.
        self.finding = None
        # A random step before frozen layers that the cache runs in training
        # mode once per augmented view: constant within a view.
        self.per_view = False
        self.weighted = op is not None and bool(getattr(op, "weights", None))

    @property
    def draws_anew(self):
        """Whether the step's randomness stands: it gives each epoch new values.

        True for augmentation wherever it sits and for any random step
        outside the backbone; False for the regularisation between a frozen
        backbone's weighted layers (run in inference mode, as
        `training=False` intends), and for deterministic steps.
        """
        if not self.random:
            return False
        if not self.in_backbone or self.augmentation:
            return True
        # A weighted composite (a whole backbone as one step) is judged by
        # the Keras augmentation inside it, not by its position.
        return self.before_weights and not self.weighted

    def call(self, values, training):
        """The flat outputs of the step's operation on the tensors of `values`."""
        args, kwargs = self.node.arguments.fill_in(values)
        # What Keras' Functional.call does: the outer `training` replaces the
        # one the layer was called with when the graph was built.
        if training is not None and takes_training(self.op):
            kwargs["training"] = training
        return keras.tree.flatten(self.op(*args, **kwargs))

    def run(self, values, training):
        if self.op is None:
            for source, target, dtype in zip(self.inputs, self.outputs, self.casts):
                value = values[source]
                if dtype is not None and "float" in str(dtype):
                    value = keras.ops.cast(value, dtype)
                values[target] = value
            return
        for key, value in zip(self.outputs, self.call(values, training)):
            values[key] = value


class Graph:
    """The model's graph as a flat list of steps in topological order."""

    def __init__(self, model, backbone_layer_ids):
        self.steps = []
        self.tensors = {}
        self._backbone_layer_ids = backbone_layer_ids
        self._flatten(model, in_backbone=False)
        self.input_ids = tuple(id(t) for t in model.inputs)
        self.output_ids = tuple(id(t) for t in model.outputs)
        for t in list(model.inputs) + list(model.outputs):
            self.tensors[id(t)] = t
        after_weights = set()
        for step in self.steps:
            step.before_weights = not after_weights & set(step.inputs)
            if step.weighted or not step.before_weights:
                after_weights.update(step.outputs)
        self.consumers = {}
        for step in self.steps:
            for key in step.inputs:
                self.consumers.setdefault(key, []).append(step)
        self.order = {}
        for key in self.input_ids:
            self.order.setdefault(key, len(self.order))
        for step in self.steps:
            for key in step.outputs:
                self.order.setdefault(key, len(self.order))

    def _flatten(self, functional, in_backbone):
        nodes_by_depth = functional_nodes_by_depth(functional)
        calls = {}
        for nodes in nodes_by_depth.values():
            for node in nodes:
                if node.operation is not None and not node.is_input:
                    calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1
        for depth in sorted(nodes_by_depth, reverse=True):
            for node in nodes_by_depth[depth]:
                op = node.operation
                if op is None or node.is_input:
                    continue
                for t in list(node.input_tensors) + list(node.outputs):
                    self.tensors[id(t)] = t
                inner_backbone = in_backbone or id(op) in self._backbone_layer_ids
                if _expandable(op, node, calls):
                    outer = keras.tree.flatten(node.arguments.args[0])
                    for t in op.inputs + op.outputs:
                        self.tensors[id(t)] = t
                    self.steps.append(
                        Step(
                            None,
                            None,
                            [id(t) for t in outer],
                            [id(t) for t in op.inputs],
                            casts=[t.dtype for t in op.inputs],
                        )
                    )
                    self._flatten(op, inner_backbone)
                    self.steps.append(
                        Step(
                            None,
                            None,
                            [id(t) for t in op.outputs],
                            [id(t) for t in node.outputs],
                            casts=[None] * len(node.outputs),
                            name=op.name,
                        )
                    )
                else:
                    self.steps.append(
                        Step(
                            op,
                            node,
                            [id(t) for t in node.input_tensors],
                            [id(t) for t in node.outputs],
                            in_backbone=inner_backbone,
                        )
                    )

    def constant_ids(self, trains, honour_randomness=True):
        """Ids of the tensors that cannot change during training."""
        constant = set(self.input_ids)
        for step in self.steps:
            if not all(key in constant for key in step.inputs):
                continue
            if step.op is not None:
                if trains(step.op):
                    continue
                if honour_randomness and step.draws_anew and not step.per_view:
                    continue
            constant.update(step.outputs)
        return constant

    def name_of(self, key):
        """The name of the layer that computes tensor `key` (the input's own name for it)."""
        for step in self.steps:
            if step.name is not None and key in step.outputs:
                return step.name
        return getattr(self.tensors.get(key), "name", str(key))


def _expandable(op, node, calls):
    """Whether a nested functional model can be flattened into its caller."""
    return (
        isinstance(op, keras.Model)
        and hasattr(op, "_nodes_by_depth")
        and calls.get(id(op)) == 1
        and len(node.arguments.args) == 1
        and all(
            name == "training" or (name == "mask" and value is None)
            for name, value in node.arguments.kwargs.items()
        )
        and len(keras.tree.flatten(node.arguments.args[0])) == len(op.inputs)
    )


def is_random_layer(op):
    if not isinstance(op, keras.layers.Layer):
        return False
    return any(
        isinstance(layer, keras.layers.Dropout) or _holds_seed_generator(layer)
        for layer in flatten_layers(op, include_self=True)
    )


def is_augmentation_layer(op):
    """Whether `op` is, or holds, one of Keras' random preprocessing layers."""
    if not isinstance(op, keras.layers.Layer):
        return False
    return any(
        isinstance(layer, _PREPROCESSING_LAYERS) and _holds_seed_generator(layer)
        for layer in flatten_layers(op, include_self=True)
    )


def _holds_seed_generator(layer):
    return any(isinstance(v, keras.random.SeedGenerator) for v in vars(layer).values())


def mark_per_view(graph, predicates):
    """Marks the random steps before frozen layers as constant per augmented view.

    A step qualifies when, in some phase (`predicates`: the fit's
    `trains(layer)`), it would be constant but for its randomness and feeds
    a frozen layer with weights: the augmentation a cache with
    `augmented_views` runs in training mode, once per view. Steps whose
    probe failed stay random (they could not be run on a batch).

    Returns:
        The marked steps (`step.per_view` set), in graph order.
    """
    marked = {}
    for trains in predicates:
        ideal = graph.constant_ids(trains, honour_randomness=False)
        feeds_frozen = set()
        for step in reversed(graph.steps):
            if step.weighted and set(step.outputs) <= ideal:
                feeds_frozen |= set(step.inputs)
            elif feeds_frozen & set(step.outputs):
                feeds_frozen |= set(step.inputs)
            if (
                step.draws_anew
                and step.finding in (None, RANDOM, TRAINING_MODE)
                and set(step.outputs) <= ideal
                and feeds_frozen & set(step.outputs)
            ):
                marked[id(step)] = step
    for step in marked.values():
        step.per_view = True
    return [s for s in graph.steps if id(s) in marked]


def trains_now(op):
    return isinstance(op, keras.layers.Layer) and bool(op.trainable_weights)


def runs_user_code(op):
    """Whether `op`, or a layer inside it, runs code that is not Keras' or ours."""
    layers = [op]
    if isinstance(op, keras.layers.Layer):
        layers = flatten_layers(op, include_self=True)
    return any(
        isinstance(layer, _USER_CODE_LAYERS)
        or not type(layer).__module__.startswith(_KNOWN_MODULES)
        for layer in layers
    )


def steps_to_probe(graph, predicates):
    """The steps of user code whose outputs would be cached if they were not random.

    Args:
        graph: the model's `Graph`.
        predicates: the `trains(layer)` predicates of the fit's phases.
    """
    cacheable = set()
    for trains in predicates:
        cacheable |= graph.constant_ids(trains, honour_randomness=False)
    # Inside the backbone only the steps before its weights can be
    # augmentation (fed through input_tensor=); the rest run in inference.
    return [
        s
        for s in graph.steps
        if s.op is not None
        and not s.random
        and (not s.in_backbone or (s.before_weights and not s.weighted))
        and set(s.outputs) <= cacheable
        and runs_user_code(s.op)
    ]


def probe_steps(graph, steps, sample):
    """Marks as random those of `steps` that do not give constant outputs in training.

    Runs the graph from `sample` (a small batch of the model's input, or
    None when none could be made) in inference mode, as the cache would,
    and calls each of `steps` on its inputs in training mode: a step is
    random when its outputs change from call to call or its traced graph
    holds random operations, and not constant either when its outputs in
    training differ from those in inference (the cache computes inference).
    A step that cannot be called counts as random: training uncached is
    always correct. Sets `step.random` and `step.finding`.

    Example:

    >>> probe_steps(graph, steps_to_probe(graph, [trains_now]), x[:4])
    >>> [(s.op.name, s.finding) for s in graph.steps if s.finding]
    [('noise', 'random')]
    """
    targets = {id(s) for s in steps}
    needed, chain = set(), []
    for step in reversed(graph.steps):
        if id(step) in targets or needed & set(step.outputs):
            chain.append(step)
            needed |= set(step.inputs)
    values, failure = {}, "no sample batch of the input could be made"
    if sample is not None:
        key = graph.input_ids[0]
        values[key] = keras.ops.cast(sample, graph.tensors[key].dtype)
    for step in reversed(chain):
        probed = id(step) in targets
        if not all(k in values for k in step.inputs):
            if probed:
                _mark(step, f"its input could not be computed ({failure})")
            continue
        try:
            if probed:
                finding, outputs = _probe(step, values)
                values.update(zip(step.outputs, outputs))
                if finding is not None:
                    _mark(step, finding)
            else:
                step.run(values, training=False)
        except Exception as e:  # User code: any failure means "not known constant".
            failure = _describe(e)
            if probed:
                _mark(
                    step,
                    f"called in training mode on a sample batch of shape "
                    f"{tuple(sample.shape)}, it raised {failure}",
                )


def _mark(step, finding):
    step.random = True
    step.finding = finding


def _probe(step, values):
    """What makes `step` not constant (or None), and its outputs in inference."""
    tensors = [values[k] for k in step.inputs]

    def call(args, training):
        return step.call(dict(zip(step.inputs, args)), training)

    if keras.backend.backend() == "jax":
        variables = getattr(step.op, "variables", [])
        outputs, inference, found = jax_backend.probe_calls(call, variables, tensors, PROBE_CALLS)
    else:
        outputs, inference, found = _tf_probe_calls(call, tensors)
    outputs = [_numpy(o) for o in outputs]
    if found or any(not _same(outputs[0], o) for o in outputs[1:]):
        return RANDOM, inference
    if not _same(outputs[0], _numpy(inference)):
        return TRAINING_MODE, inference
    return None, inference


def _tf_probe_calls(call, tensors):
    """`PROBE_CALLS` outputs in training, the outputs in inference, the random ops traced."""

    def traced(training):
        # Traced as in fit's training step, where a layer may behave otherwise
        # than eagerly; one trace, then called again and again.
        return tf.function(lambda *args: call(args, training))

    train = traced(True)
    graph_def = train.get_concrete_function(*tensors).graph.as_graph_def()
    outputs = [train(*tensors) for _ in range(PROBE_CALLS)]
    return outputs, traced(False)(*tensors), random_ops(graph_def)


def _describe(error):
    # Keras re-raises a layer's error with its arguments and terminal
    # colours; the error the user's code raised is the innermost one.
    seen = {id(error)}
    inner = error.__cause__ or error.__context__
    while inner is not None and id(inner) not in seen:
        seen.add(id(inner))
        error, inner = inner, inner.__cause__ or inner.__context__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines and lines[0].startswith("in user code"):
        lines = lines[-1:]  # tf.function's traceback; the message comes last.
    message = lines[0][:200] if lines else ""
    kind = type(error).__name__
    return message if message.startswith(f"{kind}:") else f"{kind}: {message}"


def _numpy(tensors):
    return [np.asarray(keras.ops.convert_to_numpy(t)) for t in tensors]


def _same(a, b):
    # Bit for bit: a deterministic layer repeats itself exactly, and random
    # noise can be smaller than any tolerance.
    return len(a) == len(b) and all(
        x.shape == y.shape and x.dtype == y.dtype and x.tobytes() == y.tobytes()
        for x, y in zip(a, b)
    )


def takes_training(op):
    """Whether `op` is a layer whose `call` takes `training`.

    Keras decides it from the signature too (`Layer.__init__`): those are
    the layers to which `Functional.call` passes the outer `training`.

    Example:

    >>> takes_training(keras.layers.Dropout(0.5)), takes_training(keras.layers.Dense(2))
    (True, False)
    """
    if not isinstance(op, keras.layers.Layer):
        return False
    return "training" in inspect.signature(op.call).parameters
