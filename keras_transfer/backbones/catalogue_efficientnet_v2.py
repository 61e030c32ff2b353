"""EfficientNetV2 B0-B3, S, M and L, registered on import.

Keras builds the input scaling into these models (`include_preprocessing`,
left at its default True: `Rescaling`, plus ImageNet `Normalization` for
B0-B3), so their `preprocessing` is `"none"` and
`keras.applications.efficientnet_v2.preprocess_input` is the identity.

Blocks are named like the Keras layers (`block6h`), lettered per repeat;
the repeats per stage are Keras' `DEFAULT_BLOCKS_ARGS` scaled by each
variant's depth coefficient (tests/test_registry_catalogue.py checks them
against Keras' tables). `params` were measured with `count_params()`
(include_top=False).
"""

from keras_transfer.backbones.catalogue import KERAS_WEIGHTS_URL
from keras_transfer.backbones.catalogue import lettered_blocks
from keras_transfer.backbones.registry import register_backbone
from keras_transfer.backbones.spec import BackboneSpec
from keras_transfer.backbones.spec import Block

# variant: (repeats per stage, default input size, params)
_VARIANTS = {
    "b0": ((1, 2, 2, 3, 5, 8), 224, 5919312),
    "b1": ((2, 3, 3, 4, 6, 9), 240, 6931124),
    "b2": ((2, 3, 3, 4, 6, 10), 260, 8769374),
    "b3": ((2, 3, 3, 5, 7, 12), 300, 12930622),
    "s": ((2, 4, 4, 6, 9, 15), 384, 20331360),
    "m": ((3, 5, 5, 7, 14, 18, 5), 480, 53150388),
    "l": ((4, 7, 7, 10, 19, 25, 7), 480, 117746848),
}


def efficientnet_v2_blocks(stage_repeats):
    """`stem`, the lettered blocks (`block1a` ...), then `top`.

    Example:

    >>> len(efficientnet_v2_blocks((1, 2, 2, 3, 5, 8)))
    23
    """
    return (
        (Block("stem", r"rescaling|normalization|stem_"),)
        + lettered_blocks(stage_repeats)
        + (Block("top", r"top_"),)
    )


def _register():
    for variant, (repeats, size, params) in _VARIANTS.items():
        keras_name = f"efficientnetv2-{variant}"
        register_backbone(
            BackboneSpec(
                name=f"efficientnet_v2_{variant}",
                family="efficientnet_v2",
                constructor=f"keras.applications.EfficientNetV2{variant.upper()}",
                default_input_size=size,
                min_input_size=32,
                preprocessing="none",
                blocks=efficientnet_v2_blocks(repeats),
                params=params,
                weights_source=KERAS_WEIGHTS_URL + "efficientnet_v2/",
                weights_file=f"{keras_name}_notop.h5",
                license="Apache-2.0",
                model_name_pattern=keras_name.replace("-", r"\-"),
            )
        )


_register()
