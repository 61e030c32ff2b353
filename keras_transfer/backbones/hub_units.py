"""The units of a KerasHub backbone: its transformer layers or its stages' blocks.

`hub_blocks(backbone)` reads a built KerasHub backbone and returns its
`Block`s, stem to top, as patterns on the paths the registry's wrapper
(`hub.wrap_backbone`) gives its layers, `"<backbone name>/<layer>"`:

- a transformer (ViT): the layers before the encoder form `embedding`;
  each numbered encoder layer (`transformer_block_3`) is a unit; the
  encoder's final norm, and anything after it, joins the last one;
- a convolutional network (ResNet, EfficientNet): the layers before the
  first block form `stem`; each residual block (`stack2_block5`) or
  MBConv block (`block6c`) is a unit; what follows the last block is `top`
  when it holds a trainable convolution or dense layer, else it joins the
  last block.
"""

import re

import keras

from keras_transfer.backbones.blocks import Block
from keras_transfer.errors import ConfigurationError
from keras_transfer.utils.internals import flatten_layers

# Layer-name prefixes of a convolutional backbone's blocks, per family.
_CONV_UNITS = (
    re.compile(r"(stack\d+_block\d+)_"),  # ResNet
    re.compile(r"(block\d+[a-z]+)_"),  # EfficientNet
)
# A numbered layer of a transformer encoder: "transformer_block_3".
_NUMBERED = re.compile(r"(.+)_(\d+)$")

_USED_BY = "keras_transfer.backbones.hub (finding a KerasHub backbone's units)"


def hub_blocks(backbone):
    """The `Block`s of a KerasHub backbone, stem to top.

    Example:

    >>> [b.name for b in hub_blocks(tiny_vit)]
    ['embedding', 'transformer_block_1', 'transformer_block_2']

    Raises:
        ConfigurationError: neither a transformer encoder nor known block
            names; the message says how to pass `blocks=`.
    """
    prefix = re.escape(backbone.name) + "/"
    layers = backbone.layers
    blocks = _transformer_blocks(layers, prefix) or _conv_blocks(layers, prefix)
    if not blocks:
        raise ConfigurationError(
            f"Cannot tell the units of KerasHub backbone {backbone.name!r} "
            f"({type(backbone).__name__}): neither a transformer encoder nor ResNet or "
            "EfficientNet block names. Pass blocks=[(name, pattern), ...], patterns on "
            f"paths like '{backbone.name}/<layer>/<sublayer>'."
        )
    return blocks


def _children(layer):
    return flatten_layers(layer, include_self=False, recursive=False, used_by=_USED_BY)


def _alternatives(prefix, names):
    return prefix + "(?:" + "|".join(re.escape(n) for n in names) + ")$"


def _transformer_blocks(layers, prefix):
    best = None
    for position, layer in enumerate(layers):
        numbered = [c.name for c in _children(layer) if _NUMBERED.match(c.name) and _children(c)]
        stems = {_NUMBERED.match(n).group(1) for n in numbered}
        if numbered and len(stems) == 1 and (best is None or len(numbered) > len(best[2])):
            best = (position, layer, numbered)
    if best is None:
        return None
    position, encoder, numbered = best
    inner = prefix + re.escape(encoder.name) + "/"
    before = [l.name for l in layers[:position] if l.weights]
    children = [c.name for c in _children(encoder)]
    last = children.index(numbered[-1])
    blocks = [Block("embedding", _alternatives(prefix, before))] if before else []
    for child in numbered[:-1]:
        blocks.append(Block(child, inner + re.escape(child) + "$"))
    pattern = _alternatives(inner, [numbered[-1]] + children[last + 1 :])
    after = [l.name for l in layers[position + 1 :]]
    if after:
        pattern += "|" + _alternatives(prefix, after)
    blocks.append(Block(numbered[-1], pattern))
    return tuple(blocks)


def _conv_blocks(layers, prefix):
    for regex in _CONV_UNITS:
        units, first, last = [], None, None
        for position, layer in enumerate(layers):
            match = regex.match(layer.name)
            if match:
                if match.group(1) not in units:
                    units.append(match.group(1))
                first = position if first is None else first
                last = position
        if not units:
            continue
        stem = [l.name for l in layers[:first]]
        top = [l.name for l in layers[last + 1 :]]
        blocks = [Block("stem", _alternatives(prefix, stem))] if stem else []
        blocks += [Block(unit, prefix + re.escape(unit) + "_") for unit in units]
        if top and any(_trains(l) for l in layers[last + 1 :]):
            blocks.append(Block("top", _alternatives(prefix, top)))
        elif top:
            last = blocks.pop()
            blocks.append(Block(last.name, last.pattern + "|" + _alternatives(prefix, top)))
        return tuple(blocks)
    return None


def _trains(layer):
    norms = (keras.layers.BatchNormalization, keras.layers.LayerNormalization)
    return bool(layer.weights) and not isinstance(layer, norms)
