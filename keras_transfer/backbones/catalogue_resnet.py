"""ResNet50/101/152 and ResNet50V2/101V2/152V2, registered on import.

ResNet (v1) takes `"caffe"` input (BGR, ImageNet mean subtracted): its
weights are Kaiming He's Caffe models (MIT), converted by Keras. ResNetV2
takes `"tf"` input ([-1, 1]); its weights come from TF-slim (Apache-2.0).

Units: `conv1` (the stem), then every residual block (`conv4_block23`); in
ResNetV2 the final `post_bn` goes with the last block (alone it would be a
unit with nothing to train while BatchNormalization stays frozen). `params`
were measured with `count_params()` (include_top=False).
"""

from keras_transfer.backbones.catalogue import KERAS_WEIGHTS_URL
from keras_transfer.backbones.registry import register_backbone
from keras_transfer.backbones.spec import BackboneSpec
from keras_transfer.backbones.spec import Block

# (depth, v2) -> (blocks per stage conv2..conv5, params)
_VARIANTS = {
    (50, False): ((3, 4, 6, 3), 23587712),
    (101, False): ((3, 4, 23, 3), 42658176),
    (152, False): ((3, 8, 36, 3), 58370944),
    (50, True): ((3, 4, 6, 3), 23564800),
    (101, True): ((3, 4, 23, 3), 42626560),
    (152, True): ((3, 8, 36, 3), 58331648),
}


def resnet_blocks(stage_blocks, v2=False):
    """`conv1`, then `conv<stage>_block<i>` for each residual block.

    Example:

    >>> [b.name for b in resnet_blocks((3, 4, 6, 3))][-1]
    'conv5_block3'
    """
    blocks = [Block("conv1", r"conv1_|pool1_")]
    for stage, repeats in enumerate(stage_blocks, start=2):
        for i in range(1, repeats + 1):
            pattern = rf"conv{stage}_block{i}_"
            if v2 and stage == 5 and i == repeats:
                pattern += r"|post_"
            blocks.append(Block(f"conv{stage}_block{i}", pattern))
    return tuple(blocks)


def _register():
    for (depth, v2), (stage_blocks, params) in _VARIANTS.items():
        keras_name = f"resnet{depth}v2" if v2 else f"resnet{depth}"
        register_backbone(
            BackboneSpec(
                name=f"resnet{depth}_v2" if v2 else keras_name,
                family="resnet_v2" if v2 else "resnet",
                constructor=f"keras.applications.ResNet{depth}{'V2' if v2 else ''}",
                default_input_size=224,
                min_input_size=32,
                preprocessing="tf" if v2 else "caffe",
                blocks=resnet_blocks(stage_blocks, v2),
                params=params,
                weights_source=KERAS_WEIGHTS_URL + "resnet/",
                weights_file=f"{keras_name}_weights_tf_dim_ordering_tf_kernels_notop.h5",
                license="Apache-2.0" if v2 else "MIT",
                model_name_pattern=keras_name,
            )
        )


_register()
