"""`fit` with the frozen-feature cache, and the model hooks a cached `fit` needs."""

import warnings

import keras

from keras_transfer.caching.cache_plan import FEATURE_KEY
from keras_transfer.caching.cache_plan import CachePlan
from keras_transfer.caching.cache_plan import make_plan
from keras_transfer.caching.info import INFO_ATTRIBUTE
from keras_transfer.caching.info import SESSION_ATTRIBUTE
from keras_transfer.caching.inputs import Fallback
from keras_transfer.caching.inputs import FallbackError
from keras_transfer.caching.cached_fit import PhaseSwitch
from keras_transfer.caching.cached_fit import CachedFit
from keras_transfer.errors import ConfigurationError
from keras_transfer.utils.internals import MissingInternalError


def is_feature_batch(inputs):
    """Whether `inputs` is a batch of cached features (not images)."""
    return (
        isinstance(inputs, dict)
        and bool(inputs)
        and all(isinstance(k, str) and k.startswith(FEATURE_KEY) for k in inputs)
    )


def call_on_features(model, inputs, training=None):
    """Runs the trained part of `model` on a batch of cached features."""
    session = getattr(model, SESSION_ATTRIBUTE, None)
    if session is None:
        raise ConfigurationError(
            f"Model {model.name!r} received a batch of cached features "
            f"({sorted(inputs)}) outside a cached fit. Pass images instead."
        )
    return session.forward(inputs, training)


def evaluate_validation_features(model, **kwargs):
    """From a callback of a cached `fit`: `model.evaluate` on its cached validation features.

    The model is evaluated as its weights are now (e.g. in `on_train_end`,
    after `WeightAveraging` wrote the mean) on the features that the fit's
    validation reads: the result is that of `model.evaluate` on the
    validation images (the frozen layers that computed the features do not
    change during the fit), without a pass of the backbone over them.

    Example:

    ```python
    class Score(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            self.results = keras_transfer.caching.evaluate_validation_features(
                self.model, verbose=0, return_dict=True)
    ```

    Args:
        model: the model being fitted.
        **kwargs: passed to `model.evaluate` (`verbose`, `return_dict`).

    Returns:
        What `model.evaluate` returns, or None outside a cached fit (the fit
        trained uncached) or when it has no validation data: evaluate on the
        images then.
    """
    session = getattr(model, SESSION_ATTRIBUTE, None)
    if session is None:
        return None
    return session.evaluate_validation(**kwargs)


def fit(model, fit_fn, fit_kwargs):
    """Runs `fit_fn(**fit_kwargs)` on cached features when it is possible.

    `fit_fn` is Keras' own `fit` of `model`. Falls back to calling it on the
    original arguments (with one warning naming the reason, where the user
    can do something about it) when caching is not possible or not useful.
    """
    object.__setattr__(model, INFO_ATTRIBUTE, None)
    plan = make_plan(model, fit_kwargs)
    if isinstance(plan, CachePlan) and plan.note:
        warnings.warn(
            f"Caching only part of the frozen layers of {model.name!r}: {plan.note}",
            stacklevel=3,
        )
    if isinstance(plan, Fallback):
        if plan.reason:
            warnings.warn(
                f"Training {model.name!r} without the frozen-feature cache: {plan.reason}",
                stacklevel=3,
            )
        return fit_fn(**fit_kwargs)
    session = CachedFit(model, plan)
    try:
        try:
            kwargs = session.prepare(fit_kwargs)
        except (FallbackError, MissingInternalError) as e:
            reason = e.reason if isinstance(e, FallbackError) else str(e)
            warnings.warn(
                f"Training {model.name!r} without the frozen-feature cache: {reason}",
                stacklevel=3,
            )
            return fit_fn(**fit_kwargs)
        object.__setattr__(model, SESSION_ATTRIBUTE, session)
        return fit_fn(**kwargs)
    finally:
        object.__setattr__(model, SESSION_ATTRIBUTE, None)
        session.close()
        callbacks = fit_kwargs["callbacks"]
        if isinstance(callbacks, keras.callbacks.CallbackList):
            callbacks.callbacks[:] = [
                c for c in callbacks.callbacks if not isinstance(c, PhaseSwitch)
            ]
        # The traced steps take features; the next call takes images.
        model.train_function = None
        model.test_function = None
        model.predict_function = None
