"""`Block` and `group_layers`: which layers of a built backbone form each block.

A block is a named regular expression over layer names. `group_layers` walks
the backbone's layers in the model's (topological) order and gives each to
the first block whose pattern matches:

- a layer that matches takes everything nested in it along (a
  `keras.applications` ConvNeXt's stem is a nested `Sequential`);
- a layer that matches nothing but holds other layers (a KerasHub ViT's
  `vit_encoder`) is opened, and its sublayers are matched by their path,
  e.g. `"vit_encoder/transformer_block_3"`;
- a layer that matches nothing at all is left out, or, for architectures
  whose Keras constructor leaves layers auto-named (`conv2d_7`,
  `batch_normalization_3`, names that change with how many models the
  process has built), joins the block of the nearest matched layer before
  it (`unmatched="previous"`) or after it (`unmatched="next"`) in that order.

Each group lists the matched layers with everything nested in them, so
that setting `trainable` on a group's layers and reading their own
variables covers exactly the block's weights.
"""

import dataclasses
import re

from keras_transfer.utils.internals import flatten_layers

# Where layers that match no block go; see `BackboneSpec.unmatched`.
UNMATCHED = ("error", "previous", "next")

_USED_BY = "keras_transfer.backbones (grouping layers into blocks)"


@dataclasses.dataclass(frozen=True)
class Block:
    """A named group of backbone layers, the unit of progressive unfreezing.

    Example:

    ```python
    Block("block_16", r"block_16_")   # MobileNetV2's last inverted residual
    Block("layer_12", r"vit_backbone/vit_encoder/transformer_block_12$")
    ```

    Attributes:
        name: the block's name, e.g. `"block_16"` or `"conv5_block3"`.
        pattern: a regular expression matched with `re.match` (anchored at
            the start of the name) against the backbone's layer names; a
            layer nested in a container that matches no block is matched by
            its path, `"<container>/<layer>"`.
    """

    name: str
    pattern: str


def group_layers(model, blocks, unmatched="error"):
    """Groups `model`'s layers by block; returns what could not be grouped too.

    Example:

    ```python
    groups, missing, empty = group_layers(backbone, spec.blocks, spec.unmatched)
    ```

    Args:
        model: the built backbone.
        blocks: `Block`s, stem to top.
        unmatched: `"error"`, `"previous"` or `"next"` (see the module).

    Returns:
        `(groups, outside, empty)`: `groups` is `[(block_name, [layers])]`,
        stem to top, each matched layer followed by the layers nested in
        it; `outside` names the layers with weights that belong to no block;
        `empty` names the blocks without a layer.
    """
    compiled = [re.compile(block.pattern) for block in blocks]
    entries = []  # [layer, block index or None, path], in model order
    outside = []
    _walk(model.layers, "", compiled, entries, outside)
    if unmatched != "error":
        _fill(entries, unmatched)
    groups = [(block.name, []) for block in blocks]
    for layer, index, path in entries:
        if index is None:
            if layer.weights:
                outside.append(path)
            continue
        groups[index][1].extend(flatten_layers(layer, used_by=_USED_BY))
    empty = [name for name, layers in groups if not layers]
    return groups, outside, empty


def own_weights(layer):
    """The weights `layer` holds itself, not through a nested layer.

    Example: `own_weights(vit_patching_and_embedding)` is its class token.
    """
    nested = {
        id(w)
        for child in flatten_layers(layer, include_self=False, used_by=_USED_BY)
        for w in child.weights
    }
    return [w for w in layer.weights if id(w) not in nested]


def _walk(layers, prefix, compiled, entries, outside):
    for layer in layers:
        path = prefix + layer.name
        index = next((i for i, regex in enumerate(compiled) if regex.match(path)), None)
        children = flatten_layers(layer, include_self=False, recursive=False, used_by=_USED_BY)
        if index is None and children and layer.weights:
            # A container no block claims as a whole: its sublayers are
            # matched one by one. Weights it holds itself cannot be split.
            if own_weights(layer):
                outside.append(path)
            _walk(children, path + "/", compiled, entries, outside)
            continue
        entries.append([layer, index, path])


def _fill(entries, direction):
    """Gives each unmatched entry the block of its nearest matched neighbour."""
    forward = list(range(len(entries)))
    passes = (forward, forward[::-1]) if direction == "previous" else (forward[::-1], forward)
    # The second pass, the other way, reaches a run of unmatched layers at
    # the far end (before the first matched layer, for "previous").
    for order in passes:
        current = None
        for i in order:
            if entries[i][1] is None:
                entries[i][1] = current
            else:
                current = entries[i][1]
