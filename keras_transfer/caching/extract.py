"""The function of the cache pass: a batch of images in, the cached tensors out, as NumPy.

`make_extractor` turns the plan's prefix (the frozen steps that compute
every cached tensor) into `run(images, augment)`: one trace of the steps
as a `tf.function` on TensorFlow, one `jax.jit` on JAX
(`caching.jax_backend`). Everything runs in inference mode but the random
steps that the cache runs once per augmented view, in training mode when
`augment` is set.
"""

import keras
import tensorflow as tf

from keras_transfer.caching import jax_backend
from keras_transfer.caching.graph import runs_user_code


def make_extractor(model, plan):
    """`run(images, augment) -> {feature name: NumPy array}` for one cached fit.

    Args:
        model: the model being fitted.
        plan: its `CachePlan`.
    """
    extract = _extract_function(model, plan)
    if keras.backend.backend() == "jax":
        # Keras' own layers treat each image apart in inference: a short
        # batch may be padded rather than compiled for (see jax_backend).
        pad = not any(s.op is not None and runs_user_code(s.op) for s in plan.prefix)
        return jax_backend.extractor(model, extract, pad)
    return _tf_extractor(model, extract)


def _extract_function(model, plan):
    dtype = model.inputs[0].dtype
    input_id = plan.graph.input_ids[0]

    def extract(images, augment):
        values = {input_id: keras.ops.cast(images, dtype)}
        for step in plan.prefix:
            if step.per_view and augment is not False:
                _run_per_view(step, values, augment)
            else:
                # Only the augmentation trains: BatchNormalization and
                # the rest of the frozen part stay in inference mode.
                step.run(values, training=False)
        return {name: values[key] for key, name in plan.keys.items()}

    return extract


def _tf_extractor(model, extract):
    """The traced prefix, as a function of a batch of images and whether to augment.

    One trace per input dtype and image shape, with the batch dimension
    left open (the last, smaller batch reuses it) and whether to augment
    a tensor argument: the per-view random steps run in a `tf.cond`
    (training mode when augmenting), so the augmented views and the
    validation images share one trace of the frozen part. A trace of a
    backbone, and TensorFlow's first optimisation of it, cost seconds on
    CPU: the second trace was 20-30% of a K=3 pass.
    """
    traces = {}  # (dtype, image shape) -> {mode: traced prefix}

    def trace(key, augment):
        spec = tf.TensorSpec((None,) + key[1], key[0])
        signature = [spec] + ([tf.TensorSpec((), tf.bool)] if augment is None else [])
        # As Keras' own train step: no AutoGraph (the layers run as
        # they do in fit), which also keeps the trace short.
        return tf.function(
            lambda images, *flag: extract(images, flag[0] if flag else augment),
            input_signature=signature,
            autograph=False,
            jit_compile=model.jit_compile is True,
        )

    def features(images, augment):
        key = (images.dtype, tuple(images.shape[1:]))
        fns = traces.setdefault(key, {})
        if fns.get("either", True) is not None:
            fresh = "either" not in fns
            if fresh:
                fns["either"] = trace(key, None)
            try:
                return fns["either"](images, tf.constant(augment))
            except (TypeError, ValueError):
                if not fresh:
                    raise  # It traced before: the error is the data's.
                # A random layer whose outputs differ between training and
                # inference in dtype or structure (tf.cond needs them
                # alike): one trace per mode, as the pass did before.
                fns["either"] = None
        if augment not in fns:
            fns[augment] = trace(key, augment)
        return fns[augment](images)

    def run(images, augment):
        outputs = features(tf.convert_to_tensor(images), augment)
        return {name: value.numpy() for name, value in outputs.items()}

    return run


def _run_per_view(step, values, augment):
    """Runs a per-view random step in training mode where `augment` (True or a bool tensor)."""
    if augment is True:
        step.run(values, training=True)
        return
    inputs = {key: values[key] for key in step.inputs}

    def branch(training):
        def call():
            outputs = dict(inputs)
            step.run(outputs, training)
            return [outputs[key] for key in step.outputs]

        return call

    values.update(zip(step.outputs, tf.cond(augment, branch(True), branch(False))))
