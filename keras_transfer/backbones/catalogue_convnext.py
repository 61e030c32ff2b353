"""ConvNeXt Tiny, Small, Base, Large and XLarge, registered on import.

Keras builds the ImageNet normalisation into these models
(`include_preprocessing`, left at its default True), so their
`preprocessing` is `"none"` and `keras.applications.convnext.
preprocess_input` is the identity.

Units: the stem, then every ConvNeXt block (`stage_2_block_26`); the
downsampling layers in front of a stage (a nested `Sequential` in Keras)
go with that stage's first block, and the final `LayerNormalization`
(auto-named by Keras, hence `unmatched="previous"`) with the last block.
`params` were measured with `count_params()` (include_top=False).
"""

from keras_transfer.backbones.catalogue import KERAS_WEIGHTS_URL
from keras_transfer.backbones.registry import register_backbone
from keras_transfer.backbones.spec import BackboneSpec
from keras_transfer.backbones.spec import Block

# variant: (Keras constructor, blocks per stage as Keras' MODEL_CONFIGS
# "depths", params)
_VARIANTS = {
    "tiny": ("ConvNeXtTiny", (3, 3, 9, 3), 27820128),
    "small": ("ConvNeXtSmall", (3, 3, 27, 3), 49454688),
    "base": ("ConvNeXtBase", (3, 3, 27, 3), 87566464),
    "large": ("ConvNeXtLarge", (3, 3, 27, 3), 196230336),
    "xlarge": ("ConvNeXtXLarge", (3, 3, 27, 3), 348147968),
}


def convnext_blocks(model_name, depths):
    """`stem`, then `stage_<s>_block_<b>` for each block, stem to top.

    Example:

    >>> convnext_blocks("convnext_tiny", (3, 3, 9, 3))[1].name
    'stage_0_block_0'
    """
    blocks = [Block("stem", rf"{model_name}_(?:prestem_normalization|stem)")]
    for stage, depth in enumerate(depths):
        for block in range(depth):
            pattern = rf"{model_name}_stage_{stage}_block_{block}_"
            if stage and not block:
                pattern += rf"|{model_name}_downsampling_block_{stage - 1}$"
            blocks.append(Block(f"stage_{stage}_block_{block}", pattern))
    return tuple(blocks)


def _register():
    for variant, (constructor, depths, params) in _VARIANTS.items():
        model_name = f"convnext_{variant}"
        register_backbone(
            BackboneSpec(
                name=model_name,
                family="convnext",
                constructor=f"keras.applications.{constructor}",
                default_input_size=224,
                min_input_size=32,
                preprocessing="none",
                blocks=convnext_blocks(model_name, depths),
                params=params,
                weights_source=KERAS_WEIGHTS_URL + "convnext/",
                weights_file=f"{model_name}_notop.h5",
                # facebookresearch/ConvNeXt releases its weights under MIT.
                license="MIT",
                model_name_pattern=model_name,
                unmatched="previous",
            )
        )


_register()
