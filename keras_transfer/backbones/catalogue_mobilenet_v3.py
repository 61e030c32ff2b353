"""MobileNetV3 Small and Large (widths 1.0 and 0.75, and minimalistic), registered on import.

Keras builds the input scaling into these models (`include_preprocessing`,
left at its default True: a `Rescaling` to [-1, 1] inside the backbone), so
their `preprocessing` is `"none"` and `keras.applications.mobilenet_v3.
preprocess_input` is the identity. Keras names every width alike
(`MobileNetV3Small`); `find_spec_for_model` tells them apart by parameter
count. `params` were measured with `count_params()` (include_top=False).
"""

from keras_transfer.backbones.catalogue import KERAS_WEIGHTS_URL
from keras_transfer.backbones.registry import register_backbone
from keras_transfer.backbones.spec import BackboneSpec
from keras_transfer.backbones.spec import Block

# (size, alpha, minimalistic) -> parameter count without top.
_VARIANTS = {
    ("small", 1.0, False): 939120,
    ("small", 0.75, False): 583160,
    ("small", 1.0, True): 441000,
    ("large", 1.0, False): 2996352,
    ("large", 0.75, False): 1808736,
    ("large", 1.0, True): 1437608,
}

# The last `expanded_conv_<i>` block of each size.
_LAST_BLOCK = {"small": 10, "large": 14}


def mobilenet_v3_blocks(size):
    """`stem`, `expanded_conv`, `expanded_conv_1` ... and `conv_1` (the top).

    Example:

    >>> mobilenet_v3_blocks("small")[-1].name
    'conv_1'
    """
    return (
        (
            Block("stem", r"rescaling|conv$|conv_bn$"),
            Block("expanded_conv", r"expanded_conv_(?!\d)"),
        )
        + tuple(
            Block(f"expanded_conv_{i}", rf"expanded_conv_{i}_")
            for i in range(1, _LAST_BLOCK[size] + 1)
        )
        + (Block("conv_1", r"conv_1(?:_bn)?$"),)
    )


def _register():
    for (size, alpha, minimalistic), params in _VARIANTS.items():
        suffix = "_minimalistic" if minimalistic else ("_075" if alpha == 0.75 else "")
        kind = f"{size}_minimalistic" if minimalistic else size
        register_backbone(
            BackboneSpec(
                name=f"mobilenet_v3_{size}{suffix}",
                family="mobilenet_v3",
                constructor=f"keras.applications.MobileNetV3{size.title()}",
                constructor_kwargs={"alpha": alpha, "minimalistic": minimalistic},
                default_input_size=224,
                min_input_size=32,
                preprocessing="none",
                blocks=mobilenet_v3_blocks(size),
                params=params,
                weights_source=KERAS_WEIGHTS_URL + "mobilenet_v3/",
                weights_file=f"weights_mobilenet_v3_{kind}_224_{alpha}_float_no_top_v2.h5",
                license="Apache-2.0",
                model_name_pattern=f"MobileNetV3{size.title()}",
            )
        )


_register()
