"""The model's graph as steps: which tensors stay constant while some layers train.

A functional model (nested functional models flattened into it) becomes a
list of `Step`s in topological order. Given a predicate `trains(layer)`, the
`Graph` says which tensors cannot change during training: those computed
from the input by layers that do not train and are not random.
"""

import keras


class Step:
    """One operation call of the model's graph, nested models flattened.

    An alias step (`op` None) passes tensors into or out of a nested model.
    """

    def __init__(self, op, node, inputs, outputs, casts=None, in_backbone=False):
        self.op = op
        self.node = node
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self.casts = casts
        self.in_backbone = in_backbone
        self.random = op is not None and is_random_layer(op)
        self.weighted = op is not None and bool(getattr(op, "weights", None))

    def run(self, values, training):
        if self.op is None:
            for source, target, dtype in zip(self.inputs, self.outputs, self.casts):
                value = values[source]
                if dtype is not None and "float" in str(dtype):
                    value = keras.ops.cast(value, dtype)
                values[target] = value
            return
        args, kwargs = self.node.arguments.fill_in(values)
        # What Keras' Functional.call does: the outer `training` replaces the
        # one the layer was called with when the graph was built.
        if training is not None and "training" in getattr(
            self.op, "_call_context_args", ()
        ):
            kwargs["training"] = training
        outputs = self.op(*args, **kwargs)
        for key, value in zip(self.outputs, keras.tree.flatten(outputs)):
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
        nodes_by_depth = functional._nodes_by_depth
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
                        Step(None, None, [id(t) for t in outer],
                              [id(t) for t in op.inputs],
                              casts=[t.dtype for t in op.inputs])
                    )
                    self._flatten(op, inner_backbone)
                    self.steps.append(
                        Step(None, None, [id(t) for t in op.outputs],
                              [id(t) for t in node.outputs],
                              casts=[None] * len(node.outputs))
                    )
                else:
                    self.steps.append(
                        Step(op, node, [id(t) for t in node.input_tensors],
                              [id(t) for t in node.outputs],
                              in_backbone=inner_backbone)
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
                if honour_randomness and step.random and not step.in_backbone:
                    continue
            constant.update(step.outputs)
        return constant

    def name_of(self, key):
        history = getattr(self.tensors[key], "_keras_history", None)
        op = history[0] if history else None
        return getattr(op, "name", str(key))

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
    for layer in op._flatten_layers(include_self=True):
        if isinstance(layer, keras.layers.Dropout):
            return True
        for value in vars(layer).values():
            if isinstance(value, keras.random.SeedGenerator):
                return True
    return False

def trains_now(op):
    return isinstance(op, keras.layers.Layer) and bool(op.trainable_weights)
