"""Backbones shared across the trials of a search, one build per process.

Trials that use the same backbone at the same input shape do not each
construct it and load its weights: the first builds it, later ones get it
back reset to those weights (`TransferHyperModel(reuse_backbones=True)`).
`build_pooled_classifier` is what a trial calls; `clear_backbone_cache`
frees the pool.
"""

import dataclasses
import gc
import os
import weakref

import keras

from keras_transfer.models import build_classifier
from keras_transfer.models import find_backbone
from keras_transfer.utils.internals import forget_call_nodes


@dataclasses.dataclass
class PooledBackbone:
    """A backbone kept for reuse, with the weights to reset it to.

    Args:
        backbone: the backbone model.
        initial_weights: its weights as built (`backbone.get_weights()`).
        user: a weak reference to the model that uses the backbone now;
            the backbone is free again once that model is collected.
    """

    backbone: keras.Model
    initial_weights: list
    user: weakref.ref = None

    def free(self):
        """Whether no live model uses the backbone."""
        return self.user is None or self.user() is None


class BackbonePool:
    """Backbones built once per process, reset to their weights for each trial.

    Keyed by (backbone name, input shape, weights, dtype policy). On a busy
    2-core CPU, a trial's `build` with MobileNetV2 (alpha 0.5, 128 px,
    ImageNet weights) took 1.5-2.3 s (median) when it constructed the
    backbone and loaded its weights, 0.17-0.25 s when it reset a pooled one
    (`benchmarks/tuner_trial_overhead.py`). `build_classifier`
    still assembles every trial's model (through a spec whose constructor
    hands out the pooled backbone), so the model is what it would be without
    the pool.

    Example:

    ```python
    pool = BackbonePool()
    spec = keras_transfer.get_backbone("mobilenet_v2_035")
    first = pool.build(spec, 2, (64, 64, 3), None, 0.2, {"hidden_units": 0})
    del first  # Its backbone is free again: the next build reuses it.
    second = pool.build(spec, 2, (64, 64, 3), None, 0.2, {"hidden_units": 0})
    ```
    """

    def __init__(self):
        self._entries = {}

    def clear(self):
        """Drops every pooled backbone."""
        self._entries.clear()

    def build(self, spec, num_classes, input_shape, weights, dropout, head):
        """`build_classifier(spec, ...)`, on a pooled backbone when one is free.

        Args:
            spec: the registered `BackboneSpec`.
            num_classes: as for `build_classifier`.
            input_shape: as for `build_classifier`, or None for the
                backbone's default.
            weights: `"imagenet"`, None or a weights file.
            dropout: the head's dropout rate.
            head: the head's options (`{"hidden_units": ...}`).

        Returns:
            The classifier, its backbone frozen and at its initial weights.
        """
        shape = spec.check_input_shape(input_shape, require_rgb=weights is not None)
        key = (
            spec.name,
            shape,
            None if weights is None else os.fspath(weights),
            keras.config.dtype_policy().name,
        )
        entries = self._entries.setdefault(key, [])
        entry = self._free_entry(entries)
        if entry is None:
            model = build_classifier(
                spec,
                num_classes,
                input_shape=shape,
                weights=weights,
                dropout=dropout,
                head=head,
            )
            backbone, _ = find_backbone(model)
            entry = PooledBackbone(backbone, backbone.get_weights())
            entries.append(entry)
        else:
            # The last trial trained these weights and left blocks trainable;
            # build_classifier freezes the whole backbone again. It can only
            # if the backbone's own flag changes: on the TensorFlow backend,
            # assigning an attribute the value it already has is skipped
            # (KerasAutoTrackable.__setattr__), so `trainable = False` on a
            # frozen backbone would not reach a block left unfrozen.
            entry.backbone.set_weights(entry.initial_weights)
            entry.backbone.trainable = True
            # Each call of the backbone in a functional model leaves a node
            # on it (and on its output, the head's call): without clearing
            # them the backbone keeps every past trial's head, preprocessing
            # and input layers, and their variables, alive. No live model
            # uses these nodes: the last user of the backbone is gone.
            forget_call_nodes(entry.backbone)
            handout = dataclasses.replace(spec, constructor=_HandOut(entry.backbone))
            model = build_classifier(
                handout,
                num_classes,
                input_shape=shape,
                weights=None,
                dropout=dropout,
                head=head,
            )
        entry.user = weakref.ref(model)
        return model

    def _free_entry(self, entries):
        for attempt in range(2):
            for entry in entries:
                if entry.free():
                    return entry
            if not entries or attempt:
                return None
            # The last trial's model may only be held by reference cycles
            # (model <-> History); KerasTuner collects them before each
            # build, a user calling build() directly may not have.
            gc.collect()
        return None


class _HandOut:
    """A backbone constructor that returns an existing backbone."""

    def __init__(self, backbone):
        self.backbone = backbone

    def __call__(self, **kwargs):
        return self.backbone

    def __repr__(self):
        return f"<pooled {self.backbone.name}>"


# The pool every `TransferHyperModel` of this process shares.
_POOL = BackbonePool()


def build_pooled_classifier(spec, num_classes, input_shape, weights, dropout, head):
    """Builds a classifier on this process's shared pool of backbones.

    What `TransferHyperModel(reuse_backbones=True)` calls for every trial;
    see `BackbonePool.build` for the arguments.

    Example:

    ```python
    model = build_pooled_classifier(
        keras_transfer.get_backbone("mobilenet_v2_035"), 2, (64, 64, 3),
        None, 0.2, {"hidden_units": 0})
    ```
    """
    return _POOL.build(spec, num_classes, input_shape, weights, dropout, head)


def clear_backbone_cache():
    """Drops the backbones kept for reuse across trials in this process.

    `TransferHyperModel(reuse_backbones=True)` keeps one backbone per
    (backbone, input shape, weights) alive between trials. Call this to free
    their memory after a search, or after replacing a weights file on disk.

    Example:

    ```python
    keras_transfer.tuner.clear_backbone_cache()
    ```
    """
    _POOL.clear()
