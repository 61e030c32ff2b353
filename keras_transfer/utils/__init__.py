"""Small helpers shared by every layer of the package (no Keras model logic).

- `checks`: argument checks that raise `ConfigurationError` with the fix.
- `files`: atomic, durable file writes and JSON-safe numbers.
- `tensors`: parameter counts and scalar reads of Keras values.
- `internals`: the guarded uses of Keras/TensorFlow/KerasTuner internals
  (docs/private_apis.md).
- `metrics`: accuracy, per-class precision/recall/F1 and confusion matrices.
- `pipelines`: the settings of the `tf.data` pipelines it builds (no autotuning).
"""
