"""The built-in backbones: `keras.applications` models, registered on import.

MobileNet v1 (3 widths), MobileNetV2 (6 widths) and EfficientNet B0-B7,
each as a `BackboneSpec` with its block list, weights file and licence; the
`catalogue_*` modules register the other `keras.applications` families
(ResNet50 lives with the other ResNets in `catalogue_resnet`). Importing `keras_transfer.backbones` imports them all, so the
registry always holds them.

`params` were measured once with `count_params()` on the model built with
include_top=False, weights=None (the count does not depend on input size);
tests/test_backbones.py checks them.
"""

import math

from keras_transfer.backbones.registry import register_backbone
from keras_transfer.backbones.spec import BackboneSpec
from keras_transfer.backbones.spec import Block

# The folder of most keras.applications weights; the catalogue_* modules use it too.
KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"

# MobileNetV2 width (alpha) -> parameter count without top.
_MOBILENET_V2_PARAMS = {
    0.35: 410208,
    0.5: 706224,
    0.75: 1382064,
    1.0: 2257984,
    1.3: 3766048,
    1.4: 4363712,
}

# Keras spells alpha in MobileNet v1 file names as "2_5", "5_0", "1_0".
_MOBILENET_V1 = {0.25: ("2_5", 218544), 0.5: ("5_0", 829536), 1.0: ("1_0", 3228864)}

# keras.applications.efficientnet: repeats of the 7 stages in
# DEFAULT_BLOCKS_ARGS, scaled per variant by ceil(depth_coefficient * repeats)
# exactly as the Keras constructor does. Blocks are named like its layers
# ("block2b"), lettered per repeat.
_EFFICIENTNET_REPEATS = (1, 2, 2, 3, 3, 4, 1)
_EFFICIENTNET = {
    # variant: (depth_coefficient, default_size, params)
    0: (1.0, 224, 4049571),
    1: (1.1, 240, 6575239),
    2: (1.2, 260, 7768569),
    3: (1.4, 300, 10783535),
    4: (1.8, 380, 17673823),
    5: (2.2, 456, 28513527),
    6: (2.6, 528, 40960143),
    7: (3.1, 600, 64097687),
}


def _mobilenet_v2_blocks():
    return (
        (Block("stem", r"Conv1(?:_|$)|bn_Conv1$|expanded_conv_"),)
        + tuple(Block(f"block_{i}", rf"block_{i}_") for i in range(1, 17))
        + (Block("Conv_1", r"Conv_1(?:_|$)|out_relu$"),)
    )


def _register_mobilenet_v2():
    for alpha, params in _MOBILENET_V2_PARAMS.items():
        register_backbone(
            BackboneSpec(
                name="mobilenet_v2" if alpha == 1.0 else f"mobilenet_v2_{round(alpha * 100):03d}",
                family="mobilenet_v2",
                constructor="keras.applications.MobileNetV2",
                constructor_kwargs={"alpha": alpha},
                default_input_size=224,
                min_input_size=32,
                preprocessing="tf",
                blocks=_mobilenet_v2_blocks(),
                params=params,
                weights_source=KERAS_WEIGHTS_URL + "mobilenet_v2/",
                weights_file=(
                    f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}"
                    "_{rows}_no_top.h5"
                ),
                license="Apache-2.0",
                model_name_pattern=rf"mobilenetv2_{alpha:0.2f}_\d+".replace(".", r"\."),
                weights_input_sizes=(96, 128, 160, 192, 224),
            )
        )


def _mobilenet_v1_blocks():
    return (Block("conv1", r"conv1(?:_|$)"),) + tuple(
        Block(f"block_{i}", rf"conv_(?:pad|dw|pw)_{i}(?:_|$)") for i in range(1, 14)
    )


def _register_mobilenet_v1():
    for alpha, (text, params) in _MOBILENET_V1.items():
        register_backbone(
            BackboneSpec(
                name=f"mobilenet_v1_{round(alpha * 100):03d}",
                family="mobilenet_v1",
                constructor="keras.applications.MobileNet",
                constructor_kwargs={"alpha": alpha},
                default_input_size=224,
                min_input_size=32,
                preprocessing="tf",
                blocks=_mobilenet_v1_blocks(),
                params=params,
                weights_source=KERAS_WEIGHTS_URL + "mobilenet/",
                weights_file=f"mobilenet_{text}" + "_{rows}_tf_no_top.h5",
                license="Apache-2.0",
                model_name_pattern=rf"mobilenet_{alpha:0.2f}_\d+".replace(".", r"\."),
                weights_input_sizes=(128, 160, 192, 224),
            )
        )


def lettered_blocks(stage_repeats):
    """EfficientNet-style blocks: `block1a`, `block2a`, `block2b`, ... per stage.

    Example:

    >>> [b.name for b in lettered_blocks((1, 2))]
    ['block1a', 'block2a', 'block2b']

    Args:
        stage_repeats: the number of blocks of each stage, first stage first.
    """
    blocks = []
    for stage, repeats in enumerate(stage_repeats, start=1):
        for j in range(repeats):
            name = f"block{stage}{chr(ord('a') + j)}"
            blocks.append(Block(name, name + "_"))
    return tuple(blocks)


def _efficientnet_blocks(depth_coefficient):
    repeats = [int(math.ceil(depth_coefficient * r)) for r in _EFFICIENTNET_REPEATS]
    return (
        (Block("stem", r"rescaling|normalization|stem_"),)
        + lettered_blocks(repeats)
        + (Block("top", r"top_"),)
    )


def _register_efficientnet():
    for variant, (depth, size, params) in _EFFICIENTNET.items():
        register_backbone(
            BackboneSpec(
                name=f"efficientnet_b{variant}",
                family="efficientnet",
                constructor=f"keras.applications.EfficientNetB{variant}",
                default_input_size=size,
                min_input_size=32,
                # The model rescales and normalises [0, 255] pixels itself.
                preprocessing="none",
                blocks=_efficientnet_blocks(depth),
                params=params,
                weights_source="https://storage.googleapis.com/keras-applications/",
                weights_file=f"efficientnetb{variant}_notop.h5",
                license="Apache-2.0",
                model_name_pattern=f"efficientnetb{variant}",
            )
        )


_register_mobilenet_v2()
_register_mobilenet_v1()
_register_efficientnet()
