"""What the feature cache of a `fit` holds and cost, readable from callbacks."""

import dataclasses
import time

# Attributes set on the model (with object.__setattr__, out of Keras' tracking).
SESSION_ATTRIBUTE = "_keras_transfer_feature_session"
INFO_ATTRIBUTE = "_keras_transfer_feature_cache"


@dataclasses.dataclass(frozen=True)
class FeatureCacheInfo:
    """What the feature cache of a `fit` holds and what it cost.

    Available from `feature_cache_info(model)` from the start of a cached
    `fit` (before the first callback runs) until the next `fit`.

    Attributes:
        storage: `"memory"` or `"disk"`.
        samples: number of training samples cached.
        validation_samples: number of validation samples cached.
        nbytes: bytes of cached features, training and validation.
        seconds: wall-clock seconds spent computing the cache. This time
            passes before `on_train_begin`; add it when timing a run.
        boundaries: for each phase, from the most frozen on, the names of the
            layers whose outputs are cached (for `build_classifier`'s models,
            `"pool"` in the head-only phase).
        reused: whether the features came from the model's `FeatureStore`
            (computed by an earlier fit) instead of a pass over the images;
            `seconds` is then the time spent recognising them.
        recomputed: whether the features were computed again at the first
            epoch, because a callback (`BackupAndRestore` resuming a run)
            changed the frozen weights after the first pass; `seconds`
            then includes the second pass.
        views: augmented views of each training image cached (the model's
            `augmented_views`, or 1); `samples` counts one view, `nbytes`
            all of them.
    """

    storage: str
    samples: int
    validation_samples: int
    nbytes: int
    seconds: float
    boundaries: tuple
    reused: bool = False
    recomputed: bool = False
    views: int = 1


def feature_cache_info(model):
    """Returns the `FeatureCacheInfo` of the model's last cached `fit`, or None.

    Example:

    ```python
    model.fit(train_ds, validation_data=val_ds, epochs=5)
    info = keras_transfer.caching.feature_cache_info(model)
    info.seconds, info.storage   # (21.3, 'memory')
    ```
    """
    return getattr(model, INFO_ATTRIBUTE, None)


def running_cache_info(model):
    """The `FeatureCacheInfo` of the cached `fit` running now, or None.

    Callbacks that time a fit use it: the cache pass runs inside `fit` but
    before `on_train_begin`.
    """
    if getattr(model, SESSION_ATTRIBUTE, None) is None:
        return None
    return feature_cache_info(model)


def fit_start_time(model):
    """The `time.time()` at which the running `fit` of `model` began.

    Call it from a callback's `on_train_begin`: a cached `fit` computes its
    features before that hook, and this moves the clock back by that time,
    so durations and timestamps count the cache pass.
    """
    info = running_cache_info(model)
    return time.time() - (info.seconds if info is not None else 0.0)
