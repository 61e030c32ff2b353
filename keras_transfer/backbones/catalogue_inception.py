"""Xception, InceptionV3, InceptionResNetV2 and NASNetMobile, registered on import.

All four take `"tf"` input ([-1, 1]). Keras leaves many of their layers
auto-named (`conv2d_57`, `batch_normalization_3`: the number depends on how
many models the process has built), so their blocks are anchored on the
layers Keras does name, and the others join a block by their place in the
model's topological layer order (`BackboneSpec.unmatched`):

- Xception: `block1` ... `block14`; a residual branch (conv, batch norm,
  add) follows its block in that order, so `unmatched="previous"`.
- InceptionV3: `mixed0` ... `mixed10`, each module ending at its named
  concatenation, so `unmatched="next"`; the stem goes with `mixed0`.
- InceptionResNetV2: `mixed_5b` (with the stem), `block35_1` ...
  `block35_10`, `mixed_6a`, `block17_1` ... `block17_20`, `mixed_7a`,
  `block8_1` ... `block8_10`, `conv_7b`; also `unmatched="next"`.
- NASNetMobile: `stem`, the two stem cells, then the normal cells
  (`cell_0` ... `cell_12`) and reduction cells (`reduce_4`, `reduce_8`),
  matched by the cell number Keras puts at the end of every weighted
  layer's name.

`params` were measured with `count_params()` (include_top=False).
"""

from keras_transfer.backbones.catalogue import KERAS_WEIGHTS_URL
from keras_transfer.backbones.registry import register_backbone
from keras_transfer.backbones.spec import BackboneSpec
from keras_transfer.backbones.spec import Block

_NOTOP = "_weights_tf_dim_ordering_tf_kernels_notop.h5"

# Auto-named NASNet layers (no weights) whose number is not a cell's.
_AUTO_NAMED = r"(?:activation|add|concatenate|cropping2d|zero_padding2d)_\d+$"

# NASNetMobile's cells in order; "reduce_4" and "reduce_8" are reduction cells.
_NASNET_MOBILE_CELLS = ("0", "1", "2", "3", "reduce_4", "5", "6", "7", "8", "reduce_8")
_NASNET_MOBILE_CELLS += ("9", "10", "11", "12")


def xception_blocks():
    """`block1` ... `block14`.

    Example:

    >>> xception_blocks()[-1].name
    'block14'
    """
    return tuple(Block(f"block{i}", rf"block{i}_") for i in range(1, 15))


def inception_v3_blocks():
    """`mixed0` ... `mixed10`, each ending at its concatenation.

    Example:

    >>> len(inception_v3_blocks())
    11
    """
    return tuple(Block(f"mixed{i}", rf"mixed{i}$") for i in range(11))


def inception_resnet_v2_blocks():
    """The stem-and-first-module, the residual blocks and reductions, `conv_7b`.

    Example:

    >>> len(inception_resnet_v2_blocks())
    44
    """
    blocks = [Block("mixed_5b", r"mixed_5b$")]
    for kind, repeats, reduction in (("block35", 10, "mixed_6a"), ("block17", 20, "mixed_7a")):
        blocks += [Block(f"{kind}_{i}", rf"{kind}_{i}_") for i in range(1, repeats + 1)]
        blocks.append(Block(reduction, rf"{reduction}$"))
    blocks += [Block(f"block8_{i}", rf"block8_{i}_") for i in range(1, 11)]
    blocks.append(Block("conv_7b", r"conv_7b"))
    return tuple(blocks)


def nasnet_blocks(cells):
    """`stem`, `stem_1`, `stem_2`, then one unit per cell, by the name's suffix.

    Example:

    >>> [b.name for b in nasnet_blocks(("0", "reduce_4"))]
    ['stem', 'stem_1', 'stem_2', 'cell_0', 'reduce_4']
    """
    blocks = [
        Block("stem", r"stem_(?:conv|bn)1$"),
        Block("stem_1", r".*_stem_1$"),
        Block("stem_2", r".*_stem_2$"),
    ]
    for cell in cells:
        if cell.startswith("reduce_"):
            blocks.append(Block(cell, rf".*_{cell}$"))
        else:
            # "..._8" but not "..._reduce_8", "..._stem_2" or "activation_8".
            pattern = rf"(?!{_AUTO_NAMED})(?!.*_(?:reduce|stem)_{cell}$).*_{cell}$"
            blocks.append(Block(f"cell_{cell}", pattern))
    return tuple(blocks)


def _register():
    register_backbone(
        BackboneSpec(
            name="xception",
            family="xception",
            preprocessing="tf",
            constructor="keras.applications.Xception",
            default_input_size=299,
            min_input_size=71,
            blocks=xception_blocks(),
            params=20861480,
            weights_source=KERAS_WEIGHTS_URL + "xception/",
            weights_file="xception" + _NOTOP,
            # Trained by the Keras authors and released under MIT.
            license="MIT",
            model_name_pattern="xception",
            unmatched="previous",
        )
    )
    register_backbone(
        BackboneSpec(
            name="inception_v3",
            family="inception",
            preprocessing="tf",
            constructor="keras.applications.InceptionV3",
            default_input_size=299,
            min_input_size=75,
            blocks=inception_v3_blocks(),
            params=21802784,
            weights_source=KERAS_WEIGHTS_URL + "inception_v3/",
            weights_file="inception_v3" + _NOTOP,
            license="Apache-2.0",
            model_name_pattern="inception_v3",
            unmatched="next",
        )
    )
    register_backbone(
        BackboneSpec(
            name="inception_resnet_v2",
            family="inception_resnet",
            preprocessing="tf",
            constructor="keras.applications.InceptionResNetV2",
            default_input_size=299,
            min_input_size=75,
            blocks=inception_resnet_v2_blocks(),
            params=54336736,
            weights_source=KERAS_WEIGHTS_URL + "inception_resnet_v2/",
            weights_file="inception_resnet_v2" + _NOTOP,
            license="Apache-2.0",
            model_name_pattern="inception_resnet_v2",
            unmatched="next",
        )
    )
    register_backbone(
        BackboneSpec(
            name="nasnet_mobile",
            family="nasnet",
            preprocessing="tf",
            constructor="keras.applications.NASNetMobile",
            default_input_size=224,
            min_input_size=32,
            blocks=nasnet_blocks(_NASNET_MOBILE_CELLS),
            params=4269716,
            weights_source=KERAS_WEIGHTS_URL + "nasnet/",
            weights_file="nasnet_mobile_no_top.h5",
            weights_download_file="NASNet-mobile-no-top.h5",
            license="Apache-2.0",
            model_name_pattern="nasnet_mobile",
        )
    )


_register()
