"""The backbone registry: backbones by name, and recognising built models.

`register_backbone` adds a `BackboneSpec` under its name; `get_backbone` and
`list_backbones` read it back; `unregister_backbone` removes one.
`find_spec_for_model` and `find_backbone` go the other way, from a built
model (or a classifier holding one) to its registered spec. The built-in
specs register themselves when `catalogue.py` is imported, which
`keras_transfer.backbones` does.
"""

import difflib
import fnmatch
import re

import keras

from keras_transfer.backbones.spec import BackboneSpec
from keras_transfer.errors import ConfigurationError

_REGISTRY = {}


def register_backbone(spec, overwrite=False):
    """Adds a backbone to the registry.

    Example:

    ```python
    spec = keras_transfer.get_backbone("mobilenet_v2_035")
    keras_transfer.register_backbone(
        dataclasses.replace(spec, name="mnv2_small", default_input_size=96)
    )
    ```

    Args:
        spec: the `BackboneSpec`.
        overwrite: replace a spec registered under the same name. Defaults to
            False, which raises instead.

    Returns:
        The spec.
    """
    if not isinstance(spec, BackboneSpec):
        raise ConfigurationError(
            f"register_backbone expects a BackboneSpec. Received: {type(spec).__name__}"
        )
    if spec.name in _REGISTRY and not overwrite:
        raise ConfigurationError(
            f"A backbone named {spec.name!r} is already registered. Pass "
            "overwrite=True to replace it, or choose another name."
        )
    _REGISTRY[spec.name] = spec
    return spec


def unregister_backbone(name):
    """Removes a backbone from the registry; returns its spec.

    Example:

    ```python
    keras_transfer.register_backbone(spec)
    ...
    keras_transfer.backbones.unregister_backbone(spec.name)
    ```

    Args:
        name: the registry name, or a `BackboneSpec` (its name is used).

    Returns:
        The spec that was registered under `name`.

    Raises:
        ConfigurationError: no backbone has that name; the message lists the
            closest names.
    """
    key = name.name if isinstance(name, BackboneSpec) else name
    if not isinstance(key, str) or key not in _REGISTRY:
        get_backbone(key)  # raises, naming the registered look-alikes
    return _REGISTRY.pop(key)


def list_backbones(pattern=None):
    """Names of the registered backbones, sorted.

    Example:

    >>> keras_transfer.list_backbones("resnet*")
    ['resnet50']

    Args:
        pattern: optional shell-style pattern (`fnmatch`), e.g.
            `"efficientnet*"`.
    """
    names = sorted(_REGISTRY)
    return fnmatch.filter(names, pattern) if pattern else names


def get_backbone(name):
    """Returns the `BackboneSpec` registered under `name`.

    Example:

    >>> keras_transfer.get_backbone("mobilenet_v2_050").default_input_size
    224

    Args:
        name: a registry name, or a `BackboneSpec` (returned as is).

    Raises:
        ConfigurationError: no backbone has that name; the message lists the
            closest names.
    """
    if isinstance(name, BackboneSpec):
        return name
    if isinstance(name, str) and name in _REGISTRY:
        return _REGISTRY[name]
    names = sorted(_REGISTRY)
    text = str(name)
    # Names extending what was typed (a family name) first, then look-alikes.
    close = [n for n in names if n.startswith(text)]
    close += [n for n in difflib.get_close_matches(text, names, n=5, cutoff=0.6) if n not in close]
    hint = f" Did you mean: {', '.join(close[:8])}?" if close else ""
    raise ConfigurationError(
        f"Unknown backbone: {name!r}.{hint} See keras_transfer.list_backbones() or "
        f"`keras-transfer backbones` for the {len(names)} registered names."
    )


def find_spec_for_model(model):
    """Recognises a backbone model built from a registered spec.

    The model's `.name` (as Keras names it) picks the candidates, e.g.
    `"mobilenetv2_0.50_96"` is MobileNetV2 with alpha 0.5; the spec's blocks
    must then match the model's layers. A renamed model is recognised by its
    parameter count and blocks instead.

    Example:

    ```python
    backbone = keras.applications.MobileNetV2(
        alpha=0.5, include_top=False, weights=None, input_shape=(96, 96, 3))
    keras_transfer.backbones.find_spec_for_model(backbone).name
    # 'mobilenet_v2_050'
    ```

    Returns:
        The `BackboneSpec`, or None if no registered spec fits.
    """
    specs = [_REGISTRY[n] for n in sorted(_REGISTRY)]
    try:
        count = model.count_params()
    except ValueError:  # an unbuilt model
        count = None
    name = getattr(model, "name", "")
    named = [
        spec
        for spec in specs
        if spec.model_name_pattern and re.fullmatch(spec.model_name_pattern, name)
    ]
    # Widths Keras names alike (MobileNetV3Small at alpha 0.75 and 1.0): the
    # parameter count tells them apart.
    named.sort(key=lambda spec: spec.params != count)
    for spec in named:
        if spec.matches(model):
            return spec
    if count is None:
        return None
    for spec in specs:
        if spec.params and spec.params == count and spec.matches(model):
            return spec
    return None


def find_backbone(model):
    """Finds the registered backbone nested in a model.

    Example:

    ```python
    model = keras_transfer.build_classifier("mobilenet_v2_050", 5, weights=None)
    backbone, spec = keras_transfer.backbones.find_backbone(model)
    backbone.name, spec.name   # ('mobilenetv2_0.50_224', 'mobilenet_v2_050')
    ```

    Args:
        model: a model made by `build_classifier` (or any model with a
            `keras.applications` backbone of a registered spec among its
            layers), or such a backbone itself.

    Returns:
        `(backbone_model, spec)`.

    Raises:
        ConfigurationError: no layer of `model` is a registered backbone.
    """
    candidates = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    # build_classifier names the model after its spec; that spec wins when
    # several registered specs describe the same architecture.
    hinted = model.name[: -len("_classifier")] if model.name.endswith("_classifier") else None
    if hinted in list_backbones():
        spec = get_backbone(hinted)
        for layer in candidates:
            if spec.matches(layer):
                return layer, spec
    for layer in candidates + [model]:
        spec = find_spec_for_model(layer)
        if spec is not None:
            return layer, spec
    nested = ", ".join(repr(layer.name) for layer in candidates) or "none"
    raise ConfigurationError(
        f"Could not find a registered backbone in model {model.name!r} (nested "
        f"models: {nested}). Build the model with keras_transfer.build_classifier, "
        "register a BackboneSpec that describes your backbone "
        "(keras_transfer.register_backbone), or pass the backbone explicitly, "
        "e.g. backbone=model.get_layer('<name>') together with its spec."
    )
