"""DenseNet121, DenseNet169 and DenseNet201, registered on import.

`"torch"` input ([0, 1], then ImageNet mean and std), as
`keras.applications.densenet.preprocess_input`; the weights are the
authors' (BSD-3-Clause), converted by Keras.

Units: `conv1` (the stem), every dense layer (`conv4_block24`), and each
transition between dense blocks (`pool2`, `pool3`, `pool4`); the final
`bn` goes with the last dense layer. `params` were measured with
`count_params()` (include_top=False).
"""

from keras_transfer.backbones.catalogue import KERAS_WEIGHTS_URL
from keras_transfer.backbones.registry import register_backbone
from keras_transfer.backbones.spec import BackboneSpec
from keras_transfer.backbones.spec import Block

# depth -> (dense layers per dense block, params)
_VARIANTS = {
    121: ((6, 12, 24, 16), 7037504),
    169: ((6, 12, 32, 32), 12642880),
    201: ((6, 12, 48, 32), 18321984),
}


def densenet_blocks(stage_blocks):
    """`conv1`, the dense layers (`conv2_block1` ...) and transitions (`pool2` ...).

    Example:

    >>> len(densenet_blocks((6, 12, 24, 16)))
    62
    """
    blocks = [Block("conv1", r"conv1_|pool1$")]
    for stage, repeats in enumerate(stage_blocks, start=2):
        for i in range(1, repeats + 1):
            pattern = rf"conv{stage}_block{i}_"
            if stage == 5 and i == repeats:
                pattern += r"|bn$|relu$"
            blocks.append(Block(f"conv{stage}_block{i}", pattern))
        if stage < 5:
            blocks.append(Block(f"pool{stage}", rf"pool{stage}_"))
    return tuple(blocks)


def _register():
    for depth, (stage_blocks, params) in _VARIANTS.items():
        register_backbone(
            BackboneSpec(
                name=f"densenet{depth}",
                family="densenet",
                constructor=f"keras.applications.DenseNet{depth}",
                default_input_size=224,
                min_input_size=32,
                preprocessing="torch",
                blocks=densenet_blocks(stage_blocks),
                params=params,
                weights_source=KERAS_WEIGHTS_URL + "densenet/",
                weights_file=f"densenet{depth}_weights_tf_dim_ordering_tf_kernels_notop.h5",
                license="BSD-3-Clause",
                model_name_pattern=f"densenet{depth}",
            )
        )


_register()
