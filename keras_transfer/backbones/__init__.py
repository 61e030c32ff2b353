"""Backbones: pretrained feature extractors described as data, by name.

```python
keras_transfer.list_backbones("efficientnet_b*")   # ['efficientnet_b0', ...]
spec = keras_transfer.get_backbone("mobilenet_v2_050")
backbone = spec.build(input_shape=(96, 96, 3), weights="imagenet")
for block_name, layers in spec.block_layers(backbone):
    ...
```

Adding a backbone is one `register_backbone(BackboneSpec(...))` call; callers
(`build_classifier`, the callbacks, the CLI) read the registry and need no
change.

- `spec`: `BackboneSpec`, `PREPROCESSING_MODES`.
- `blocks`: `Block`, and how a built backbone's layers fall into its blocks.
- `registry`: `register_backbone`, `unregister_backbone`, `list_backbones`,
  `get_backbone`, and `find_spec_for_model` / `find_backbone`, which
  recognise a built model.
- `catalogue` and `catalogue_*` (one module per family): the built-in
  `keras.applications` backbones, registered when this package is imported.
- `hub` (with `hub_presets` and `hub_units`): KerasHub image backbones
  (ViT, ResNet, EfficientNet) by preset or object,
  `register_keras_hub_backbone`; needs the `[hub]` extra and is imported on
  demand (`from keras_transfer.backbones import hub`), so that importing
  keras-transfer does not import keras-hub.
- `weights`: resolving `weights=None | "imagenet" | path`, offline-safe.
"""

from keras_transfer.backbones import catalogue  # noqa: F401  (registers the built-ins)
from keras_transfer.backbones import catalogue_convnext  # noqa: F401
from keras_transfer.backbones import catalogue_densenet  # noqa: F401
from keras_transfer.backbones import catalogue_efficientnet_v2  # noqa: F401
from keras_transfer.backbones import catalogue_inception  # noqa: F401
from keras_transfer.backbones import catalogue_mobilenet_v3  # noqa: F401
from keras_transfer.backbones import catalogue_resnet  # noqa: F401
from keras_transfer.backbones import weights  # noqa: F401
from keras_transfer.backbones.registry import find_backbone
from keras_transfer.backbones.registry import find_spec_for_model
from keras_transfer.backbones.registry import get_backbone
from keras_transfer.backbones.registry import list_backbones
from keras_transfer.backbones.registry import register_backbone
from keras_transfer.backbones.registry import unregister_backbone
from keras_transfer.backbones.spec import PREPROCESSING_MODES
from keras_transfer.backbones.spec import BackboneSpec
from keras_transfer.backbones.spec import Block

__all__ = [
    "PREPROCESSING_MODES",
    "BackboneSpec",
    "Block",
    "find_backbone",
    "find_spec_for_model",
    "get_backbone",
    "list_backbones",
    "register_backbone",
    "unregister_backbone",
    "weights",
]
