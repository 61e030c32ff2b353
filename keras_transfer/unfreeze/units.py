"""Units: the pieces of a backbone that a schedule unfreezes, bottom to top."""

import keras

from keras_transfer import backbones
from keras_transfer.errors import ConfigurationError
from keras_transfer.utils.internals import flatten_layers

UNITS = ("blocks", "layers", "weighted_layers")


def check_unit(unit):
    """Raises `ConfigurationError` unless `unit` is one of `UNITS`.

    Example:

    ```python
    check_unit("layers")  # passes; check_unit("block") raises
    ```
    """
    if unit not in UNITS:
        raise ConfigurationError(
            f"Unknown unit: {unit!r}. Expected 'blocks' (the "
            "architecture's blocks from the backbone registry), 'layers' "
            "(what `base_model.layers` lists, so that {epoch: N} trains "
            "base_model.layers[-N:]) or 'weighted_layers' (the leaf layers "
            "that hold weights)."
        )


def resolve_backbone(model, backbone=None):
    """The backbone layer of `model` that `backbone` designates.

    Args:
        model: the model being trained.
        backbone: None (the registered backbone nested in `model`, as
            `build_classifier` makes it), a layer name of `model`, or the
            backbone layer or model itself (nested, or whose layers sit
            inline in `model`).
    """
    if backbone is None:
        backbone, _ = backbones.find_backbone(model)
    elif isinstance(backbone, str):
        try:
            backbone = model.get_layer(backbone)
        except ValueError:
            raise ConfigurationError(
                f"The model has no layer named {backbone!r} to use as "
                "the backbone. Pass the backbone layer itself, or one of "
                f"the model's layer names: {[l.name for l in model.layers]}"
            ) from None
    if not isinstance(backbone, keras.layers.Layer):
        raise ConfigurationError(
            "`backbone` must be a Keras layer or model, a layer name, or "
            f"None. Received: {backbone!r}"
        )
    model_layers = {id(l) for l in flatten_layers(model, include_self=False)}
    if id(backbone) not in model_layers:
        weighted = weighted_layers(backbone)
        if not weighted or any(id(l) not in model_layers for l in weighted):
            raise ConfigurationError(
                f"The backbone {backbone.name!r} is not part of the model "
                f"{model.name!r} being trained: neither the backbone nor "
                "its layers appear in it. Pass the backbone the model was "
                "built from (the `base_model` whose output or call built "
                "the model)."
            )
    return backbone


def resolve_units(backbone, unit):
    """`[(name, [leaf layers])]`, bottom to top, for one of `UNITS`.

    Example:

    ```python
    units = resolve_units(base_model, "layers")
    [name for name, _ in units] == [l.name for l in base_model.layers]  # True
    ```
    """
    check_unit(unit)
    if unit == "layers":
        return top_level_units(backbone)
    if unit == "weighted_layers":
        return [(layer.name, [layer]) for layer in weighted_layers(backbone)]
    spec = backbones.find_spec_for_model(backbone)
    if spec is None:
        raise ConfigurationError(
            f"unit='blocks' needs a backbone of a registered architecture, "
            f"and {backbone.name!r} is not one "
            f"(registered: {', '.join(backbones.list_backbones())}). Use "
            "unit='layers' to count what `base_model.layers` lists, or "
            "describe its blocks with keras_transfer.register_backbone(...)."
        )
    return [(name, list(layers)) for name, layers in spec.block_layers(backbone)]


def top_level_units(backbone):
    """One unit per entry of `backbone.layers`, weightless layers included.

    So `{epoch: N}` with `unit="layers"` trains `backbone.layers[-N:]`, as
    the classic `for layer in base_model.layers[:-N]: layer.trainable = False`
    does. A nested model (or any layer with sublayers) is one unit made of
    its leaf layers, so each leaf's own flag (BatchNorm stays frozen) decides.

    Raises:
        ConfigurationError: the backbone is a plain layer with no `layers`.

    Example:

    ```python
    units = top_level_units(base_model)  # [("input_layer", [...]), ...]
    ```
    """
    layers = getattr(backbone, "layers", None)
    if layers is None:
        raise ConfigurationError(
            f"unit='layers' counts `backbone.layers`, and the backbone "
            f"{backbone.name!r} ({type(backbone).__name__}) has no `layers` "
            "list. Pass the backbone model, or use unit='weighted_layers' to "
            "count its leaf layers that hold weights."
        )
    units = []
    for layer in layers:
        inner = flatten_layers(layer, include_self=False, recursive=True)
        leaves = [l for l in inner if not flatten_layers(l, include_self=False, recursive=False)]
        units.append((layer.name, leaves or [layer]))
    return units


def weighted_layers(container):
    """The leaf layers of `container` that own weights, in topological order."""
    layers = flatten_layers(container, include_self=False, recursive=True)
    return [
        layer
        for layer in layers
        if layer.weights and not flatten_layers(layer, include_self=False, recursive=False)
    ]
