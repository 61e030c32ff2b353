"""A SavedModel for TensorFlow Serving whose `serving_default` signature names the classes.

Written with Keras' own `keras.export.ExportArchive` (what
`Model.export(format="tf_saved_model")` uses), with two endpoints:

- `serving_default(images)`: raw RGB pixels in [0, 255], `float32`, shape
  `(batch, height, width, 3)`; returns `probabilities` (`(batch,
  num_classes)`), `classes` (`(batch, k)` strings, the `k` most probable
  class names, most probable first) and `scores` (`(batch, k)`, their
  probabilities), `k` being the smaller of `defaults.SERVING_TOP_K` and the
  number of classes. TensorFlow Serving's REST API answers
  `{"instances": [image, ...]}` with `{"predictions": [{"probabilities":
  ..., "classes": ..., "scores": ...}, ...]}`.
- `serve(images)`: the probabilities alone, as `Model.export` writes it.
"""

import functools

import keras
import tensorflow as tf

from keras_transfer import defaults

# The input's name in the signature (TensorFlow Serving's `inputs` key).
INPUT_NAME = "images"


def write_saved_model(model, path, class_names, top_k=defaults.SERVING_TOP_K):
    """Writes `model` as a SavedModel with a class-naming `serving_default` signature.

    Example:

    ```python
    write_saved_model(model, "flowers_saved_model", ["daisy", "roses"])
    loaded = tf.saved_model.load("flowers_saved_model")
    loaded.signatures["serving_default"](images=tf.constant(pixels))["classes"]
    ```

    Args:
        model: a classifier with one fixed-size image input.
        path: the folder to write.
        class_names: the name of each output.
        top_k: how many class names and scores the signature returns.
    """
    spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32, name=INPUT_NAME)
    names = tf.constant(list(class_names))
    k = min(int(top_k), len(class_names))
    predict = functools.partial(model.__call__, training=False)

    def classify(images):
        probabilities = tf.cast(predict(images), tf.float32)
        scores, indices = tf.math.top_k(probabilities, k=k)
        return {
            "probabilities": probabilities,
            "classes": tf.gather(names, indices),
            "scores": scores,
        }

    archive = keras.export.ExportArchive()
    archive.track(model)
    # Registered first under its own name: TensorFlow Serving's default.
    archive.add_endpoint("serving_default", classify, input_signature=[spec])
    archive.add_endpoint("serve", predict, input_signature=[spec])
    archive.write_out(path, verbose=False)
